//! `kind = "mysql"`: the MySQL/MariaDB binlog (row format), through `mysql_async`.
//!
//! Versions and positions. A row's version is `(coordinate of its rows event, index in the
//! event)`, where the coordinate is the binlog file's sequence number and the event's end offset
//! (see [`binlog::coordinate`]): it grows across rotations and is the same when a restart replays
//! the event. Snapshot rows carry `(snapshot coordinate, 0)`. The stored position is the binlog
//! file and offset after the last durable transaction (or heartbeat), plus on MariaDB the GTID
//! position (MariaDB) or GTID set (MySQL with `gtid_mode=ON`), from which streaming resumes.
//!
//! The suite runs against MariaDB 10.11 and MySQL 9.7 (the MySQL 8 protocol: GTID sets, binary
//! JSON, `SHOW BINARY LOG STATUS`).

pub mod binlog;
pub mod check;
pub mod config;
pub mod json;
pub mod rows;
pub mod schema;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, OptsBuilder};
use tracing::{info, warn};

pub use config::MysqlConfig;

use self::binlog::{mariadb_gtid, mysql_source};
use self::schema::{history_at, HistoryEntry, InfoColumn, Origin, TableSchema};
use crate::check::Finding;
use crate::connector::position::{coordinate, file_seq, Gtid, GtidPosition, GtidSet, GtidState, MyPosition};
use crate::connector::{
    snapshot_again, table_included, CapturedTable, ConnectorState, ConnectorStatus, Exclusive, PipelineClosed,
    Position, SnapshotMode, SnapshotProgress, Source, SourceContext, SourceError, SourceHealth,
};
use crate::event::time::now_ms;
use crate::event::{ChangeEvent, Encoding, Op, Row, SnapshotFlag, SourceMeta, TableRef, Version};
use crate::metrics;
use crate::retry::{Backoff, Classify, ErrorClass};

/// A stream that sends neither an event nor a heartbeat for this many heartbeat periods...
const SILENT_HEARTBEATS: u32 = 3;
/// ...plus this (a slow network, a busy server) is treated as a dead connection.
const SILENCE_GRACE: Duration = Duration::from_secs(5);
/// An open transaction is held back (so a ROLLBACK can discard it) until it holds this many
/// batches' worth of bytes; past that it streams on, keeping memory bounded.
const SPILL_BATCHES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum MyError {
    #[error("mysql {url}: {source}")]
    Connect { url: String, source: mysql_async::Error },
    #[error("mysql: {0}")]
    Query(#[from] mysql_async::Error),
    #[error("binlog stream: {0}")]
    Stream(mysql_async::Error),
    #[error("binlog: {0}")]
    Decode(String),
    /// Something an operator must resolve; the message says what to do.
    #[error("{0}")]
    Operator(String),
    #[error(transparent)]
    Closed(#[from] PipelineClosed),
}

fn mysql_class(e: &mysql_async::Error) -> ErrorClass {
    match e {
        mysql_async::Error::Server(s) => match s.code {
            // access denied, unknown database, no privilege, binlog position/GTID purged or not
            // found, binlog format errors
            1044 | 1045 | 1049 | 1142 | 1227 | 1236 | 1613 | 1665 | 1666 => ErrorClass::Operator,
            // another replica registered with this server id
            4052 => ErrorClass::Operator,
            _ => ErrorClass::Retry,
        },
        mysql_async::Error::Url(_) => ErrorClass::Operator,
        _ => ErrorClass::Retry,
    }
}

impl Classify for MyError {
    fn class(&self) -> ErrorClass {
        match self {
            MyError::Connect { source, .. } | MyError::Query(source) | MyError::Stream(source) => mysql_class(source),
            MyError::Decode(_) => ErrorClass::Fatal,
            MyError::Operator(_) => ErrorClass::Operator,
            MyError::Closed(_) => ErrorClass::Retry,
        }
    }
}

/// Connection options for tidemark's sessions: 1 GiB packets (a binlog event can be that
/// large), UTC, and no `NO_BACKSLASH_ESCAPES` (snapshot keys are written as escaped literals).
pub fn opts(cfg: &MysqlConfig) -> Opts {
    OptsBuilder::from_opts(cfg.opts.clone())
        .max_allowed_packet(Some(1 << 30))
        .prefer_socket(false)
        .init(vec![
            "SET SESSION time_zone = '+00:00'".to_string(),
            "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '')".to_string(),
        ])
        .into()
}

pub async fn connect(cfg: &MysqlConfig) -> Result<Conn, MyError> {
    Conn::new(opts(cfg)).await.map_err(|source| MyError::Connect { url: cfg.url.redacted(), source })
}

/// The server's replication settings that decide whether tidemark can read its binlog.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub mariadb: bool,
    pub server_id: u32,
    pub log_bin: bool,
    pub binlog_format: String,
    pub binlog_row_image: String,
    pub binlog_row_metadata: Option<String>,
    /// MariaDB `log_bin_compress`.
    pub compressed: bool,
    pub checksum: String,
    /// What identifies the server: MySQL's `server_uuid`, MariaDB's `server_id` (it has no UUID).
    pub identity: String,
    /// MySQL `gtid_mode=ON` (MariaDB always has GTIDs).
    pub gtid_mode_on: bool,
}

pub async fn server_info(conn: &mut Conn) -> Result<ServerInfo, MyError> {
    let row: Option<(String, u32, String, String, String, String)> = conn
        .query_first(
            "SELECT @@version, @@server_id, CAST(@@log_bin AS CHAR), @@binlog_format, @@binlog_row_image, @@global.binlog_checksum",
        )
        .await?;
    let (version, server_id, log_bin, binlog_format, binlog_row_image, checksum) =
        row.ok_or_else(|| MyError::Decode("no answer to SELECT @@version".into()))?;
    let mariadb = version.to_lowercase().contains("mariadb");
    let metadata: Option<String> = conn.query_first("SELECT @@binlog_row_metadata").await.ok().flatten();
    let compressed: Option<String> =
        if mariadb { conn.query_first("SELECT CAST(@@log_bin_compress AS CHAR)").await.ok().flatten() } else { None };
    let (identity, gtid_mode_on) = if mariadb {
        (server_id.to_string(), true)
    } else {
        let row: Option<(String, String)> = conn.query_first("SELECT @@server_uuid, @@gtid_mode").await?;
        let (uuid, mode) = row.unwrap_or_default();
        (uuid, mode.eq_ignore_ascii_case("ON"))
    };
    Ok(ServerInfo {
        version,
        mariadb,
        server_id,
        log_bin: matches!(log_bin.as_str(), "1" | "ON"),
        binlog_format,
        binlog_row_image,
        binlog_row_metadata: metadata,
        compressed: matches!(compressed.as_deref(), Some("1" | "ON")),
        checksum,
        identity,
        gtid_mode_on,
    })
}

/// Every captured base table (`(db, table)`), sorted.
pub async fn matching_tables(conn: &mut Conn, cfg: &MysqlConfig) -> Result<Vec<(String, String)>, MyError> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
              WHERE TABLE_TYPE = 'BASE TABLE'
                AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
              ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await?;
    Ok(rows.into_iter().filter(|(db, t)| table_included(&cfg.tables, db, t)).collect())
}

