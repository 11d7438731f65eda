//! The sink side of the contract: what a sink kind must do for the pipeline.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::check::Finding;
use crate::event::{ChangeEvent, Encoding};
use crate::redis_client::RedisTls;
use crate::retry::Classified;
use crate::settings::{Diag, SecretUrl, Section};

/// What a replayed event does to a sink, which decides what a crash costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Writes are fenced by [`crate::event::Version`]: an event whose version is not newer than
    /// the one stored for its key is a no-op, so a replay after a crash changes nothing
    /// (Redis, Elasticsearch). At-least-once delivery, effectively-once result.
    Fenced,
    /// A replayed event is delivered again (stdout, and Kafka): consumers see duplicates after
    /// a crash, never a gap.
    AtLeastOnce,
}

impl Delivery {
    pub const fn as_str(self) -> &'static str {
        match self {
            Delivery::Fenced => "fenced",
            Delivery::AtLeastOnce => "at-least-once",
        }
    }
}

/// A configured sink (one `[[sink]]` of a connector file), which builds the running [`Sink`].
pub trait SinkSpec: fmt::Debug + Send + Sync {
    /// The `kind` of the configuration (`redis`, `elasticsearch`, `stdout`).
    fn kind(&self) -> &'static str;

    fn delivery(&self) -> Delivery;

    /// The kind's settings for `/connectors` and `check`, secrets redacted.
    fn describe(&self) -> serde_json::Value;

    /// What `check` names it by (`redis redis://…`, password redacted).
    fn title(&self) -> String;

    /// `tidemark check`: reach the sink and verify what it needs, each finding with its fix.
    fn check<'a>(&'a self, connector: &'a str, tables: &'a [String]) -> BoxFuture<'a, Vec<Finding>>;

    fn build(&self, ctx: SinkContext) -> Box<dyn Sink>;
}

/// A running sink: where change events are applied.
///
/// The contract the pipeline relies on:
/// - **Durable on return.** [`Sink::write`] returns `Ok` only once every event of the slice is
///   durable in the sink, or listed in [`WriteReport::rejected`]. The pipeline checkpoints a
///   position only after every sink has returned `Ok` for everything before it.
/// - **Per-key order.** Events of one key are applied in slice order (a sink may parallelise
///   across keys).
/// - **Fencing** (for [`Delivery::Fenced`] sinks): writing an event whose version is not newer
///   than the one stored for its key is a no-op, and deletes leave a versioned tombstone, so a
///   batch may be retried, or replayed after a crash, any number of times.
/// - **Probes.** An empty slice is a probe (sent with heartbeats): it must fail when the sink is
///   unreachable, so an idle pipeline notices an outage.
/// - **Errors.** An `Err` means nothing can be said about the batch: the pipeline retries all of
///   it ([`ErrorClass::Retry`]) or stops the connector ([`ErrorClass::Operator`],
///   [`ErrorClass::Fatal`]), by [`SinkError`]'s class. A single event the sink refuses for good
///   goes in [`WriteReport::rejected`] instead, and the sink's `on_error` policy decides.
pub trait Sink: Send {
    fn write<'a>(&'a mut self, events: &'a [ChangeEvent]) -> BoxFuture<'a, Result<WriteReport, SinkError>>;
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

/// Why a write failed as a whole: the kind's own error, with its class.
pub type SinkError = Classified;

/// What every sink knows about the connector it serves.
#[derive(Debug, Clone)]
pub struct SinkContext {
    pub connector: Arc<str>,
    pub encoding: Encoding,
}

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

/// Where rejected (or late) events go.
#[derive(Debug, Clone)]
pub enum DeadLetterTarget {
    /// JSON lines appended to a file.
    File(PathBuf),
    /// Entries of a Redis stream (`XADD`), one field per record field.
    RedisStream { url: SecretUrl, stream: String, tls: RedisTls },
}

impl DeadLetterTarget {
    /// `dead_letter_path`, or `dead_letter_url` with `dead_letter_stream`.
    pub fn read(s: &mut Section, d: &mut Diag, connector_hint: &str) -> Option<DeadLetterTarget> {
        let path = s.opt_str(d, "dead_letter_path").map(PathBuf::from);
        let url = s.opt_str(d, "dead_letter_url");
        let stream = s.opt_str(d, "dead_letter_stream");
        if stream.is_some() && url.is_none() {
            d.error(s.key("dead_letter_stream"), "only applies with dead_letter_url");
        }
        let tls = RedisTls::read(s, d, "dead_letter_", None, url.as_deref());
        if url.is_none() && tls != RedisTls::default() {
            d.error(s.key("dead_letter_ca_file"), "only applies with dead_letter_url");
        }
        match (path, url) {
            (Some(_), Some(_)) => {
                d.error(
                    s.key("dead_letter_url"),
                    "set either dead_letter_path (a file) or dead_letter_url (a Redis stream)",
                );
                None
            }
            (Some(p), None) => Some(DeadLetterTarget::File(p)),
            (None, Some(u)) => {
                if let Err(e) = crate::redis_client::check_url(&u) {
                    d.error(s.key("dead_letter_url"), e);
                }
                let stream = stream.unwrap_or_else(|| format!("tidemark:dead_letters:{connector_hint}"));
                Some(DeadLetterTarget::RedisStream { url: SecretUrl::new(u), stream, tls })
            }
            (None, None) => None,
        }
    }

    pub fn describe(&self) -> serde_json::Value {
        match self {
            DeadLetterTarget::File(p) => serde_json::json!({ "file": p.display().to_string() }),
            DeadLetterTarget::RedisStream { url, stream, tls } => {
                serde_json::json!({ "redis": url.redacted(), "stream": stream, "tls": tls.describe() })
            }
        }
    }
}
