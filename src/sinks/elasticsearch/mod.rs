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
//! most `bulk_max_docs` / `bulk_max_bytes`, one after the other (a request that times out halves
//! the documents per request until requests succeed again). Every item's result is read: a 200
//! bulk response can still carry failed items.

mod bulk;
pub mod check;
pub mod config;
mod index;
pub mod naming;

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::{Elasticsearch, MgetParts};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::Deserialize;
use serde_json::{Map, Value as Json};

pub use config::EsConfig;

use self::bulk::action;
use self::config::Auth;
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
    bulk_docs: bulk::BulkDocs,
}

impl EsSink {
    pub fn new(cfg: EsConfig, ctx: SinkContext) -> Self {
        let url = config::url_parts(cfg.url.expose()).map(|(u, _)| u).unwrap_or_else(|_| cfg.url.redacted());
        let bulk_docs = bulk::BulkDocs::new(cfg.bulk_max_docs);
        EsSink { cfg, ctx, client: None, url, known: HashSet::new(), lanes: Default::default(), bulk_docs }
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
        let lanes = self.cfg.max_in_flight.min(events.len().div_ceil(self.bulk_docs.get())).max(1);
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

fn key_text(ev: &ChangeEvent) -> String {
    let mut s = String::new();
    render(&[super::template::Part::Key], "", ev, &mut s);
    s
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
