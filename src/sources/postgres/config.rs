//! `[source] kind = "postgres"`.

use std::num::NonZeroUsize;
use std::str::FromStr;
use std::time::Duration;

use super::tls::{self, PgTls};
use crate::event::encode::ENCODING_KEYS;
use crate::event::Encoding;
use crate::settings::{Diag, SecretUrl, Section};

pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: usize = 10_000;
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

pub use crate::connector::{table_included, SnapshotMode};

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: SecretUrl,
    /// Parsed from `url`.
    pub pg: tokio_postgres::Config,
    /// `sslmode`, `sslrootcert`, `sslcert` and `sslkey` of `url`.
    pub tls: PgTls,
    /// Include list of `schema.table` patterns; `*` and `?` are globs.
    pub tables: Vec<String>,
    pub snapshot: SnapshotMode,
    pub slot: String,
    pub publication: String,
    /// How often a heartbeat message is written to the WAL, so lag stays honest and the slot keeps
    /// advancing on a quiet database.
    pub heartbeat_interval: Duration,
    pub snapshot_chunk_rows: NonZeroUsize,
    pub encoding: Encoding,
}

impl PostgresConfig {
    pub fn host(&self) -> String {
        match self.pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        }
    }

    pub fn port(&self) -> u16 {
        self.pg.get_ports().first().copied().unwrap_or(5432)
    }

    pub fn user(&self) -> String {
        self.pg.get_user().unwrap_or("postgres").to_string()
    }

    pub fn dbname(&self) -> String {
        self.pg.get_dbname().map(str::to_string).unwrap_or_else(|| self.user())
    }

    pub fn password(&self) -> String {
        self.pg.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default()
    }
}

/// Replication slot names: lower-case letters, digits and underscores, at most 63 characters.
/// (`pgwire-replication` puts the name into START_REPLICATION unquoted.)
pub fn valid_slot_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Publication names tidemark accepts: an unquoted SQL identifier (it is also embedded in
/// START_REPLICATION's option list).
pub fn valid_publication_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_table_pattern(s: &str) -> bool {
    match s.split_once('.') {
        Some((schema, table)) => !schema.is_empty() && !table.is_empty() && !table.contains('.'),
        None => false,
    }
}

pub const KEYS: [&str; 8] =
    ["kind", "url", "tables", "snapshot", "slot", "publication", "heartbeat_interval", "snapshot_chunk_rows"];

pub fn read(mut s: Section, d: &mut Diag, connector: &str) -> Option<PostgresConfig> {
    let url = s.str(d, "url");
    let split = url.as_deref().and_then(|u| match tls::split_url(u) {
        Ok(split) => Some(split),
        Err(e) => {
            d.error(s.key("url"), e);
            None
        }
    });
    let (tls, pg) = match split {
        Some((tls, rest)) => match tokio_postgres::Config::from_str(&rest) {
            Ok(mut c) => {
                c.ssl_mode(tls.postgres_mode());
                (Some(tls), Some(c))
            }
            Err(e) => {
                d.error(s.key("url"), format!("not a PostgreSQL URL ({}): {e}", crate::settings::redact_url(&rest)));
                (None, None)
            }
        },
        None => (None, None),
    };
    let tables = s.opt_str_list(d, "tables");
    match &tables {
        None => d.error(s.key("tables"), "is required: a list of \"schema.table\" names (globs allowed)"),
        Some(t) if t.is_empty() => d.error(s.key("tables"), "must list at least one \"schema.table\""),
        Some(t) => {
            for (i, p) in t.iter().enumerate() {
                if !valid_table_pattern(p) {
                    d.error(format!("{}[{i}]", s.key("tables")), format!("`{p}` is not of the form \"schema.table\""));
                }
            }
        }
    }
    let snapshot = match s.opt_choice(d, "snapshot", &["initial", "never"]).as_deref() {
        Some("never") => SnapshotMode::Never,
        _ => SnapshotMode::Initial,
    };
    let default_name = format!("tidemark_{}", connector.replace('-', "_"));
    let slot = s.opt_str(d, "slot").unwrap_or_else(|| default_name.clone());
    if !valid_slot_name(&slot) {
        d.error(s.key("slot"), format!("`{slot}` is not a valid slot name (a-z, 0-9 and _, at most 63)"));
    }
    let publication = s.opt_str(d, "publication").unwrap_or(default_name);
    if !valid_publication_name(&publication) {
        d.error(s.key("publication"), format!("`{publication}` is not a valid publication name (a-z, 0-9 and _, at most 63, not starting with a digit)"));
    }
    let heartbeat_interval = s.opt_duration(d, "heartbeat_interval").unwrap_or(DEFAULT_HEARTBEAT_INTERVAL);
    if heartbeat_interval.is_zero() {
        d.error(s.key("heartbeat_interval"), "must be positive");
    }
    let snapshot_chunk_rows =
        s.opt_nonzero(d, "snapshot_chunk_rows").unwrap_or(NonZeroUsize::new(DEFAULT_SNAPSHOT_CHUNK_ROWS).unwrap());
    let encoding = Encoding::read(&mut s, d, Encoding::default());
    let mut allowed: Vec<&str> = KEYS.to_vec();
    allowed.extend(ENCODING_KEYS);
    s.finish(d, &allowed);
    Some(PostgresConfig {
        url: SecretUrl::new(url?),
        pg: pg?,
        tls: tls?,
        tables: tables?,
        snapshot,
        slot,
        publication,
        heartbeat_interval,
        snapshot_chunk_rows,
        encoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_slot_name("tidemark_shop"));
        assert!(!valid_slot_name("Shop"));
        assert!(!valid_slot_name("a;drop"));
        assert!(valid_publication_name("tidemark_shop"));
        assert!(!valid_publication_name("1pub"));
    }
}
