//! `[source] kind = "mysql"` (MySQL 8 and MariaDB 10.5+).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use crate::connector::SnapshotMode;
use crate::event::encode::ENCODING_KEYS;
use crate::event::Encoding;
use crate::settings::{Diag, SecretUrl, Section};

pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: usize = 10_000;
/// Replica server ids tidemark picks from when `server_id` is not set: a stable value derived from
/// the connector name, away from the small ids servers usually get.
pub const SERVER_ID_BASE: u32 = 5400;
pub const SERVER_ID_SPAN: u32 = 100_000;

/// `Debug` is written out: `opts` holds the password in the clear, and its own `Debug` prints it.
#[derive(Clone)]
pub struct MysqlConfig {
    pub url: SecretUrl,
    pub opts: mysql_async::Opts,
    /// Include list of `db.table` patterns; `*` and `?` are globs.
    pub tables: Vec<String>,
    pub snapshot: SnapshotMode,
    /// This stream's replica server id: unique among the server's replicas (a duplicate disconnects
    /// the other one).
    pub server_id: u32,
    /// How often the server sends a heartbeat when idle (so lag stays honest).
    pub heartbeat_interval: Duration,
    pub snapshot_chunk_rows: NonZeroUsize,
    pub encoding: Encoding,
    /// A PEM file of the CA that signed the server's certificate (TLS with a private CA).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("url", &self.url)
            .field("tables", &self.tables)
            .field("snapshot", &self.snapshot)
            .field("server_id", &self.server_id)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("snapshot_chunk_rows", &self.snapshot_chunk_rows)
            .field("encoding", &self.encoding)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl MysqlConfig {
    pub fn host(&self) -> String {
        self.opts.ip_or_hostname().to_string()
    }

    pub fn port(&self) -> u16 {
        self.opts.tcp_port()
    }

    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "mysql",
            "url": self.url.redacted(),
            "tables": self.tables,
            "snapshot": self.snapshot.as_str(),
            "server_id": self.server_id,
            "heartbeat_interval_ms": self.heartbeat_interval.as_millis() as u64,
            "tls": self.opts.ssl_opts().is_some(),
            "ca_file": self.ca_file.as_ref().map(|p| p.display().to_string()),
        })
    }
}

/// FNV-1a, for a stable default server id.
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

pub fn default_server_id(connector: &str) -> u32 {
    SERVER_ID_BASE + fnv1a(connector) % SERVER_ID_SPAN
}

pub const KEYS: [&str; 8] =
    ["kind", "url", "tables", "snapshot", "server_id", "heartbeat_interval", "snapshot_chunk_rows", "ca_file"];

