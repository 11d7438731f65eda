//! The source side of the contract: what a source kind must do for the pipeline, and what the
//! pipeline gives it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::batch::Batcher;
use super::position::Position;
use super::status::ConnectorStatus;
use crate::check::Finding;
use crate::event::{Encoding, TableRef};
use crate::metrics::Metrics;
use crate::retry::{Backoff, Classified, Classify, ErrorClass};
use crate::state::StateStore;

/// A configured source (`[source]` of a connector file): one kind of server to read committed
/// changes from.
///
/// The contract the pipeline relies on, for every kind:
/// - **Order.** [`Source::run`] pushes changes into [`SourceContext::batcher`] in commit order; the
///   changes of one key therefore arrive in the order they were committed.
/// - **Boundaries.** It marks a consistent boundary ([`Batcher::mark`]) only where everything
///   before it has been pushed (the end of a transaction, a heartbeat, a snapshot chunk), with a
///   [`Position`] from which a restart reads exactly what follows. Marked positions never go
///   backwards.
/// - **Durability.** It confirms progress to the server (a slot's confirmed LSN, a committed
///   offset) only up to positions received on [`SourceContext::acked`]: those every sink has made
///   durable and the store has checkpointed. A crash therefore replays a suffix, never skips.
/// - **Versions.** Every event carries a [`crate::event::Version`] that grows with the source
///   order and is the same when the change is read again, so fenced sinks turn replays into
///   no-ops.
/// - **Tables.** Before pushing the first change of a table, it reports the table with its
///   columns through [`SourceContext::captured`], which refuses tables the connector's
///   transforms cannot run on.
/// - **Errors.** Transient failures it retries itself (reconnect with [`SourceContext::recover`]
///   and resume from the last acknowledged position). It returns `Ok(())` when cancelled or
///   when the pipeline has closed, and `Err` only for what it cannot retry, classified.
pub trait Source: fmt::Debug + Send + Sync {
    /// The `kind` of the configuration (`postgres`, `mysql`).
    fn kind(&self) -> &'static str;

    /// The include list (`schema.table` or `db.table`, globs allowed).
    fn tables(&self) -> &[String];

    /// How the connector's values are encoded (Debezium's options).
    fn encoding(&self) -> Encoding;

    /// How often an idle source proves it is caught up (see [`ConnectorStatus`]'s lag).
    fn heartbeat_interval(&self) -> Duration;

    /// The names of the figures this kind reports in its health section
    /// ([`super::SourceHealth`]), shown in `/health` (as `null` until the first sample).
    fn health_figures(&self) -> &'static [&'static str] {
        &[]
    }

    /// The replication resource this source holds exclusively, if any: two connectors whose
    /// sources return the same one are refused at configuration time.
    fn exclusive(&self) -> Option<Exclusive>;

    /// The settings for `/connectors` and `check`, secrets redacted.
    fn describe(&self) -> serde_json::Value;

    /// A one-line name for `check`'s report (`postgres postgres://…`, password redacted).
    fn title(&self) -> String;

    /// `tidemark check`: connect and verify every prerequisite, each finding with its fix.
    fn check(&self) -> BoxFuture<'_, Vec<Finding>>;

    /// Read changes until cancelled; see the trait's contract.
    fn run(&self, ctx: SourceContext) -> BoxFuture<'_, Result<(), SourceError>>;
}

/// A replication resource (a slot, a replica server id) on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusive {
    /// The configuration key that chooses it (`slot`, `server_id`).
    pub key: &'static str,
    /// What identifies it: server and resource.
    pub identity: String,
    /// How to name it in the error (`replication slot "s"`).
    pub description: String,
}

/// Whether a connector reads its tables once before streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Read every table once when the connector first starts, then stream.
    Initial,
    /// Stream only.
    Never,
}

impl SnapshotMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Initial => "initial",
            SnapshotMode::Never => "never",
        }
    }
}

