//! Prerequisites of the Elasticsearch sink, checked against the live cluster: it answers, its
//! version speaks the APIs used, the credentials may write the target indices, and existing
//! indices keep delete tombstones long enough.

use elasticsearch::http::{Method, StatusCode};
use serde_json::Value as Json;

use super::naming::index_name;
use super::{EsConfig, EsSink, EsSinkError};
use crate::check::Finding;
use crate::connector::SinkContext;
use crate::event::Encoding;
use crate::settings::parse_duration;
use crate::sinks::template::Part;

/// Which products and major versions speak every API the sink uses (`_bulk` with
/// `version_type=external_gte`, `_mget`, `_delete_by_query`, index creation with settings).
pub fn supported(distribution: &str, version: &str) -> Result<String, String> {
    let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    let (name, ok) = if distribution == "opensearch" {
        ("OpenSearch", matches!(major, 2 | 3))
    } else {
        ("Elasticsearch", matches!(major, 7..=9))
    };
    if ok {
        Ok(format!("{name} {version}"))
    } else {
        Err(format!("{name} {version} is not supported; use Elasticsearch 7.x, 8.x or 9.x, or OpenSearch 2.x or 3.x"))
    }
}

/// The index names (or patterns, for globbed tables) the connector will write.
pub fn target_indices(cfg: &EsConfig, connector: &str, tables: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables {
        let (schema, table) = t.split_once('.').unwrap_or(("*", t.as_str()));
        let mut name = String::new();
        for p in &cfg.index {
            match p {
                Part::Lit(s) => name.push_str(s),
                Part::Connector => name.push_str(connector),
                Part::Db | Part::Schema => name.push_str(schema),
                Part::Table => name.push_str(table),
                Part::Key => name.push('*'),
            }
        }
        let name = name.to_lowercase();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

pub async fn check(cfg: &EsConfig, connector: &str, tables: &[String]) -> Vec<Finding> {
    let mut sink = EsSink::new(cfg.clone(), SinkContext { connector: connector.into(), encoding: Encoding::default() });
    let mut out = Vec::new();
    let info = match sink.info().await {
        Ok(info) => info,
        Err(e) => {
            let fix = match &e {
                EsSinkError::Status { status: 401, .. } => {
                    "the credentials were refused; check username/password or api_key"
                }
                EsSinkError::Build { .. } => "check sink.url and sink.ca_file",
                _ => "check sink.url, that the cluster is running and reachable, and sink.ca_file for https",
            };
            out.push(Finding::error(format!("{e}; {fix}")));
            return out;
        }
    };
    let distribution = info.pointer("/version/distribution").and_then(Json::as_str).unwrap_or("elasticsearch");
    let version = info.pointer("/version/number").and_then(Json::as_str).unwrap_or("?");
    match supported(distribution, version) {
        Ok(v) => out.push(Finding::ok(format!("connected to {v}"))),
        Err(e) => out.push(Finding::error(e)),
    }
    let indices = target_indices(cfg, connector, tables);
    for name in &indices {
        if let Err(e) = index_name(&name.replace('*', "x")) {
            out.push(Finding::error(format!("{e}; change sink.index so every table maps to a valid index name")));
        }
    }
    out.push(privileges(&mut sink, distribution == "opensearch", &indices).await);
    out.extend(tombstones(&mut sink, cfg, &indices).await);
    out
}

async fn request(
    sink: &mut EsSink,
    method: Method,
    path: &str,
    body: Option<Json>,
) -> Result<(StatusCode, Json), EsSinkError> {
    let client = sink.client()?.clone();
    let resp = client
        .send(method, path, Default::default(), Option::<&()>::None, body.map(|b| b.to_string()), None)
        .await
        .map_err(|e| sink.transport(e))?;
    let status = resp.status_code();
    let text = resp.text().await.map_err(|e| sink.transport(e))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Json::String(text))))
}