/// information_schema's columns of a table, in order.
pub async fn info_columns(conn: &mut Conn, db: &str, table: &str) -> Result<Vec<InfoColumn>, MyError> {
    let rows: Vec<(String, String, String, Option<String>, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), CHARACTER_SET_NAME, COLUMN_KEY
               FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?
              ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, data_type, column_type, charset, key)| InfoColumn {
            name,
            data_type,
            column_type,
            charset,
            primary: key == "PRI",
        })
        .collect())
}

/// Quote an identifier.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Run the source until cancelled; transient failures reconnect with backoff and resume from the
/// last durable position.
pub async fn run(cfg: &MysqlConfig, mut ctx: SourceContext) -> Result<(), MyError> {
    let mut backoff = Backoff::default();
    let mut resume = match ctx.resume.take() {
        Some(Position::Mysql(p)) => Some(p),
        _ => None,
    };
    loop {
        let result = Session::new(cfg, &mut ctx).run(resume.clone(), &mut backoff).await;
        match result {
            Ok(()) | Err(MyError::Closed(_)) => return Ok(()),
            Err(e) if e.class() == ErrorClass::Retry && !ctx.cancel.is_cancelled() => {
                match ctx.recover(&e, &mut backoff).await {
                    None => return Ok(()),
                    Some(Some(Position::Mysql(p))) => resume = Some(p),
                    Some(_) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A table the stream has a table map for.
struct Mapped {
    tme: TableMapEvent<'static>,
    /// `None`: not captured.
    schema: Option<Arc<TableSchema>>,
    fingerprint: Vec<u8>,
}

/// The transaction being read.
#[derive(Default)]
struct Txn {
    gtid: Option<Gtid>,
    /// MySQL: the transaction's GTID (source, number).
    mysql_gtid: Option<(String, u64)>,
    gtid_text: Option<Arc<str>>,
    standalone: bool,
    open: bool,
}

struct Session<'a> {
    cfg: &'a MysqlConfig,
    ctx: &'a mut SourceContext,
    /// A second connection, for information_schema lookups while streaming.
    meta: Option<Conn>,
    mapped: HashMap<u64, Mapped>,
    info_cache: HashMap<(String, String), Vec<InfoColumn>>,
    file: Arc<str>,
    pos: u64,
    gtid: GtidState,
    /// MySQL: the GTID set executed up to the last durable transaction.
    gtid_set: GtidSet,
    mariadb: bool,
    /// The server's identity (see [`ServerInfo::identity`]), stored with every position.
    server: Option<String>,
    /// MySQL: `gtid_set` holds every transaction before the position, not only those read.
    gtid_complete: bool,
    txn: Txn,
    /// The open transaction's events, held until it commits (a ROLLBACK discards them).
    pending: Vec<ChangeEvent>,
    pending_bytes: usize,
    /// The open transaction outgrew the buffer and some of it was handed over already.
    spilled: bool,
    /// Whether a table's engine rolls back (InnoDB), by table.
    transactional: HashMap<(String, String), bool>,
}

impl<'a> Session<'a> {
    fn new(cfg: &'a MysqlConfig, ctx: &'a mut SourceContext) -> Self {
        Session {
            cfg,
            ctx,
            meta: None,
            mapped: HashMap::new(),
            info_cache: HashMap::new(),
            file: "".into(),
            pos: 4,
            gtid: GtidState::default(),
            gtid_set: GtidSet::default(),
            mariadb: false,
            server: None,
            gtid_complete: false,
            txn: Txn::default(),
            pending: Vec::new(),
            pending_bytes: 0,
            spilled: false,
            transactional: HashMap::new(),
        }
    }

    async fn run(&mut self, resume: Option<MyPosition>, backoff: &mut Backoff) -> Result<(), MyError> {
        let cfg = self.cfg;
        let mut conn = connect(cfg).await?;
        let server = server_info(&mut conn).await?;
        self.mariadb = server.mariadb;
        self.server = Some(server.identity.clone());
        prerequisites(&server, cfg)?;
        if server.binlog_row_metadata.as_deref() != Some("FULL") {
            self.ctx.status.note(
                "binlog_row_metadata is not FULL: column names come from information_schema, which is only right while the schema does not change; set binlog_row_metadata=FULL".into(),
            );
        }
        let tables = matching_tables(&mut conn, cfg).await?;
        if tables.is_empty() {
            return Err(MyError::Operator(format!("no table matches {}; check source.tables", cfg.tables.join(", "))));
        }
        let mut captured = Vec::with_capacity(tables.len());
        for (db, name) in &tables {
            let info = info_columns(&mut conn, db, name).await?;
            captured.push(CapturedTable {
                table: TableRef { db: db.as_str().into(), schema: db.as_str().into(), name: name.as_str().into() },
                columns: info.iter().map(|c| c.name.clone()).collect(),
                key: info.iter().filter(|c| c.primary).map(|c| c.name.clone()).collect(),
            });
        }
        self.ctx.captured(&captured).map_err(MyError::Operator)?;
        let logs = binary_logs(&mut conn).await?;

        // Where to start, and whether a snapshot comes first.
        let needs_snapshot = match &resume {
            Some(p) => p.snapshot.is_some(),
            None => cfg.snapshot == SnapshotMode::Initial,
        };
        let start = match &resume {
            Some(p) if p.server.as_ref().is_some_and(|s| *s != server.identity) => {
                return Err(MyError::Operator(format!(
                    "the stored position ({}:{}) was read from another server ({} {}, this one is {}): after a failover or a restore, binlog coordinates and the versions that fence the caches do not carry over; {}",
                    p.file,
                    p.pos,
                    if server.mariadb { "server_id" } else { "server_uuid" },
                    p.server.as_deref().unwrap_or_default(),
                    server.identity,
                    snapshot_again(&self.ctx.connector)
                )));
            }
            Some(p) => {
                // Resuming by GTID, the server finds the transaction in whatever file holds it
                // now, and says so if it is gone (see `stream_error`). A MySQL server whose
                // gtid_mode has been turned off is read by file and offset.
                let mut p = p.clone();
                if let Some(g) = &p.gtid {
                    let fits = matches!(
                        (g, server.mariadb),
                        (GtidPosition::MariaDb(_), true) | (GtidPosition::Mysql(_), false)
                    );
                    if !fits {
                        return Err(MyError::Operator(format!(
                            "the stored GTID position {g} is not a {} GTID, so it was read from another kind of server; {}",
                            if server.mariadb { "MariaDB" } else { "MySQL" },
                            snapshot_again(&self.ctx.connector)
                        )));
                    }
                    if !server.gtid_mode_on {
                        p.gtid = None;
                    }
                }
                let by_gtid = p.gtid.is_some() && p.snapshot.is_none();
                if !by_gtid && !p.file.is_empty() && !logs.iter().any(|(f, _)| *f == p.file) {
                    return Err(MyError::Operator(format!(
                        "binlog {} (the stored position {}:{}) has been purged from the server, so the changes since then are lost; {}",
                        p.file,
                        p.file,
                        p.pos,
                        snapshot_again(&self.ctx.connector)
                    )));
                }
                p
            }
            None if needs_snapshot => {
                self.ctx.status.set_state(ConnectorState::Snapshotting);
                let run = snapshot::SnapshotRun {
                    cfg,
                    connector: &self.ctx.connector,
                    metrics: &self.ctx.metrics,
                    mariadb: server.mariadb,
                    server: &server.identity,
                };
                run.begin_and_read(&tables, None, &mut self.ctx.batcher).await?
            }
            None => current_position(&mut conn, server.mariadb, true).await?,
        };
        if needs_snapshot && resume.is_some() {
            self.ctx.status.set_state(ConnectorState::Snapshotting);
            let run = snapshot::SnapshotRun {
                cfg,
                connector: &self.ctx.connector,
                metrics: &self.ctx.metrics,
                mariadb: server.mariadb,
                server: &server.identity,
            };
            run.resume(&tables, &start, &mut self.ctx.batcher).await?;
        }
        drop(conn);

        self.file = start.file.as_str().into();
        self.pos = start.pos;
        match &start.gtid {
            Some(GtidPosition::MariaDb(g)) => self.gtid = g.clone(),
            Some(GtidPosition::Mysql(g)) => self.gtid_set = g.clone(),
            None => {}
        }
        if !server.mariadb {
            // Resumed by file and offset on a server with GTIDs (a position stored before GTIDs
            // were on, or by an older tidemark), the set is known only from the next binlog's
            // PREVIOUS_GTIDS event on: until then positions carry no GTID, as a partial set
            // would make the server resend (or find purged) everything it lacks.
            self.gtid_complete = start.gtid.is_some();
        }
        let stream_conn = connect(cfg).await?;
        let mut stream = self.open_stream(stream_conn, &server).await?;
        self.ctx.status.set_state(ConnectorState::Streaming);
        self.ctx.status.set_source_error(None);
        backoff.reset();
        info!(connector = %self.ctx.connector, file = %self.file, pos = self.pos, gtid = ?self.gtid_position().map(|g| g.to_string()), "streaming");

        // Schema history starts with the tables as they are where streaming starts.
        for (db, table) in &tables {
            if self.history(db, table).is_empty() {
                let columns = self.info(db, table).await?;
                self.record_history(db, table, coordinate(&self.file, self.pos), columns)?;
            }
        }
        let poller = tokio::spawn(poll_server(
            self.cfg.clone(),
            self.mariadb,
            self.ctx.status.clone(),
            self.ctx.acked.clone(),
            self.ctx.cancel.child_token(),
        ));
        let result = self.stream(&mut stream).await;
        poller.abort();
        let _ = stream.close().await;
        result
    }

    /// Open the binlog stream from the session's position: by GTID when one is known (MariaDB's
    /// GTID position, MySQL's GTID set), else by file and offset.
    async fn open_stream(&mut self, mut conn: Conn, server: &ServerInfo) -> Result<mysql_async::BinlogStream, MyError> {
        let period_ns = self.cfg.heartbeat_interval.as_nanos() as u64;
        // MySQL 8.0.26+ reads the `source_` name, older servers and MariaDB the `master_` one.
        conn.query_drop(format!("SET @master_heartbeat_period = {period_ns}, @source_heartbeat_period = {period_ns}"))
            .await?;
        let by_gtid = if server.mariadb { !self.gtid.is_empty() } else { !self.gtid_set.is_empty() };
        if server.mariadb {
            // Without this capability MariaDB replaces its GTID events with dummy events.
            conn.query_drop("SET @mariadb_slave_capability = 4").await?;
            if by_gtid {
                info!(connector = %self.ctx.connector, gtid = %self.gtid, "resuming from GTID");
                conn.query_drop(format!("SET @slave_connect_state = '{}'", self.gtid)).await?;
                conn.query_drop("SET @slave_gtid_strict_mode = 0").await?;
            }
        }
        let file = self.file.to_string();
        let request = if by_gtid && server.mariadb {
            BinlogStreamRequest::new(self.cfg.server_id)
        } else if by_gtid {
            info!(connector = %self.ctx.connector, gtid = %self.gtid_set, "resuming from GTID set");
            let sids = binlog::sids(&self.gtid_set).map_err(MyError::Decode)?;
            BinlogStreamRequest::new(self.cfg.server_id).with_gtid().with_gtid_set(sids)
        } else {
            BinlogStreamRequest::new(self.cfg.server_id).with_filename(file.as_bytes()).with_pos(self.pos)
        };
        let connector = self.ctx.connector.clone();
        conn.get_binlog_stream(request).await.map_err(|e| stream_error(e, &connector))
    }

    /// The streaming loop. Priorities (biased select): shutdown, the batch timer, new input. A
    /// stream silent for three heartbeat periods is treated as a dead connection.
    async fn stream(&mut self, stream: &mut mysql_async::BinlogStream) -> Result<(), MyError> {
        let silence = self.cfg.heartbeat_interval * SILENT_HEARTBEATS + SILENCE_GRACE;
        let mut first_rotate = true;
        loop {
            let deadline = self.ctx.batcher.deadline();
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => {
                    let _ = self.ctx.batcher.try_flush();
                    return Ok(());
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    self.ctx.batcher.flush().await?;
                }
                next = tokio::time::timeout(silence, stream.next()) => {
                    let ev = match next {
                        Err(_) => return Err(MyError::Stream(mysql_async::Error::Other(
                            format!("no event or heartbeat for {silence:?}").into(),
                        ))),
                        Ok(None) => return Err(MyError::Stream(mysql_async::Error::Other("the server ended the binlog stream".into()))),
                        Ok(Some(ev)) => ev.map_err(|e| stream_error(e, &self.ctx.connector))?,
                    };
                    self.handle(ev, &mut first_rotate).await?;
                }
            }
        }
    }

    async fn handle(&mut self, ev: Event, first_rotate: &mut bool) -> Result<(), MyError> {
        let header = ev.header();
        let raw = header.event_type_raw();
        match raw {
            binlog::MARIADB_GTID => {
                let (g, flags) = mariadb_gtid(ev.data(), header.server_id())
                    .ok_or_else(|| MyError::Decode("short MariaDB GTID event".into()))?;
                self.txn = Txn {
                    gtid: Some(g),
                    mysql_gtid: None,
                    gtid_text: Some(g.to_string().into()),
                    standalone: flags & binlog::GTID_FLAG_STANDALONE != 0,
                    open: true,
                };
                self.advance(&header);
                return Ok(());
            }
            r if binlog::MARIADB_COMPRESSED.contains(&r) => {
                return Err(MyError::Operator(
                    "the binlog holds compressed events (log_bin_compress=ON), which tidemark cannot read; set log_bin_compress=OFF (changes written while it was ON must be re-read by a snapshot)".into(),
                ));
            }
            binlog::MYSQL_TRANSACTION_PAYLOAD => {
                return Err(MyError::Operator(
                    "the binlog holds compressed transactions (binlog_transaction_compression=ON), which tidemark cannot read; set binlog_transaction_compression=OFF (transactions written while it was ON must be re-read by a snapshot)".into(),
                ));
            }
            binlog::MYSQL_HEARTBEAT_V2 => {
                self.heartbeat(header.log_pos() as u64).await?;
                return Ok(());
            }
            binlog::MARIADB_GTID_LIST | binlog::MARIADB_BINLOG_CHECKPOINT => return Ok(()),
            _ => {}
        }
        let Ok(event_type) = header.event_type() else { return Ok(()) };
        let data = match ev.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(MyError::Decode(format!("{event_type:?} at {}:{}: {e}", self.file, header.log_pos())))
            }
        };
        match data {
            EventData::RotateEvent(r) => {
                let mut name = r.name_raw().to_vec();
                // The first, artificial rotate comes before the format description, so a
                // checksum the server appended is still glued to the name: strip it when the
                // bytes check out as the event's CRC32.
                if *first_rotate && header.log_pos() == 0 && has_crc(&header, ev.data()) && name.len() > 4 {
                    name.truncate(name.len() - 4);
                }
                *first_rotate = false;
                self.file = String::from_utf8_lossy(&name).as_ref().into();
                self.pos = r.position();
            }
            EventData::HeartbeatEvent => {
                // The body names the binlog the server is at.
                let name = ev.data();
                if !name.is_empty()
                    && name.len() < 512
                    && name.iter().all(|b| b.is_ascii_graphic())
                    && *self.file.as_bytes() != *name
                {
                    self.file = String::from_utf8_lossy(name).as_ref().into();
                }
                self.heartbeat(header.log_pos() as u64).await?;
            }
            EventData::PreviousGtidsEvent(prev) => {
                // MySQL: at the start of each binlog, every GTID in the binlogs before it. The
                // stream has read everything before this point, so the set is complete from here.
                for sid in prev.sids() {
                    let source = mysql_source(sid.uuid(), sid.tag().map(|t| t.as_str()));
                    for i in sid.intervals() {
                        self.gtid_set.add_interval(&source, i.start(), i.end());
                    }
                }
                self.gtid_complete = true;
            }
            EventData::GtidEvent(g) => {
                // MySQL: the transaction's GTID, added to the GTID set when it commits.
                let source = mysql_source(g.sid(), g.tag().map(|t| t.as_str()));
                let text = format!("{source}:{}", g.gno());
                // MySQL writes DDL as GTID + query with no XID: the group is one statement unless
                // a BEGIN follows.
                self.txn = Txn {
                    gtid: None,
                    mysql_gtid: Some((source, g.gno())),
                    gtid_text: Some(text.into()),
                    standalone: true,
                    open: true,
                };
                self.advance(&header);
            }
            EventData::QueryEvent(q) => {
                let sql = q.query();
                let trimmed = sql.trim();
                let schema = q.schema().into_owned();
                let upper = trimmed.get(..trimmed.len().min(32)).unwrap_or("").to_ascii_uppercase();
                let starts_txn = upper == "BEGIN"
                    || upper.starts_with("XA START")
                    || trimmed.to_ascii_uppercase().ends_with("START TRANSACTION");
                if starts_txn {
                    self.txn.open = true;
                    self.txn.standalone = false;
                    if upper == "BEGIN" || upper.starts_with("XA START") {
                        self.advance(&header);
                        return Ok(());
                    }
                } else if upper == "COMMIT" {
                    self.commit(&header).await?;
                    return Ok(());
                } else if upper == "ROLLBACK" {
                    // Written when a rolled-back transaction touched a non-transactional table:
                    // its transactional rows never happened.
                    self.rollback(&header).await?;
                    return Ok(());
                } else if upper.starts_with("XA END") {
                    self.advance(&header);
                    return Ok(());
                }
                self.on_ddl(&schema, trimmed, &header).await?;
                self.advance(&header);
                if self.txn.standalone || !self.txn.open {
                    self.commit(&header).await?;
                }
            }
            EventData::XidEvent(_) => {
                self.commit(&header).await?;
            }
            EventData::XaPrepareLogEvent(_) => {
                return Err(MyError::Operator(
                    "a two-phase XA transaction (XA PREPARE) is in the binlog, and tidemark does not support them: its rows could not be applied at commit time; avoid XA PREPARE for captured tables, then run `tidemark offsets reset` to snapshot again".into(),
                ));
            }
            EventData::TableMapEvent(tme) => {
                self.on_table_map(tme.into_owned()).await?;
            }
            EventData::RowsEvent(rows) => {
                self.on_rows(&rows, &header)?;
                self.spill_if_large().await?;
            }
            _ => {}
        }
        Ok(())
    }

    fn advance(&mut self, header: &mysql_async::binlog::events::BinlogEventHeader) {
        if header.log_pos() != 0 {
            self.pos = header.log_pos() as u64;
        }
    }

    fn position(&self) -> Position {
        Position::Mysql(MyPosition {
            file: self.file.to_string(),
            pos: self.pos,
            gtid: self.gtid_position(),
            server: self.server.clone(),
            snapshot: None,
        })
    }

    fn gtid_position(&self) -> Option<GtidPosition> {
        if self.mariadb {
            (!self.gtid.is_empty()).then(|| GtidPosition::MariaDb(self.gtid.clone()))
        } else {
            (self.gtid_complete && !self.gtid_set.is_empty()).then(|| GtidPosition::Mysql(self.gtid_set.clone()))
        }
    }

    /// The end of a transaction: a consistent boundary.
    /// Hand the open transaction's events to the batcher.
    async fn release(&mut self) -> Result<(), MyError> {
        for ev in self.pending.drain(..) {
            self.ctx.batcher.push(ev);
            if self.ctx.batcher.is_full() {
                self.ctx.batcher.flush().await?;
            }
        }
        self.pending_bytes = 0;
        Ok(())
    }

    /// A transaction larger than the buffer (four batches) streams on: memory stays bounded.
    async fn spill_if_large(&mut self) -> Result<(), MyError> {
        if self.pending_bytes > SPILL_BATCHES * self.ctx.batcher.max_bytes() {
            self.spilled = true;
            self.release().await?;
        }
        Ok(())
    }

    async fn rollback(&mut self, header: &mysql_async::binlog::events::BinlogEventHeader) -> Result<(), MyError> {
        if self.spilled {
            return Err(MyError::Operator(format!(
                "a transaction that touched a non-transactional table rolled back at {}:{} after more changes than tidemark buffers had been applied; {}",
                self.file,
                header.log_pos(),
                snapshot_again(&self.ctx.connector)
            )));
        }
        // Rows of non-transactional tables (MyISAM, Aria, MEMORY...) really happened; only the
        // transactional tables' rows are undone.
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        for ev in pending {
            if !self.is_transactional(&ev.table.db, &ev.table.name).await? {
                self.pending_bytes += ev.approx_bytes();
                self.pending.push(ev);
            }
        }
        self.commit(header).await
    }

    async fn is_transactional(&mut self, db: &str, table: &str) -> Result<bool, MyError> {
        let key = (db.to_string(), table.to_string());
        if let Some(t) = self.transactional.get(&key) {
            return Ok(*t);
        }
        let engine: Option<String> = self
            .meta_conn()
            .await?
            .exec_first(
                "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db, table),
            )
            .await?;
        let t = engine
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "innodb" | "rocksdb" | "tokudb" | "ndbcluster"));
        self.transactional.insert(key, t);
        Ok(t)
    }

    async fn commit(&mut self, header: &mysql_async::binlog::events::BinlogEventHeader) -> Result<(), MyError> {
        self.release().await?;
        self.spilled = false;
        self.advance(header);
        if let Some(g) = self.txn.gtid {
            self.gtid.apply(g);
        }
        if let Some((source, gno)) = &self.txn.mysql_gtid {
            self.gtid_set.add(source, *gno);
        }
        self.txn = Txn::default();
        let commit_ms = header.timestamp() as i64 * 1000;
        let pos = self.position();
        self.ctx.batcher.mark(pos, Some(commit_ms), Some(coordinate(&self.file, self.pos)), false);
        self.ctx.batcher.after_boundary().await?;
        Ok(())
    }

    /// The server was idle: everything before this point has been sent.
    async fn heartbeat(&mut self, log_pos: u64) -> Result<(), MyError> {
        if self.txn.open {
            return Ok(());
        }
        if log_pos != 0 {
            self.pos = log_pos;
        }
        let pos = self.position();
        self.ctx.batcher.mark(pos, Some(now_ms()), Some(coordinate(&self.file, self.pos)), true);
        self.ctx.batcher.after_boundary().await?;
        Ok(())
    }

    async fn meta_conn(&mut self) -> Result<&mut Conn, MyError> {
        if self.meta.is_none() {
            self.meta = Some(connect(self.cfg).await?);
        }
        Ok(self.meta.as_mut().expect("connected above"))
    }

    async fn info(&mut self, db: &str, table: &str) -> Result<Vec<InfoColumn>, MyError> {
        let key = (db.to_string(), table.to_string());
        if let Some(cols) = self.info_cache.get(&key) {
            return Ok(cols.clone());
        }
        let cols = info_columns(self.meta_conn().await?, db, table).await?;
        self.info_cache.insert(key, cols.clone());
        Ok(cols)
    }

    fn history(&self, db: &str, table: &str) -> Vec<HistoryEntry> {
        let raw = self.ctx.store.schema(&self.ctx.connector, &format!("{db}.{table}")).ok().flatten();
        raw.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Record `columns` as the schema of `db.table` from `coordinate` on (kept: the last 32).
    fn record_history(&self, db: &str, table: &str, coordinate: u64, columns: Vec<InfoColumn>) -> Result<(), MyError> {
        let mut history = self.history(db, table);
        if history.last().is_some_and(|e| e.columns == columns) {
            return Ok(());
        }
        history.push(HistoryEntry { coordinate, columns });
        if history.len() > 32 {
            history.remove(0);
        }
        let bytes = serde_json::to_vec(&history).map_err(|e| MyError::Decode(e.to_string()))?;
        self.ctx
            .store
            .put_schema(&self.ctx.connector, &format!("{db}.{table}"), &bytes)
            .map_err(|e| MyError::Operator(format!("cannot store schema history: {e}")))
    }

    /// information_schema's view of a table for a table map: the live one when the map names its
    /// columns (FULL metadata, which decides anyway), else the history entry in force at this
    /// position, so a restart decodes old events with the schema they were written with.
    async fn info_for(&mut self, tme: &TableMapEvent<'_>, db: &str, table: &str) -> Result<Vec<InfoColumn>, MyError> {
        let has_names = tme
            .iter_optional_meta()
            .flatten()
            .any(|f| matches!(f, mysql_async::binlog::events::OptionalMetadataField::ColumnName(_)));
        if !has_names {
            let history = self.history(db, table);
            if let Some(entry) = history_at(&history, coordinate(&self.file, self.pos), tme.columns_count() as usize) {
                return Ok(entry.columns.clone());
            }
        }
        self.info(db, table).await
    }

    async fn on_table_map(&mut self, tme: TableMapEvent<'static>) -> Result<(), MyError> {
        let id = tme.table_id();
        let fingerprint = fingerprint(&tme);
        if self.mapped.get(&id).is_some_and(|m| m.fingerprint == fingerprint) {
            return Ok(());
        }
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let schema = if table_included(&self.cfg.tables, &db, &table) {
            for i in 0..tme.columns_count() as usize {
                if !matches!(tme.get_column_type(i), Ok(Some(_))) {
                    return Err(MyError::Operator(format!(
                        "table {db}.{table} has a column (number {}) of a type tidemark cannot decode from the binlog (e.g. MariaDB's COMPRESSED columns); change its type or leave the table out of source.tables",
                        i + 1
                    )));
                }
            }
            let mut info = self.info_for(&tme, &db, &table).await?;
            let mut built = schema::from_table_map(&tme, &info, &self.ctx.connector, &self.ctx.metrics);
            if built.is_err() {
                // information_schema may be stale in the cache: look again once.
                self.info_cache.remove(&(db.clone(), table.clone()));
                info = self.info(&db, &table).await?;
                built = schema::from_table_map(&tme, &info, &self.ctx.connector, &self.ctx.metrics);
            }
            let schema = built.map_err(|e| MyError::Operator(format!("table {db}.{table}: {e}")))?;
            if !schema.by_primary_key {
                self.ctx
                    .status
                    .note(format!("table {db}.{table} has no primary key: its rows are keyed by all their columns"));
            }
            Some(Arc::new(schema))
        } else {
            None
        };
        self.mapped.insert(id, Mapped { tme, schema, fingerprint });
        Ok(())
    }

    /// DDL: forget cached information_schema answers for the tables it may touch (the next
    /// table map rebuilds their schemas), and turn TRUNCATE TABLE into truncate events.
    async fn on_ddl(
        &mut self,
        schema: &str,
        sql: &str,
        header: &mysql_async::binlog::events::BinlogEventHeader,
    ) -> Result<(), MyError> {
        let lower = sql.to_ascii_lowercase();
        let is_ddl = ["alter", "create", "drop", "rename", "truncate"].iter().any(|k| lower.starts_with(k));
        if !is_ddl {
            return Ok(());
        }
        self.info_cache.clear();
        self.mapped.clear();
        // Schema history: the tables the statement names, as information_schema shows them now
        // (right after the DDL when tidemark keeps up).
        if let Some(rest) = lower.strip_prefix("alter table").or_else(|| lower.strip_prefix("create table")) {
            let name_len = rest.split_whitespace().next().map_or(0, str::len);
            let start = sql.len() - rest.trim_start().len();
            let (db, table) = split_table_name(&sql[start..start + name_len], schema);
            if table_included(&self.cfg.tables, &db, &table) {
                let columns = info_columns(self.meta_conn().await?, &db, &table).await?;
                self.record_history(&db, &table, coordinate(&self.file, header.log_pos() as u64), columns)?;
            }
        }
        if lower.starts_with("alter table")
            && (lower.contains(" truncate partition") || lower.contains(" drop partition"))
        {
            self.ctx.status.note(format!(
                "`{}` removed rows without row events; the caches keep them until a snapshot (`tidemark offsets reset {}`)",
                sql.chars().take(80).collect::<String>(),
                self.ctx.connector
            ));
        }
        if let Some((db, table)) = truncate_target(sql, schema) {
            if table_included(&self.cfg.tables, &db, &table) {
                let table_ref = Arc::new(TableRef {
                    db: db.as_str().into(),
                    schema: db.as_str().into(),
                    name: table.as_str().into(),
                });
                let version = Version::new(coordinate(&self.file, header.log_pos() as u64), 1);
                let ev = ChangeEvent {
                    op: Op::Truncate,
                    table: table_ref,
                    key: Row::default(),
                    before: None,
                    after: None,
                    partial: false,
                    version,
                    commit_ts_ms: header.timestamp() as i64 * 1000,
                    snapshot: SnapshotFlag::No,
                    source: self.source_meta(header, 0),
                };
                self.pending.push(ev);
            }
        }
        Ok(())
    }

    fn source_meta(&self, header: &mysql_async::binlog::events::BinlogEventHeader, row: u32) -> SourceMeta {
        let end = header.log_pos() as u64;
        SourceMeta::Mysql {
            server_id: header.server_id(),
            gtid: self.txn.gtid_text.clone(),
            file: self.file.clone(),
            pos: end.saturating_sub(header.event_size() as u64),
            row,
        }
    }

    fn on_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        header: &mysql_async::binlog::events::BinlogEventHeader,
    ) -> Result<(), MyError> {
        let Some(mapped) = self.mapped.get(&rows.table_id()) else { return Ok(()) };
        let Some(schema) = mapped.schema.clone() else { return Ok(()) };
        let before_cols: Option<Vec<usize>> = rows.columns_before_image().map(|b| b.iter_ones().collect());
        let after_cols: Option<Vec<usize>> = rows.columns_after_image().map(|b| b.iter_ones().collect());
        if matches!(rows, RowsEventData::PartialUpdateRowsEvent(_)) {
            return Err(MyError::Operator(
                "partial JSON updates (binlog_row_value_options=PARTIAL_JSON) are not supported; set binlog_row_value_options=''".into(),
            ));
        }
        let coordinate = coordinate(&self.file, header.log_pos() as u64);
        let commit_ms = header.timestamp() as i64 * 1000;
        let mut index: u64 = 0;
        let mut events = Vec::new();
        let images = rows::decode(rows.rows_data(), &mapped.tme, before_cols.as_deref(), after_cols.as_deref())
            .map_err(|e| {
                MyError::Decode(format!("rows of {} at {}:{}: {e}", schema.table, self.file, header.log_pos()))
            })?;
        for (row_no, (before, after)) in images.into_iter().enumerate() {
            let before = before.map(|values| schema.row(values, Origin::Binlog));
            let after = after.map(|values| schema.row(values, Origin::Binlog));
            let source = self.source_meta(header, row_no as u32);
            let mut emit = |op: Op, key: Row, before: Option<Row>, after: Option<Row>| {
                index += 1;
                schema.counters.get(op).inc();
                events.push(ChangeEvent {
                    op,
                    table: schema.table.clone(),
                    key,
                    before,
                    after,
                    partial: false,
                    version: Version::new(coordinate, index),
                    commit_ts_ms: commit_ms,
                    snapshot: SnapshotFlag::No,
                    source: source.clone(),
                });
            };
            match (before, after) {
                (None, Some(a)) => {
                    let key = schema.key_of(&a).unwrap_or_default();
                    emit(Op::Create, key, None, Some(a));
                }
                (Some(b), None) => {
                    let key = schema.key_of(&b).unwrap_or_default();
                    emit(Op::Delete, key, Some(b), None);
                }
                (Some(b), Some(a)) => {
                    let old_key = schema.key_of(&b).unwrap_or_default();
                    let new_key = schema.key_of(&a).unwrap_or_default();
                    if old_key != new_key {
                        // The key changed: like Debezium, a delete of the old key and a create.
                        emit(Op::Delete, old_key, Some(b), None);
                        emit(Op::Create, new_key, None, Some(a));
                    } else {
                        emit(Op::Update, new_key, Some(b), Some(a));
                    }
                }
                (None, None) => {}
            }
        }
        for ev in events {
            self.pending_bytes += ev.approx_bytes();
            self.pending.push(ev);
        }
        Ok(())
    }
}

