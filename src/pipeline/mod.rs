//! A connector at run time: its source task, the batch channel, the transform chain, the sinks
//! and the checkpoint.
//!
//! Invariants:
//! - A batch is handed to the sinks only after the previous one is durable in every sink, so per
//!   key, events are applied in source order.
//! - A position is stored only after every sink has made its batch (and all before it) durable;
//!   the source confirms to the server only what was stored. A crash therefore replays a suffix
//!   of the stream, which fenced sinks turn into no-ops.
//! - Memory is bounded: the channel holds `buffer_batches` batches, each capped by rows and bytes;
//!   a sink that stops accepting blocks the pipeline, which blocks the source.

mod retry;
mod runner;
mod sink_runner;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::error;

use self::runner::Pipeline;
pub use self::runner::CHECKPOINT_INTERVAL;
use self::sink_runner::SinkRunner;
use crate::config::{ConnectorConfig, DaemonConfig};
use crate::connector::dead_letter::{DeadLetterError, DeadLetters};
use crate::connector::position::KindMismatch;
use crate::connector::{
    snapshot_again, Batcher, ConnectorState, ConnectorStatus, DeadLetterTarget, ErrorPolicy, SinkContext, SinkError,
    SourceContext, SourceHealth, TableCheck,
};
use crate::metrics::{self, Metrics};
use crate::retry::Backoff;
use crate::sinks::SinkConfig;
use crate::state::{StateError, StateStore};
use crate::transforms::{Chain, TransformError};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("sink {sink}: {error}")]
    Sink { sink: String, error: SinkError },
    #[error("sink {sink} rejected an event and its on_error policy is `fail`: {reason}")]
    Rejected { sink: String, reason: String },
    #[error("sink {sink}: cannot write dead letter: {error}")]
    DeadLetter { sink: String, error: Box<DeadLetterError> },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("stopped before the batch was durable (shutdown deadline)")]
    Aborted,
    #[error("transform: {0}")]
    Transform(#[from] TransformError),
    #[error("the source handed over a position of another kind: {0}")]
    Position(#[from] KindMismatch),
}

/// A configured connector and the controls the HTTP API uses.
pub struct ConnectorHandle {
    pub config: ConnectorConfig,
    pub status: Arc<ConnectorStatus>,
    paused: watch::Sender<bool>,
}

impl ConnectorHandle {
    pub fn new(config: ConnectorConfig, daemon: &DaemonConfig) -> Arc<Self> {
        let status = Arc::new(ConnectorStatus::new(
            &config.name,
            config.source.kind(),
            config.pipeline.max_lag.unwrap_or(daemon.max_lag),
            config.source.heartbeat_interval(),
        ));
        for s in &config.sinks {
            status.add_sink(&s.name, s.kind_name());
        }
        let figures = config.source.health_figures().iter().map(|f| (*f, None)).collect();
        status.set_source_health(SourceHealth { figures, notes: Vec::new() });
        Arc::new(ConnectorHandle { config, status, paused: watch::channel(false).0 })
    }

    /// Stop taking batches; the source backs up and stops reading.
    pub fn pause(&self) {
        self.paused.send_replace(true);
        self.status.set_paused(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
        self.status.set_paused(false);
    }
}

/// What every part of a running connector shares.
pub struct Shared {
    name: Arc<str>,
    status: Arc<ConnectorStatus>,
    metrics: Arc<Metrics>,
    abort: CancellationToken,
}

/// Where a connector's dead letters go when it names no target.
fn default_dead_letters(daemon: &DaemonConfig, connector: &str) -> std::path::PathBuf {
    daemon.data_dir.join("dead_letters").join(format!("{connector}.jsonl"))
}

fn build_sink(index: usize, cfg: &SinkConfig, ctx: SinkContext, daemon: &DaemonConfig, connector: &str) -> SinkRunner {
    let dead_letters = (cfg.on_error == ErrorPolicy::DeadLetter).then(|| {
        let target =
            cfg.dead_letter.clone().unwrap_or_else(|| DeadLetterTarget::File(default_dead_letters(daemon, connector)));
        DeadLetters::new(&target, ctx.clone())
    });
    SinkRunner {
        index,
        name: cfg.name.clone(),
        policy: cfg.on_error,
        sink: cfg.spec.build(ctx),
        dead_letters,
        backoff: Backoff::default(),
        labels: metrics::sink_labels(connector, &cfg.name),
    }
}

/// Run one connector until `stop` is cancelled (drain: the source stops, every batch already read
/// is applied and checkpointed) or `abort` is (stop now; unfinished work is replayed next time).
pub async fn run_connector(
    handle: Arc<ConnectorHandle>,
    daemon: DaemonConfig,
    store: StateStore,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let cfg = &handle.config;
    let status = handle.status.clone();
    let name: Arc<str> = cfg.name.as_str().into();
    let resume = match store.position(&cfg.name) {
        Ok(p) => p,
        Err(e) => {
            error!(connector = %name, error = %e, "cannot read stored position");
            let way_out = match e {
                StateError::Corrupt { .. } => format!("; {}", snapshot_again(&name)),
                _ => String::new(),
            };
            status.fail(format!("{e}{way_out}"));
            return;
        }
    };
    let sink_ctx = SinkContext { connector: name.clone(), encoding: cfg.source.encoding() };
    let sinks = cfg.sinks.iter().enumerate().map(|(i, s)| build_sink(i, s, sink_ctx.clone(), &daemon, &name)).collect();

    let (tx, rx) = mpsc::channel(cfg.pipeline.buffer_batches.get());
    let (ack_tx, ack_rx) = watch::channel(resume.clone());
    let source_cancel = stop.child_token();
    let transforms = crate::transforms::Specs(Arc::new(cfg.transforms.clone()));
    let table_check: TableCheck = {
        let transforms = transforms.clone();
        Arc::new(move |table| transforms.check_table(table))
    };
    let source_ctx = SourceContext {
        connector: name.clone(),
        batcher: Batcher::new(tx, cfg.pipeline, status.clone()),
        acked: ack_rx,
        resume: resume.clone(),
        cancel: source_cancel.clone(),
        status: status.clone(),
        metrics: metrics.clone(),
        store: store.clone(),
        table_check,
        dead_letters: DeadLetterTarget::File(default_dead_letters(&daemon, &name)),
    };
    let chain = match Chain::build(&transforms, cfg.source.encoding(), Some(store.clone()), name.clone(), &metrics) {
        Ok(c) => c,
        Err(e) => {
            error!(connector = %name, error = %e, "cannot start the transforms");
            status.fail(e.to_string());
            return;
        }
    };
    let source_cfg = cfg.source.clone();
    let source = tokio::spawn(async move { source_cfg.run(source_ctx).await });

    let ctx = Shared { name: name.clone(), status: status.clone(), metrics, abort };
    let mut pipeline = Pipeline::new(ctx, sinks, chain, store, ack_tx, resume, cfg.source.encoding(), cfg.pipeline);
    let outcome = pipeline.run(rx, handle.paused.subscribe()).await;
    if let Err(e) = &outcome {
        if !matches!(e, PipelineError::Aborted) {
            error!(connector = %name, error = %e, "connector stopped");
            status.fail(e.to_string());
        }
        source_cancel.cancel();
    }
    match source.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            error!(connector = %name, error = %e, "source stopped");
            status.fail(e.to_string());
        }
        Err(e) => status.fail(format!("source task panicked: {e}")),
    }
    if status.state() != ConnectorState::Failed {
        status.set_state(ConnectorState::Stopped);
    }
}
