//! `kind = "postgres"`: logical replication with pgoutput.
//!
//! The stream comes from `pgwire-replication` (raw pgoutput, decoded by [`pgoutput`]); everything
//! else (catalog, snapshot, heartbeats) runs on an ordinary `tokio-postgres` session.
//!
//! Position and versions. A transaction's changes carry the version `(commit LSN, index)`, index
//! counting from 1; snapshot rows carry `(consistent point, 0)`. The stored position is the end
//! LSN of the last transaction (or heartbeat) every sink has made durable; streaming resumes there
//! and the slot is confirmed only up to there, so the server keeps every change not yet durable.

pub mod catalog;
pub mod check;
pub mod config;
pub mod pgoutput;
pub mod snapshot;
pub mod tls;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use pgwire_replication::{PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent};
use prometheus_client::metrics::counter::Counter;
use tokio_postgres::Client;
use tracing::{info, warn};

pub use config::PostgresConfig;

use self::catalog::{TableInfo, TypeCache};
use self::pgoutput::{Datum, Message, OldKind, Relation, Tuple};
use self::types::{decode_text, PgType, SESSION_OPTIONS};
use crate::check::Finding;
use crate::connector::batch;
use crate::connector::position::{Lsn, PgPosition};
use crate::connector::{
    run_sessions, snapshot_again, CapturedTable, ConnectorState, ConnectorStatus, Exclusive, PipelineClosed, Position,
    SessionError, SnapshotMode, SnapshotProgress, Source, SourceContext, SourceError, SourceHealth,
};
use crate::event::{ChangeEvent, Encoding, Op, Row, SnapshotFlag, SourceMeta, TableRef, Value, Version};
use crate::metrics::{self, Metrics, OpCounters};
use crate::retry::{Backoff, Classify, ErrorClass};

/// Prefix of the logical messages tidemark writes as heartbeats.
pub const HEARTBEAT_PREFIX: &str = "tidemark_heartbeat";
/// Events buffered between the replication socket and the source (bounded; see the README's
/// memory section).
const STREAM_BUFFER_EVENTS: usize = 1024;
/// How often the slot's confirmed position is reported when it moved.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How long the replication reader waits for the server before it checks in on its own.
const WAKEUP_INTERVAL: Duration = Duration::from_secs(5);

pub fn parse_lsn(s: &str) -> Option<u64> {
    s.parse::<Lsn>().ok().map(Lsn::as_u64)
}

pub fn format_lsn(lsn: u64) -> String {
    Lsn(lsn).to_string()
}