/// Does `container.table` (a PostgreSQL schema or a MySQL database) match one of the include
/// patterns (`container.table`, with `*` and `?` globs)?
pub fn table_included(patterns: &[String], container: &str, table: &str) -> bool {
    patterns.iter().any(|p| {
        let (pc, pt) = p.split_once('.').unwrap_or(("", p));
        glob(pc.as_bytes(), container.as_bytes()) && glob(pt.as_bytes(), table.as_bytes())
    })
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// The way out when a connector's stored position can no longer be streamed from.
pub fn snapshot_again(connector: &str) -> String {
    format!("run `tidemark offsets reset {connector}` (with the daemon stopped) to snapshot again")
}

/// A table a source captures, as the server's catalog describes it.
#[derive(Debug, Clone)]
pub struct CapturedTable {
    pub table: TableRef,
    pub columns: Vec<String>,
    /// The key columns, in key order.
    pub key: Vec<String>,
}

/// Judges captured tables against what the connector will do with them (its transforms' column
/// references): one message per problem, naming the file, the key and the column.
pub type TableCheck = Arc<dyn Fn(&CapturedTable) -> Vec<String> + Send + Sync>;

/// Everything a running source needs.
pub struct SourceContext {
    pub connector: Arc<str>,
    pub batcher: Batcher,
    /// The last position every sink has made durable and the store has checkpointed.
    pub acked: watch::Receiver<Option<Position>>,
    /// Where to resume: the stored position, if any.
    pub resume: Option<Position>,
    pub cancel: CancellationToken,
    pub status: Arc<ConnectorStatus>,
    pub metrics: Arc<Metrics>,
    /// For schema history (positions are stored by the pipeline, not the source).
    pub store: StateStore,
    /// See [`SourceContext::captured`].
    pub table_check: TableCheck,
    /// Where records a source cannot read go when it is configured to dead-letter them and
    /// names no target of its own: `<data_dir>/dead_letters/<connector>.jsonl`.
    pub dead_letters: super::DeadLetterTarget,
}

impl SourceContext {
    /// Report the tables the source is about to capture. `Err` (every problem, joined) when the
    /// connector cannot run on them: the source stops with it, as an operator error.
    pub fn captured(&self, tables: &[CapturedTable]) -> Result<(), String> {
        let problems: Vec<String> = tables.iter().flat_map(|t| (self.table_check)(t)).collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// After a transient source failure: log it, show it in `/health`, wait (backoff), then wait
    /// until the pipeline has finished with every batch already handed over, so the next session
    /// resumes from a position that is durable and positions never move backwards. Returns the
    /// position to resume from (`Some(None)`: nothing stored yet), or `None` when cancelled.
    pub async fn recover(
        &mut self,
        error: &(dyn fmt::Display + Sync),
        backoff: &mut Backoff,
    ) -> Option<Option<Position>> {
        let delay = backoff.next_delay();
        tracing::warn!(connector = %self.connector, %error, retry_in_ms = delay.as_millis() as u64, "source failed; reconnecting");
        self.status.set_source_error(Some(error.to_string()));
        // Whatever was read but not handed over is read again by the next session.
        self.batcher.discard_pending();
        tokio::select! {
            _ = self.cancel.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        let sent = self.batcher.last_sent().cloned();
        let mut acked = self.acked.clone();
        tokio::select! {
            _ = self.cancel.cancelled() => return None,
            // A position of another kind is never acknowledged: waiting on it would be a bug
            // elsewhere, and the cancel still ends the wait.
            _ = acked.wait_for(|a| match (&sent, a) {
                (None, _) => true,
                (Some(s), Some(a)) => s.is_after(a).is_ok_and(|after| !after),
                (Some(_), None) => false,
            }) => {}
        }
        let acked = self.acked.borrow().clone();
        Some(acked)
    }
}

/// Why a source stopped: the kind's own error, with its class.
pub type SourceError = Classified;

/// A source kind's error, as the reconnect loop sees it.
pub trait SessionError: Classify + fmt::Display + Sync {
    /// The pipeline has closed: the source ends normally.
    fn pipeline_closed(&self) -> bool;
}

/// One session of a source kind: connect, snapshot if one is due, stream; from the resume point
/// given. It owns the connection for its lifetime; any error ends it.
pub type Session<C, P, E> =
    for<'a> fn(&'a C, &'a mut SourceContext, Option<P>, &'a mut Backoff) -> BoxFuture<'a, Result<(), E>>;

/// The reconnect loop every source kind runs: sessions one after another, each resuming from the
/// last acknowledged position ([`SourceContext::recover`] waits for it), until the source is
/// cancelled, the pipeline closes, or a session fails with an error that retrying cannot fix.
/// `position` takes the kind's own position out of a stored one.
pub async fn run_sessions<C: ?Sized, P: Clone, E: SessionError>(
    cfg: &C,
    mut ctx: SourceContext,
    position: fn(Position) -> Option<P>,
    session: Session<C, P, E>,
) -> Result<(), E> {
    let mut backoff = Backoff::default();
    let mut resume = ctx.resume.take().and_then(position);
    loop {
        match session(cfg, &mut ctx, resume.clone(), &mut backoff).await {
            Ok(()) => return Ok(()),
            Err(e) if e.pipeline_closed() => return Ok(()),
            Err(e) if e.class() == ErrorClass::Retry && !ctx.cancel.is_cancelled() => {
                match ctx.recover(&e, &mut backoff).await {
                    None => return Ok(()),
                    Some(Some(p)) => {
                        if let Some(p) = position(p) {
                            resume = Some(p);
                        }
                    }
                    Some(None) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let p = vec!["public.cust*".to_string(), "sales.?rders".to_string()];
        assert!(table_included(&p, "public", "customers"));
        assert!(table_included(&p, "sales", "orders"));
        assert!(!table_included(&p, "public", "orders"));
        assert!(!table_included(&p, "sales", "xorders_old"));
    }
}
