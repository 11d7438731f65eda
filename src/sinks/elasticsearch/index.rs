//! Index management: creating an index with its mapping and cache-friendly settings, and
//! emptying one for a truncate.

use elasticsearch::http::StatusCode;
use elasticsearch::indices::{IndicesCreateParts, IndicesExistsParts, IndicesRefreshParts};
use elasticsearch::params::Conflicts;
use elasticsearch::DeleteByQueryParts;
use serde_json::{Map, Value as Json};

use super::config::EsConfig;
use super::{EsSink, EsSinkError};
use crate::connector::WriteReport;
use crate::event::ChangeEvent;

impl EsSink {
    /// Create `index` unless it exists, with the table's mapping or the cache defaults.
    pub(super) async fn ensure_index(&mut self, index: &str, ev: &ChangeEvent) -> Result<(), EsSinkError> {
        let client = self.client()?.clone();
        let resp =
            client.indices().exists(IndicesExistsParts::Index(&[index])).send().await.map_err(|e| self.transport(e))?;
        match resp.status_code() {
            StatusCode::OK => {
                self.known.insert(index.to_string());
                return Ok(());
            }
            StatusCode::NOT_FOUND => {}
            _ => return Err(self.status_error(format!("HEAD /{index}"), resp).await),
        }
        let body = index_body(&self.cfg, &ev.table.to_string());
        let resp = client
            .indices()
            .create(IndicesCreateParts::Index(index))
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = resp.status_code();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            // Created meanwhile (another tidemark, or an alias): fine.
            if !text.contains("resource_already_exists_exception") {
                let e = EsSinkError::Status {
                    url: self.url.clone(),
                    what: format!("PUT /{index}"),
                    status: status.as_u16(),
                    body: text,
                };
                return Err(if status == StatusCode::FORBIDDEN { EsSinkError::Forbidden(e.to_string()) } else { e });
            }
        }
        tracing::info!(connector = %self.ctx.connector, index, table = %ev.table, "created index");
        self.known.insert(index.to_string());
        Ok(())
    }

    /// Delete every document of the truncated table's index.
    pub(super) async fn truncate(
        &mut self,
        ev: &ChangeEvent,
        at: usize,
        report: &mut WriteReport,
    ) -> Result<(), EsSinkError> {
        let mut buf = String::new();
        let index = match self.index_of(ev, &mut buf) {
            Ok(i) => i,
            Err(reason) => {
                report.rejected.push((at, reason));
                return Ok(());
            }
        };
        let client = self.client()?.clone();
        // delete_by_query sees what a refresh made searchable; make everything searchable first.
        let resp = client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[&index]))
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        if resp.status_code() == StatusCode::NOT_FOUND {
            report.applied += 1;
            return Ok(());
        }
        if !resp.status_code().is_success() {
            return Err(self.status_error(format!("POST /{index}/_refresh"), resp).await);
        }
        let resp = client
            .delete_by_query(DeleteByQueryParts::Index(&[&index]))
            .conflicts(Conflicts::Proceed)
            .refresh(true)
            .body(serde_json::json!({ "query": { "match_all": {} } }))
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        if !resp.status_code().is_success() {
            return Err(self.status_error(format!("POST /{index}/_delete_by_query"), resp).await);
        }
        tracing::info!(connector = %self.ctx.connector, index, "truncate: deleted every document");
        report.applied += 1;
        Ok(())
    }
}

/// The body that creates an index for `table`: tidemark's cache settings under the user's
/// `index_settings`, and the table's mapping or the default one.
pub fn index_body(cfg: &EsConfig, table: &str) -> Json {
    let mut settings = Map::new();
    settings.insert("index.refresh_interval".into(), "1s".into());
    settings.insert("index.gc_deletes".into(), format!("{}s", cfg.tombstone_ttl.as_secs()).into());
    flatten_settings("", &cfg.index_settings, &mut settings);
    let mappings = match cfg.mappings.get(table) {
        Some(m) => Json::Object(m.clone()),
        None => serde_json::json!({ "date_detection": false }),
    };
    serde_json::json!({ "settings": settings, "mappings": mappings })
}

/// `{ number_of_shards = 1, index = { codec = "best_compression" } }` → `index.number_of_shards`,
/// `index.codec`: one spelling, so the user's value replaces tidemark's instead of clashing.
fn flatten_settings(prefix: &str, from: &Map<String, Json>, out: &mut Map<String, Json>) {
    for (k, v) in from {
        let key = if prefix.is_empty() {
            if k == "index" || k.starts_with("index.") {
                k.clone()
            } else {
                format!("index.{k}")
            }
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Json::Object(inner) => flatten_settings(&key, inner, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_settings_replace_defaults_in_one_spelling() {
        let mut user = Map::new();
        user.insert("refresh_interval".into(), "5s".into());
        user.insert("index".into(), serde_json::json!({ "number_of_shards": 2 }));
        let mut out = Map::new();
        out.insert("index.refresh_interval".into(), "1s".into());
        flatten_settings("", &user, &mut out);
        assert_eq!(out["index.refresh_interval"], "5s");
        assert_eq!(out["index.number_of_shards"], 2);
        assert_eq!(out.len(), 2);
    }
}
