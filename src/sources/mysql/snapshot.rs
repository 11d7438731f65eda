//! The initial snapshot of MySQL/MariaDB tables: one consistent transaction, every table read in
//! primary-key chunks, as `op = "r"` events.
//!
//! Consistency with the binlog: MariaDB's `START TRANSACTION WITH CONSISTENT SNAPSHOT` reports
//! the binlog coordinates of its snapshot (`binlog_snapshot_file`/`_position`) without any lock;
//! MySQL takes the usual short global read lock to read them. Streaming then starts at those
//! coordinates, and every snapshot row carries the version `(snapshot coordinate, 0)`, older than
//! any streamed change.
//!
//! Resumption: after each chunk the pipeline checkpoints the last key read (as escaped SQL
//! literals). After a crash reading resumes after it in a *new* transaction; the stream then
//! replays every change since the original coordinates with newer versions, so the caches
//! converge to the tables exactly.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::schema::{from_info, TableSchema};
use super::server::{connect, current_position, ident, info_columns};
use super::{query_row, snapshot_position, MyError, MysqlConfig};
use crate::connector::position::{coordinate, GtidPosition, GtidState, MyPosition};
use crate::connector::{Batcher, Position, SnapshotProgress};
use crate::event::time::now_ms;
use crate::event::{ChangeEvent, Op, SnapshotFlag, SnapshotMarks, SourceMeta, Version};
use crate::metrics::{self, Metrics};

pub struct SnapshotRun<'a> {
    pub cfg: &'a MysqlConfig,
    pub connector: &'a str,
    pub metrics: &'a Metrics,
    pub mariadb: bool,
    /// The server's identity, recorded in every position.
    pub server: &'a str,
}

