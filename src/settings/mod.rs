//! Reading settings: the primitives every configuration reader uses — TOML sections read key by
//! key, diagnostics that collect every mistake with its file and key, durations and sizes,
//! `${ENV}` interpolation, and secrets whose `Debug` and `Display` redact them.
//!
//! A leaf: it imports nothing else of the crate, so each connector kind reads its own
//! `[source]` or `[[sink]]` section with it without depending on the configuration as a whole
//! (that is assembled by the `config` module).

pub mod interp;
pub mod reader;
pub mod secret;

pub use reader::{parse_duration, ConfigError, ConfigErrors, Diag, Section};
pub use secret::{redact_url, Secret, SecretUrl};