/// A stream error, with the way out when the server no longer has the binlog the stream needs.
fn stream_error(e: mysql_async::Error, connector: &str) -> MyError {
    if let mysql_async::Error::Server(s) = &e {
        if s.code == 1236 {
            return MyError::Operator(format!(
                "the binlog for the stored position has been purged from the server ({}), so the changes since then are lost; {}",
                s.message,
                snapshot_again(connector)
            ));
        }
    }
    MyError::Stream(e)
}

/// The CRC32 the server appends to an event, checked against the event itself (the first,
/// artificial ROTATE arrives before the format description says whether checksums are on).
fn has_crc(header: &mysql_async::binlog::events::BinlogEventHeader, data: &[u8]) -> bool {
    if data.len() < 4 {
        return false;
    }
    let mut h = Vec::with_capacity(19 + data.len());
    h.extend_from_slice(&header.timestamp().to_le_bytes());
    h.push(header.event_type_raw());
    h.extend_from_slice(&header.server_id().to_le_bytes());
    h.extend_from_slice(&header.event_size().to_le_bytes());
    h.extend_from_slice(&header.log_pos().to_le_bytes());
    h.extend_from_slice(&header.flags_raw().to_le_bytes());
    let (body, crc) = data.split_at(data.len() - 4);
    h.extend_from_slice(body);
    crc32fast::hash(&h) == u32::from_le_bytes(crc.try_into().expect("4 bytes"))
}

