//! `kind = "redis"`: each row a Redis key (a hash, or a JSON string), fenced by source version.
//!
//! Layout. A row lives at a key from the template (default `{connector}:{table}:{key}`). Its
//! version lives beside it, at `<version_prefix>{<row key>}` (or `<version_prefix><row key>` when
//! the row key already has a hash tag), so both always hash to the same Redis Cluster slot and one
//! Lua script can check and write them atomically. Readers never see the version in the row unless
//! they set `version_field`.
//!
//! Fencing. Every write runs a script that compares the event's version with the stored one and
//! does nothing unless the event is newer. A delete removes the row and keeps the version key, with
//! `tombstone_ttl`, so a replay of an older insert cannot resurrect the row. A truncate deletes the
//! table's rows the same way, each leaving a tombstone.

pub mod check;
pub mod config;

use std::fmt::Write as _;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, Value as RValue};

pub use config::{Format, Part, RedisConfig};

use super::{SinkContext, WriteReport};
use crate::event::{ChangeEvent, Op, Row};
use crate::retry::{Classify, ErrorClass};

/// Upsert into a hash. KEYS: row, version. ARGV: version, replace ('1') or merge ('0'), TTL ms
/// ('0': none), n, then n field/value pairs, then the fields to delete (NULL columns).
const UPSERT_HASH: &str = r#"
local cur = redis.call('GET', KEYS[2])
if cur and cur >= ARGV[1] then return 0 end
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
local n = tonumber(ARGV[4])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + 2 * n)) end
if #ARGV > 4 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 5 + 2 * n)) end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[1])
end
return 1
"#;

/// Upsert a JSON document. KEYS: row, version. ARGV: version, replace ('1') or merge ('0'), TTL
/// ms, the document, then (merge) the names of the fields the document carries. A merge keeps
/// the stored document's other fields (columns the source did not send), splicing them in.
const UPSERT_JSON: &str = r#"
local cur = redis.call('GET', KEYS[2])
if cur and cur >= ARGV[1] then return 0 end
local doc = ARGV[4]
if ARGV[2] == '0' then
  local old = redis.call('GET', KEYS[1])
  if old then
    local present = {}
    for i = 5, #ARGV do present[ARGV[i]] = true end
    local extra = {}
    for k, v in pairs(cjson.decode(old)) do
      if not present[k] then extra[#extra + 1] = cjson.encode(k) .. ':' .. cjson.encode(v) end
    end
    if #extra > 0 then
      local sep = (doc == '{}') and '' or ','
      doc = string.sub(doc, 1, -2) .. sep .. table.concat(extra, ',') .. '}'
    end
  end
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], doc, 'PX', ttl)
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], doc)
  redis.call('SET', KEYS[2], ARGV[1])
end
return 1
"#;

/// Delete, leaving a versioned tombstone. KEYS: row, version. ARGV: version, tombstone TTL ms.
const DELETE: &str = r#"
local cur = redis.call('GET', KEYS[2])
if cur and cur >= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"#;

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

fn redis_error_class(e: &RedisError) -> ErrorClass {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return ErrorClass::Retry;
    }
    match e.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => ErrorClass::Operator,
        ErrorKind::BusyLoadingError
        | ErrorKind::TryAgain
        | ErrorKind::ClusterDown
        | ErrorKind::MasterDown
        | ErrorKind::ReadOnly
        | ErrorKind::NoScriptError
        | ErrorKind::Moved
        | ErrorKind::Ask
        | ErrorKind::IoError
        | ErrorKind::ClusterConnectionNotFound => ErrorClass::Retry,
        _ => match e.code() {
            Some("NOPERM") | Some("WRONGPASS") | Some("NOAUTH") => ErrorClass::Operator,
            Some("OOM") => ErrorClass::Retry,
            _ => ErrorClass::Operator,
        },
    }
}

impl Classify for RedisSinkError {
    fn class(&self) -> ErrorClass {
        match self {
            RedisSinkError::Connect { source, .. } => match redis_error_class(source) {
                ErrorClass::Operator => ErrorClass::Operator,
                _ => ErrorClass::Retry,
            },
            RedisSinkError::Command(e) => redis_error_class(e),
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
    async fn exec(&mut self, pipe: &Pipeline) -> Result<Vec<RValue>, RedisError> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipe, 0, pipe.len()).await,
            Conn::Cluster(c) => c.req_packed_commands(pipe, 0, pipe.len()).await,
        }
    }

    /// Run a pipeline on one cluster primary (every key of it must live there).
    async fn exec_on(&mut self, pipe: &Pipeline, node: &(String, u16)) -> Result<Vec<RValue>, RedisError> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipe, 0, pipe.len()).await,
            Conn::Cluster(c) => {
                let route = SingleNodeRoutingInfo::ByAddress { host: node.0.clone(), port: node.1 };
                c.route_pipeline(pipe, 0, pipe.len(), route).await
            }
        }
    }

    pub(crate) async fn query(&mut self, cmd: &Cmd) -> Result<RValue, RedisError> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

