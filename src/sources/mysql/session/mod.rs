//! One streaming session of a MySQL/MariaDB connector: from connecting to the end of the
//! binlog stream. The event dispatch and DDL live in [`events`], transaction boundaries in
//! [`txn`].

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use mysql_async::binlog::events::{BinlogEventHeader, RowsEventData, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};
use tracing::info;

use super::schema::{self, history_at, HistoryEntry, InfoColumn, Origin, TableSchema};
use super::server::{
    binary_logs, connect, current_position, info_columns, matching_tables, poll_server, prerequisites, server_info,
    ServerInfo,
};
use super::{binlog, rows, snapshot, MyError, MysqlConfig, SILENCE_GRACE, SILENT_HEARTBEATS};
use crate::connector::batch;
use crate::connector::position::{coordinate, Gtid, GtidPosition, GtidSet, GtidState, MyPosition};
use crate::connector::{
    snapshot_again, table_included, CapturedTable, ConnectorState, Position, SnapshotMode, SourceContext,
};
use crate::event::{ChangeEvent, Op, Row, SnapshotFlag, SourceMeta, TableRef, Version};
use crate::retry::Backoff;

mod events;
mod txn;

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
    /// MySQL 8+: the commit time from the GTID event (`original_commit_timestamp`), microseconds.
    commit_us: Option<i64>,
    /// The thread that wrote the transaction (from its `BEGIN`).
    thread: Option<u32>,
    standalone: bool,
    open: bool,
}

impl Txn {
    /// The transaction's commit time: the GTID event's microseconds where the server writes
    /// them, else the event header's seconds (MariaDB, MySQL 5.7).
    fn commit_us(&self, header: &BinlogEventHeader) -> i64 {
        self.commit_us.unwrap_or(header.timestamp() as i64 * 1_000_000)
    }
}