impl SnapshotRun<'_> {
    /// Start a consistent snapshot, record its binlog coordinates, and read every table. Returns
    /// the coordinates streaming continues from.
    pub async fn begin_and_read(
        &self,
        tables: &[(String, String)],
        _resume: Option<()>,
        batcher: &mut Batcher,
    ) -> Result<MyPosition, MyError> {
        let mut conn = connect(self.cfg).await?;
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
        let at = if self.mariadb {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").await?;
            let rows: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
            let get = |name: &str| rows.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
            let file = get("binlog_snapshot_file").filter(|f| !f.is_empty()).ok_or_else(|| {
                MyError::Operator("the server reports no binlog_snapshot_file: is log_bin on?".into())
            })?;
            let pos: u64 = get("binlog_snapshot_position").and_then(|p| p.parse().ok()).unwrap_or(4);
            let gtid: Option<String> = conn.exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.as_str(), pos)).await?;
            let gtid = gtid.and_then(|g| GtidState::parse(&g)).filter(|s| !s.is_empty()).map(GtidPosition::MariaDb);
            MyPosition { file, pos, gtid, server: None, snapshot: None }
        } else {
            conn.query_drop("FLUSH TABLES WITH READ LOCK").await.map_err(|e| match e {
                mysql_async::Error::Server(s) if s.code == 1227 => MyError::Operator(format!(
                    "{}: {}",
                    s.message,
                    super::check::NO_RELOAD.replace("{user}", "the connector's user")
                )),
                e => MyError::Query(e),
            })?;
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").await?;
            let at = current_position(&mut conn, false, true).await;
            conn.query_drop("UNLOCK TABLES").await?;
            at?
        };
        let at = MyPosition { server: Some(self.server.to_string()), ..at };
        tracing::info!(connector = %self.connector, file = %at.file, pos = at.pos, gtid = ?at.gtid, "snapshot started");
        // Checkpoint the coordinates first: a crash before the first chunk resumes here.
        batcher.mark(snapshot_position(&at, SnapshotProgress::default()), Some(now_ms()), None, false);
        batcher.flush().await?;
        self.read(&mut conn, tables, &at, SnapshotProgress::default(), batcher).await?;
        conn.query_drop("COMMIT").await?;
        Ok(at)
    }

    /// Continue an interrupted snapshot (in a new transaction) from its stored progress.
    pub async fn resume(
        &self,
        tables: &[(String, String)],
        at: &MyPosition,
        batcher: &mut Batcher,
    ) -> Result<(), MyError> {
        let mut conn = connect(self.cfg).await?;
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").await?;
        let progress = at.snapshot.clone().unwrap_or_default();
        tracing::info!(connector = %self.connector, done = progress.done.len(), "snapshot resumed");
        let at = MyPosition { snapshot: None, ..at.clone() };
        self.read(&mut conn, tables, &at, progress, batcher).await?;
        conn.query_drop("COMMIT").await?;
        Ok(())
    }

    async fn read(
        &self,
        conn: &mut Conn,
        tables: &[(String, String)],
        at: &MyPosition,
        mut progress: SnapshotProgress,
        batcher: &mut Batcher,
    ) -> Result<(), MyError> {
        let started_ms = now_ms();
        let version = Version::new(coordinate(&at.file, at.pos), 0);
        let file: std::sync::Arc<str> = at.file.as_str().into();
        let chunk = self.cfg.snapshot_chunk_rows.get();
        // One row of lookahead, for Debezium's first/last markers. A checkpoint covers only the
        // rows handed over, so it names the key of the last of those, not of the held row.
        let mut marks = SnapshotMarks::default();
        for (db, table) in tables {
            let qualified = format!("{db}.{table}");
            if progress.done.contains(&qualified) {
                continue;
            }
            let info = info_columns(conn, db, table).await?;
            let schema = from_info(db, table, &info, self.connector, self.metrics);
            let rows_counter = self
                .metrics
                .snapshot_rows
                .get_or_create(&vec![
                    (metrics::CONNECTOR, self.connector.to_string()),
                    (metrics::TABLE, qualified.clone()),
                ])
                .clone();
            let mut after = match &progress.table {
                Some(t) if *t == qualified => progress.after.clone(),
                _ => None,
            };
            progress.table = Some(qualified.clone());
            let mut released_key = after.clone();
            let mut held_key: Option<Vec<Option<String>>> = None;
            loop {
                let sql = chunk_query(db, table, &schema, after.as_deref(), chunk);
                // Streamed, not collected: a table without a key is read in one pass, and its rows
                // go out in full batches as they come (memory stays bounded).
                let mut result = conn.exec_iter(sql, ()).await?;
                let mut n = 0usize;
                let mut last_key = None;
                while let Some(row) = result.next().await? {
                    n += 1;
                    let key: Option<Vec<Option<String>>> = schema
                        .by_primary_key
                        .then(|| schema.key.iter().map(|&k| row.as_ref(k).map(|v| v.as_sql(false))).collect());
                    last_key.clone_from(&key);
                    let values = query_row(&schema, row);
                    let ev = ChangeEvent {
                        op: Op::Read,
                        table: schema.table.clone(),
                        key: schema.key_of(&values).unwrap_or_default(),
                        before: None,
                        after: Some(values),
                        partial: false,
                        version,
                        commit_us: started_ms * 1000,
                        snapshot: SnapshotFlag::Yes,
                        // As Debezium: snapshot rows name the snapshot's binlog coordinates, no
                        // server, GTID or thread.
                        source: SourceMeta::Mysql {
                            server_id: 0,
                            gtid: None,
                            file: file.clone(),
                            pos: at.pos,
                            row: 0,
                            thread: None,
                        },
                    };
                    if let Some(prev) = marks.push(ev) {
                        batcher.push(prev);
                        if let Some(k) = std::mem::replace(&mut held_key, key) {
                            released_key = Some(k);
                        }
                        if batcher.is_full() {
                            batcher.flush().await?;
                        }
                    } else {
                        held_key = key;
                    }
                }
                drop(result);
                rows_counter.inc_by(n as u64);
                schema.counters.get(Op::Read).inc_by(n as u64);
                if !schema.by_primary_key || n < chunk {
                    break;
                }
                after = last_key;
                progress.after = released_key.clone();
                batcher.mark(snapshot_position(at, progress.clone()), Some(started_ms), None, false);
                batcher.flush().await?;
            }
            marks.end_table();
            progress.done.push(qualified);
            progress.table = None;
            progress.after = None;
        }
        if let Some(last) = marks.finish() {
            batcher.push(last);
        }
        let done = Position::Mysql(MyPosition { snapshot: None, ..at.clone() });
        batcher.mark(done, Some(started_ms), Some(coordinate(&at.file, at.pos)), false);
        batcher.flush().await?;
        Ok(())
    }
}

/// `SELECT <columns> FROM t [WHERE (k...) > (last...)] ORDER BY k... LIMIT n` (a table without a
/// primary key is read in one pass).
fn chunk_query(db: &str, table: &str, schema: &TableSchema, after: Option<&[Option<String>]>, limit: usize) -> String {
    let cols: Vec<String> = schema.columns.iter().map(|c| ident(&c.name)).collect();
    let mut sql = format!("SELECT {} FROM {}.{}", cols.join(", "), ident(db), ident(table));
    if schema.by_primary_key {
        let keys: Vec<String> = schema.key.iter().map(|&k| ident(&schema.columns[k].name)).collect();
        if let Some(after) = after {
            let vals: Vec<String> = after.iter().map(|v| v.clone().unwrap_or_else(|| "NULL".into())).collect();
            sql.push_str(&format!(" WHERE ({}) > ({})", keys.join(", "), vals.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", keys.join(", ")));
    }
    sql
}