/// What identifies a table map's schema (column types, metadata, optional metadata).
fn fingerprint(tme: &TableMapEvent<'_>) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(tme.database_name_raw());
    f.push(0);
    f.extend_from_slice(tme.table_name_raw());
    f.push(0);
    for i in 0..tme.columns_count() as usize {
        f.push(tme.get_column_type(i).ok().flatten().map_or(0, |t| t as u8));
        if let Some(m) = tme.get_column_metadata(i) {
            f.extend_from_slice(m);
        }
        f.push(0xff);
    }
    for field in tme.iter_optional_meta().flatten() {
        if let mysql_async::binlog::events::OptionalMetadataField::ColumnName(names) = field {
            for n in names.iter_names().flatten() {
                f.extend_from_slice(n.name_raw());
                f.push(0);
            }
        }
    }
    f
}

/// The table a `TRUNCATE [TABLE] name` statement empties.
fn truncate_target(sql: &str, default_db: &str) -> Option<(String, String)> {
    let tokens: Vec<&str> = sql.split_whitespace().collect();
    if !tokens.first()?.eq_ignore_ascii_case("truncate") {
        return None;
    }
    let name = match tokens.get(1)? {
        t if t.eq_ignore_ascii_case("table") => tokens.get(2)?,
        t => t,
    };
    Some(split_table_name(name, default_db))
}