struct Scripts {
    upsert: String,
    delete: String,
}

pub struct RedisSink {
    cfg: RedisConfig,
    ctx: SinkContext,
    pub(crate) conn: Option<Conn>,
    scripts: Option<Scripts>,
    /// Which primary serves which slots (cluster only); reloaded after a MOVED/ASK reply.
    slots: Option<SlotMap>,
    upsert_src: &'static str,
    // Scratch buffers reused across events.
    key_buf: String,
    text_buf: String,
}

impl RedisSink {
    pub fn new(cfg: RedisConfig, ctx: SinkContext) -> Self {
        let upsert_src = match cfg.format {
            Format::Hash => UPSERT_HASH,
            Format::Json => UPSERT_JSON,
        };
        RedisSink {
            cfg,
            ctx,
            conn: None,
            scripts: None,
            slots: None,
            upsert_src,
            key_buf: String::new(),
            text_buf: String::new(),
        }
    }

    async fn connect(&self) -> Result<Conn, RedisError> {
        if self.cfg.cluster {
            let client = redis::cluster::ClusterClient::builder(vec![self.cfg.url.expose()])
                .connection_timeout(self.cfg.connect_timeout)
                .response_timeout(self.cfg.response_timeout)
                .retries(2)
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        } else {
            let client = redis::Client::open(self.cfg.url.expose())?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(self.cfg.connect_timeout)
                .set_response_timeout(self.cfg.response_timeout);
            Ok(Conn::Single(client.get_multiplexed_async_connection_with_config(&config).await?))
        }
    }

