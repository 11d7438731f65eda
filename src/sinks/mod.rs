//! Sinks: where change events are applied.
//!
//! The contract every sink keeps (the pipeline relies on it):
//! - [`Sink::write`] returns only once every event of the slice is durable in the sink (or
//!   reported in [`WriteReport::rejected`]), and applies events for one key in slice order.
//! - Writes are fenced by [`crate::event::Version`]: writing an event whose version is not newer
//!   than the one stored for its key is a no-op. So a batch may be retried, or replayed after a
//!   crash, any number of times: delivery is at-least-once, the result effectively-once.
//! - An empty slice is a probe (sent with heartbeats): it must fail when the sink is unreachable.
//! - An `Err` means nothing can be said about the batch: the pipeline retries all of it (transient)
//!   or stops the connector (needs an operator), according to [`SinkError::class`].

pub mod redis;
pub mod stdout;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Diag, Section};
use crate::event::{ChangeEvent, Encoding};
use crate::retry::{Classify, ErrorClass};

/// What to do with an event a sink rejects permanently (e.g. a key holding a value of another
/// type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Stop the connector; the event is retried after the operator fixes the cause.
    Fail,
    /// Count it, log it, go on.
    Skip,
    /// Append it (Debezium JSON plus the error) to the dead-letter file, count it, go on.
    DeadLetter,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    Stdout,
    Redis(redis::RedisConfig),
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub on_error: ErrorPolicy,
    /// Dead-letter file; `<data_dir>/dead_letters/<connector>.jsonl` when absent.
    pub dead_letter_path: Option<PathBuf>,
    pub kind: SinkKind,
}

pub const KINDS: [&str; 2] = ["stdout", "redis"];
const PLANNED_KINDS: [&str; 2] = ["elasticsearch", "kafka"];
pub const COMMON_KEYS: [&str; 4] = ["kind", "name", "on_error", "dead_letter_path"];

impl SinkConfig {
    pub fn read(mut s: Section, index: usize, d: &mut Diag) -> Option<SinkConfig> {
        let kind = s.str(d, "kind")?;
        let name =
            s.opt_str(d, "name").unwrap_or_else(|| if index == 0 { kind.clone() } else { format!("{kind}-{index}") });
        let on_error = match s.opt_choice(d, "on_error", &["fail", "skip", "dead_letter"]).as_deref() {
            Some("skip") => ErrorPolicy::Skip,
            Some("dead_letter") => ErrorPolicy::DeadLetter,
            _ => ErrorPolicy::Fail,
        };
        let dead_letter_path = s.opt_str(d, "dead_letter_path").map(PathBuf::from);
        let kind = match kind.as_str() {
            "stdout" => {
                s.finish(d, &COMMON_KEYS);
                SinkKind::Stdout
            }
            "redis" => SinkKind::Redis(redis::config::read(s, d)?),
            k if PLANNED_KINDS.contains(&k) => {
                d.error(
                    format!("{}.kind", s.path()),
                    format!("sink kind `{k}` is not available in this version yet (available: {})", KINDS.join(", ")),
                );
                return None;
            }
            other => {
                d.error(
                    format!("{}.kind", s.path()),
                    format!("unknown sink kind `{other}` (expected one of: {})", KINDS.join(", ")),
                );
                return None;
            }
        };
        Some(SinkConfig { name, on_error, dead_letter_path, kind })
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SinkKind::Stdout => "stdout",
            SinkKind::Redis(_) => "redis",
        }
    }

    /// The sink's settings for `/connectors`, secrets redacted.
    pub fn describe(&self) -> serde_json::Value {
        let mut j = match &self.kind {
            SinkKind::Stdout => serde_json::json!({}),
            SinkKind::Redis(r) => r.describe(),
        };
        j["name"] = self.name.clone().into();
        j["kind"] = self.kind_name().into();
        j
    }
}

/// What a sink did with a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Events that changed the sink.
    pub applied: u64,
    /// Events the sink already had (same or newer version): replays made harmless by fencing.
    pub stale: u64,
    /// Events the sink refused permanently, by index in the batch, with the reason.
    pub rejected: Vec<(usize, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Redis(#[from] redis::RedisSinkError),
    #[error("stdout: {0}")]
    Stdout(std::io::Error),
}

impl Classify for SinkError {
    fn class(&self) -> ErrorClass {
        match self {
            SinkError::Redis(e) => e.class(),
            // A closed pipe will not reopen.
            SinkError::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ErrorClass::Operator,
            SinkError::Stdout(_) => ErrorClass::Retry,
        }
    }
}

/// What every sink knows about the connector it serves.
#[derive(Debug, Clone)]
pub struct SinkContext {
    pub connector: Arc<str>,
    pub encoding: Encoding,
}

pub enum Sink {
    Stdout(stdout::StdoutSink),
    Redis(Box<redis::RedisSink>),
}

impl Sink {
    pub fn build(cfg: &SinkConfig, ctx: SinkContext) -> Sink {
        match &cfg.kind {
            SinkKind::Stdout => Sink::Stdout(stdout::StdoutSink::new(ctx)),
            SinkKind::Redis(r) => Sink::Redis(Box::new(redis::RedisSink::new(r.clone(), ctx))),
        }
    }

    pub async fn write(&mut self, events: &[ChangeEvent]) -> Result<WriteReport, SinkError> {
        match self {
            Sink::Stdout(s) => s.write(events).await.map_err(SinkError::Stdout),
            Sink::Redis(s) => Ok(s.write(events).await?),
        }
    }
}
