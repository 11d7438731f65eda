//! Bulk requests: a batch's writes spread over lanes by `_id`, each lane's bulk requests sent one
//! after the other, and every item's result read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use elasticsearch::http::StatusCode;
use elasticsearch::{BulkParts, Elasticsearch};
use serde::Deserialize;
use serde_json::Value as Json;

use super::config::Refresh;
use super::{key_text, EsSink, EsSinkError, Item};
use crate::connector::WriteReport;
use crate::event::ChangeEvent;

impl EsSink {
    /// Send the items: lanes concurrently, each lane's bulk requests in order.
    pub(super) async fn send(
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
                && end - start < self.bulk_docs.get()
                && (end == start || bytes + lane[end].body.len() <= self.cfg.bulk_max_bytes)
            {
                bytes += lane[end].body.len();
                end += 1;
            }
            let mut body = Vec::with_capacity(bytes);
            for item in &lane[start..end] {
                body.extend_from_slice(&item.body);
            }
            let reply = match self.bulk(client, body).await {
                Ok(reply) => {
                    self.bulk_docs.succeeded();
                    reply
                }
                Err(e) => {
                    if matches!(&e, EsSinkError::Transport { source, .. } if source.is_timeout()) {
                        self.bulk_docs.timed_out();
                    }
                    return Err(e);
                }
            };
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
}

/// How many documents a bulk request carries: `bulk_max_docs`, halved each time a request times
/// out (a cluster too slow for `request_timeout` at full size would otherwise time out on every
/// retry of the same batch, and never catch up), doubled back with each request that succeeds.
#[derive(Debug)]
pub(super) struct BulkDocs {
    max: usize,
    now: AtomicUsize,
}

impl BulkDocs {
    pub(super) fn new(max: usize) -> Self {
        BulkDocs { max: max.max(1), now: AtomicUsize::new(max.max(1)) }
    }

    pub(super) fn get(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    fn timed_out(&self) {
        let n = self.get();
        if n > 1 {
            tracing::warn!(from = n, to = n / 2, "elasticsearch bulk request timed out; sending smaller ones");
        }
        self.now.store((n / 2).max(1), Ordering::Relaxed);
    }

    fn succeeded(&self) {
        let n = self.get();
        self.now.store(n.saturating_mul(2).min(self.max), Ordering::Relaxed);
    }
}

pub(super) fn action(kind: &str, index: &str, id: &str, version: i64) -> Vec<u8> {
    let mut body = Vec::with_capacity(96 + index.len() + id.len());
    serde_json::to_writer(
        &mut body,
        &serde_json::json!({ kind: { "_index": index, "_id": id, "version": version, "version_type": "external_gte" } }),
    )
    .expect("JSON to memory");
    body.push(b'\n');
    body
}

#[derive(Debug)]
pub(super) enum Outcome {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn timeouts_halve_the_bulk_size_down_to_one_and_successes_double_it_back_to_the_maximum() {
        let b = BulkDocs::new(1000);
        assert_eq!(b.get(), 1000);
        b.timed_out();
        assert_eq!(b.get(), 500);
        for _ in 0..20 {
            b.timed_out();
        }
        assert_eq!(b.get(), 1);
        b.succeeded();
        assert_eq!(b.get(), 2);
        for _ in 0..20 {
            b.succeeded();
        }
        assert_eq!(b.get(), 1000);
        assert_eq!(BulkDocs::new(0).get(), 1);
    }
}
