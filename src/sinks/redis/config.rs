//! `[[sink]] kind = "redis"`.

use std::time::Duration;

use crate::redis_client::{self, RedisTls};
use crate::settings::{Diag, SecretUrl, Section};
use crate::sinks::template::{self, Part};
use crate::sinks::COMMON_KEYS;

pub const DEFAULT_KEY_TEMPLATE: &str = "{connector}:{table}:{key}";
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_VERSION_PREFIX: &str = "tidemark:v:";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One hash field per column.
    Hash,
    /// The row as one JSON object string.
    Json,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: SecretUrl,
    /// `ca_file`, `cert_file` + `key_file`, `tls_insecure` (with a `rediss://` URL).
    pub tls: RedisTls,
    pub cluster: bool,
    pub format: Format,
    pub key_template: String,
    pub key: Vec<Part>,
    /// Expire rows this long after their last write; `None`: rows live until deleted.
    pub ttl: Option<Duration>,
    /// How long a delete is remembered, so that a replay cannot resurrect the row. Must cover
    /// the longest replay: the time between checkpoints, plus any downtime you restart from.
    pub tombstone_ttl: Duration,
    /// Prefix of the keys holding each row's version (never mixed into the row itself).
    pub version_prefix: String,
    /// Also store the version inside the row under this field, for readers that want it.
    pub version_field: Option<String>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

impl RedisConfig {
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.url.redacted(),
            "tls": self.tls.describe(),
            "cluster": self.cluster,
            "format": match self.format { Format::Hash => "hash", Format::Json => "json" },
            "key": self.key_template,
            "ttl_ms": self.ttl.map(|d| d.as_millis() as u64),
            "tombstone_ttl_ms": self.tombstone_ttl.as_millis() as u64,
            "version_prefix": self.version_prefix,
            "version_field": self.version_field,
        })
    }
}

pub fn parse_template(t: &str) -> Result<Vec<Part>, String> {
    let parts = template::parse(t, true)?;
    if !parts.contains(&Part::Key) {
        return Err(format!("`{t}` has no {{key}}: every row would share one Redis key"));
    }
    Ok(parts)
}

pub fn read(mut s: Section, d: &mut Diag) -> Option<RedisConfig> {
    let url = s.str(d, "url");
    if let Some(Err(e)) = url.as_deref().map(redis_client::check_url) {
        d.error(s.key("url"), e);
    }
    let tls = RedisTls::read(&mut s, d, "", Some("tls_insecure"), url.as_deref());
    let cluster = s.opt_bool(d, "cluster").unwrap_or(false);
    let format = match s.opt_choice(d, "format", &["hash", "json"]).as_deref() {
        Some("json") => Format::Json,
        _ => Format::Hash,
    };
    let key_template = s.opt_str(d, "key").unwrap_or_else(|| DEFAULT_KEY_TEMPLATE.into());
    let key = match parse_template(&key_template) {
        Ok(k) => Some(k),
        Err(e) => {
            d.error(s.key("key"), e);
            None
        }
    };
    let ttl = s.opt_duration(d, "ttl").filter(|t| !t.is_zero());
    let tombstone_ttl = s.opt_duration(d, "tombstone_ttl").unwrap_or(DEFAULT_TOMBSTONE_TTL);
    if tombstone_ttl < Duration::from_secs(60) {
        d.error(s.key("tombstone_ttl"), "must be at least 60s: a shorter window lets a replay resurrect deleted rows");
    }
    let version_prefix = s.opt_str(d, "version_prefix").unwrap_or_else(|| DEFAULT_VERSION_PREFIX.into());
    if version_prefix.is_empty() || version_prefix.contains(['{', '}']) {
        d.error(s.key("version_prefix"), "must be non-empty and contain no `{` or `}`");
    }
    let version_field = s.opt_str(d, "version_field");
    let connect_timeout = s.opt_duration(d, "connect_timeout").unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let response_timeout = s.opt_duration(d, "response_timeout").unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
    let mut allowed = COMMON_KEYS.to_vec();
    allowed.extend([
        "url",
        "ca_file",
        "cert_file",
        "key_file",
        "tls_insecure",
        "cluster",
        "format",
        "key",
        "ttl",
        "tombstone_ttl",
        "version_prefix",
        "version_field",
        "connect_timeout",
        "response_timeout",
    ]);
    s.finish(d, &allowed);
    Some(RedisConfig {
        url: SecretUrl::new(url?),
        tls,
        cluster,
        format,
        key_template,
        key: key?,
        ttl,
        tombstone_ttl,
        version_prefix,
        version_field,
        connect_timeout,
        response_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_templates_need_a_key() {
        assert!(parse_template("{table}").unwrap_err().contains("no {key}"));
        assert!(parse_template("{connector}:{table}:{key}").is_ok());
    }
}