/// `db.table`, `` `db`.`table` `` or `table` (in `default_db`).
fn split_table_name(name: &str, default_db: &str) -> (String, String) {
    let clean = |s: &str| s.trim().trim_matches('`').to_string();
    let name = name.trim().trim_end_matches(';');
    match name.split_once("`.`").or_else(|| name.split_once('.')) {
        Some((db, table)) => (clean(db), clean(table)),
        None => (default_db.to_string(), clean(name)),
    }
}

fn prerequisites(server: &ServerInfo, cfg: &MysqlConfig) -> Result<(), MyError> {
    let fix = |what: String| Err(MyError::Operator(what));
    if !server.log_bin {
        return fix("the binary log is off; add log_bin to the server configuration and restart it".into());
    }
    if !server.binlog_format.eq_ignore_ascii_case("ROW") {
        return fix(format!(
            "binlog_format is {}; set binlog_format=ROW (SET GLOBAL binlog_format = 'ROW', and in the configuration)",
            server.binlog_format
        ));
    }
    if !server.binlog_row_image.eq_ignore_ascii_case("FULL") {
        return fix(format!("binlog_row_image is {}; set binlog_row_image=FULL", server.binlog_row_image));
    }
    if server.compressed {
        return fix(
            "log_bin_compress is ON, and compressed binlog events cannot be read; set log_bin_compress=OFF".into()
        );
    }
    if server.server_id == cfg.server_id {
        return fix(format!("source.server_id {} is the server's own server_id; choose another", cfg.server_id));
    }
    Ok(())
}