    /// Connect (if needed) and load the scripts; on a cluster `SCRIPT LOAD` goes to every primary.
    pub(crate) async fn ready(&mut self) -> Result<(), RedisSinkError> {
        if self.conn.is_none() {
            let conn = self
                .connect()
                .await
                .map_err(|source| RedisSinkError::Connect { url: self.cfg.url.redacted(), source })?;
            self.conn = Some(conn);
            self.scripts = None;
            self.slots = None;
        }
        if self.scripts.is_none() {
            let conn = self.conn.as_mut().expect("connected above");
            let load = |src: &'static str| {
                let mut c = redis::cmd("SCRIPT");
                c.arg("LOAD").arg(src);
                c
            };
            let upsert = sha_reply(conn.query(&load(self.upsert_src)).await?)?;
            let delete = sha_reply(conn.query(&load(DELETE)).await?)?;
            self.scripts = Some(Scripts { upsert, delete });
        }
        if self.cfg.cluster && self.slots.is_none() {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SLOTS");
            let reply = self.conn.as_mut().expect("connected above").query(&cmd).await?;
            self.slots = Some(SlotMap::parse(reply)?);
        }
        Ok(())
    }

    /// Write a batch; see the contract on [`crate::sinks`].
    pub async fn write(&mut self, events: &[ChangeEvent]) -> Result<WriteReport, RedisSinkError> {
        let result = self.write_inner(events).await;
        if let Err(e) = &result {
            if e.class() == ErrorClass::Retry {
                // Start over with a fresh connection (reloaded scripts and slot map) next time.
                self.conn = None;
                self.scripts = None;
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

    async fn write_rows(
        &mut self,
        events: &[ChangeEvent],
        offset: usize,
        report: &mut WriteReport,
    ) -> Result<(), RedisSinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut pipe = Vec::with_capacity(events.len());
        let mut keys = Vec::with_capacity(events.len());
        for ev in events {
            let cmd = self.command(ev);
            keys.push(self.key_buf.clone());
            pipe.push(cmd);
        }
        let replies = self.exec_pipeline(pipe, &keys).await?;
        if replies.len() != events.len() {
            return Err(RedisSinkError::Protocol {
                what: "pipeline",
                reply: format!("{} replies for {} commands", replies.len(), events.len()),
            });
        }
        for (i, reply) in replies.into_iter().enumerate() {
            match reply {
                RValue::Int(1) => report.applied += 1,
                RValue::Int(0) => report.stale += 1,
                RValue::ServerError(e) if transient_code(e.code()) => {
                    return Err(RedisSinkError::Busy(format!("{}: {}", e.code(), e.details().unwrap_or(""))));
                }
                RValue::ServerError(e) => report.rejected.push((
                    offset + i,
                    format!("key {}: {} {}", keys[i], e.code(), e.details().unwrap_or("")).trim_end().to_string(),
                )),
                other => return Err(RedisSinkError::Protocol { what: "write script", reply: format!("{other:?}") }),
            }
        }
        Ok(())
    }

    /// Send commands (one per key in `keys`) and return their replies in order. On a cluster the
    /// commands are split into one pipeline per primary, sent concurrently; each pipeline keeps
    /// the batch order, so per key the order holds.
    async fn exec_pipeline(&mut self, cmds: Vec<Cmd>, keys: &[String]) -> Result<Vec<RValue>, RedisSinkError> {
        let conn = self.conn.as_mut().expect("ready");
        let Conn::Cluster(cluster) = conn else {
            let mut pipe = Pipeline::with_capacity(cmds.len());
            for c in cmds {
                pipe.add_command(c);
            }
            return Ok(conn.exec(&pipe).await?);
        };
        let slots = self.slots.as_ref().expect("ready");
        let mut groups: Vec<(Pipeline, Vec<usize>)> =
            (0..slots.nodes.len()).map(|_| (Pipeline::new(), Vec::new())).collect();
        for (i, (cmd, key)) in cmds.into_iter().zip(keys).enumerate() {
            let node = slots
                .node_of(key_slot(key))
                .ok_or_else(|| RedisSinkError::Busy(format!("no primary serves the slot of key {key}")))?;
            groups[node].0.add_command(cmd);
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
        let mut replies: Vec<RValue> = vec![RValue::Nil; keys.len()];
        for (node, result) in futures_util::future::join_all(sends).await {
            for (reply, &i) in result?.into_iter().zip(&groups[node].1) {
                replies[i] = reply;
            }
        }
        Ok(replies)
    }

    /// The script call for one row event; leaves the row key in `key_buf`.
    fn command(&mut self, ev: &ChangeEvent) -> Cmd {
        render_key(&self.cfg.key, &self.ctx.connector, ev, &mut self.key_buf);
        let scripts = self.scripts.as_ref().expect("ready");
        let version = ev.version.to_hex();
        let mut cmd = redis::cmd("EVALSHA");
        let is_delete = ev.op == Op::Delete;
        cmd.arg(if is_delete { &scripts.delete } else { &scripts.upsert })
            .arg(2)
            .arg(&self.key_buf)
            .arg(version_key(&self.cfg.version_prefix, &self.key_buf))
            .arg(&version);
        if is_delete {
            cmd.arg(self.cfg.tombstone_ttl.as_millis() as u64);
            return cmd;
        }
        let empty = Row::default();
        let row = ev.after.as_ref().unwrap_or(&empty);
        cmd.arg(if ev.partial { "0" } else { "1" }).arg(self.cfg.ttl.map_or(0, |t| t.as_millis() as u64));
        let enc = &self.ctx.encoding;
        match self.cfg.format {
            Format::Hash => {
                let non_null = row.iter().filter(|(_, v)| !v.is_null()).count();
                let n = non_null + usize::from(self.cfg.version_field.is_some());
                cmd.arg(n);
                for (name, v) in row.iter() {
                    self.text_buf.clear();
                    if enc.write_text(v, &mut self.text_buf) {
                        cmd.arg(name).arg(&self.text_buf);
                    }
                }
                if let Some(f) = &self.cfg.version_field {
                    cmd.arg(f).arg(&version);
                }
                for (name, v) in row.iter() {
                    if v.is_null() {
                        cmd.arg(name);
                    }
                }
            }
            Format::Json => {
                let mut doc = crate::event::envelope::row_json(row, enc);
                if let Some(f) = &self.cfg.version_field {
                    doc[f.as_str()] = version.clone().into();
                }
                cmd.arg(doc.to_string());
                if ev.partial {
                    for (name, _) in row.iter() {
                        cmd.arg(name);
                    }
                    if let Some(f) = &self.cfg.version_field {
                        cmd.arg(f);
                    }
                }
            }
        }
        cmd
    }

    /// Delete every row of the truncated table, each with a tombstone at the truncate's version.
    async fn truncate(&mut self, ev: &ChangeEvent, report: &mut WriteReport) -> Result<(), RedisSinkError> {
        let pattern = scan_pattern(&self.cfg.key, &self.ctx.connector, ev);
        let nodes = self.scan_targets().await?;
        let delete = self.scripts.as_ref().expect("ready").delete.clone();
        let version = ev.version.to_hex();
        let ttl = self.cfg.tombstone_ttl.as_millis() as u64;
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
                if !keys.is_empty() {
                    let mut pipe = Pipeline::with_capacity(keys.len());
                    for k in &keys {
                        pipe.cmd("EVALSHA")
                            .arg(&delete)
                            .arg(2)
                            .arg(k)
                            .arg(version_key(&self.cfg.version_prefix, k))
                            .arg(&version)
                            .arg(ttl);
                    }
                    let conn = self.conn.as_mut().expect("ready");
                    let replies = match &node {
                        Some(n) => conn.exec_on(&pipe, n).await?,
                        None => conn.exec(&pipe).await?,
                    };
                    for reply in replies {
                        if let RValue::ServerError(e) = reply {
                            return Err(RedisSinkError::Busy(format!(
                                "truncate: {} {}",
                                e.code(),
                                e.details().unwrap_or("")
                            )));
                        }
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

    /// Where to SCAN: the one server, or every cluster primary (`Some((host, port))`).
    async fn scan_targets(&mut self) -> Result<Vec<Option<(String, u16)>>, RedisSinkError> {
        Ok(match &self.slots {
            Some(map) => map.nodes.iter().cloned().map(Some).collect(),
            None => vec![None],
        })
    }
}

fn sha_reply(v: RValue) -> Result<String, RedisSinkError> {
    match v {
        RValue::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        RValue::SimpleString(s) => Ok(s),
        other => Err(RedisSinkError::Protocol { what: "SCRIPT LOAD", reply: format!("{other:?}") }),
    }
}

fn scan_reply(v: RValue) -> Result<(String, Vec<String>), RedisSinkError> {
    if let RValue::Array(mut items) = v {
        if items.len() == 2 {
            let keys = items.pop().unwrap();
            let cursor = items.pop().unwrap();
            let text = |v: RValue| match v {
                RValue::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                RValue::SimpleString(s) => Some(s),
                _ => None,
            };
            if let (Some(c), RValue::Array(ks)) = (text(cursor), keys) {
                return Ok((c, ks.into_iter().filter_map(text).collect()));
            }
        }
        return Err(RedisSinkError::Protocol { what: "SCAN", reply: "malformed reply".into() });
    }
    Err(RedisSinkError::Protocol { what: "SCAN", reply: format!("{v:?}") })
}

/// The primaries of a Redis Cluster and the slot ranges each serves (from `CLUSTER SLOTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotMap {
    /// (first slot, last slot, index into `nodes`)
    ranges: Vec<(u16, u16, usize)>,
    nodes: Vec<(String, u16)>,
}

impl SlotMap {
    fn parse(reply: RValue) -> Result<SlotMap, RedisSinkError> {
        let bad = |why: &str| RedisSinkError::Protocol { what: "CLUSTER SLOTS", reply: why.to_string() };
        let RValue::Array(entries) = reply else { return Err(bad("not an array")) };
        let mut map = SlotMap { ranges: Vec::new(), nodes: Vec::new() };
        for entry in entries {
            let RValue::Array(parts) = entry else { return Err(bad("entry is not an array")) };
            let (Some(RValue::Int(start)), Some(RValue::Int(end)), Some(RValue::Array(primary))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return Err(bad("malformed entry"));
            };
            let host = match primary.first() {
                Some(RValue::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(RValue::SimpleString(s)) => s.clone(),
                _ => return Err(bad("malformed node")),
            };
            let Some(RValue::Int(port)) = primary.get(1) else { return Err(bad("malformed port")) };
            let node = (host, *port as u16);
            let idx = match map.nodes.iter().position(|n| *n == node) {
                Some(i) => i,
                None => {
                    map.nodes.push(node);
                    map.nodes.len() - 1
                }
            };
            map.ranges.push((*start as u16, *end as u16, idx));
        }
        Ok(map)
    }

    fn node_of(&self, slot: u16) -> Option<usize> {
        self.ranges.iter().find(|(a, b, _)| (*a..=*b).contains(&slot)).map(|r| r.2)
    }
}

/// The Redis Cluster slot of a key: CRC16/XMODEM of its hash tag (or of the whole key), mod 16384.
fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key.find('{').and_then(|open| {
        let len = key[open + 1..].find('}')?;
        (len > 0).then(|| &bytes[open + 1..open + 1 + len])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(bytes) {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

/// Append the text of a key's values, joined by `:`.
fn write_key_values(key: &Row, enc: &crate::event::Encoding, out: &mut String) {
    for (i, (_, v)) in key.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        enc.write_text(v, out);
    }
}

/// Render the row key of `ev` into `out`.
pub fn render_key(parts: &[Part], connector: &str, ev: &ChangeEvent, out: &mut String) {
    out.clear();
    for p in parts {
        match p {
            Part::Lit(s) => out.push_str(s),
            Part::Connector => out.push_str(connector),
            Part::Db => out.push_str(&ev.table.db),
            Part::Schema => out.push_str(&ev.table.schema),
            Part::Table => out.push_str(&ev.table.name),
            // Key columns are rendered with tidemark's default encoding so the same row always
            // maps to the same key whatever the connector's output options.
            Part::Key => write_key_values(&ev.key, &crate::event::Encoding::default(), out),
        }
    }
}

/// The SCAN MATCH pattern of every row key of `ev`'s table.
fn scan_pattern(parts: &[Part], connector: &str, ev: &ChangeEvent) -> String {
    let mut out = String::new();
    let lit = |s: &str, out: &mut String| {
        for c in s.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
    };
    for p in parts {
        match p {
            Part::Lit(s) => lit(s, &mut out),
            Part::Connector => lit(connector, &mut out),
            Part::Db => lit(&ev.table.db, &mut out),
            Part::Schema => lit(&ev.table.schema, &mut out),
            Part::Table => lit(&ev.table.name, &mut out),
            Part::Key => out.push('*'),
        }
    }
    out
}

/// Does `key` carry a Redis Cluster hash tag (a non-empty `{...}`)?
fn has_hash_tag(key: &str) -> bool {
    key.find('{').is_some_and(|open| key[open + 1..].find('}').is_some_and(|len| len > 0))
}

/// The key holding `row_key`'s version: same cluster slot as the row, different namespace.
pub fn version_key(prefix: &str, row_key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + row_key.len() + 2);
    out.push_str(prefix);
    if has_hash_tag(row_key) {
        out.push_str(row_key);
    } else {
        let _ = write!(out, "{{{row_key}}}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{SnapshotFlag, SourceMeta, TableRef, Value, Version};

    #[test]
    fn version_key_shares_the_rows_slot() {
        // (A key with braces but no valid hash tag, like `x:{}:y`, cannot share a slot with any
        // other key; in a cluster such a write is rejected with CROSSSLOT, naming the key.)
        for k in ["shop:customers:42", "shop:{customers}:42", "a", "{tag}rest"] {
            let v = version_key("tidemark:v:", k);
            assert_eq!(key_slot(&v), key_slot(k), "{k} -> {v}");
            assert!(v.starts_with("tidemark:v:"));
        }
        assert_eq!(version_key("tidemark:v:", "shop:customers:42"), "tidemark:v:{shop:customers:42}");
    }

    fn event(key: Vec<Value>) -> ChangeEvent {
        ChangeEvent {
            op: Op::Create,
            table: Arc::new(TableRef { db: "d".into(), schema: "public".into(), name: "t*x".into() }),
            key: Row(key.into_iter().enumerate().map(|(i, v)| (Arc::from(format!("k{i}")), v)).collect()),
            before: None,
            after: None,
            partial: false,
            version: Version::default(),
            commit_ts_ms: 0,
            snapshot: SnapshotFlag::No,
            source: SourceMeta::Postgres { lsn: 0, tx_id: None },
        }
    }

    #[test]
    fn keys_and_patterns() {
        let parts = config::parse_template("{connector}:{table}:{key}").unwrap();
        let mut out = String::new();
        render_key(&parts, "shop", &event(vec![Value::Int(7), Value::Text("b".into())]), &mut out);
        assert_eq!(out, "shop:t*x:7:b");
        assert_eq!(scan_pattern(&parts, "shop", &event(vec![])), "shop:t\\*x:*");
    }

    #[test]
    fn slots_and_slot_map() {
        // Known values from the Redis Cluster specification and redis-cli CLUSTER KEYSLOT.
        assert_eq!(key_slot("123456789"), 12739);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
        let node = |port: i64| {
            RValue::Array(vec![
                RValue::BulkString(b"127.0.0.1".to_vec()),
                RValue::Int(port),
                RValue::BulkString(b"id".to_vec()),
            ])
        };
        let reply = RValue::Array(vec![
            RValue::Array(vec![RValue::Int(0), RValue::Int(5460), node(7000)]),
            RValue::Array(vec![RValue::Int(5461), RValue::Int(10922), node(7001)]),
            RValue::Array(vec![RValue::Int(10923), RValue::Int(16383), node(7002), node(7005)]),
        ]);
        let map = SlotMap::parse(reply).unwrap();
        assert_eq!(map.nodes.len(), 3);
        assert_eq!(map.node_of(0), Some(0));
        assert_eq!(map.node_of(12182).map(|i| map.nodes[i].1), Some(7002));
    }
}
