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

pub mod dead_letter;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::dead_letter::{DeadLetterError, DeadLetters};
use crate::config::{ConnectorConfig, DaemonConfig};
use crate::connector::position::KindMismatch;
use crate::connector::{
    Batch, Batcher, ConnectorState, ConnectorStatus, DeadLetterTarget, ErrorPolicy, Position, Sink, SinkContext,
    SinkError, SinkState, SourceContext, TableCheck,
};
use crate::event::{ChangeEvent, SnapshotFlag};
use crate::metrics::{self, Metrics};
use crate::retry::{Backoff, Classify, ErrorClass};
use crate::sinks::SinkConfig;
use crate::state::{StateError, StateStore};
use crate::transforms::Chain;

/// Positions are stored at most this often (each store is an fsync); a crash replays at most
/// this much, and shutdown always stores the last one.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

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
    Transform(String),
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

/// One sink with its retry state.
struct SinkRunner {
    index: usize,
    name: String,
    policy: ErrorPolicy,
    sink: Box<dyn Sink>,
    dead_letters: Option<DeadLetters>,
    backoff: Backoff,
    labels: metrics::Labels,
}

impl SinkRunner {
    /// Write until the batch is durable, retrying transient failures with backoff. Returns an
    /// error only when the connector must stop.
    async fn write(&mut self, events: &[ChangeEvent], ctx: &Shared) -> Result<(), PipelineError> {
        loop {
            let started = Instant::now();
            match self.sink.write(events).await {
                Ok(report) => {
                    ctx.metrics.sink_write_seconds.get_or_create(&self.labels).observe(started.elapsed().as_secs_f64());
                    self.observe_commit_to_ack(events, ctx);
                    self.count(ctx, metrics::OUTCOME_APPLIED, report.applied);
                    self.count(ctx, metrics::OUTCOME_STALE, report.stale);
                    for (i, reason) in report.rejected {
                        self.reject(&events[i], reason, ctx).await?;
                    }
                    if self.backoff.attempts() > 0 {
                        info!(connector = %ctx.name, sink = %self.name, "sink recovered");
                    }
                    self.backoff.reset();
                    ctx.status.set_sink_state(self.index, SinkState::Ok, None);
                    ctx.status.sink_done(self.index, events.len() as u64);
                    return Ok(());
                }
                Err(e) if e.class() == ErrorClass::Retry => {
                    let delay = self.backoff.next_delay();
                    if self.backoff.attempts() == 1 || self.backoff.attempts() % 20 == 0 {
                        warn!(connector = %ctx.name, sink = %self.name, error = %e, attempt = self.backoff.attempts(), "sink write failed; retrying");
                    }
                    ctx.status.set_sink_state(self.index, SinkState::Retrying, Some(e.to_string()));
                    ctx.metrics.sink_retries.get_or_create(&self.labels).inc();
                    tokio::select! {
                        _ = ctx.abort.cancelled() => return Err(PipelineError::Aborted),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => {
                    ctx.status.set_sink_state(self.index, SinkState::Failed, Some(e.to_string()));
                    self.count(ctx, metrics::OUTCOME_FAILED, events.len() as u64);
                    return Err(PipelineError::Sink { sink: self.name.clone(), error: e });
                }
            }
        }
    }

    /// Per streamed change: now (acknowledged) minus its commit time at the source.
    fn observe_commit_to_ack(&self, events: &[ChangeEvent], ctx: &Shared) {
        let now_ms = crate::event::time::now_ms();
        let to_ack = ctx.metrics.commit_to_ack_seconds.get_or_create(&self.labels);
        for ev in events.iter().filter(|e| e.snapshot == SnapshotFlag::No) {
            to_ack.observe((now_ms - ev.commit_ts_ms).max(0) as f64 / 1000.0);
        }
    }

    fn count(&self, ctx: &Shared, outcome: &'static str, n: u64) {
        if n > 0 {
            let mut labels = self.labels.clone();
            labels.push((metrics::OUTCOME, outcome.to_string()));
            ctx.metrics.sink_events.get_or_create(&labels).inc_by(n);
        }
    }

    /// Apply the sink's `on_error` policy to one permanently rejected event.
    async fn reject(&mut self, ev: &ChangeEvent, reason: String, ctx: &Shared) -> Result<(), PipelineError> {
        match self.policy {
            ErrorPolicy::Fail => {
                self.count(ctx, metrics::OUTCOME_FAILED, 1);
                ctx.status.set_sink_state(self.index, SinkState::Failed, Some(reason.clone()));
                Err(PipelineError::Rejected { sink: self.name.clone(), reason })
            }
            ErrorPolicy::Skip => {
                warn!(connector = %ctx.name, sink = %self.name, %reason, table = %ev.table, "event rejected by sink; skipped");
                self.count(ctx, metrics::OUTCOME_SKIPPED, 1);
                Ok(())
            }
            ErrorPolicy::DeadLetter => {
                let dl = self.dead_letters.as_mut().expect("built for dead_letter policy");
                let mut backoff = Backoff::default();
                // The event is acknowledged only once its dead letter is written: a dead-letter
                // target that is down holds the pipeline, like a sink that is down.
                while let Err(error) = dl.write(ev, &self.name, &reason).await {
                    if error.class() != ErrorClass::Retry {
                        ctx.status.set_sink_state(self.index, SinkState::Failed, Some(error.to_string()));
                        return Err(PipelineError::DeadLetter { sink: self.name.clone(), error: Box::new(error) });
                    }
                    ctx.status.set_sink_state(self.index, SinkState::Retrying, Some(error.to_string()));
                    if backoff.attempts() % 20 == 0 {
                        warn!(connector = %ctx.name, sink = %self.name, %error, "cannot write dead letter; retrying");
                    }
                    tokio::select! {
                        _ = ctx.abort.cancelled() => return Err(PipelineError::Aborted),
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
                warn!(connector = %ctx.name, sink = %self.name, %reason, target = %dl.describe(), "event rejected by sink; dead-lettered");
                self.count(ctx, metrics::OUTCOME_DEAD_LETTERED, 1);
                Ok(())
            }
        }
    }
}

/// What every part of a running connector shares.
struct Shared {
    name: Arc<str>,
    status: Arc<ConnectorStatus>,
    metrics: Arc<Metrics>,
    abort: CancellationToken,
}

struct Pipeline {
    ctx: Shared,
    sinks: Vec<SinkRunner>,
    chain: Chain,
    store: StateStore,
    ack: watch::Sender<Option<Position>>,
    /// The newest position whose batch every sink has applied, not yet stored.
    pending: Option<Position>,
    /// No batch has been processed since `pending` (so operator state matches it exactly).
    pending_current: bool,
    /// The newest position accepted (stored or pending).
    newest: Option<Position>,
    last_store: Instant,
    /// Dead-letter targets of windows' late events, by window.
    late_letters: std::collections::HashMap<String, DeadLetters>,
    encoding: crate::event::Encoding,
    /// Limits of one group-committed write.
    max_rows: usize,
    max_bytes: usize,
    /// The checkpoint being stored, off the data path (one at a time).
    storing: Option<tokio::task::JoinHandle<(Position, Result<(), StateError>)>>,
}

impl Pipeline {
    /// Take batches until the source closes the channel. Priorities: abort, a finished
    /// checkpoint, the checkpoint timer, pause changes, new batches.
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Batch>,
        mut paused: watch::Receiver<bool>,
    ) -> Result<(), PipelineError> {
        let result = loop {
            let due = (self.storing.is_none() && self.can_store())
                .then(|| tokio::time::Instant::from_std(self.last_store + CHECKPOINT_INTERVAL));
            let is_paused = *paused.borrow();
            tokio::select! {
                biased;
                _ = self.ctx.abort.cancelled() => break Ok(()),
                stored = async { self.storing.as_mut().expect("guarded").await }, if self.storing.is_some() => {
                    self.storing = None;
                    if let Err(e) = self.stored(stored) { break Err(e) }
                }
                _ = async { tokio::time::sleep_until(due.expect("guarded")).await }, if due.is_some() => {
                    self.start_store();
                }
                changed = paused.changed() => {
                    if changed.is_err() { break Ok(()) }
                }
                batch = rx.recv(), if !is_paused => match batch {
                    None => break Ok(()),
                    Some(b) => {
                        // Group commit: batches that queued up while the sinks were busy go to
                        // them as one write (bigger writes, fewer round trips), up to the batch
                        // limits.
                        let (mut rows, mut bytes) = (b.events.len(), b.bytes);
                        let mut batches = vec![b];
                        while rows < self.max_rows && bytes < self.max_bytes {
                            let Ok(next) = rx.try_recv() else { break };
                            rows += next.events.len();
                            bytes += next.bytes;
                            batches.push(next);
                        }
                        if let Err(e) = self.process(batches).await { break Err(e) }
                        if self.storing.is_none() && self.last_store.elapsed() >= CHECKPOINT_INTERVAL {
                            self.start_store();
                        }
                    }
                },
            }
        };
        // Whatever happened, a position whose batch is durable may be stored.
        let mut stored = Ok(());
        if let Some(task) = self.storing.take() {
            stored = self.stored(task.await);
        }
        if stored.is_ok() {
            self.start_store();
            if let Some(task) = self.storing.take() {
                stored = self.stored(task.await);
            }
        }
        result.and(stored)
    }

    /// Run batches (in source order) through the chain and write them to every sink at once.
    async fn process(&mut self, batches: Vec<Batch>) -> Result<(), PipelineError> {
        let mut events = Vec::with_capacity(batches.iter().map(|b| b.events.len()).sum());
        let mut any_heartbeat = false;
        let mut done = Vec::with_capacity(batches.len());
        for batch in batches {
            let Batch { events: input, checkpoint, newest_commit_ms, heartbeat, offset, .. } = batch;
            let n = input.len();
            let heartbeat_ms = if heartbeat { newest_commit_ms } else { None };
            events.extend(self.chain.apply(input, heartbeat_ms).map_err(PipelineError::Transform)?);
            self.late().await?;
            any_heartbeat |= heartbeat;
            done.push((n, newest_commit_ms, heartbeat, offset, checkpoint));
        }
        // A heartbeat with no events still reaches every sink (as an empty write, i.e. a probe),
        // so an idle pipeline notices a sink outage, reports it, and stops the source.
        if !events.is_empty() || any_heartbeat {
            let ctx = &self.ctx;
            let results = join_all(self.sinks.iter_mut().map(|s| s.write(&events, ctx))).await;
            results.into_iter().collect::<Result<Vec<()>, _>>()?;
        }
        self.pending_current = false;
        for (n, newest_commit_ms, heartbeat, offset, checkpoint) in done {
            self.ctx.status.batch_done(n, newest_commit_ms, heartbeat, offset);
            if let Some(pos) = checkpoint {
                let newer = match &self.newest {
                    None => true,
                    Some(prev) => pos.is_after(prev)?,
                };
                if newer {
                    self.newest = Some(pos.clone());
                    self.pending = Some(pos);
                    self.pending_current = true;
                }
            }
        }
        Ok(())
    }

    /// Count late window events and write them to their window's dead-letter target, before
    /// the batch that carried them can be checkpointed.
    async fn late(&mut self) -> Result<(), PipelineError> {
        for (window, target, ev, reason) in self.chain.take_late() {
            let labels = vec![(metrics::CONNECTOR, self.ctx.name.to_string()), ("window", window.clone())];
            self.ctx.metrics.late_events.get_or_create(&labels).inc();
            let Some(target) = target else {
                warn!(connector = %self.ctx.name, %window, %reason, table = %ev.table, "late event counted (no dead-letter target for this window)");
                continue;
            };
            let ctx = SinkContext { connector: self.ctx.name.clone(), encoding: self.encoding };
            let dl = self.late_letters.entry(window.clone()).or_insert_with(|| DeadLetters::new(&target, ctx));
            let mut backoff = Backoff::default();
            while let Err(error) = dl.write(&ev, &format!("window {window}"), &reason).await {
                if error.class() != ErrorClass::Retry {
                    return Err(PipelineError::DeadLetter { sink: format!("window {window}"), error: Box::new(error) });
                }
                tokio::select! {
                    _ = self.ctx.abort.cancelled() => return Err(PipelineError::Aborted),
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
        Ok(())
    }

    /// Whether the pending position may be stored now: operator state must correspond to it
    /// exactly, which holds right after its batch (or always, for a chain without state).
    fn can_store(&self) -> bool {
        self.pending.is_some() && (self.pending_current || self.chain.is_stateless())
    }

    /// Start storing the pending position with its operator state (one transaction), off the
    /// data path.
    fn start_store(&mut self) {
        if self.storing.is_some() || !self.can_store() {
            return;
        }
        let pos = self.pending.take().expect("can_store");
        let operators = self.chain.checkpoint();
        let store = self.store.clone();
        let name = self.ctx.name.to_string();
        self.storing = Some(tokio::task::spawn_blocking(move || {
            let result = store.commit(&name, &pos, &operators);
            (pos, result)
        }));
    }

    /// A checkpoint was stored: tell the source (which confirms it to the server) and `/health`.
    fn stored(
        &mut self,
        done: Result<(Position, Result<(), StateError>), tokio::task::JoinError>,
    ) -> Result<(), PipelineError> {
        let (pos, result) = done.map_err(|e| StateError::Storage(format!("checkpoint task: {e}")))?;
        result?;
        self.last_store = Instant::now();
        self.chain.stored();
        self.ctx.status.checkpointed(serde_json::to_value(&pos).unwrap_or_default());
        self.ack.send_replace(Some(pos));
        Ok(())
    }
}

fn build_sink(index: usize, cfg: &SinkConfig, ctx: SinkContext, daemon: &DaemonConfig, connector: &str) -> SinkRunner {
    let dead_letters = (cfg.on_error == ErrorPolicy::DeadLetter).then(|| {
        let target = cfg.dead_letter.clone().unwrap_or_else(|| {
            DeadLetterTarget::File(daemon.data_dir.join("dead_letters").join(format!("{connector}.jsonl")))
        });
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
            status.fail(e.to_string());
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
    };
    let chain = match Chain::build(&transforms, cfg.source.encoding(), Some(store.clone()), name.clone()) {
        Ok(c) => c,
        Err(e) => {
            error!(connector = %name, error = %e, "cannot start the transforms");
            status.fail(e);
            return;
        }
    };
    let source_cfg = cfg.source.clone();
    let source = tokio::spawn(async move { source_cfg.run(source_ctx).await });

    let mut pipeline = Pipeline {
        ctx: Shared { name: name.clone(), status: status.clone(), metrics, abort },
        sinks,
        chain,
        store,
        ack: ack_tx,
        pending: None,
        pending_current: false,
        newest: resume,
        last_store: Instant::now(),
        late_letters: Default::default(),
        encoding: cfg.source.encoding(),
        max_rows: cfg.pipeline.max_batch_rows.get(),
        max_bytes: cfg.pipeline.max_batch_bytes.get(),
        storing: None,
    };
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
