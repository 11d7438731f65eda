//! `[[sink]] kind = "elasticsearch"`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value as Json};

use crate::settings::{Diag, Secret, SecretUrl, Section};
use crate::sinks::template::{self, Part};
use crate::sinks::COMMON_KEYS;

pub const DEFAULT_INDEX_TEMPLATE: &str = "{connector}.{schema}.{table}";
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// When written documents become visible to search (a GET by `_id` sees them at once anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The index's own `refresh_interval` (1s on indices tidemark creates).
    No,
    /// Each bulk request returns once its documents are searchable.
    WaitFor,
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Basic {
        username: String,
        password: Secret,
    },
    /// An encoded API key (base64 of `id:key`), as Elasticsearch's create-API-key call returns it.
    ApiKey(Secret),
}

#[derive(Debug, Clone)]
pub struct EsConfig {
    pub url: SecretUrl,
    pub auth: Auth,
    /// PEM file of the CA that signed the cluster's certificate (added to the system roots).
    pub ca_file: Option<PathBuf>,
    pub index_template: String,
    pub index: Vec<Part>,
    /// Explicit mappings per table (`schema.table`), used when tidemark creates the index.
    pub mappings: BTreeMap<String, Map<String, Json>>,
    /// Index settings merged over tidemark's defaults when it creates an index.
    pub index_settings: Map<String, Json>,
    /// How long Elasticsearch remembers a deleted document's version (`index.gc_deletes`), so a
    /// replayed older write cannot resurrect it.
    pub tombstone_ttl: Duration,
    pub bulk_max_docs: usize,
    pub bulk_max_bytes: usize,
    /// Bulk requests in flight at once (documents are spread over them by `_id`, so each
    /// document's writes stay in order).
    pub max_in_flight: usize,
    pub refresh: Refresh,
    pub request_timeout: Duration,
}

impl EsConfig {
    pub fn describe(&self) -> Json {
        serde_json::json!({
            "url": self.url.redacted(),
            "auth": match &self.auth {
                Auth::None => Json::Null,
                Auth::Basic { username, .. } => serde_json::json!({ "username": username, "password": "***" }),
                Auth::ApiKey(_) => serde_json::json!({ "api_key": "***" }),
            },
            "ca_file": self.ca_file.as_ref().map(|p| p.display().to_string()),
            "index": self.index_template,
            "mappings": self.mappings.keys().collect::<Vec<_>>(),
            "tombstone_ttl_ms": self.tombstone_ttl.as_millis() as u64,
            "bulk_max_docs": self.bulk_max_docs,
            "bulk_max_bytes": self.bulk_max_bytes,
            "max_in_flight": self.max_in_flight,
            "refresh": match self.refresh { Refresh::No => "false", Refresh::WaitFor => "wait_for" },
        })
    }
}

