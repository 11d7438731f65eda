//! `kind = "elasticsearch"`: one index per table, one document per row, fenced by source version.
//!
//! Layout. The index comes from the template (default `{connector}.{schema}.{table}`,
//! lowercased); the `_id` from the key ([`naming::doc_id`]). tidemark creates a missing index
//! with the table's mapping from the connector file, or with settings that suit a cache: an
//! explicit `refresh_interval` of 1s (so an idle index still refreshes: never more than a second
//! stale to search), `gc_deletes` = `tombstone_ttl`, and no date detection on strings.
//!
//! Fencing. Every index and delete carries the change's external version
//! ([`naming::external_version`]) with `version_type=external_gte`, so Elasticsearch itself refuses
//! a write older than the stored document or its delete tombstone (a 409, counted as already
//! applied: it is a replay). A partial row (unchanged TOASTed values) is read, merged and written
//! back under the same version check: the merge never blanks a field, and a newer document or
//! tombstone still wins. See the README for why not `_update` with a script.
//!
//! Throughput. A batch bigger than one bulk request is spread over up to `max_in_flight` lanes by
//! `_id` (a document's writes stay in one lane, in order); each lane sends bulk requests of at
//! most `bulk_max_docs` / `bulk_max_bytes`, one after the other. Every item's result is read: a 200 bulk response can
//! still carry failed items.

pub mod check;
pub mod config;
pub mod naming;

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::StatusCode;
use elasticsearch::indices::{IndicesCreateParts, IndicesExistsParts, IndicesRefreshParts};
use elasticsearch::params::Conflicts;
use elasticsearch::{BulkParts, DeleteByQueryParts, Elasticsearch, MgetParts};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::Deserialize;
use serde_json::{Map, Value as Json};

pub use config::EsConfig;

use self::config::{Auth, Refresh};
use self::naming::{doc_id, external_version, index_name};
use super::template::render;
use crate::check::Finding;
use crate::connector::{Delivery, Sink, SinkContext, SinkError, SinkSpec, WriteReport};
use crate::event::envelope::row_json;
use crate::event::{ChangeEvent, Op};
use crate::retry::{Classify, ErrorClass};

