//! Sources: where committed changes come from.
//!
//! A source runs as one task per connector. It reads changes in commit order, pushes them into its
//! [`Batcher`] and marks consistent boundaries with a [`Position`]; the pipeline stores a position
//! only once every sink has made everything before it durable, and reports it back through
//! `acked`, which the source forwards to the server (e.g. the replication slot's confirmed LSN).
//!
//! Connectors are registered by the explicit `match`es below; there is no registry.

pub mod mysql;
pub mod postgres;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Diag, Section};
use crate::event::Encoding;
use crate::metrics::Metrics;
use crate::pipeline::batch::Batcher;
use crate::pipeline::status::ConnectorStatus;
use crate::retry::{Classify, ErrorClass};

// One per connector, built once at start: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Postgres(postgres::PostgresConfig),
    Mysql(mysql::MysqlConfig),
}

pub const KINDS: [&str; 2] = ["postgres", "mysql"];
const PLANNED_KINDS: [&str; 1] = ["kafka"];

impl SourceConfig {
    pub fn read(mut s: Section, d: &mut Diag, connector: &str) -> Option<SourceConfig> {
        let kind = s.str(d, "kind")?;
        match kind.as_str() {
            "postgres" => postgres::config::read(s, d, connector).map(SourceConfig::Postgres),
            "mysql" => mysql::config::read(s, d, connector).map(SourceConfig::Mysql),
            k if PLANNED_KINDS.contains(&k) => {
                d.error(
                    s.key("kind"),
                    format!("source kind `{k}` is not available in this version yet (available: {})", KINDS.join(", ")),
                );
                None
            }
            other => {
                d.error(
                    s.key("kind"),
                    format!("unknown source kind `{other}` (expected one of: {})", KINDS.join(", ")),
                );
                None
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mysql(_) => "mysql",
        }
    }

    /// The include list (`schema.table`, globs allowed).
    pub fn tables(&self) -> &[String] {
        match self {
            SourceConfig::Postgres(p) => &p.tables,
            SourceConfig::Mysql(m) => &m.tables,
        }
    }

    pub fn encoding(&self) -> Encoding {
        match self {
            SourceConfig::Postgres(c) => c.encoding,
            SourceConfig::Mysql(c) => c.encoding,
        }
    }

    pub fn heartbeat_interval(&self) -> std::time::Duration {
        match self {
            SourceConfig::Postgres(c) => c.heartbeat_interval,
            SourceConfig::Mysql(c) => c.heartbeat_interval,
        }
    }

    /// A replication resource two connectors must not share: `(key, description)`.
    pub fn conflicts_with(&self, other: &SourceConfig) -> Option<(&'static str, String)> {
        match (self, other) {
            (SourceConfig::Postgres(a), SourceConfig::Postgres(b)) => {
                let same_db = a.host() == b.host() && a.port() == b.port() && a.dbname() == b.dbname();
                (same_db && a.slot == b.slot).then(|| ("slot", format!("replication slot `{}`", a.slot)))
            }
            (SourceConfig::Mysql(a), SourceConfig::Mysql(b)) => {
                let same_server = a.host() == b.host() && a.port() == b.port();
                (same_server && a.server_id == b.server_id)
                    .then(|| ("server_id", format!("replica server id {} (set source.server_id)", a.server_id)))
            }
            _ => None,
        }
    }

    /// Settings for `/connectors`, secrets redacted.
    pub fn describe(&self) -> serde_json::Value {
        match self {
            SourceConfig::Postgres(c) => c.describe(),
            SourceConfig::Mysql(c) => c.describe(),
        }
    }
}

/// The way out when a connector's stored position can no longer be streamed from.
pub fn snapshot_again(connector: &str) -> String {
    format!("run `tidemark offsets reset {connector}` (with the daemon stopped) to snapshot again")
}

/// Where a connector's source resumes. Typed per source kind, with an explicit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    Postgres(postgres::PgPosition),
    Mysql(mysql::binlog::MyPosition),
}

impl Position {
    /// Is `self` a later point than `older` (so storing it moves forward)?
    pub fn is_after(&self, older: &Position) -> bool {
        match (self, older) {
            (Position::Postgres(a), Position::Postgres(b)) => a.is_after(b),
            (Position::Mysql(a), Position::Mysql(b)) => a.is_after(b),
            // A connector's source kind never changes under a stored position.
            _ => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Read every table once when the connector first starts, then stream.
    Initial,
    /// Stream only.
    Never,
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

/// How far an initial snapshot has got; stored with the position while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// Tables read completely (`schema.table`).
    pub done: Vec<String>,
    /// The table being read, and the text of the key of the last row read from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<Option<String>>>,
}

impl SnapshotProgress {
    /// Later than `older` (key text cannot be ordered, so any change within the same table
    /// counts as progress).
    pub fn is_after(&self, older: &SnapshotProgress) -> bool {
        self != older && self.done.len() >= older.done.len()
    }
}

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
    pub store: crate::state::StateStore,
    /// The connector's transforms, whose column references the source checks against every
    /// captured table at startup.
    pub transforms: crate::transforms::Specs,
}

impl SourceContext {
    /// Check the transforms against a captured table; the messages of every problem, joined.
    pub fn check_transforms(
        &self,
        table: &crate::event::TableRef,
        columns: &[String],
        key: &[String],
    ) -> Result<(), String> {
        let errors = self.transforms.check_table(table, columns, key);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// After a transient source failure: log it, show it in `/health`, wait (backoff), then wait
/// until the pipeline has finished with every batch already handed over, so the next session
/// resumes from a position that is durable and positions never move backwards. Returns the
/// position to resume from (`Some(None)`: nothing stored yet), or `None` when cancelled.
pub async fn recover(
    ctx: &mut SourceContext,
    error: &(dyn std::fmt::Display + Sync),
    backoff: &mut crate::retry::Backoff,
) -> Option<Option<Position>> {
    let delay = backoff.next_delay();
    tracing::warn!(connector = %ctx.connector, %error, retry_in_ms = delay.as_millis() as u64, "source failed; reconnecting");
    ctx.status.set_source_error(Some(error.to_string()));
    // Whatever was read but not handed over is read again by the next session.
    ctx.batcher.discard_pending();
    tokio::select! {
        _ = ctx.cancel.cancelled() => return None,
        _ = tokio::time::sleep(delay) => {}
    }
    let sent = ctx.batcher.last_sent().cloned();
    let mut acked = ctx.acked.clone();
    tokio::select! {
        _ = ctx.cancel.cancelled() => return None,
        _ = acked.wait_for(|a| match (&sent, a) {
            (None, _) => true,
            (Some(s), Some(a)) => !s.is_after(a),
            (Some(_), None) => false,
        }) => {}
    }
    let acked = ctx.acked.borrow().clone();
    Some(acked)
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
    #[error(transparent)]
    Mysql(#[from] mysql::MyError),
}

impl Classify for SourceError {
    fn class(&self) -> ErrorClass {
        match self {
            SourceError::Postgres(e) => e.class(),
            SourceError::Mysql(e) => e.class(),
        }
    }
}

/// Run a source until it is cancelled (returns `Ok`) or hits an error it cannot retry.
pub async fn run(cfg: &SourceConfig, ctx: SourceContext) -> Result<(), SourceError> {
    match cfg {
        SourceConfig::Postgres(c) => Ok(postgres::run(c, ctx).await?),
        SourceConfig::Mysql(c) => Ok(mysql::run(c, ctx).await?),
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