pub fn read(mut s: Section, d: &mut Diag) -> Option<EsConfig> {
    let url = s.str(d, "url");
    if let Some(u) = &url {
        match url_parts(u) {
            Err(e) => d.error(s.key("url"), format!("{}: {e}", SecretUrl::new(u.clone()))),
            Ok((_, Some(_))) if s.has("username") || s.has("api_key") => {
                d.error(s.key("url"), "carries credentials and so does username/api_key: keep one")
            }
            Ok(_) => {}
        }
    }
    let username = s.opt_str(d, "username");
    let password = s.opt_str(d, "password");
    let api_key = s.opt_str(d, "api_key");
    let mut auth = match (username, password, api_key) {
        (None, None, None) => Auth::None,
        (Some(username), Some(password), None) => Auth::Basic { username, password: Secret::new(password) },
        (None, None, Some(key)) => Auth::ApiKey(Secret::new(key)),
        (Some(_), None, None) | (None, Some(_), None) => {
            d.error(s.key("password"), "username and password go together");
            Auth::None
        }
        _ => {
            d.error(s.key("api_key"), "use either username/password or api_key, not both");
            Auth::None
        }
    };
    if let Some(Ok((_, Some((user, pass))))) = url.as_deref().map(url_parts) {
        auth = Auth::Basic { username: user, password: Secret::new(pass) };
    }
    let ca_file = s.opt_str(d, "ca_file").map(PathBuf::from);
    if let Some(p) = &ca_file {
        if let Err(e) = std::fs::metadata(p) {
            d.error(s.key("ca_file"), format!("{}: {e}", p.display()));
        }
    }
    let index_template = s.opt_str(d, "index").unwrap_or_else(|| DEFAULT_INDEX_TEMPLATE.into());
    let index = match template::parse(&index_template, false) {
        Ok(parts) => Some(parts),
        Err(e) => {
            d.error(s.key("index"), e);
            None
        }
    };
    let mut mappings = BTreeMap::new();
    if let Some(mut m) = s.opt_table(d, "mappings") {
        for table in m.keys() {
            if let Some(body) = m.opt_table(d, &table) {
                let body = body.into_json();
                if !body.contains_key("properties") && !body.contains_key("dynamic") {
                    d.error(
                        m.key(&table),
                        "an index mapping needs `properties` (e.g. properties = { email = { type = \"keyword\" } })",
                    );
                }
                mappings.insert(table, body);
            }
        }
    }
    let index_settings = s.opt_table(d, "index_settings").map(Section::into_json).unwrap_or_default();
    let tombstone_ttl = s.opt_duration(d, "tombstone_ttl").unwrap_or(DEFAULT_TOMBSTONE_TTL);
    if tombstone_ttl < Duration::from_secs(60) {
        d.error(s.key("tombstone_ttl"), "must be at least 60s: a shorter window lets a replay resurrect deleted rows");
    }
    let bulk_max_docs = s.opt_nonzero(d, "bulk_max_docs").map_or(1000, |n| n.get());
    let bulk_max_bytes = s.opt_bytes(d, "bulk_max_bytes").unwrap_or(8 << 20);
    let max_in_flight = s.opt_nonzero(d, "max_in_flight").map_or(2, |n| n.get());
    let refresh = match s.opt_choice(d, "refresh", &["false", "wait_for"]).as_deref() {
        Some("wait_for") => Refresh::WaitFor,
        _ => Refresh::No,
    };
    let request_timeout = s.opt_duration(d, "request_timeout").unwrap_or(Duration::from_secs(60));
    let mut allowed = COMMON_KEYS.to_vec();
    allowed.extend([
        "url",
        "username",
        "password",
        "api_key",
        "ca_file",
        "index",
        "mappings",
        "index_settings",
        "tombstone_ttl",
        "bulk_max_docs",
        "bulk_max_bytes",
        "max_in_flight",
        "refresh",
        "request_timeout",
    ]);
    s.finish(d, &allowed);
    Some(EsConfig {
        url: SecretUrl::new(url?),
        auth,
        ca_file,
        index_template,
        index: index?,
        mappings,
        index_settings,
        tombstone_ttl,
        bulk_max_docs,
        bulk_max_bytes,
        max_in_flight,
        refresh,
        request_timeout,
    })
}

/// The URL without its credentials, and the credentials (`http://user:pass@host:9200`).
pub fn url_parts(url: &str) -> Result<(String, Option<(String, String)>), String> {
    let rest = url
        .strip_prefix("http://")
        .map(|r| ("http://", r))
        .or_else(|| url.strip_prefix("https://").map(|r| ("https://", r)));
    let Some((scheme, rest)) = rest else {
        return Err("must start with http:// or https://".into());
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(host_end);
    let (creds, host) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let creds = match creds {
        None => None,
        Some(c) => {
            let (u, p) = c.split_once(':').ok_or("credentials in the URL need user:password")?;
            Some((percent_decode(u), percent_decode(p)))
        }
    };
    Ok((format!("{scheme}{host}{tail}"), creds))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_credentials() {
        assert_eq!(url_parts("http://127.0.0.1:9200").unwrap(), ("http://127.0.0.1:9200".into(), None));
        assert_eq!(
            url_parts("https://elastic:p%40ss@es.example:9243/prefix").unwrap(),
            ("https://es.example:9243/prefix".into(), Some(("elastic".into(), "p@ss".into())))
        );
        assert!(url_parts("es.example:9200").is_err());
        assert!(url_parts("http://user@host").is_err());
    }
}
