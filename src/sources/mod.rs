//! Sources: where committed changes come from. Each kind lives in its own folder and implements
//! [`Source`]; this file is the one place that turns a `[source]` section's `kind` into one.

pub mod kafka;
pub mod mysql;
pub mod postgres;

use std::sync::Arc;

use crate::connector::Source;
use crate::settings::{Diag, Section};

/// A connector's configured source.
pub type SourceConfig = Arc<dyn Source>;

pub const KINDS: [&str; 3] = ["postgres", "mysql", "kafka"];

/// Read a `[source]` section: the kind's own reader checks every key.
pub fn read(mut s: Section, d: &mut Diag, connector: &str) -> Option<SourceConfig> {
    let kind = s.str(d, "kind")?;
    match kind.as_str() {
        "postgres" => postgres::config::read(s, d, connector).map(|c| Arc::new(c) as SourceConfig),
        "mysql" => mysql::config::read(s, d, connector).map(|c| Arc::new(c) as SourceConfig),
        "kafka" => kafka::read(s, d, connector).map(|c| Arc::new(c) as SourceConfig),
        other => {
            d.error(s.key("kind"), format!("unknown source kind `{other}` (expected one of: {})", KINDS.join(", ")));
            None
        }
    }
}