/// pgwire-replication's form of an LSN.
fn wire_lsn(lsn: u64) -> pgwire_replication::Lsn {
    pgwire_replication::Lsn::from_u64(lsn)
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres {url}: {}", error_chain(source))]
    Connect { url: String, source: tokio_postgres::Error },
    #[error("postgres: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("replication stream: {0}")]
    Stream(#[from] PgWireError),
    #[error(transparent)]
    Decode(#[from] pgoutput::DecodeError),
    /// Something an operator must resolve; the message says what to do.
    #[error("{0}")]
    Operator(String),
    #[error(transparent)]
    Closed(#[from] PipelineClosed),
}

/// An error with its causes: tokio-postgres's own text leaves them out ("db error", "error
/// performing TLS handshake").
pub(crate) fn error_chain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// A failed replication connection; a TLS failure says which it was and what to set.
fn wire_error(cfg: &PostgresConfig, e: PgWireError) -> PgError {
    if let PgWireError::Tls(m) | PgWireError::Server(m) = &e {
        if let Some(why) = cfg.tls.explain(&cfg.host(), m) {
            return PgError::Operator(format!("postgres replication {}: {why}", cfg.url.redacted()));
        }
    }
    PgError::Stream(e)
}

/// SQLSTATE classes that mean "retry later".
fn sqlstate_class(code: &str) -> ErrorClass {
    match code {
        // in use (slot still held by a walsender that has not noticed its client died), admin
        // shutdown / crash / cannot connect now, connection exceptions, serialization, deadlock,
        // too many connections, out of memory or disk
        "55006" | "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53300" | "53100" | "53200" => ErrorClass::Retry,
        c if c.starts_with("08") => ErrorClass::Retry,
        _ => ErrorClass::Operator,
    }
}

impl SessionError for PgError {
    fn pipeline_closed(&self) -> bool {
        matches!(self, PgError::Closed(_))
    }
}

impl Classify for PgError {
    fn class(&self) -> ErrorClass {
        match self {
            PgError::Connect { source, .. } | PgError::Query(source) => match source.code() {
                Some(code) => sqlstate_class(code.code()),
                None => ErrorClass::Retry,
            },
            PgError::Stream(e) => match e {
                PgWireError::Server(msg) => {
                    let code = msg.rsplit_once("SQLSTATE ").map(|(_, c)| c.trim_end_matches(')'));
                    code.map_or(ErrorClass::Retry, sqlstate_class)
                }
                PgWireError::Auth(_) | PgWireError::Tls(_) => ErrorClass::Operator,
                PgWireError::MessageTooLarge { .. } | PgWireError::Internal(_) => ErrorClass::Fatal,
                _ => ErrorClass::Retry,
            },
            PgError::Decode(_) => ErrorClass::Fatal,
            PgError::Operator(_) => ErrorClass::Operator,
            PgError::Closed(_) => ErrorClass::Retry,
        }
    }
}

/// A decoded column of a captured table.
pub struct ColInfo {
    pub name: Arc<str>,
    pub ty: PgType,
    pub typmod: i32,
    /// Bumped for every value passed on as text (unsupported type or unparsable text).
    pub fallbacks: Counter,
}

/// How a captured table's rows are decoded and keyed.
pub struct RelInfo {
    pub table: Arc<TableRef>,
    pub columns: Vec<ColInfo>,
    /// Indices of the key columns, in key order.
    pub key: Vec<usize>,
    /// The key is the primary key (so snapshots can read it in key order).
    pub by_primary_key: bool,
    counters: OpCounters,
}

impl RelInfo {
    /// Build from the catalog's view of a table; `None` when it cannot be keyed.
    async fn build(
        db: &Arc<str>,
        table: &TableInfo,
        columns: &[catalog::Column],
        client: &Client,
        types: &mut TypeCache,
        connector: &str,
        metrics: &Metrics,
    ) -> Result<Option<RelInfo>, PgError> {
        let Some(key_names) = table.key_columns() else { return Ok(None) };
        let qualified = table.qualified();
        let mut cols = Vec::with_capacity(columns.len());
        for c in columns {
            let ty = types.resolve(client, c.type_oid).await?;
            let type_name = ty.fallback_name().unwrap_or("none").to_string();
            let fallbacks = metrics::fallback_counter(metrics, connector, &qualified, &c.name, &type_name);
            cols.push(ColInfo { name: Arc::from(c.name.as_str()), ty, typmod: c.typmod, fallbacks });
        }
        let mut key = Vec::with_capacity(key_names.len());
        for k in &key_names {
            match cols.iter().position(|c| &*c.name == k.as_str()) {
                Some(i) => key.push(i),
                None => return Ok(None),
            }
        }
        Ok(Some(RelInfo {
            table: Arc::new(TableRef {
                db: db.clone(),
                schema: table.schema.as_str().into(),
                name: table.name.as_str().into(),
            }),
            columns: cols,
            key,
            by_primary_key: !table.primary_key.is_empty(),
            counters: OpCounters::new(metrics, connector, &qualified),
        }))
    }

    /// Count `n` events of `op` for this table.
    pub fn count(&self, op: Op, n: u64) {
        self.counters.get(op).inc_by(n);
    }

    pub fn key_of(&self, row: &Row) -> Row {
        Row(self.key.iter().filter_map(|&i| row.0.get(i).cloned()).collect())
    }

    /// Decode a tuple; the flag says whether columns were left out (unchanged TOAST).
    fn row(&self, tuple: &Tuple) -> (Row, bool) {
        let mut fields = Vec::with_capacity(tuple.len());
        let mut partial = false;
        for (col, datum) in self.columns.iter().zip(tuple) {
            let v = match datum {
                Datum::Null => Value::Null,
                Datum::Unchanged => {
                    partial = true;
                    Value::Unavailable
                }
                Datum::Text(b) => {
                    let text = String::from_utf8_lossy(b);
                    let (v, fallback) = decode_text(&col.ty, col.typmod, &text);
                    if fallback {
                        col.fallbacks.inc();
                    }
                    v
                }
                Datum::Binary(b) => Value::Bytes(b.to_vec()),
            };
            fields.push((col.name.clone(), v));
        }
        (Row(fields), partial)
    }

    /// The key of a decoded row; `None` if a key column is missing (never for a well-formed one).
    fn key_from(&self, row: &Row) -> Option<Row> {
        let mut out = Vec::with_capacity(self.key.len());
        for &i in &self.key {
            let name = &self.columns[i].name;
            let v = row.get(name)?;
            out.push((name.clone(), v.clone()));
        }
        Some(Row(out))
    }
}

/// The transaction being decoded.
struct Txn {
    commit_lsn: u64,
    xid: u32,
    /// Commit time, Unix microseconds.
    commit_us: i64,
    index: u64,
}

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

fn pg_micros_to_unix_us(us: i64) -> i64 {
    us + PG_EPOCH_US
}

fn pg_micros_to_unix_ms(us: i64) -> i64 {
    pg_micros_to_unix_us(us).div_euclid(1000)
}

/// Run the source until cancelled; transient failures reconnect with backoff and resume from the
/// last durable position.
pub async fn run(cfg: &PostgresConfig, ctx: SourceContext) -> Result<(), PgError> {
    let position = |p| match p {
        Position::Postgres(p) => Some(p),
        _ => None,
    };
    run_sessions(cfg, ctx, position, |cfg, ctx, resume, backoff| {
        async move {
            let mut session = Session {
                cfg,
                ctx,
                db: cfg.dbname().into(),
                relations: HashMap::new(),
                types: TypeCache::default(),
                last_commit_lsn: None,
            };
            session.run(resume, backoff).await
        }
        .boxed()
    })
    .await
}

/// The slot a session streams from.
struct Slot {
    /// Where a new slot's snapshot and stream start (an existing slot: its confirmed position).
    consistent_lsn: u64,
    /// The snapshot a slot created by this session exported.
    exported: Option<String>,
    /// The replication session that created the slot, which then streams.
    gated: Option<ReplicationClient>,
}

struct Session<'a> {
    cfg: &'a PostgresConfig,
    ctx: &'a mut SourceContext,
    db: Arc<str>,
    relations: HashMap<u32, Option<RelInfo>>,
    types: TypeCache,
    /// The end LSN of the last transaction committed in this stream (Debezium's `lsn_commit`,
    /// the first half of `source.sequence`); a resumed stream starts from the stored one.
    last_commit_lsn: Option<u64>,
}

impl Session<'_> {
    /// One session: prepare the captured tables, make sure the slot is there, snapshot if one is
    /// due, then stream.
    async fn run(&mut self, resume: Option<PgPosition>, backoff: &mut Backoff) -> Result<(), PgError> {
        let client = catalog::connect(self.cfg).await?;
        let keyed = self.prepare_tables(&client).await?;
        let publish: Vec<&TableInfo> = keyed.iter().map(|(t, _)| t).collect();
        catalog::ensure_publication(&client, &self.cfg.publication, &publish).await?;
        let needs_snapshot = match &resume {
            Some(p) => p.snapshot.is_some(),
            None => self.cfg.snapshot == SnapshotMode::Initial,
        };
        let slot = self.ensure_slot(&client, resume.as_ref(), needs_snapshot).await?;
        let start_lsn = if needs_snapshot {
            self.last_commit_lsn = None;
            self.snapshot(&client, &keyed, resume.as_ref(), &slot, backoff).await?
        } else {
            self.last_commit_lsn = resume.as_ref().map(|p| p.lsn.as_u64());
            resume.as_ref().map_or(slot.consistent_lsn, |p| p.lsn.as_u64())
        };
        for (t, rel) in keyed {
            self.relations.insert(t.oid, Some(rel));
        }
        self.stream_from(&client, slot.gated, start_lsn, backoff).await
    }

    /// The captured tables, checked against the transforms and with their decoders; tables that
    /// cannot be keyed are noted and left out.
    async fn prepare_tables(&mut self, client: &Client) -> Result<Vec<(TableInfo, RelInfo)>, PgError> {
        let cfg = self.cfg;
        let tables = catalog::matching_tables(client, cfg).await?;
        if tables.is_empty() {
            return Err(PgError::Operator(format!(
                "no table in database {} matches {}; check source.tables",
                cfg.dbname(),
                cfg.tables.join(", ")
            )));
        }
        let captured: Vec<CapturedTable> = tables
            .iter()
            .map(|t| CapturedTable {
                table: TableRef { db: self.db.clone(), schema: t.schema.as_str().into(), name: t.name.as_str().into() },
                columns: t.columns.iter().map(|c| c.name.clone()).collect(),
                key: t.key_columns().unwrap_or_default(),
            })
            .collect();
        self.ctx.captured(&captured).map_err(PgError::Operator)?;
        let mut keyed = Vec::new();
        for t in &tables {
            let rel = RelInfo::build(
                &self.db,
                t,
                &t.columns,
                client,
                &mut self.types,
                &self.ctx.connector,
                &self.ctx.metrics,
            )
            .await?;
            match rel {
                Some(rel) => keyed.push((t.clone(), rel)),
                None => {
                    let note = t.unkeyed_note();
                    warn!(connector = %self.ctx.connector, "{note}");
                    self.ctx.status.note(note);
                }
            }
        }
        Ok(keyed)
    }

    /// The replication slot this session streams from. A missing one is created (on a gated
    /// replication session that then streams, exporting its snapshot when one is due), unless a
    /// stored position needs the changes a new slot would not have.
    async fn ensure_slot(
        &mut self,
        client: &Client,
        resume: Option<&PgPosition>,
        needs_snapshot: bool,
    ) -> Result<Slot, PgError> {
        let cfg = self.cfg;
        let slot = catalog::slot(client, &cfg.slot).await?;
        if let Some(s) = &slot {
            if s.plugin != "pgoutput" {
                return Err(PgError::Operator(format!(
                    "replication slot {} uses plugin {}, not pgoutput; drop it (SELECT pg_drop_replication_slot('{}')) or configure another slot",
                    cfg.slot, s.plugin, cfg.slot
                )));
            }
            if let Some(pid) = s.active_pid {
                // Typically the walsender of a previous run that has not yet noticed it is gone.
                return Err(PgError::Stream(PgWireError::Server(format!(
                    "replication slot {} is active for PID {pid} (SQLSTATE 55006)",
                    cfg.slot
                ))));
            }
            return Ok(Slot { consistent_lsn: s.confirmed_flush.unwrap_or(0), exported: None, gated: None });
        }
        // A stored position (streaming, or a snapshot in progress) needs the slot that holds the
        // changes since it; a new slot would start later and silently skip them.
        if resume.is_some() {
            return Err(PgError::Operator(format!(
                "replication slot {} no longer exists, so the changes since the stored position are lost; {}",
                cfg.slot,
                snapshot_again(&self.ctx.connector)
            )));
        }
        let mut repl = ReplicationClient::connect_gated(self.replication_config(wire_lsn(0)))
            .await
            .map_err(|e| wire_error(self.cfg, e))?;
        let export = if needs_snapshot { "EXPORT_SNAPSHOT" } else { "NOEXPORT_SNAPSHOT" };
        let rows =
            repl.simple_query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {export}", cfg.slot)).await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| PgError::Operator("CREATE_REPLICATION_SLOT returned no row".into()))?;
        let text = |i: usize| row.get(i).and_then(|v| v.as_ref()).map(|b| String::from_utf8_lossy(b).into_owned());
        let consistent_lsn = text(1).and_then(|s| parse_lsn(&s)).unwrap_or(0);
        info!(connector = %self.ctx.connector, slot = %cfg.slot, consistent_point = %format_lsn(consistent_lsn), "created replication slot");
        Ok(Slot { consistent_lsn, exported: text(2), gated: Some(repl) })
    }

    /// Read every captured table (or what a crash left of it to read); returns where streaming
    /// continues.
    async fn snapshot(
        &mut self,
        client: &Client,
        keyed: &[(TableInfo, RelInfo)],
        resume: Option<&PgPosition>,
        slot: &Slot,
        backoff: &mut Backoff,
    ) -> Result<u64, PgError> {
        let (consistent_lsn, progress) = match resume.and_then(|p| p.snapshot.clone().map(|s| (p.lsn, s))) {
            Some((lsn, progress)) => (lsn.as_u64(), progress),
            None => (slot.consistent_lsn, SnapshotProgress::default()),
        };
        self.ctx.status.set_state(ConnectorState::Snapshotting);
        self.ctx.status.set_source_error(None);
        backoff.reset();
        info!(connector = %self.ctx.connector, tables = keyed.len(), consistent_point = %format_lsn(consistent_lsn), "snapshot started");
        let run = snapshot::SnapshotRun {
            client,
            connector: &self.ctx.connector,
            consistent_lsn,
            chunk_rows: self.cfg.snapshot_chunk_rows.get(),
            metrics: &self.ctx.metrics,
        };
        run.run(keyed, progress, slot.exported.as_deref(), &mut self.ctx.batcher).await?;
        info!(connector = %self.ctx.connector, "snapshot finished");
        Ok(consistent_lsn)
    }

    /// Open the replication stream at `start_lsn` (on the gated session that created the slot,
    /// if this one did) and stream until cancelled or an error ends the session.
    async fn stream_from(
        &mut self,
        client: &Client,
        gated: Option<ReplicationClient>,
        start_lsn: u64,
        backoff: &mut Backoff,
    ) -> Result<(), PgError> {
        let mut repl = match gated {
            Some(mut g) => {
                g.start().await?;
                g
            }
            None => ReplicationClient::connect(self.replication_config(wire_lsn(start_lsn)))
                .await
                .map_err(|e| wire_error(self.cfg, e))?,
        };
        repl.wait_started().await?;
        self.ctx.status.set_state(ConnectorState::Streaming);
        self.ctx.status.set_source_error(None);
        backoff.reset();
        info!(connector = %self.ctx.connector, from = %format_lsn(start_lsn), "streaming");

        let heartbeat =
            tokio::spawn(heartbeat_loop(self.cfg.clone(), self.ctx.status.clone(), self.ctx.cancel.child_token()));
        let result = self.stream(&mut repl, client).await;
        heartbeat.abort();
        repl.stop();
        result
    }

    fn replication_config(&self, start: pgwire_replication::Lsn) -> ReplicationConfig {
        let cfg = self.cfg;
        let mut rc = ReplicationConfig::new(
            cfg.host(),
            cfg.user(),
            cfg.password(),
            cfg.dbname(),
            cfg.slot.clone(),
            cfg.publication.as_str(),
        )
        .with_port(cfg.port())
        .with_tls(cfg.tls.wire(&cfg.host()))
        .with_start_lsn(start)
        .with_options(SESSION_OPTIONS)
        .with_buffer_size(STREAM_BUFFER_EVENTS)
        .with_status_interval(STATUS_INTERVAL)
        .with_wakeup_interval(WAKEUP_INTERVAL)
        .with_application_name(format!("tidemark:{}", self.ctx.connector));
        if !start.is_zero() {
            rc = rc.with_ack_lsn(start);
        }
        rc
    }

    /// A message that does not decode, named by its position and, for a row change, its table.
    fn decode_error(&self, data: &[u8], lsn: u64, e: pgoutput::DecodeError) -> PgError {
        // Insert, update and delete messages start with the relation's OID.
        let table = match data {
            [b'I' | b'U' | b'D', a, b, c, d, ..] => {
                let oid = u32::from_be_bytes([*a, *b, *c, *d]);
                match self.relations.get(&oid) {
                    Some(Some(rel)) => format!(" of table {}", rel.table),
                    _ => format!(" of relation {oid}"),
                }
            }
            _ => String::new(),
        };
        PgError::Decode(pgoutput::DecodeError(format!("a message{table} at LSN {}: {}", format_lsn(lsn), e.0)))
    }

    /// The streaming loop. Priorities (biased select): shutdown, acknowledgements, the batch
    /// timer, then new input.
    async fn stream(&mut self, repl: &mut ReplicationClient, client: &Client) -> Result<(), PgError> {
        let mut txn: Option<Txn> = None;
        let mut acked = self.ctx.acked.clone();
        loop {
            let deadline = self.ctx.batcher.deadline();
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => {
                    // Hand over what is ready without waiting; anything not durable is replayed.
                    let _ = self.ctx.batcher.try_flush();
                    return Ok(());
                }
                changed = acked.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    if let Some(Position::Postgres(p)) = &*acked.borrow_and_update() {
                        if p.snapshot.is_none() {
                            repl.update_applied_lsn(wire_lsn(p.lsn.as_u64()));
                        }
                    }
                }
                _ = batch::until(deadline), if deadline.is_some() => {
                    self.ctx.batcher.flush().await?;
                }
                ev = repl.recv() => {
                    let Some(ev) = ev? else { return Ok(()) };
                    self.handle(ev, &mut txn, client).await?;
                }
            }
        }
    }

    async fn handle(&mut self, ev: ReplicationEvent, txn: &mut Option<Txn>, client: &Client) -> Result<(), PgError> {
        match ev {
            ReplicationEvent::Begin { final_lsn, xid, commit_time_micros } => {
                *txn = Some(Txn {
                    commit_lsn: final_lsn.as_u64(),
                    xid,
                    commit_us: pg_micros_to_unix_us(commit_time_micros),
                    index: 0,
                });
            }
            ReplicationEvent::Commit { end_lsn, commit_time_micros, .. } => {
                txn.take();
                self.last_commit_lsn = Some(end_lsn.as_u64());
                let pos = Position::Postgres(PgPosition::streaming(Lsn(end_lsn.as_u64())));
                self.ctx.batcher.mark(
                    pos,
                    Some(pg_micros_to_unix_ms(commit_time_micros)),
                    Some(end_lsn.as_u64()),
                    false,
                );
                self.ctx.batcher.after_boundary().await?;
            }
            ReplicationEvent::Message { transactional: false, lsn, prefix, content } if prefix == HEARTBEAT_PREFIX => {
                if txn.is_none() {
                    let ts = std::str::from_utf8(&content).ok().and_then(|s| s.trim().parse::<i64>().ok());
                    let pos = Position::Postgres(PgPosition::streaming(Lsn(lsn.as_u64())));
                    self.ctx.batcher.mark(pos, ts, Some(lsn.as_u64()), true);
                    self.ctx.batcher.after_boundary().await?;
                }
            }
            ReplicationEvent::XLogData { wal_start, data, .. } => {
                let msg =
                    pgoutput::decode(data.clone()).map_err(|e| self.decode_error(&data, wal_start.as_u64(), e))?;
                self.handle_message(msg, wal_start.as_u64(), txn, client).await?;
                if self.ctx.batcher.is_full() {
                    self.ctx.batcher.flush().await?;
                }
            }
            ReplicationEvent::KeepAlive { .. }
            | ReplicationEvent::Message { .. }
            | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    /// One pgoutput message, written at `lsn`.
    async fn handle_message(
        &mut self,
        msg: Message,
        lsn: u64,
        txn: &mut Option<Txn>,
        client: &Client,
    ) -> Result<(), PgError> {
        match msg {
            Message::Relation(rel) => self.on_relation(rel, client).await?,
            Message::Insert { relation, new } => {
                let Some(rel) = self.relation(relation) else { return Ok(()) };
                let (after, _) = rel.row(&new);
                let key = rel.key_from(&after).unwrap_or_default();
                let ev = self.event(lsn, txn, relation, Op::Create, key, None, Some(after), false);
                self.push(ev);
            }
            Message::Update { relation, old, new } => {
                let Some(rel) = self.relation(relation) else { return Ok(()) };
                let (mut after, mut partial) = rel.row(&new);
                let before = old.as_ref().map(|(_, t)| rel.row(t).0);
                // Under REPLICA IDENTITY FULL the old row holds the unchanged TOAST values.
                if partial {
                    if let Some((OldKind::Full, old_tuple)) = &old {
                        after = fill_unchanged(rel, &new, old_tuple);
                        partial = false;
                    }
                }
                let new_key = rel.key_from(&after).unwrap_or_default();
                let old_key = before.as_ref().and_then(|b| rel.key_from(b)).filter(|k| *k != new_key);
                match old_key {
                    // The key changed: like Debezium, a delete of the old key and a create of the new.
                    Some(old_key) => {
                        let del = self.event(lsn, txn, relation, Op::Delete, old_key, before.clone(), None, false);
                        self.push(del);
                        let create = self.event(lsn, txn, relation, Op::Create, new_key, None, Some(after), partial);
                        self.push(create);
                    }
                    None => {
                        let ev = self.event(lsn, txn, relation, Op::Update, new_key, before, Some(after), partial);
                        self.push(ev);
                    }
                }
            }
            Message::Delete { relation, old: (_, tuple) } => {
                let Some(rel) = self.relation(relation) else { return Ok(()) };
                let (before, _) = rel.row(&tuple);
                let key = rel.key_from(&before).unwrap_or_default();
                let ev = self.event(lsn, txn, relation, Op::Delete, key, Some(before), None, false);
                self.push(ev);
            }
            Message::Truncate { relations, .. } => {
                for relation in relations {
                    if self.relation(relation).is_some() {
                        let ev = self.event(lsn, txn, relation, Op::Truncate, Row::default(), None, None, false);
                        self.push(ev);
                    }
                }
            }
            Message::Begin { .. }
            | Message::Commit { .. }
            | Message::Message { .. }
            | Message::Origin { .. }
            | Message::Type { .. } => {}
        }
        Ok(())
    }

    fn relation(&self, oid: u32) -> Option<&RelInfo> {
        self.relations.get(&oid).and_then(Option::as_ref)
    }

    fn push(&mut self, ev: ChangeEvent) {
        self.ctx.batcher.push(ev);
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        lsn: u64,
        txn: &mut Option<Txn>,
        relation: u32,
        op: Op,
        key: Row,
        before: Option<Row>,
        after: Option<Row>,
        partial: bool,
    ) -> ChangeEvent {
        let rel = self.relation(relation).expect("checked by caller");
        rel.counters.get(op).inc();
        let (commit_lsn, xid, commit_us, index) = match txn {
            Some(t) => {
                t.index += 1;
                (t.commit_lsn, Some(t.xid as u64), t.commit_us, t.index)
            }
            None => (0, None, 0, 0),
        };
        ChangeEvent {
            op,
            table: rel.table.clone(),
            key,
            before,
            after,
            partial,
            version: Version::new(commit_lsn, index),
            commit_us,
            snapshot: SnapshotFlag::No,
            source: SourceMeta::Postgres { lsn, last_commit_lsn: self.last_commit_lsn, tx_id: xid },
        }
    }

    /// A Relation message: (re)build how that table is decoded. Sent before the first change of
    /// a table in each session and again after its schema changed.
    async fn on_relation(&mut self, rel: Relation, client: &Client) -> Result<(), PgError> {
        // The publication may cover more than this connector captures (FOR ALL TABLES, shared, or
        // `tables` narrowed since it was created): only included tables become events.
        if !crate::connector::table_included(&self.cfg.tables, &rel.namespace, &rel.name) {
            self.relations.insert(rel.oid, None);
            return Ok(());
        }
        let columns: Vec<catalog::Column> = rel
            .columns
            .iter()
            .map(|c| catalog::Column { name: c.name.clone(), type_oid: c.type_oid, typmod: c.type_modifier })
            .collect();
        let primary_key = catalog::primary_key(client, rel.oid).await?;
        let info = TableInfo {
            oid: rel.oid,
            schema: rel.namespace.clone(),
            name: rel.name.clone(),
            primary_key: primary_key.into_iter().filter(|k| columns.iter().any(|c| &c.name == k)).collect(),
            replica_identity: rel.replica_identity as char,
            columns: columns.clone(),
            partitioned: false,
        };
        let built =
            RelInfo::build(&self.db, &info, &columns, client, &mut self.types, &self.ctx.connector, &self.ctx.metrics)
                .await?;
        if built.is_none() {
            let note = info.unkeyed_note();
            warn!(connector = %self.ctx.connector, "{note}");
            self.ctx.status.note(note);
            self.ctx
                .metrics
                .events_skipped
                .get_or_create(&vec![
                    (metrics::CONNECTOR, self.ctx.connector.to_string()),
                    (metrics::TABLE, info.qualified()),
                    (metrics::REASON, "no_key".into()),
                ])
                .inc();
        }
        self.relations.insert(rel.oid, built);
        Ok(())
    }
}

/// The new tuple with unchanged TOAST values taken from the full old tuple.
fn fill_unchanged(rel: &RelInfo, new: &Tuple, old: &Tuple) -> Row {
    let merged: Tuple = new
        .iter()
        .zip(old.iter().chain(std::iter::repeat(&Datum::Null)))
        .map(|(n, o)| if *n == Datum::Unchanged { o.clone() } else { n.clone() })
        .collect();
    rel.row(&merged).0
}

/// Write a heartbeat message into the WAL every interval (so an idle database still moves the
/// slot forward and proves the pipeline is caught up), and sample the server's WAL position and
/// the slot's retained WAL for `/health`.
async fn heartbeat_loop(
    cfg: PostgresConfig,
    status: Arc<ConnectorStatus>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let sql = format!(
        "SELECT pg_current_wal_lsn()::text,
                pg_logical_emit_message(false, {prefix}, ((extract(epoch from clock_timestamp()) * 1000)::bigint)::text)::text,
                (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text FROM pg_replication_slots WHERE slot_name = {slot})",
        prefix = catalog::literal(HEARTBEAT_PREFIX),
        slot = catalog::literal(&cfg.slot),
    );
    let mut client: Option<Client> = None;
    let mut warned = false;
    let mut tick = tokio::time::interval(cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = catalog::connect(&cfg).await.ok();
        }
        let Some(c) = &client else { continue };
        match c.simple_query(&sql).await {
            Ok(msgs) => {
                warned = false;
                let row = msgs.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                });
                if let Some(r) = row {
                    if let Some(server) = r.get(0).and_then(parse_lsn) {
                        status.set_server_offset(server);
                    }
                    let retained = r.get(2).and_then(|s| s.parse::<i64>().ok()).map(|v| v.max(0) as u64);
                    status.set_source_health(SourceHealth {
                        figures: vec![(metrics::RETAINED_WAL_BYTES_FIGURE, retained)],
                        notes: Vec::new(),
                    });
                }
            }
            Err(e) => {
                if !warned {
                    warn!(connector = %status.name, error = %e, "heartbeat failed; lag cannot be shown as caught up while this persists");
                    warned = true;
                }
                if e.code().is_some_and(|c| c.code() == "42501") {
                    status.note(format!(
                        "heartbeats need EXECUTE on pg_logical_emit_message: GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO {}",
                        cfg.user()
                    ));
                }
                client = None;
            }
        }
    }
}

