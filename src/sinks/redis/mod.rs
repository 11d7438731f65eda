//! `kind = "redis"`: each row a Redis key (a hash, or a JSON string), fenced by source version.
//!
//! Layout. A row lives at a key from the template (default `{connector}:{table}:{key}`). Its
//! version lives beside it, at `<version_prefix>{<row key>}` (or `<version_prefix><row key>` when
//! the row key already has a hash tag), so both always hash to the same Redis Cluster slot and one
//! Lua script can check and write them atomically. Readers never see the version in the row unless
//! they set `version_field`.
//!
//! Fencing. Every write runs a script ([`scripts`]) that compares the event's version with the
//! stored one and does nothing unless the event is newer. A delete removes the row and keeps the
//! version key, with `tombstone_ttl`, so a replay of an older insert cannot resurrect the row. A
//! truncate deletes the table's rows the same way, each leaving a tombstone.

pub mod check;
pub mod cluster;
pub mod config;
pub mod keys;
pub mod scripts;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisError, Value as RValue};

pub use config::{Format, RedisConfig};

use self::cluster::{key_slot, SlotMap};
use self::keys::{render_key, scan_pattern};
use self::scripts::{rows_script, Call, ROWS_PER_CALL};
use crate::check::Finding;
use crate::connector::{Delivery, Sink, SinkContext, SinkError, SinkSpec, WriteReport};
use crate::event::{ChangeEvent, Op, Row};
use crate::retry::{Classify, ErrorClass};

