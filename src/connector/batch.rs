//! Batches between a source and its sinks, and the adaptive batcher sources fill them with.
//!
//! The batcher hands a batch over as soon as the pipeline has room for it at a consistent boundary
//! (end of a transaction, a heartbeat, a snapshot chunk): at low load each transaction goes out
//! alone, with minimal latency. Under load the channel is full, so events accumulate until the
//! batch reaches its row or byte cap or its fill timeout, and the send then waits: the source is
//! slowed down, memory stays bounded by `buffer_batches` full batches.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::position::Position;
use super::status::ConnectorStatus;
use crate::event::ChangeEvent;

pub const DEFAULT_MAX_BATCH_ROWS: usize = 4096;
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 << 20;
pub const DEFAULT_MAX_BATCH_WAIT: Duration = Duration::from_millis(5);
pub const DEFAULT_BUFFER_BATCHES: usize = 4;

/// Batching and buffering of one connector's pipeline.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// A batch is handed to the sinks once it holds this many events...
    pub max_batch_rows: NonZeroUsize,
    /// ...or this many bytes of row data...
    pub max_batch_bytes: NonZeroUsize,
    /// ...or its first event has waited this long, or the source has nothing more right now.
    pub max_batch_wait: Duration,
    /// Batches buffered between the source and the sinks; with the limits above this bounds the
    /// memory a stalled sink can make the daemon hold.
    pub buffer_batches: NonZeroUsize,
    /// Health threshold for this connector; the daemon's `max_lag` when absent.
    pub max_lag: Option<Duration>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_batch_rows: NonZeroUsize::new(DEFAULT_MAX_BATCH_ROWS).unwrap(),
            max_batch_bytes: NonZeroUsize::new(DEFAULT_MAX_BATCH_BYTES).unwrap(),
            max_batch_wait: DEFAULT_MAX_BATCH_WAIT,
            buffer_batches: NonZeroUsize::new(DEFAULT_BUFFER_BATCHES).unwrap(),
            max_lag: None,
        }
    }
}

/// A run of events, and the position that becomes durable once every sink has applied them (and
/// everything before them).
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<ChangeEvent>,
    /// Set when the batch ends at a consistent boundary.
    pub checkpoint: Option<Position>,
    /// Commit time of the newest change (or heartbeat) in the batch, for lag.
    pub newest_commit_ms: Option<i64>,
    /// The batch ends with a heartbeat: applying it proves the pipeline is caught up to it.
    pub heartbeat: bool,
    /// Source log offset (e.g. LSN) at the batch's end, for `lag_bytes`. (Where the source
    /// resumes is `checkpoint`: this is only a distance measure.)
    pub offset: Option<u64>,
    pub bytes: usize,
}

/// Wait until a batch's [`Batcher::deadline`], forever when there is none (for a `select!`
/// branch guarded by `deadline.is_some()`).
pub async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The pipeline has stopped; the source should stop too.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline has stopped")]
pub struct PipelineClosed;

pub struct Batcher {
    tx: mpsc::Sender<Batch>,
    cur: Batch,
    started: Option<Instant>,
    cfg: PipelineConfig,
    status: Arc<ConnectorStatus>,
    /// The checkpoint of the last batch handed to the pipeline.
    last_sent: Option<Position>,
}

impl Batcher {
    pub fn new(tx: mpsc::Sender<Batch>, cfg: PipelineConfig, status: Arc<ConnectorStatus>) -> Self {
        Batcher { tx, cur: Batch::default(), started: None, cfg, status, last_sent: None }
    }

    pub fn push(&mut self, ev: ChangeEvent) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        self.cur.bytes += ev.approx_bytes();
        self.cur.events.push(ev);
    }

    /// Mark a consistent boundary: once everything pushed so far is durable, `checkpoint` may be
    /// stored.
    pub fn mark(&mut self, checkpoint: Position, commit_ms: Option<i64>, offset: Option<u64>, heartbeat: bool) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        self.cur.checkpoint = Some(checkpoint);
        if let Some(ts) = commit_ms {
            self.cur.newest_commit_ms = Some(self.cur.newest_commit_ms.map_or(ts, |t| t.max(ts)));
        }
        if offset.is_some() {
            self.cur.offset = offset;
        }
        self.cur.heartbeat = heartbeat;
    }

    pub fn is_empty(&self) -> bool {
        self.started.is_none()
    }

    /// The byte cap of one batch.
    pub fn max_bytes(&self) -> usize {
        self.cfg.max_batch_bytes.get()
    }

    pub fn is_full(&self) -> bool {
        self.cur.events.len() >= self.cfg.max_batch_rows.get() || self.cur.bytes >= self.cfg.max_batch_bytes.get()
    }

    /// When the pending batch must go out even if it is not full.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.started.map(|s| tokio::time::Instant::from_std(s + self.cfg.max_batch_wait))
    }

    /// Take the pending batch (fields passed separately so a send permit may borrow `tx`).
    fn take(cur: &mut Batch, started: &mut Option<Instant>, last_sent: &mut Option<Position>) -> Batch {
        *started = None;
        let batch = std::mem::take(cur);
        if batch.checkpoint.is_some() {
            last_sent.clone_from(&batch.checkpoint);
        }
        batch
    }

    /// Drop what has not been handed over (a source restarting will read it again).
    pub fn discard_pending(&mut self) {
        self.started = None;
        self.cur = Batch::default();
    }

    /// The checkpoint of the last batch handed to the pipeline.
    pub fn last_sent(&self) -> Option<&Position> {
        self.last_sent.as_ref()
    }

    /// Send the pending batch, waiting for room (backpressure).
    pub async fn flush(&mut self) -> Result<(), PipelineClosed> {
        if self.is_empty() {
            return Ok(());
        }
        let permit = self.tx.reserve().await.map_err(|_| PipelineClosed)?;
        let batch = Self::take(&mut self.cur, &mut self.started, &mut self.last_sent);
        self.status.batch_received(batch.events.len());
        permit.send(batch);
        Ok(())
    }

    /// Send the pending batch if the pipeline has room right now; report whether it went.
    pub fn try_flush(&mut self) -> Result<bool, PipelineClosed> {
        if self.is_empty() {
            return Ok(true);
        }
        match self.tx.try_reserve() {
            Ok(permit) => {
                let batch = Self::take(&mut self.cur, &mut self.started, &mut self.last_sent);
                self.status.batch_received(batch.events.len());
                permit.send(batch);
                Ok(true)
            }
            Err(mpsc::error::TrySendError::Full(())) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(())) => Err(PipelineClosed),
        }
    }

    /// After a boundary: send if full, else if the pipeline is idle.
    pub async fn after_boundary(&mut self) -> Result<(), PipelineClosed> {
        if self.is_full() {
            self.flush().await
        } else {
            self.try_flush().map(|_| ())
        }
    }
}