pub fn read(mut s: Section, d: &mut Diag, connector: &str) -> Option<MysqlConfig> {
    let url = s.str(d, "url");
    let opts = url.as_deref().and_then(|u| match mysql_async::Opts::from_url(u) {
        Ok(o) => Some(o),
        Err(e) => {
            d.error(s.key("url"), format!("not a MySQL URL ({}): {e}", crate::settings::redact_url(u)));
            None
        }
    });
    // TLS: `require_ssl=true` in the URL (with `verify_ca` / `verify_identity`), and `ca_file` for
    // a private CA (which turns TLS on).
    let ca_file = s.opt_str(d, "ca_file").map(PathBuf::from);
    if let Some(p) = &ca_file {
        if let Err(e) = std::fs::metadata(p) {
            d.error(s.key("ca_file"), format!("{}: {e}", p.display()));
        }
    }
    // mysql_async skips the host-name check by matching rustls' error text, which no longer
    // matches, so `verify_identity=false` would silently fail to connect: refuse it here.
    if let Some(ssl) = opts.as_ref().and_then(|o: &mysql_async::Opts| o.ssl_opts()) {
        if ssl.skip_domain_validation() && !ssl.accept_invalid_certs() {
            d.error(
                s.key("url"),
                "verify_identity=false is not supported: give the server a certificate for the host name in the URL (and its CA in ca_file), or skip verification altogether with verify_ca=false",
            );
        }
    }
    let opts = opts.map(|o| match &ca_file {
        Some(p) => {
            let ssl = o.ssl_opts().cloned().unwrap_or_default().with_root_certs(vec![p.clone().into()]);
            mysql_async::OptsBuilder::from_opts(o).ssl_opts(ssl).into()
        }
        None => o,
    });
    let tables = s.opt_str_list(d, "tables");
    match &tables {
        None => d.error(s.key("tables"), "is required: a list of \"database.table\" names (globs allowed)"),
        Some(t) if t.is_empty() => d.error(s.key("tables"), "must list at least one \"database.table\""),
        Some(t) => {
            for (i, p) in t.iter().enumerate() {
                let ok = p.split_once('.').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('.'));
                if !ok {
                    d.error(
                        format!("{}[{i}]", s.key("tables")),
                        format!("`{p}` is not of the form \"database.table\""),
                    );
                }
            }
        }
    }
    let snapshot = match s.opt_choice(d, "snapshot", &["initial", "never"]).as_deref() {
        Some("never") => SnapshotMode::Never,
        _ => SnapshotMode::Initial,
    };
    let server_id = match s.opt_u64(d, "server_id") {
        Some(0) => {
            d.error(s.key("server_id"), "must be between 1 and 4294967295");
            None
        }
        Some(id) if id > u32::MAX as u64 => {
            d.error(s.key("server_id"), "must be between 1 and 4294967295");
            None
        }
        Some(id) => Some(id as u32),
        None => Some(default_server_id(connector)),
    };
    let heartbeat_interval = s.opt_duration(d, "heartbeat_interval").unwrap_or(DEFAULT_HEARTBEAT_INTERVAL);
    if heartbeat_interval < Duration::from_millis(100) {
        d.error(s.key("heartbeat_interval"), "must be at least 100ms");
    }
    let snapshot_chunk_rows =
        s.opt_nonzero(d, "snapshot_chunk_rows").unwrap_or(NonZeroUsize::new(DEFAULT_SNAPSHOT_CHUNK_ROWS).unwrap());
    let encoding = Encoding::read(&mut s, d, Encoding::mysql_default());
    let mut allowed = KEYS.to_vec();
    allowed.extend(ENCODING_KEYS);
    s.finish(d, &allowed);
    Some(MysqlConfig {
        url: SecretUrl::new(url?),
        opts: opts?,
        tables: tables?,
        snapshot,
        server_id: server_id?,
        heartbeat_interval,
        snapshot_chunk_rows,
        encoding,
        ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(source: &str) -> Vec<String> {
        let text = format!(
            "name = \"c\"\n[source]\nkind = \"mysql\"\ntables = [\"d.t\"]\n{source}\n[[sink]]\nkind = \"stdout\"\n"
        );
        match crate::config::parse_connector(std::path::Path::new("c.toml"), &text) {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn tls_settings() {
        assert!(errors("url = \"mysql://u@h:3306?require_ssl=true\"").is_empty());
        assert!(errors("url = \"mysql://u@h:3306?require_ssl=true&verify_ca=false\"").is_empty());
        let e = errors("url = \"mysql://u@h:3306?require_ssl=true&verify_identity=false\"");
        assert!(
            e.iter().any(|l| l.contains("source.url") && l.contains("verify_identity=false is not supported")),
            "{e:?}"
        );
        let e = errors("url = \"mysql://u@h:3306\"\nca_file = \"/nonexistent/ca.pem\"");
        assert!(e.iter().any(|l| l.contains("source.ca_file") && l.contains("/nonexistent/ca.pem")), "{e:?}");
    }

    #[test]
    fn default_server_ids_are_stable_and_in_range() {
        let a = default_server_id("shop");
        assert_eq!(a, default_server_id("shop"));
        assert_ne!(a, default_server_id("catalog"));
        assert!((SERVER_ID_BASE..SERVER_ID_BASE + SERVER_ID_SPAN).contains(&a));
    }
}