pub struct Session<'a> {
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
    pub fn new(cfg: &'a MysqlConfig, ctx: &'a mut SourceContext) -> Self {
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

    /// One session: check the server and the captured tables, resolve where to start (reading
    /// a snapshot first when one is due), then stream.
    pub async fn run(&mut self, resume: Option<MyPosition>, backoff: &mut Backoff) -> Result<(), MyError> {
        let mut conn = connect(self.cfg).await?;
        let server = self.prepare_server(&mut conn).await?;
        let tables = self.prepare_tables(&mut conn).await?;
        let needs_snapshot = match &resume {
            Some(p) => p.snapshot.is_some(),
            None => self.cfg.snapshot == SnapshotMode::Initial,
        };
        let start = match &resume {
            Some(p) => self.resume_point(&mut conn, p, &server).await?,
            None if needs_snapshot => self.snapshot(&tables, None, &server).await?,
            None => current_position(&mut conn, server.mariadb, true).await?,
        };
        if needs_snapshot && resume.is_some() {
            self.snapshot(&tables, Some(&start), &server).await?;
        }
        drop(conn);
        self.stream_from(start, &server, &tables, backoff).await
    }

    /// The server's replication settings, refused when tidemark cannot read its binlog.
    async fn prepare_server(&mut self, conn: &mut Conn) -> Result<ServerInfo, MyError> {
        let server = server_info(conn).await?;
        self.mariadb = server.mariadb;
        self.server = Some(server.identity.clone());
        prerequisites(&server, self.cfg)?;
        if server.binlog_row_metadata.as_deref() != Some("FULL") {
            self.ctx.status.note(
                "binlog_row_metadata is not FULL: column names come from information_schema, which is only right while the schema does not change; set binlog_row_metadata=FULL".into(),
            );
        }
        Ok(server)
    }

    /// The captured tables (`(db, table)`), reported to (and checked by) the pipeline.
    async fn prepare_tables(&mut self, conn: &mut Conn) -> Result<Vec<(String, String)>, MyError> {
        let cfg = self.cfg;
        let tables = matching_tables(conn, cfg).await?;
        if tables.is_empty() {
            return Err(MyError::Operator(format!("no table matches {}; check source.tables", cfg.tables.join(", "))));
        }
        let mut captured = Vec::with_capacity(tables.len());
        for (db, name) in &tables {
            let info = info_columns(conn, db, name).await?;
            captured.push(CapturedTable {
                table: TableRef { db: db.as_str().into(), schema: db.as_str().into(), name: name.as_str().into() },
                columns: info.iter().map(|c| c.name.clone()).collect(),
                key: info.iter().filter(|c| c.primary).map(|c| c.name.clone()).collect(),
            });
        }
        self.ctx.captured(&captured).map_err(MyError::Operator)?;
        Ok(tables)
    }

    /// Where a stored position resumes on this server, refused when it cannot: read from
    /// another server (or kind of server), or in a binlog the server no longer has.
    async fn resume_point(
        &mut self,
        conn: &mut Conn,
        p: &MyPosition,
        server: &ServerInfo,
    ) -> Result<MyPosition, MyError> {
        if p.server.as_ref().is_some_and(|s| *s != server.identity) {
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
        // Resuming by GTID, the server finds the transaction in whatever file holds it now, and
        // says so if it is gone (see `stream_error`). A MySQL server whose gtid_mode has been
        // turned off is read by file and offset.
        let mut p = p.clone();
        if let Some(g) = &p.gtid {
            let fits =
                matches!((g, server.mariadb), (GtidPosition::MariaDb(_), true) | (GtidPosition::Mysql(_), false));
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
        if !by_gtid && !p.file.is_empty() {
            let logs = binary_logs(conn).await?;
            if !logs.iter().any(|(f, _)| *f == p.file) {
                return Err(MyError::Operator(format!(
                    "binlog {} (the stored position {}:{}) has been purged from the server, so the changes since then are lost; {}",
                    p.file,
                    p.file,
                    p.pos,
                    snapshot_again(&self.ctx.connector)
                )));
            }
        }
        Ok(p)
    }

    /// Read every captured table: a new snapshot (returning its coordinates, where streaming
    /// continues), or the rest of an interrupted one at `resumed`.
    async fn snapshot(
        &mut self,
        tables: &[(String, String)],
        resumed: Option<&MyPosition>,
        server: &ServerInfo,
    ) -> Result<MyPosition, MyError> {
        self.ctx.status.set_state(ConnectorState::Snapshotting);
        let run = snapshot::SnapshotRun {
            cfg: self.cfg,
            connector: &self.ctx.connector,
            metrics: &self.ctx.metrics,
            mariadb: server.mariadb,
            server: &server.identity,
        };
        match resumed {
            None => run.begin_and_read(tables, None, &mut self.ctx.batcher).await,
            Some(at) => {
                run.resume(tables, at, &mut self.ctx.batcher).await?;
                Ok(at.clone())
            }
        }
    }

    /// Stream from `start` until cancelled or an error ends the session.
    async fn stream_from(
        &mut self,
        start: MyPosition,
        server: &ServerInfo,
        tables: &[(String, String)],
        backoff: &mut Backoff,
    ) -> Result<(), MyError> {
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
        let stream_conn = connect(self.cfg).await?;
        let mut stream = self.open_stream(stream_conn, server).await?;
        self.ctx.status.set_state(ConnectorState::Streaming);
        self.ctx.status.set_source_error(None);
        backoff.reset();
        info!(connector = %self.ctx.connector, file = %self.file, pos = self.pos, gtid = ?self.gtid_position().map(|g| g.to_string()), "streaming");

        // Schema history starts with the tables as they are where streaming starts.
        for (db, table) in tables {
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
                _ = batch::until(deadline), if deadline.is_some() => {
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

    fn advance(&mut self, header: &BinlogEventHeader) {
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
        // Before anything parses its optional metadata (the fingerprint does).
        schema::check_optional_metadata(&tme).map_err(|e| {
            MyError::Decode(format!(
                "table map of {}.{} at {}:{}: {e}",
                tme.database_name(),
                tme.table_name(),
                self.file,
                self.pos
            ))
        })?;
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

    fn source_meta(&self, header: &BinlogEventHeader, row: u32) -> SourceMeta {
        let end = header.log_pos() as u64;
        SourceMeta::Mysql {
            server_id: header.server_id(),
            gtid: self.txn.gtid_text.clone(),
            file: self.file.clone(),
            pos: end.saturating_sub(header.event_size() as u64),
            row,
            thread: self.txn.thread,
        }
    }

    fn on_rows(&mut self, rows: &RowsEventData<'_>, header: &BinlogEventHeader) -> Result<(), MyError> {
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
        let commit_us = self.txn.commit_us(header);
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
                    commit_us,
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
fn has_crc(header: &BinlogEventHeader, data: &[u8]) -> bool {
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