/// `SHOW BINARY LOGS`: (file, size), oldest first.
pub async fn binary_logs(conn: &mut Conn) -> Result<Vec<(String, u64)>, MyError> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| {
            let name: String = r.take(0)?;
            let size: u64 = r.take(1)?;
            Some((name, size))
        })
        .collect())
}

/// The server's current binlog position, and with `gtid` its GTID position (MariaDB) or executed
/// GTID set (MySQL with `gtid_mode=ON`).
async fn current_position(conn: &mut Conn, mariadb: bool, gtid: bool) -> Result<MyPosition, MyError> {
    // MySQL 8.2 renamed SHOW MASTER STATUS, and 8.4 dropped the old name; MariaDB has only it.
    let status: Option<mysql_async::Row> = if mariadb {
        conn.query_first("SHOW MASTER STATUS").await?
    } else {
        match conn.query_first("SHOW BINARY LOG STATUS").await {
            Err(mysql_async::Error::Server(e)) if e.code == 1064 => conn.query_first("SHOW MASTER STATUS").await?,
            other => other?,
        }
    };
    let mut row =
        status.ok_or_else(|| MyError::Operator("the server reports no binlog position: is log_bin on?".into()))?;
    let file: String = row.take(0).unwrap_or_default();
    let pos: u64 = row.take(1).unwrap_or(4);
    let gtid = match (gtid, mariadb) {
        (false, _) => None,
        (true, true) => conn
            .query_first::<String, _>("SELECT @@gtid_binlog_pos")
            .await?
            .and_then(|g| GtidState::parse(&g))
            .filter(|g| !g.is_empty())
            .map(GtidPosition::MariaDb),
        (true, false) => row
            .take::<String, _>("Executed_Gtid_Set")
            .and_then(|g| GtidSet::parse(&g))
            .filter(|set| !set.is_empty())
            .map(GtidPosition::Mysql),
    };
    Ok(MyPosition { file, pos, gtid, server: None, snapshot: None })
}

