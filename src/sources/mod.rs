//! Sources: where committed changes come from.
//!
//! A source runs as one task per connector. It reads changes in commit order, pushes them into its
//! [`Batcher`] and marks consistent boundaries with a [`Position`]; the pipeline stores a position
//! only once every sink has made everything before it durable, and reports it back through
//! `acked`, which the source forwards to the server (e.g. the replication slot's confirmed LSN).
//!
//! Connectors are registered by the explicit `match`es below; there is no registry.

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

#[derive(Debug, Clone)]
pub enum SourceConfig {
    Postgres(postgres::PostgresConfig),
}

pub const KINDS: [&str; 1] = ["postgres"];
const PLANNED_KINDS: [&str; 2] = ["mysql", "kafka"];

impl SourceConfig {
    pub fn read(mut s: Section, d: &mut Diag, connector: &str) -> Option<SourceConfig> {
        let kind = s.str(d, "kind")?;
        match kind.as_str() {
            "postgres" => postgres::config::read(s, d, connector).map(SourceConfig::Postgres),
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
        }
    }

    pub fn encoding(&self) -> Encoding {
        match self {
            SourceConfig::Postgres(c) => c.encoding,
        }
    }

    pub fn heartbeat_interval(&self) -> std::time::Duration {
        match self {
            SourceConfig::Postgres(c) => c.heartbeat_interval,
        }
    }

    /// A replication resource two connectors must not share: `(key, description)`.
    pub fn conflicts_with(&self, other: &SourceConfig) -> Option<(&'static str, String)> {
        match (self, other) {
            (SourceConfig::Postgres(a), SourceConfig::Postgres(b)) => {
                let same_db = a.host() == b.host() && a.port() == b.port() && a.dbname() == b.dbname();
                (same_db && a.slot == b.slot).then(|| ("slot", format!("replication slot `{}`", a.slot)))
            }
        }
    }

    /// Settings for `/connectors`, secrets redacted.
    pub fn describe(&self) -> serde_json::Value {
        match self {
            SourceConfig::Postgres(c) => c.describe(),
        }
    }
}

/// Where a connector's source resumes. Typed per source kind, with an explicit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    Postgres(postgres::PgPosition),
}

impl Position {
    /// Is `self` a later point than `older` (so storing it moves forward)?
    pub fn is_after(&self, older: &Position) -> bool {
        match (self, older) {
            (Position::Postgres(a), Position::Postgres(b)) => a.is_after(b),
        }
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
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
}

impl Classify for SourceError {
    fn class(&self) -> ErrorClass {
        match self {
            SourceError::Postgres(e) => e.class(),
        }
    }
}

/// Run a source until it is cancelled (returns `Ok`) or hits an error it cannot retry.
pub async fn run(cfg: &SourceConfig, ctx: SourceContext) -> Result<(), SourceError> {
    match cfg {
        SourceConfig::Postgres(c) => Ok(postgres::run(c, ctx).await?),
    }
}