const MGET_CHUNK: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum EsSinkError {
    #[error("elasticsearch {url}: cannot build client: {reason}")]
    Build { url: String, reason: String },
    #[error("elasticsearch {url}: {source}")]
    Transport { url: String, source: elasticsearch::Error },
    #[error("elasticsearch {url}: {what} answered {status}: {body}")]
    Status { url: String, what: String, status: u16, body: String },
    /// Items refused for a reason that passes (queue full, shard unavailable).
    #[error("elasticsearch: {0}")]
    Busy(String),
    /// Items refused for the credentials: no retry helps until an operator grants the privilege.
    #[error("elasticsearch: {0}; grant the user the write, delete and create_index privileges on the index")]
    Forbidden(String),
    #[error("elasticsearch: unexpected reply to {what}: {reason}")]
    Protocol { what: &'static str, reason: String },
}

impl Classify for EsSinkError {
    fn class(&self) -> ErrorClass {
        match self {
            EsSinkError::Build { .. } | EsSinkError::Forbidden(_) => ErrorClass::Operator,
            EsSinkError::Transport { .. } | EsSinkError::Busy(_) => ErrorClass::Retry,
            EsSinkError::Status { status, .. } => match *status {
                408 | 429 | 500..=599 => ErrorClass::Retry,
                _ => ErrorClass::Operator,
            },
            EsSinkError::Protocol { .. } => ErrorClass::Fatal,
        }
    }
}

/// One document write, ready to send.
struct Item {
    /// Index of the event in the batch.
    event: usize,
    /// `index`/`delete` action line and (for index) the source line, each ending in `\n`.
    body: Vec<u8>,
    lane: usize,
}

/// Where a partial row's stored document stands before this batch.
enum Stored {
    Missing,
    Found { version: i64, source: Map<String, Json> },
}

pub struct EsSink {
    cfg: EsConfig,
    ctx: SinkContext,
    client: Option<Elasticsearch>,
    /// The URL without credentials, for messages.
    url: String,
    /// Indices known to exist.
    known: HashSet<String>,
    lanes: std::collections::hash_map::RandomState,
}

impl EsSink {
    pub fn new(cfg: EsConfig, ctx: SinkContext) -> Self {
        let url = config::url_parts(cfg.url.expose()).map(|(u, _)| u).unwrap_or_else(|_| cfg.url.redacted());
        EsSink { cfg, ctx, client: None, url, known: HashSet::new(), lanes: Default::default() }
    }

    pub(crate) fn client(&mut self) -> Result<&Elasticsearch, EsSinkError> {
        if self.client.is_none() {
            self.client =
                Some(build_client(&self.cfg).map_err(|reason| EsSinkError::Build { url: self.url.clone(), reason })?);
        }
        Ok(self.client.as_ref().expect("built above"))
    }

    fn transport(&self, source: elasticsearch::Error) -> EsSinkError {
        EsSinkError::Transport { url: self.url.clone(), source }
    }

    async fn status_error(&self, what: String, resp: elasticsearch::http::response::Response) -> EsSinkError {
        let status = resp.status_code().as_u16();
        let mut body = resp.text().await.unwrap_or_default();
        body.truncate(500);
        EsSinkError::Status { url: self.url.clone(), what, status, body }
    }

    /// The cluster's root document (name, version); also the probe.
    pub(crate) async fn info(&mut self) -> Result<Json, EsSinkError> {
        let resp = self.client()?.info().send().await.map_err(|e| self.transport(e))?;
        if !resp.status_code().is_success() {
            return Err(self.status_error("GET /".into(), resp).await);
        }
        resp.json().await.map_err(|e| self.transport(e))
    }

    /// Write a batch; see the contract on [`crate::sinks`].
    pub async fn write(&mut self, events: &[ChangeEvent]) -> Result<WriteReport, EsSinkError> {
        if events.is_empty() {
            self.info().await?;
            return Ok(WriteReport::default());
        }
        let mut report = WriteReport::default();
        let mut start = 0;
        for (i, ev) in events.iter().enumerate() {
            if ev.op == Op::Truncate {
                self.write_rows(&events[start..i], start, &mut report).await?;
                self.truncate(ev, i, &mut report).await?;
                start = i + 1;
            }
        }
        self.write_rows(&events[start..], start, &mut report).await?;
        Ok(report)
    }

    /// The index of `ev`'s table.
    fn index_of(&self, ev: &ChangeEvent, buf: &mut String) -> Result<String, String> {
        render(&self.cfg.index, &self.ctx.connector, ev, buf);
        index_name(buf)
    }

    async fn write_rows(
        &mut self,
        events: &[ChangeEvent],
        offset: usize,
        report: &mut WriteReport,
    ) -> Result<(), EsSinkError> {
        if events.is_empty() {
            return Ok(());
        }
        // Address every event; an event that cannot be addressed is refused.
        let mut buf = String::new();
        let mut addr: Vec<Option<(String, String, i64)>> = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            let resolved = self.index_of(ev, &mut buf).and_then(|index| {
                doc_id(&ev.key, &mut buf).map_err(|e| format!("{} key {}: {e}", ev.table, key_text(ev)))?;
                let id = buf.clone();
                let version = external_version(ev.version)?;
                Ok((index, id, version))
            });
            match resolved {
                Ok(a) => addr.push(Some(a)),
                Err(reason) => {
                    report.rejected.push((offset + i, reason));
                    addr.push(None);
                }
            }
        }
        let mut indices: Vec<(&str, &ChangeEvent)> = Vec::new();
        for (a, ev) in addr.iter().zip(events) {
            if let Some((index, _, _)) = a {
                if !self.known.contains(index) && !indices.iter().any(|(i, _)| i == index) {
                    indices.push((index, ev));
                }
            }
        }
        for (index, ev) in indices {
            self.ensure_index(index, ev).await?;
        }
        let stored = self.fetch_partials(events, &addr).await?;

        // Build the items in batch order, merging partial rows over what came before them.
        // Parallel requests only pay off for batches bigger than one request.
        let lanes = self.cfg.max_in_flight.min(events.len().div_ceil(self.cfg.bulk_max_docs)).max(1);
        let enc = &self.ctx.encoding;
        let mut latest: HashMap<(&str, &str), Option<Map<String, Json>>> = HashMap::new();
        let mut items = Vec::with_capacity(events.len());
        for (i, (ev, a)) in events.iter().zip(&addr).enumerate() {
            let Some((index, id, version)) = a else { continue };
            let doc_key = (index.as_str(), id.as_str());
            let tracked = stored.contains_key(&doc_key);
            let lane = (self.lanes.hash_one(doc_key) % lanes as u64) as usize;
            let source = match ev.op {
                Op::Delete => {
                    if tracked {
                        latest.insert(doc_key, None);
                    }
                    items.push(Item { event: offset + i, body: action("delete", index, id, *version), lane });
                    continue;
                }
                Op::Truncate => unreachable!("split off by write"),
                _ if ev.partial => {
                    let base = match latest.get(&doc_key) {
                        Some(Some(doc)) => doc.clone(),
                        Some(None) => Map::new(),
                        None => match stored.get(&doc_key) {
                            Some(Stored::Found { version: v, .. }) if *v > *version => {
                                // A newer document is stored: this change is already superseded.
                                report.stale += 1;
                                continue;
                            }
                            Some(Stored::Found { source, .. }) => source.clone(),
                            _ => Map::new(),
                        },
                    };
                    let mut doc = base;
                    if let Some(after) = &ev.after {
                        for (name, v) in after.iter() {
                            doc.insert(name.to_string(), enc.to_json(v));
                        }
                    }
                    latest.insert(doc_key, Some(doc.clone()));
                    doc
                }
                _ => {
                    let doc = match row_json(ev.after.as_ref().unwrap_or(&ev.key), enc) {
                        Json::Object(m) => m,
                        _ => Map::new(),
                    };
                    if tracked {
                        latest.insert(doc_key, Some(doc.clone()));
                    }
                    doc
                }
            };
            let mut body = action("index", index, id, *version);
            serde_json::to_writer(&mut body, &source).expect("JSON to memory");
            body.push(b'\n');
            items.push(Item { event: offset + i, body, lane });
        }
        self.send(items, events, offset, report).await
    }

    /// Read the stored documents of partial rows that no earlier event of the batch wrote.
    async fn fetch_partials<'a>(
        &mut self,
        events: &[ChangeEvent],
        addr: &'a [Option<(String, String, i64)>],
    ) -> Result<HashMap<(&'a str, &'a str), Stored>, EsSinkError> {
        let mut written: HashSet<(&str, &str)> = HashSet::new();
        let mut wanted: Vec<(&str, &str)> = Vec::new();
        for (ev, a) in events.iter().zip(addr) {
            let Some((index, id, _)) = a else { continue };
            let k = (index.as_str(), id.as_str());
            if ev.partial && !written.contains(&k) && !wanted.contains(&k) {
                wanted.push(k);
            }
            written.insert(k);
        }
        let mut out = HashMap::with_capacity(wanted.len());
        for chunk in wanted.chunks(MGET_CHUNK) {
            let docs: Vec<Json> = chunk.iter().map(|(i, id)| serde_json::json!({ "_index": i, "_id": id })).collect();
            let resp = self
                .client()?
                .mget(MgetParts::None)
                .body(serde_json::json!({ "docs": docs }))
                .send()
                .await
                .map_err(|e| self.transport(e))?;
            if !resp.status_code().is_success() {
                return Err(self.status_error("_mget".into(), resp).await);
            }
            #[derive(Deserialize)]
            struct MgetDoc {
                #[serde(default)]
                found: bool,
                #[serde(rename = "_version")]
                version: Option<i64>,
                #[serde(rename = "_source")]
                source: Option<Map<String, Json>>,
                error: Option<Json>,
            }
            #[derive(Deserialize)]
            struct Mget {
                docs: Vec<MgetDoc>,
            }
            let reply: Mget = resp.json().await.map_err(|e| self.transport(e))?;
            if reply.docs.len() != chunk.len() {
                return Err(EsSinkError::Protocol {
                    what: "_mget",
                    reason: format!("{} documents for {} ids", reply.docs.len(), chunk.len()),
                });
            }
            for (k, d) in chunk.iter().zip(reply.docs) {
                if let Some(e) = d.error {
                    return Err(EsSinkError::Busy(format!("reading {}/{} to merge a partial row: {e}", k.0, k.1)));
                }
                let stored = match (d.found, d.version) {
                    (true, Some(version)) => Stored::Found { version, source: d.source.unwrap_or_default() },
                    _ => Stored::Missing,
                };
                out.insert(*k, stored);
            }
        }
        Ok(out)
    }

    /// Send the items: lanes concurrently, each lane's bulk requests in order.
    async fn send(
        &mut self,
        items: Vec<Item>,
        events: &[ChangeEvent],
        offset: usize,
        report: &mut WriteReport,
    ) -> Result<(), EsSinkError> {
        if items.is_empty() {
            return Ok(());
        }
        let lanes = items.iter().map(|i| i.lane).max().unwrap_or(0) + 1;
        let mut by_lane: Vec<Vec<Item>> = (0..lanes).map(|_| Vec::new()).collect();
        for item in items {
            by_lane[item.lane].push(item);
        }
        let client = self.client()?.clone();
        let this = &*self;
        let results = futures_util::future::join_all(
            by_lane.into_iter().filter(|l| !l.is_empty()).map(|lane| this.send_lane(&client, lane)),
        )
        .await;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(outcomes) => {
                    for (event, outcome) in outcomes {
                        match outcome {
                            Outcome::Applied => report.applied += 1,
                            Outcome::Stale => report.stale += 1,
                            Outcome::Rejected(reason) => {
                                let ev = &events[event - offset];
                                report.rejected.push((event, format!("{} key {}: {reason}", ev.table, key_text(ev))))
                            }
                        }
                    }
                }
                Err(e) => {
                    if matches!(e, EsSinkError::Busy(ref m) if m.contains("index_not_found")) {
                        self.known.clear();
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn send_lane(&self, client: &Elasticsearch, lane: Vec<Item>) -> Result<Vec<(usize, Outcome)>, EsSinkError> {
        let mut out = Vec::with_capacity(lane.len());
        let mut start = 0;
        while start < lane.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < lane.len()
                && end - start < self.cfg.bulk_max_docs
                && (end == start || bytes + lane[end].body.len() <= self.cfg.bulk_max_bytes)
            {
                bytes += lane[end].body.len();
                end += 1;
            }
            let mut body = Vec::with_capacity(bytes);
            for item in &lane[start..end] {
                body.extend_from_slice(&item.body);
            }
            let reply = self.bulk(client, body).await?;
            if reply.len() != end - start {
                return Err(EsSinkError::Protocol {
                    what: "_bulk",
                    reason: format!("{} results for {} items", reply.len(), end - start),
                });
            }
            for (item, outcome) in lane[start..end].iter().zip(reply) {
                out.push((item.event, outcome?));
            }
            start = end;
        }
        Ok(out)
    }

    /// One bulk request; the outcome of each item, or the error that fails the whole batch.
    async fn bulk(
        &self,
        client: &Elasticsearch,
        body: Vec<u8>,
    ) -> Result<Vec<Result<Outcome, EsSinkError>>, EsSinkError> {
        let mut req = client
            .bulk(BulkParts::None)
            .filter_path(&["errors", "items.*.status", "items.*.error", "items.*._id", "items.*._index"])
            .body(vec![Bytes::from(body)]);
        if self.cfg.refresh == Refresh::WaitFor {
            req = req.refresh(elasticsearch::params::Refresh::WaitFor);
        }
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status_code();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            let mut e = self.status_error("_bulk".into(), resp).await;
            if let EsSinkError::Status { body, .. } = &mut e {
                *body =
                    format!("request larger than the cluster's http.max_content_length; lower bulk_max_bytes ({body})");
            }
            return Err(e);
        }
        if !status.is_success() {
            return Err(self.status_error("_bulk".into(), resp).await);
        }
        let reply: BulkReply = resp.json().await.map_err(|e| self.transport(e))?;
        Ok(reply.items.into_iter().map(item_outcome).collect())
    }

    /// Create `index` unless it exists, with the table's mapping or the cache defaults.
    async fn ensure_index(&mut self, index: &str, ev: &ChangeEvent) -> Result<(), EsSinkError> {
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
    async fn truncate(&mut self, ev: &ChangeEvent, at: usize, report: &mut WriteReport) -> Result<(), EsSinkError> {
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

fn build_client(cfg: &EsConfig) -> Result<Elasticsearch, String> {
    let (url, _) = config::url_parts(cfg.url.expose())?;
    let url = elasticsearch::http::Url::parse(&url).map_err(|e| e.to_string())?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(cfg.request_timeout);
    builder = match &cfg.auth {
        Auth::None => builder,
        Auth::Basic { username, password } => {
            builder.auth(Credentials::Basic(username.clone(), password.expose().to_string()))
        }
        Auth::ApiKey(key) => builder.auth(Credentials::EncodedApiKey(key.expose().to_string())),
    };
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        builder = builder.cert_validation(CertificateValidation::Full(cert));
    }
    let transport = builder.build().map_err(|e| e.to_string())?;
    Ok(Elasticsearch::new(transport))
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

fn action(kind: &str, index: &str, id: &str, version: i64) -> Vec<u8> {
    let mut body = Vec::with_capacity(96 + index.len() + id.len());
    serde_json::to_writer(
        &mut body,
        &serde_json::json!({ kind: { "_index": index, "_id": id, "version": version, "version_type": "external_gte" } }),
    )
    .expect("JSON to memory");
    body.push(b'\n');
    body
}

fn key_text(ev: &ChangeEvent) -> String {
    let mut s = String::new();
    render(&[super::template::Part::Key], "", ev, &mut s);
    s
}

#[derive(Debug)]
enum Outcome {
    Applied,
    Stale,
    Rejected(String),
}

#[derive(Deserialize)]
struct BulkReply {
    #[serde(default)]
    items: Vec<HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Json>,
    #[serde(default, rename = "_index")]
    index: Option<String>,
}

/// What one bulk item's result means. Transient failures fail the batch (it is retried whole, in
/// order, which the versions make harmless); permanent ones reject the event.
fn item_outcome(item: HashMap<String, BulkItem>) -> Result<Outcome, EsSinkError> {
    let Some((action, item)) = item.into_iter().next() else {
        return Err(EsSinkError::Protocol { what: "_bulk", reason: "an empty item".into() });
    };
    let reason = || {
        let e = item.error.as_ref();
        let field =
            |e: Option<&Json>, f: &str| e.and_then(|e| e.get(f)).and_then(Json::as_str).unwrap_or("").to_string();
        let mut text = format!("{}: {}", field(e, "type"), field(e, "reason"));
        let caused = e.and_then(|e| e.get("caused_by"));
        if caused.is_some() {
            text.push_str(&format!(" (caused by {}: {})", field(caused, "type"), field(caused, "reason")));
        }
        format!("{} {} in index {}", item.status, text, item.index.as_deref().unwrap_or("?"))
    };
    match item.status {
        200..=299 => Ok(Outcome::Applied),
        // A delete of a document that is not there still leaves its tombstone.
        404 if action == "delete" && item.error.is_none() => Ok(Outcome::Applied),
        409 => Ok(Outcome::Stale),
        401 | 403 => Err(EsSinkError::Forbidden(reason())),
        404 | 408 | 429 | 500..=599 => Err(EsSinkError::Busy(reason())),
        _ => Ok(Outcome::Rejected(reason())),
    }
}

impl SinkSpec for EsConfig {
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    fn delivery(&self) -> Delivery {
        Delivery::Fenced
    }

    fn describe(&self) -> serde_json::Value {
        EsConfig::describe(self)
    }

    fn title(&self) -> String {
        format!("elasticsearch {}", self.url)
    }

    fn check<'a>(&'a self, connector: &'a str, tables: &'a [String]) -> BoxFuture<'a, Vec<Finding>> {
        check::check(self, connector, tables).boxed()
    }

    fn build(&self, ctx: SinkContext) -> Box<dyn Sink> {
        Box::new(EsSink::new(self.clone(), ctx))
    }
}

impl Sink for EsSink {
    fn write<'a>(&'a mut self, events: &'a [ChangeEvent]) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        async move { EsSink::write(self, events).await.map_err(SinkError::new) }.boxed()
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

    #[test]
    fn item_results() {
        let item = |action: &str, status: u16, error: Option<Json>| {
            HashMap::from([(action.to_string(), BulkItem { status, error, index: Some("i".into()) })])
        };
        assert!(matches!(item_outcome(item("index", 201, None)), Ok(Outcome::Applied)));
        assert!(matches!(item_outcome(item("delete", 404, None)), Ok(Outcome::Applied)));
        assert!(matches!(item_outcome(item("index", 409, None)), Ok(Outcome::Stale)));
        let mapping = serde_json::json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [n]"});
        match item_outcome(item("index", 400, Some(mapping))) {
            Ok(Outcome::Rejected(r)) => assert!(r.contains("mapper_parsing_exception") && r.contains("[n]"), "{r}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(item_outcome(item("index", 429, None)), Err(EsSinkError::Busy(_))));
        assert!(matches!(item_outcome(item("index", 403, None)), Err(EsSinkError::Forbidden(_))));
    }
}
