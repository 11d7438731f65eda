//! The daemon (`tidemark run`) and the commands that inspect it.
//!
//! Shutdown order: stop the sources (each hands over what it has read), let every pipeline apply
//! and checkpoint what is in flight, stop HTTP, exit 0 — all under `shutdown_timeout`; past it,
//! in-flight work is abandoned (it is replayed on the next start, never lost).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::check::Section;
use crate::config::Config;
use crate::connector::ConnectorState;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::notify;
use crate::pipeline::{run_connector, ConnectorHandle};
use crate::state::{StateError, StateStore};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen on {addr}: {error}")]
    Http { addr: std::net::SocketAddr, error: std::io::Error },
}

/// Run every connector until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let daemon = config.daemon.clone();
    let store = StateStore::open(&daemon.data_dir)?;
    let metrics = Arc::new(Metrics::new());
    let handles: Vec<Arc<ConnectorHandle>> =
        config.connectors.iter().cloned().map(|c| ConnectorHandle::new(c, &daemon)).collect();
    let handles = Arc::new(handles);

    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let state = AppState {
        connectors: handles.clone(),
        metrics: metrics.clone(),
        token: daemon.http_token.clone(),
        auth: daemon.http_auth,
    };
    let http_task = http::serve(daemon.http_addr, state, http_stop.clone())
        .await
        .map_err(|error| DaemonError::Http { addr: daemon.http_addr, error })?;
    info!(addr = %daemon.http_addr, connectors = handles.len(), "tidemark started");
    if let Some(w) = daemon.api_warning() {
        tracing::warn!("{w}");
    }

    let mut tasks = JoinSet::new();
    for h in handles.iter() {
        tasks.spawn(run_connector(
            h.clone(),
            daemon.clone(),
            store.clone(),
            metrics.clone(),
            stop.clone(),
            abort.clone(),
        ));
    }
    let notifier = tokio::spawn(systemd_loop(handles.clone(), stop.clone()));

    wait_for_signal().await;
    info!("shutting down: draining connectors");
    notify::notify("STOPPING=1");
    stop.cancel();
    let drained =
        tokio::time::timeout(daemon.shutdown_timeout, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(
            timeout_s = daemon.shutdown_timeout.as_secs(),
            "drain did not finish in time; abandoning in-flight batches (they will be replayed)"
        );
        abort.cancel();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    }
    notifier.abort();
    http_stop.cancel();
    let _ = http_task.await;
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// READY=1 once every connector streams (or has failed), then WATCHDOG=1 while none has failed.
async fn systemd_loop(handles: Arc<Vec<Arc<ConnectorHandle>>>, stop: CancellationToken) {
    let settled =
        |s: ConnectorState| matches!(s, ConnectorState::Streaming | ConnectorState::Failed | ConnectorState::Paused);
    loop {
        if handles.iter().all(|h| settled(h.status.state())) {
            notify::notify("READY=1");
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    let Some(interval) = notify::watchdog_interval() else { return };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let failed: Vec<&str> = handles
            .iter()
            .filter(|h| h.status.state() == ConnectorState::Failed)
            .map(|h| h.config.name.as_str())
            .collect();
        if failed.is_empty() {
            notify::notify("WATCHDOG=1");
        } else {
            error!(connectors = ?failed, "connector failed; withholding the systemd watchdog");
        }
    }
}

/// Live checks of every source and sink of every connector.
pub async fn check(config: &Config) -> Vec<(String, Vec<Section>)> {
    let mut out = Vec::new();
    for c in &config.connectors {
        let mut sections =
            vec![Section { title: format!("source {}", c.source.title()), findings: c.source.check().await }];
        for s in &c.sinks {
            sections.push(Section {
                title: format!("sink {} ({})", s.name, s.spec.title()),
                findings: s.spec.check(&c.name, c.source.tables()).await,
            });
        }
        out.push((format!("{} ({})", c.name, c.file.display()), sections));
    }
    out
}