impl Source for PostgresConfig {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn tables(&self) -> &[String] {
        &self.tables
    }

    fn encoding(&self) -> Encoding {
        self.encoding.clone()
    }

    fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    fn health_figures(&self) -> &'static [&'static str] {
        &[metrics::RETAINED_WAL_BYTES_FIGURE]
    }

    fn exclusive(&self) -> Option<Exclusive> {
        Some(Exclusive {
            key: "slot",
            identity: format!("{}:{}/{} slot {}", self.host(), self.port(), self.dbname(), self.slot),
            description: format!("replication slot `{}`", self.slot),
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "postgres",
            "url": self.url.redacted(),
            "tables": self.tables,
            "snapshot": self.snapshot.as_str(),
            "slot": self.slot,
            "publication": self.publication,
            "heartbeat_interval_ms": self.heartbeat_interval.as_millis() as u64,
        })
    }

    fn title(&self) -> String {
        format!("postgres {}", self.url)
    }

    fn check(&self) -> BoxFuture<'_, Vec<Finding>> {
        check::check(self).boxed()
    }

    fn run(&self, ctx: SourceContext) -> BoxFuture<'_, Result<(), SourceError>> {
        async move { run(self, ctx).await.map_err(SourceError::new) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_server_errors() {
        let busy =
            PgError::Stream(PgWireError::Server("replication slot \"s\" is active for PID 7 (SQLSTATE 55006)".into()));
        assert_eq!(busy.class(), ErrorClass::Retry);
        let missing = PgError::Stream(PgWireError::Server("publication \"p\" does not exist (SQLSTATE 42704)".into()));
        assert_eq!(missing.class(), ErrorClass::Operator);
    }
}