/// Bytes of binlog between `(from_file, from_pos)` and `(to_file, to_pos)`.
fn binlog_distance(logs: &[(String, u64)], from: (&str, u64), to: (&str, u64)) -> u64 {
    if from.0 == to.0 {
        return to.1.saturating_sub(from.1);
    }
    let (fs, ts) = (file_seq(from.0), file_seq(to.0));
    let mut total = 0;
    for (name, size) in logs {
        let s = file_seq(name);
        if s == fs {
            total += size.saturating_sub(from.1);
        } else if s > fs && s < ts {
            total += size;
        }
    }
    total + to.1
}

/// Every heartbeat interval: the server's current position (for `lag_bytes`) and how close the
/// oldest binlog the server keeps is to the checkpointed position (a purge past it would lose
/// changes).
async fn poll_server(
    cfg: MysqlConfig,
    mariadb: bool,
    status: Arc<ConnectorStatus>,
    acked: tokio::sync::watch::Receiver<Option<Position>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut conn: Option<Conn> = None;
    let mut tick = tokio::time::interval(cfg.heartbeat_interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if conn.is_none() {
            conn = connect(&cfg).await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let (logs, server) = match (binary_logs(c).await, current_position(c, mariadb, false).await) {
            (Ok(l), Ok(s)) => (l, s),
            _ => {
                conn = None;
                continue;
            }
        };
        let Some(Position::Mysql(at)) = acked.borrow().clone() else { continue };
        status.set_source_lag_bytes(Some(binlog_distance(&logs, (&at.file, at.pos), (&server.file, server.pos))));
        let oldest = logs.first().map(|(f, _)| file_seq(f)).unwrap_or(0);
        let ahead = file_seq(&at.file).saturating_sub(oldest);
        // The binlog being written cannot be purged: a margin of 0 is a risk only once the
        // server has moved on to a newer one.
        let at_risk = ahead == 0 && logs.len() > 1;
        let notes = if at_risk {
            vec!["the checkpointed binlog is the oldest the server keeps: purging it (PURGE BINARY LOGS, expire_logs_days) would lose changes; keep binlogs longer".into()]
        } else {
            Vec::new()
        };
        status.set_source_health(SourceHealth {
            figures: vec![(metrics::BINLOG_PURGE_MARGIN_FIGURE, Some(ahead))],
            notes,
        });
        if at_risk {
            if !warned {
                warn!(connector = %status.name, file = %at.file, "the checkpointed binlog is the oldest the server keeps: purging it would lose changes");
                warned = true;
            }
        } else {
            warned = false;
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A snapshot's resumable progress within `MyPosition`.
pub fn snapshot_position(at: &MyPosition, progress: SnapshotProgress) -> Position {
    Position::Mysql(MyPosition { snapshot: Some(progress), ..at.clone() })
}

/// Convert a snapshot row (binary protocol values, in table column order).
pub fn query_row(schema: &TableSchema, row: mysql_async::Row) -> Row {
    let values: Vec<_> = row
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i, mysql_async::binlog::value::BinlogValue::Value(v)))
        .collect();
    schema.row(values, Origin::Query)
}

impl Source for MysqlConfig {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn tables(&self) -> &[String] {
        &self.tables
    }

    fn encoding(&self) -> Encoding {
        self.encoding
    }

    fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    fn exclusive(&self) -> Option<Exclusive> {
        Some(Exclusive {
            key: "server_id",
            identity: format!("{}:{} server_id {}", self.host(), self.port(), self.server_id),
            description: format!("replica server id {} (set source.server_id)", self.server_id),
        })
    }

    fn describe(&self) -> serde_json::Value {
        MysqlConfig::describe(self)
    }

    fn title(&self) -> String {
        format!("mysql {}", self.url)
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
    fn distances_across_files() {
        let logs = vec![("b.000001".to_string(), 1000), ("b.000002".to_string(), 500), ("b.000003".to_string(), 300)];
        assert_eq!(binlog_distance(&logs, ("b.000002", 100), ("b.000002", 400)), 300);
        assert_eq!(binlog_distance(&logs, ("b.000001", 900), ("b.000003", 50)), 100 + 500 + 50);
    }

    #[test]
    fn truncate_targets() {
        assert_eq!(truncate_target("TRUNCATE TABLE `shop`.`orders`", "x"), Some(("shop".into(), "orders".into())));
        assert_eq!(truncate_target("truncate tablets", "shop"), Some(("shop".into(), "tablets".into())));
        assert_eq!(truncate_target("TRUNCATE orders;", "shop"), Some(("shop".into(), "orders".into())));
        assert_eq!(truncate_target("ALTER TABLE t TRUNCATE PARTITION p0", "shop"), None);
    }

    #[test]
    fn table_names() {
        assert_eq!(split_table_name("`shop`.`orders`", "x"), ("shop".into(), "orders".into()));
        assert_eq!(split_table_name("orders;", "shop"), ("shop".into(), "orders".into()));
        assert_eq!(split_table_name("a.b", "shop"), ("a".into(), "b".into()));
    }
}