const SCAN_COUNT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RedisSinkError {
    #[error("redis {url}: {source}")]
    Connect { url: String, source: RedisError },
    #[error("redis: {0}")]
    Command(#[from] RedisError),
    /// The server answered an item with a transient error (loading, busy, failover).
    #[error("redis: {0}")]
    Busy(String),
    #[error("redis: unexpected reply to {what}: {reply}")]
    Protocol { what: &'static str, reply: String },
}

pub use crate::redis_client::classify;

impl Classify for RedisSinkError {
    fn class(&self) -> ErrorClass {
        match self {
            RedisSinkError::Connect { source, .. } => match classify(source) {
                ErrorClass::Operator => ErrorClass::Operator,
                _ => ErrorClass::Retry,
            },
            RedisSinkError::Command(e) => classify(e),
            RedisSinkError::Busy(_) => ErrorClass::Retry,
            RedisSinkError::Protocol { .. } => ErrorClass::Fatal,
        }
    }
}

/// Server error codes that say "try again later", not "this item is wrong".
fn transient_code(code: &str) -> bool {
    matches!(
        code,
        "NOSCRIPT"
            | "LOADING"
            | "BUSY"
            | "TRYAGAIN"
            | "CLUSTERDOWN"
            | "MASTERDOWN"
            | "READONLY"
            | "OOM"
            | "MOVED"
            | "ASK"
    )
}

pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(crate) async fn query(&mut self, cmd: &Cmd) -> Result<RValue, RedisError> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

pub struct RedisSink {
    cfg: RedisConfig,
    ctx: SinkContext,
    pub(crate) conn: Option<Conn>,
    /// SHA1 of the loaded row script.
    sha: Option<String>,
    /// Which primary serves which slots (cluster only); reloaded after a MOVED/ASK reply.
    slots: Option<SlotMap>,
    // Scratch buffers reused across events.
    key_buf: String,
    text_buf: String,
}

impl RedisSink {
    pub fn new(cfg: RedisConfig, ctx: SinkContext) -> Self {
        if let Some(w) = cfg.tls.warning() {
            tracing::warn!(connector = %ctx.connector, url = %cfg.url, "{w}");
        }
        RedisSink { cfg, ctx, conn: None, sha: None, slots: None, key_buf: String::new(), text_buf: String::new() }
    }

    fn script(&self) -> String {
        rows_script(self.cfg.format == Format::Json)
    }

    async fn connect(&self) -> Result<Conn, RedisError> {
        if self.cfg.cluster {
            let client = self
                .cfg
                .tls
                .cluster(self.cfg.url.expose())?
                .connection_timeout(self.cfg.connect_timeout)
                .response_timeout(self.cfg.response_timeout)
                .retries(2)
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        } else {
            let client = self.cfg.tls.client(self.cfg.url.expose())?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(self.cfg.connect_timeout)
                .set_response_timeout(self.cfg.response_timeout);
            Ok(Conn::Single(client.get_multiplexed_async_connection_with_config(&config).await?))
        }
    }

    /// Connect (if needed), load the script (on a cluster `SCRIPT LOAD` goes to every primary)
    /// and, on a cluster, the slot map.
    pub(crate) async fn ready(&mut self) -> Result<(), RedisSinkError> {
        if self.conn.is_none() {
            let conn = self
                .connect()
                .await
                .map_err(|source| RedisSinkError::Connect { url: self.cfg.url.redacted(), source })?;
            self.conn = Some(conn);
            self.sha = None;
            self.slots = None;
        }
        let script = self.script();
        let conn = self.conn.as_mut().expect("connected above");
        if self.sha.is_none() {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(&script);
            self.sha = Some(match conn.query(&load).await? {
                RValue::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                RValue::SimpleString(s) => s,
                other => return Err(RedisSinkError::Protocol { what: "SCRIPT LOAD", reply: format!("{other:?}") }),
            });
        }
        if self.cfg.cluster && self.slots.is_none() {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SLOTS");
            self.slots = Some(SlotMap::parse(conn.query(&cmd).await?)?);
        }
        Ok(())
    }

    /// Write a batch; see the contract on [`Sink`].
    pub async fn write(&mut self, events: &[ChangeEvent]) -> Result<WriteReport, RedisSinkError> {
        let result = self.write_inner(events).await;
        if let Err(e) = &result {
            if e.class() == ErrorClass::Retry {
                // Start over with a fresh connection (reloaded script and slot map) next time.
                self.conn = None;
                self.sha = None;
                self.slots = None;
            }
        }
        result
    }

    async fn write_inner(&mut self, events: &[ChangeEvent]) -> Result<WriteReport, RedisSinkError> {
        self.ready().await?;
        if events.is_empty() {
            // A probe: prove the server answers.
            self.conn.as_mut().expect("ready").query(&redis::cmd("PING")).await?;
            return Ok(WriteReport::default());
        }
        let mut report = WriteReport::default();
        let mut start = 0;
        for (i, ev) in events.iter().enumerate() {
            if ev.op == Op::Truncate {
                self.write_rows(&events[start..i], start, &mut report).await?;
                self.truncate(ev, &mut report).await?;
                start = i + 1;
            }
        }
        self.write_rows(&events[start..], start, &mut report).await?;
        Ok(report)
    }

    fn rows_per_call(&self) -> usize {
        // The keys of one call must share a slot, so on a cluster each row is its own call.
        if self.cfg.cluster {
            1
        } else {
            ROWS_PER_CALL
        }
    }

    async fn write_rows(
        &mut self,
        events: &[ChangeEvent],
        offset: usize,
        report: &mut WriteReport,
    ) -> Result<(), RedisSinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let per_call = self.rows_per_call();
        let mut calls = Vec::with_capacity(events.len().div_ceil(per_call));
        let mut call = Call::new();
        for (i, ev) in events.iter().enumerate() {
            self.add_row(&mut call, offset + i, ev);
            if call.len() == per_call {
                calls.push(std::mem::take(&mut call));
            }
        }
        if !call.is_empty() {
            calls.push(call);
        }
        let replies = self.exec_calls(&calls).await?;
        for (call, reply) in calls.iter().zip(replies) {
            let rows = match reply {
                RValue::Array(rows) => rows,
                RValue::ServerError(e) if transient_code(e.code()) => {
                    return Err(RedisSinkError::Busy(format!("{} {}", e.code(), e.details().unwrap_or(""))));
                }
                // The server refused the whole call (e.g. CROSSSLOT): each of its rows is refused.
                RValue::ServerError(e) => vec![RValue::ServerError(e); call.len()],
                other => return Err(RedisSinkError::Protocol { what: "row script", reply: format!("{other:?}") }),
            };
            if rows.len() != call.len() {
                return Err(RedisSinkError::Protocol {
                    what: "row script",
                    reply: format!("{} results for {} rows", rows.len(), call.len()),
                });
            }
            for (j, row) in rows.into_iter().enumerate() {
                match row {
                    RValue::Int(1) => report.applied += 1,
                    RValue::Int(0) => report.stale += 1,
                    RValue::ServerError(e) if transient_code(e.code()) => {
                        return Err(RedisSinkError::Busy(format!("{} {}", e.code(), e.details().unwrap_or(""))));
                    }
                    RValue::ServerError(e) => report.rejected.push((
                        call.rows[j],
                        format!("key {}: {} {}", call.row_key(j), e.code(), e.details().unwrap_or(""))
                            .trim_end()
                            .to_string(),
                    )),
                    other => return Err(RedisSinkError::Protocol { what: "row script", reply: format!("{other:?}") }),
                }
            }
        }
        Ok(())
    }

    /// Send the calls and return their replies in order. On a cluster the calls are split into
    /// one pipeline per primary, sent concurrently; each pipeline keeps the batch order, so per
    /// key the order holds.
    async fn exec_calls(&mut self, calls: &[Call]) -> Result<Vec<RValue>, RedisSinkError> {
        if calls.is_empty() {
            // An empty pipeline sends nothing, and a multiplexed connection would wait for its
            // (zero) replies until the response timeout: a SCAN page without a match of a truncate.
            return Ok(Vec::new());
        }
        let sha = self.sha.clone().expect("ready");
        let ttl_ms = self.cfg.ttl.map_or(0, |t| t.as_millis() as u64);
        let tombstone_ms = self.cfg.tombstone_ttl.as_millis() as u64;
        let conn = self.conn.as_mut().expect("ready");
        let cluster = match conn {
            Conn::Single(c) => {
                let mut pipe = Pipeline::with_capacity(calls.len());
                for call in calls {
                    pipe.add_command(call.command(&sha, ttl_ms, tombstone_ms));
                }
                return Ok(c.req_packed_commands(&pipe, 0, pipe.len()).await?);
            }
            Conn::Cluster(c) => c,
        };
        let slots = self.slots.as_ref().expect("ready");
        let mut groups: Vec<(Pipeline, Vec<usize>)> =
            (0..slots.nodes.len()).map(|_| (Pipeline::new(), Vec::new())).collect();
        for (i, call) in calls.iter().enumerate() {
            let key = call.first_key();
            let node = slots
                .node_of(key_slot(key))
                .ok_or_else(|| RedisSinkError::Busy(format!("no primary serves the slot of key {key}")))?;
            groups[node].0.add_command(call.command(&sha, ttl_ms, tombstone_ms));
            groups[node].1.push(i);
        }
        let sends = groups.iter().enumerate().filter(|(_, (p, _))| !p.is_empty()).map(|(node, (pipe, _))| {
            let mut c = cluster.clone();
            let (host, port) = slots.nodes[node].clone();
            async move {
                let route = SingleNodeRoutingInfo::ByAddress { host, port };
                (node, c.route_pipeline(pipe, 0, pipe.len(), route).await)
            }
        });
        let mut replies: Vec<RValue> = vec![RValue::Nil; calls.len()];
        for (node, result) in futures_util::future::join_all(sends).await {
            for (reply, &i) in result?.into_iter().zip(&groups[node].1) {
                replies[i] = reply;
            }
        }
        Ok(replies)
    }

    /// Add one row event to a script call.
    fn add_row(&mut self, call: &mut Call, index: usize, ev: &ChangeEvent) {
        render_key(&self.cfg.key, &self.ctx.connector, ev, &mut self.key_buf);
        let version = ev.version.to_hex();
        let vprefix = &self.cfg.version_prefix;
        if ev.op == Op::Delete {
            call.begin(index, &self.key_buf, vprefix, 2, "d", &version);
            return;
        }
        let empty = Row::default();
        let row = ev.after.as_ref().unwrap_or(&empty);
        let enc = &self.ctx.encoding;
        let version_field = self.cfg.version_field.as_deref();
        match self.cfg.format {
            Format::Hash => {
                let non_null = row.iter().filter(|(_, v)| !v.is_null()).count();
                let pairs = non_null + usize::from(version_field.is_some());
                let nulls = row.len() - non_null;
                call.begin(index, &self.key_buf, vprefix, 3 + 2 * pairs + nulls, "u", &version);
                call.uint(pairs);
                for (name, v) in row.iter() {
                    self.text_buf.clear();
                    if enc.write_text(v, &mut self.text_buf) {
                        call.str(name.as_bytes());
                        call.str(self.text_buf.as_bytes());
                    }
                }
                if let Some(f) = version_field {
                    call.str(f.as_bytes());
                    call.str(version.as_bytes());
                }
                // NULL columns are removed from the hash.
                for (name, v) in row.iter() {
                    if v.is_null() {
                        call.str(name.as_bytes());
                    }
                }
            }
            Format::Json => {
                let mut doc = crate::event::envelope::row_json(row, enc);
                if let Some(f) = version_field {
                    doc[f] = version.clone().into();
                }
                let names = if ev.partial { row.len() + usize::from(version_field.is_some()) } else { 0 };
                call.begin(index, &self.key_buf, vprefix, 3 + names, if ev.partial { "m" } else { "r" }, &version);
                call.str(doc.to_string().as_bytes());
                if ev.partial {
                    for (name, _) in row.iter() {
                        call.str(name.as_bytes());
                    }
                    if let Some(f) = version_field {
                        call.str(f.as_bytes());
                    }
                }
            }
        }
    }

    /// Delete every row of the truncated table, each with a tombstone at the truncate's version.
    async fn truncate(&mut self, ev: &ChangeEvent, report: &mut WriteReport) -> Result<(), RedisSinkError> {
        let pattern = scan_pattern(&self.cfg.key, &self.ctx.connector, ev);
        let nodes: Vec<Option<(String, u16)>> = match &self.slots {
            Some(map) => map.nodes.iter().cloned().map(Some).collect(),
            None => vec![None],
        };
        let version = ev.version.to_hex();
        let per_call = self.rows_per_call();
        for node in nodes {
            let mut cursor = "0".to_string();
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(&cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT);
                let conn = self.conn.as_mut().expect("ready");
                let reply = match (&node, conn) {
                    (Some((host, port)), Conn::Cluster(c)) => {
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        c.route_command(&scan, route).await?
                    }
                    (_, conn) => conn.query(&scan).await?,
                };
                let (next, keys) = scan_reply(reply)?;
                let mut calls = Vec::new();
                for chunk in keys.chunks(per_call) {
                    let mut call = Call::new();
                    for (i, k) in chunk.iter().enumerate() {
                        call.begin(i, k, &self.cfg.version_prefix, 2, "d", &version);
                    }
                    calls.push(call);
                }
                for reply in self.exec_calls(&calls).await? {
                    let failed = match &reply {
                        RValue::Array(rows) => rows.iter().find(|r| matches!(r, RValue::ServerError(_))).cloned(),
                        other => Some(other.clone()),
                    };
                    if let Some(e) = failed {
                        return Err(RedisSinkError::Busy(format!("truncate of {pattern}: {e:?}")));
                    }
                }
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        report.applied += 1;
        Ok(())
    }
}

fn scan_reply(v: RValue) -> Result<(String, Vec<String>), RedisSinkError> {
    let text = |v: RValue| match v {
        RValue::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        RValue::SimpleString(s) => Some(s),
        _ => None,
    };
    if let RValue::Array(mut items) = v {
        if items.len() == 2 {
            let keys = items.pop().expect("two items");
            let cursor = items.pop().expect("two items");
            if let (Some(c), RValue::Array(ks)) = (text(cursor), keys) {
                return Ok((c, ks.into_iter().filter_map(text).collect()));
            }
        }
    }
    Err(RedisSinkError::Protocol { what: "SCAN", reply: "malformed reply".into() })
}
impl SinkSpec for RedisConfig {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn delivery(&self) -> Delivery {
        Delivery::Fenced
    }

    fn describe(&self) -> serde_json::Value {
        RedisConfig::describe(self)
    }

    fn title(&self) -> String {
        format!("redis {}", self.url)
    }

    fn check<'a>(&'a self, _connector: &'a str, _tables: &'a [String]) -> BoxFuture<'a, Vec<Finding>> {
        check::check(self).boxed()
    }

    fn build(&self, ctx: SinkContext) -> Box<dyn Sink> {
        Box::new(RedisSink::new(self.clone(), ctx))
    }
}

impl Sink for RedisSink {
    fn write<'a>(&'a mut self, events: &'a [ChangeEvent]) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        async move { RedisSink::write(self, events).await.map_err(SinkError::new) }.boxed()
    }
}
