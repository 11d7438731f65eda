//! Sinks: where change events are applied. Each kind lives in its own folder (or file) and
//! implements [`SinkSpec`] and [`crate::connector::Sink`], whose docs state the contract; this
//! file is the one place that turns a `[[sink]]` section's `kind` into one, and reads the keys
//! every kind shares.

pub mod elasticsearch;
pub mod kafka;
pub mod redis;
pub mod stdout;
pub mod template;

use std::sync::Arc;

use crate::connector::{DeadLetterTarget, ErrorPolicy, SinkSpec};
use crate::settings::{Diag, Section};

/// One `[[sink]]` of a connector: the keys every kind has, and the kind's own settings.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub on_error: ErrorPolicy,
    /// Where dead letters go; `<data_dir>/dead_letters/<connector>.jsonl` when absent.
    pub dead_letter: Option<DeadLetterTarget>,
    pub spec: Arc<dyn SinkSpec>,
}

pub const KINDS: [&str; 4] = ["stdout", "redis", "elasticsearch", "kafka"];
/// The keys every kind shares (each kind's reader allows them besides its own).
pub const COMMON_KEYS: [&str; 9] = [
    "kind",
    "name",
    "on_error",
    "dead_letter_path",
    "dead_letter_url",
    "dead_letter_stream",
    "dead_letter_ca_file",
    "dead_letter_cert_file",
    "dead_letter_key_file",
];

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
        let spec: Arc<dyn SinkSpec> = match kind.as_str() {
            "stdout" => {
                s.finish(d, &COMMON_KEYS);
                Arc::new(stdout::StdoutConfig)
            }
            "redis" => Arc::new(redis::config::read(s, d)?),
            "elasticsearch" => Arc::new(elasticsearch::config::read(s, d)?),
            "kafka" => Arc::new(kafka::config::read(s, d)?),
            other => {
                d.error(
                    format!("{}.kind", s.path()),
                    format!("unknown sink kind `{other}` (expected one of: {})", KINDS.join(", ")),
                );
                return None;
            }
        };
        Some(SinkConfig { name, on_error, dead_letter, spec })
    }

    pub fn kind_name(&self) -> &'static str {
        self.spec.kind()
    }

    /// The sink's settings for `/connectors`, secrets redacted.
    pub fn describe(&self) -> serde_json::Value {
        let mut j = self.spec.describe();
        j["name"] = self.name.clone().into();
        if let Some(t) = &self.dead_letter {
            j["dead_letter"] = t.describe();
        }
        j["kind"] = self.kind_name().into();
        j["delivery"] = self.spec.delivery().as_str().into();
        j
    }
}
