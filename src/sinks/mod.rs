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

pub mod elasticsearch;
pub mod redis;
pub mod stdout;
pub mod template;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Diag, SecretUrl, Section};
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
    Elasticsearch(elasticsearch::EsConfig),
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub on_error: ErrorPolicy,
    /// Where dead letters go; `<data_dir>/dead_letters/<connector>.jsonl` when absent.
    pub dead_letter: Option<DeadLetterTarget>,
    pub kind: SinkKind,
}

pub const KINDS: [&str; 3] = ["stdout", "redis", "elasticsearch"];
const PLANNED_KINDS: [&str; 1] = ["kafka"];
pub const COMMON_KEYS: [&str; 6] =
    ["kind", "name", "on_error", "dead_letter_path", "dead_letter_url", "dead_letter_stream"];

/// Where a sink's dead letters go.
#[derive(Debug, Clone)]
pub enum DeadLetterTarget {
    /// JSON lines appended to a file.
    File(PathBuf),
    /// Entries of a Redis stream (`XADD`), one field per record field.
    RedisStream { url: SecretUrl, stream: String },
}

impl DeadLetterTarget {
    pub fn read(s: &mut Section, d: &mut Diag, connector_hint: &str) -> Option<DeadLetterTarget> {
        let path = s.opt_str(d, "dead_letter_path").map(PathBuf::from);
        let url = s.opt_str(d, "dead_letter_url");
        let stream = s.opt_str(d, "dead_letter_stream");
        match (path, url) {
            (Some(_), Some(_)) => {
                d.error(
                    s.key("dead_letter_url"),
                    "set either dead_letter_path (a file) or dead_letter_url (a Redis stream)",
                );
                None
            }
            (Some(p), None) => {
                if stream.is_some() {
                    d.error(s.key("dead_letter_stream"), "only applies with dead_letter_url");
                }
                Some(DeadLetterTarget::File(p))
            }
            (None, Some(u)) => {
                if !u.starts_with("redis://") {
                    d.error(
                        s.key("dead_letter_url"),
                        format!("`{}` must be a redis:// URL", SecretUrl::new(u.clone())),
                    );
                } else if let Err(e) = ::redis::Client::open(u.as_str()) {
                    d.error(s.key("dead_letter_url"), format!("invalid Redis URL {}: {e}", SecretUrl::new(u.clone())));
                }
                let stream = stream.unwrap_or_else(|| format!("tidemark:dead_letters:{connector_hint}"));
                Some(DeadLetterTarget::RedisStream { url: SecretUrl::new(u), stream })
            }
            (None, None) => {
                if stream.is_some() {
                    d.error(s.key("dead_letter_stream"), "only applies with dead_letter_url");
                }
                None
            }
        }
    }

    pub fn describe(&self) -> serde_json::Value {
        match self {
            DeadLetterTarget::File(p) => serde_json::json!({ "file": p.display().to_string() }),
            DeadLetterTarget::RedisStream { url, stream } => {
                serde_json::json!({ "redis": url.redacted(), "stream": stream })
            }
        }
    }
}

impl SinkConfig {
    pub fn read(mut s: Section, index: usize, connector: &str, d: &mut Diag) -> Option<SinkConfig> {
        let kind = s.str(d, "kind")?;
        let name =
            s.opt_str(d, "name").unwrap_or_else(|| if index == 0 { kind.clone() } else { format!("{kind}-{index}") });
        let on_error = match s.opt_choice(d, "on_error", &["fail", "skip", "dead_letter"]).as_deref() {
            Some("skip") => ErrorPolicy::Skip,
            Some("dead_letter") => ErrorPolicy::DeadLetter,
            _ => ErrorPolicy::Fail,
        };
        let dead_letter = DeadLetterTarget::read(&mut s, d, connector);
        let kind = match kind.as_str() {
            "stdout" => {
                s.finish(d, &COMMON_KEYS);
                SinkKind::Stdout
            }
            "redis" => SinkKind::Redis(redis::config::read(s, d)?),
            "elasticsearch" => SinkKind::Elasticsearch(elasticsearch::config::read(s, d)?),
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
        Some(SinkConfig { name, on_error, dead_letter, kind })
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SinkKind::Stdout => "stdout",
            SinkKind::Redis(_) => "redis",
            SinkKind::Elasticsearch(_) => "elasticsearch",
        }
    }

    /// The sink's settings for `/connectors`, secrets redacted.
    pub fn describe(&self) -> serde_json::Value {
        let mut j = match &self.kind {
            SinkKind::Stdout => serde_json::json!({}),
            SinkKind::Redis(r) => r.describe(),
            SinkKind::Elasticsearch(e) => e.describe(),
        };
        j["name"] = self.name.clone().into();
        if let Some(t) = &self.dead_letter {
            j["dead_letter"] = t.describe();
        }
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
    #[error(transparent)]
    Elasticsearch(#[from] elasticsearch::EsSinkError),
    #[error("stdout: {0}")]
    Stdout(std::io::Error),
}

impl Classify for SinkError {
    fn class(&self) -> ErrorClass {
        match self {
            SinkError::Redis(e) => e.class(),
            SinkError::Elasticsearch(e) => e.class(),
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
    Elasticsearch(Box<elasticsearch::EsSink>),
}

impl Sink {
    pub fn build(cfg: &SinkConfig, ctx: SinkContext) -> Sink {
        match &cfg.kind {
            SinkKind::Stdout => Sink::Stdout(stdout::StdoutSink::new(ctx)),
            SinkKind::Redis(r) => Sink::Redis(Box::new(redis::RedisSink::new(r.clone(), ctx))),
            SinkKind::Elasticsearch(e) => Sink::Elasticsearch(Box::new(elasticsearch::EsSink::new(e.clone(), ctx))),
        }
    }

    pub async fn write(&mut self, events: &[ChangeEvent]) -> Result<WriteReport, SinkError> {
        match self {
            Sink::Stdout(s) => s.write(events).await.map_err(SinkError::Stdout),
            Sink::Redis(s) => Ok(s.write(events).await?),
            Sink::Elasticsearch(s) => Ok(s.write(events).await?),
        }
    }
}
