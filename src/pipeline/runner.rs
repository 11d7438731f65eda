//! The loop that takes a connector's batches from its source, runs them through the transform
//! chain, writes them to every sink, and checkpoints.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::retry::{Retrying, Stopped, Target};
use super::sink_runner::SinkRunner;
use super::{PipelineError, Shared};
use crate::connector::dead_letter::DeadLetters;
use crate::connector::{Batch, PipelineConfig, Position, SinkContext};
use crate::event::Encoding;
use crate::metrics;
use crate::retry::Backoff;
use crate::state::{StateError, StateStore};
use crate::transforms::Chain;

/// Positions are stored at most this often (each store is an fsync); a crash replays at most
/// this much, and shutdown always stores the last one.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// The loop that takes a connector's batches, applies them and checkpoints.
pub struct Pipeline {
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
    late_letters: HashMap<String, DeadLetters>,
    encoding: Encoding,
    /// Limits of one group-committed write.
    max_rows: usize,
    max_bytes: usize,
    /// The checkpoint being stored, off the data path (one at a time).
    storing: Option<tokio::task::JoinHandle<(Position, Result<(), StateError>)>>,
}

impl Pipeline {
    pub fn new(
        ctx: Shared,
        sinks: Vec<SinkRunner>,
        chain: Chain,
        store: StateStore,
        ack: watch::Sender<Option<Position>>,
        resume: Option<Position>,
        encoding: Encoding,
        limits: PipelineConfig,
    ) -> Self {
        Pipeline {
            ctx,
            sinks,
            chain,
            store,
            ack,
            pending: None,
            pending_current: false,
            newest: resume,
            last_store: Instant::now(),
            late_letters: HashMap::new(),
            encoding,
            max_rows: limits.max_batch_rows.get(),
            max_bytes: limits.max_batch_bytes.get(),
            storing: None,
        }
    }

    /// Take batches until the source closes the channel. Priorities: abort, a finished
    /// checkpoint, the checkpoint timer, pause changes, new batches.
    pub async fn run(
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
                    if let Err(e) = self.start_store() { break Err(e) }
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
                            if let Err(e) = self.start_store() { break Err(e) }
                        }
                    }
                },
            }
        };
        // Whatever happened, a position whose batch is durable may be stored, as long as the
        // operator state still corresponds to it (see `can_store`).
        let mut stored = Ok(());
        if let Some(task) = self.storing.take() {
            stored = self.stored(task.await);
        }
        if stored.is_ok() {
            stored = self.start_store();
            if let Some(task) = self.storing.take() {
                stored = stored.and(self.stored(task.await));
            }
        }
        result.and(stored)
    }

    /// Run batches (in source order) through the chain and write them to every sink at once.
    async fn process(&mut self, batches: Vec<Batch>) -> Result<(), PipelineError> {
        // From here operator state moves past `pending`: until a batch of these completes with
        // its own position, the state no longer matches any position that could be stored.
        self.pending_current = false;
        let mut events = Vec::with_capacity(batches.iter().map(|b| b.events.len()).sum());
        let mut any_heartbeat = false;
        let mut done = Vec::with_capacity(batches.len());
        for batch in batches {
            let Batch { events: mut input, checkpoint, newest_commit_ms, heartbeat, offset, .. } = batch;
            let n = input.len();
            if !self.encoding.skipped.is_empty() {
                input.retain(|ev| !self.encoding.skipped.contains(ev.op));
            }
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
        for (n, newest_commit_ms, heartbeat, offset, checkpoint) in done {
            self.ctx.status.batch_done(n, newest_commit_ms, heartbeat, offset);
            // Operator state matches `pending` only while the group's last batch ends at it: a
            // later batch without a position (a transaction split across batches) moved the
            // state past it. A boundary at the same position (an idle server's heartbeat) keeps
            // it.
            let (newer, same) = match (&checkpoint, &self.newest) {
                (None, _) => (false, false),
                (Some(_), None) => (true, false),
                (Some(pos), Some(prev)) => {
                    let newer = pos.is_after(prev)?;
                    (newer, !newer && pos == prev)
                }
            };
            if newer {
                let pos = checkpoint.expect("newer");
                self.newest = Some(pos.clone());
                self.pending = Some(pos);
            }
            self.pending_current = newer || same;
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
            let ctx = SinkContext { connector: self.ctx.name.clone(), encoding: self.encoding.clone() };
            let dl = self.late_letters.entry(window.clone()).or_insert_with(|| DeadLetters::new(&target, ctx));
            let who = format!("window {window}");
            let mut backoff = Backoff::default();
            let target = Target::dead_letter(&who, None);
            let mut retry = Retrying::new(&self.ctx, target, &mut backoff);
            loop {
                match dl.write(&ev, &who, &reason).await {
                    Ok(()) => break retry.succeeded(()),
                    Err(e) => match retry.failed(e).await {
                        Ok(()) => {}
                        Err(Stopped::Aborted) => return Err(PipelineError::Aborted),
                        Err(Stopped::Failed(error)) => {
                            return Err(PipelineError::DeadLetter { sink: who.clone(), error: Box::new(error) })
                        }
                    },
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
    fn start_store(&mut self) -> Result<(), PipelineError> {
        if self.storing.is_some() || !self.can_store() {
            return Ok(());
        }
        let operators = self.chain.checkpoint()?;
        let pos = self.pending.take().expect("can_store");
        let store = self.store.clone();
        let name = self.ctx.name.to_string();
        self.storing = Some(tokio::task::spawn_blocking(move || {
            let result = store.commit(&name, &pos, &operators);
            (pos, result)
        }));
        Ok(())
    }

    /// A checkpoint was stored: tell the source (which confirms it to the server) and `/health`.
    fn stored(
        &mut self,
        done: Result<(Position, Result<(), StateError>), tokio::task::JoinError>,
    ) -> Result<(), PipelineError> {
        let (pos, result) = done.map_err(|e| StateError::Storage(format!("checkpoint task: {e}")))?;
        result?;
        self.last_store = Instant::now();
        self.chain.stored()?;
        self.ctx.status.checkpointed(serde_json::to_value(&pos).unwrap_or_default());
        self.ack.send_replace(Some(pos));
        Ok(())
    }
}