async fn privileges(sink: &mut EsSink, opensearch: bool, indices: &[String]) -> Finding {
    const NEEDED: [&str; 3] = ["create_index", "index", "delete"];
    if opensearch {
        return match request(sink, Method::Get, "/_plugins/_security/authinfo", None).await {
            Ok((s, _)) if s.is_success() => Finding::warn(format!(
                "the OpenSearch security plugin is on and tidemark cannot test index privileges there; make sure the \
                 user's role allows indices:data/write/*, indices:admin/create and indices:admin/mapping/put on {}",
                indices.join(", ")
            )),
            Ok(_) => Finding::ok("no security plugin: every client may write"),
            Err(e) => Finding::error(format!("{e}")),
        };
    }
    let body = serde_json::json!({ "index": [{ "names": indices, "privileges": NEEDED }] });
    match request(sink, Method::Post, "/_security/user/_has_privileges", Some(body)).await {
        Ok((s, reply)) if s.is_success() => {
            if reply.get("has_all_requested").and_then(Json::as_bool) == Some(true) {
                return Finding::ok(format!("the credentials may {} on {}", NEEDED.join(", "), indices.join(", ")));
            }
            let mut missing = Vec::new();
            if let Some(per_index) = reply.get("index").and_then(Json::as_object) {
                for (index, privs) in per_index {
                    for (p, granted) in privs.as_object().into_iter().flatten() {
                        if granted == &Json::Bool(false) {
                            missing.push(format!("{p} on {index}"));
                        }
                    }
                }
            }
            Finding::error(format!(
                "the credentials lack {}; grant a role with these index privileges to the user or API key",
                missing.join(", ")
            ))
        }
        Ok((_, reply)) => {
            let text = reply.to_string();
            let off = ["not enabled", "disabled", "must be explicitly enabled", "no handler found"];
            if off.iter().any(|m| text.contains(m)) {
                Finding::ok("security is not enabled on the cluster: every client may write")
            } else {
                Finding::warn(format!("could not verify the index privileges: {text}"))
            }
        }
        Err(e) => Finding::error(format!("{e}")),
    }
}

/// Existing target indices whose `gc_deletes` is shorter than `tombstone_ttl` forget deletes too
/// early: a replay could resurrect a deleted document.
async fn tombstones(sink: &mut EsSink, cfg: &EsConfig, indices: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    let path =
        format!("/{}/_settings?include_defaults=true&ignore_unavailable=true&allow_no_indices=true", indices.join(","));
    let Ok((status, reply)) = request(sink, Method::Get, &path, None).await else { return out };
    if !status.is_success() {
        return out;
    }
    for (index, body) in reply.as_object().into_iter().flatten() {
        let gc = body
            .pointer("/settings/index/gc_deletes")
            .or_else(|| body.pointer("/defaults/index/gc_deletes"))
            .and_then(Json::as_str)
            .unwrap_or("60s");
        let short = parse_duration(gc).map(|d| d < cfg.tombstone_ttl).unwrap_or(false);
        if short {
            out.push(Finding::warn(format!(
                "index {index} keeps delete tombstones for {gc}, less than tombstone_ttl ({}s); run \
                 PUT /{index}/_settings {{\"index.gc_deletes\": \"{}s\"}}",
                cfg.tombstone_ttl.as_secs(),
                cfg.tombstone_ttl.as_secs()
            )));
        }
    }
    if out.is_empty() && !reply.as_object().is_none_or(|m| m.is_empty()) {
        out.push(Finding::ok("existing indices keep delete tombstones for tombstone_ttl or longer"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(supported("elasticsearch", "8.15.0").is_ok());
        assert!(supported("elasticsearch", "7.17.2").is_ok());
        assert!(supported("elasticsearch", "6.8.0").unwrap_err().contains("not supported"));
        assert!(supported("opensearch", "3.8.0").is_ok());
        assert!(supported("opensearch", "1.3.0").is_err());
    }
}
