//! The initial snapshot: every captured table read in primary-key chunks inside one
//! `REPEATABLE READ` transaction, as `op = "r"` events.
//!
//! Consistency with the stream: on first start the slot is created with an exported snapshot and
//! the transaction imports it, so the rows read are exactly the state at the slot's consistent
//! point, and streaming continues from that point. Every snapshot row carries the version
//! `(consistent point, 0)`, older than any streamed change.
//!
//! Resumption: after each chunk the pipeline checkpoints `(tables done, current table, last key)`.
//! After a crash the exported snapshot is gone, so reading resumes after the last key in a *new*
//! transaction. Those rows may be newer than the consistent point, but they still carry the old
//! version, and streaming replays every change since the consistent point with newer versions, so
//! the caches converge to the table exactly.

use tokio_postgres::{Client, SimpleQueryMessage};

use super::catalog::{ident, literal, TableInfo};
use super::types::decode_text;
use super::{PgError, PgPosition, RelInfo};
use crate::connector::position::Lsn;
use crate::connector::{Batcher, Position, SnapshotProgress};
use crate::event::time::now_ms;
use crate::event::{ChangeEvent, Op, Row, SnapshotFlag, SnapshotMarks, SourceMeta, Value, Version};
use crate::metrics;

pub struct SnapshotRun<'a> {
    pub client: &'a Client,
    pub connector: &'a str,
    pub consistent_lsn: u64,
    pub chunk_rows: usize,
    pub metrics: &'a metrics::Metrics,
}

impl SnapshotRun<'_> {
    /// Read `tables` (sorted by name) starting from `progress`, pushing events into `batcher` and
    /// marking a checkpoint after every chunk. `exported` is the slot's exported snapshot, if the
    /// slot was created just now.
    pub async fn run(
        &self,
        tables: &[(TableInfo, RelInfo)],
        mut progress: SnapshotProgress,
        exported: Option<&str>,
        batcher: &mut Batcher,
    ) -> Result<(), PgError> {
        self.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        if let Some(name) = exported {
            self.client.batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", literal(name))).await?;
        }
        let started_ms = now_ms();
        // The snapshot transaction's id, as Debezium reports it in every snapshot row.
        let tx_id = snapshot_txid(self.client).await?;
        // One row of lookahead, for Debezium's first/last markers. A checkpoint covers only the
        // rows handed over, so it names the key of the last of those, not of the held row.
        let mut marks = SnapshotMarks::default();
        let remaining: Vec<&(TableInfo, RelInfo)> =
            tables.iter().filter(|(t, _)| !progress.done.contains(&t.qualified())).collect();
        for (table, rel) in remaining {
            let resume_after = match &progress.table {
                Some(t) if *t == table.qualified() => progress.after.clone(),
                _ => None,
            };
            progress.table = Some(table.qualified());
            let mut released_key = resume_after.clone();
            let mut held_key: Option<Vec<Option<String>>> = None;
            let rows_counter = self
                .metrics
                .snapshot_rows
                .get_or_create(&vec![
                    (metrics::CONNECTOR, self.connector.to_string()),
                    (metrics::TABLE, table.qualified()),
                ])
                .clone();
            self.client.batch_execute(&cursor_query(table, rel, resume_after.as_deref())).await?;
            let fetch = format!("FETCH FORWARD {} FROM tidemark_snapshot", self.chunk_rows);
            loop {
                let mut n = 0usize;
                for msg in self.client.simple_query(&fetch).await? {
                    let SimpleQueryMessage::Row(r) = msg else { continue };
                    n += 1;
                    let mut fields = Vec::with_capacity(rel.columns.len());
                    for (i, col) in rel.columns.iter().enumerate() {
                        let v = match r.get(i) {
                            None => Value::Null,
                            Some(text) => {
                                let (v, fallback) = decode_text(&col.ty, col.typmod, text);
                                if fallback {
                                    col.fallbacks.inc();
                                }
                                v
                            }
                        };
                        fields.push((col.name.clone(), v));
                    }
                    let key: Option<Vec<Option<String>>> =
                        rel.by_primary_key.then(|| rel.key.iter().map(|&k| r.get(k).map(str::to_string)).collect());
                    let after = Row(fields);
                    let ev = ChangeEvent {
                        op: Op::Read,
                        table: rel.table.clone(),
                        key: rel.key_of(&after),
                        before: None,
                        after: Some(after),
                        partial: false,
                        version: Version::new(self.consistent_lsn, 0),
                        commit_us: started_ms * 1000,
                        snapshot: SnapshotFlag::Yes,
                        source: SourceMeta::Postgres { lsn: self.consistent_lsn, last_commit_lsn: None, tx_id },
                    };
                    if let Some(prev) = marks.push(ev) {
                        batcher.push(prev);
                        if let Some(k) = std::mem::replace(&mut held_key, key.clone()) {
                            released_key = Some(k);
                        }
                    } else {
                        held_key = key;
                    }
                }
                rows_counter.inc_by(n as u64);
                rel.count(Op::Read, n as u64);
                if n < self.chunk_rows {
                    break;
                }
                // A table keyed without a primary key has no order to resume in: after a crash
                // it is read again from its start (harmless, writes are fenced).
                progress.after = released_key.clone();
                let pos =
                    Position::Postgres(PgPosition { lsn: Lsn(self.consistent_lsn), snapshot: Some(progress.clone()) });
                batcher.mark(pos, Some(started_ms), None, false);
                batcher.flush().await?;
            }
            marks.end_table();
            self.client.batch_execute("CLOSE tidemark_snapshot").await?;
            progress.done.push(table.qualified());
            progress.table = None;
            progress.after = None;
        }
        self.client.batch_execute("COMMIT").await?;
        if let Some(last) = marks.finish() {
            batcher.push(last);
        }
        let done = Position::Postgres(PgPosition { lsn: Lsn(self.consistent_lsn), snapshot: None });
        batcher.mark(done, Some(started_ms), Some(self.consistent_lsn), false);
        batcher.flush().await?;
        Ok(())
    }
}

/// The id of the snapshot's transaction (Debezium's query: `txid_current()`, or on a standby,
/// where none can be assigned, the snapshot's xmin).
async fn snapshot_txid(client: &Client) -> Result<Option<u64>, PgError> {
    let sql = "SELECT (CASE WHEN pg_is_in_recovery() THEN txid_snapshot_xmin(txid_current_snapshot()) \
               ELSE txid_current() END)::text";
    let rows = client.simple_query(sql).await?;
    Ok(rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).and_then(|t| t.parse().ok()),
        _ => None,
    }))
}

/// A cursor over `t` in primary-key order, after the last key read (when resuming).
fn cursor_query(table: &TableInfo, rel: &RelInfo, after: Option<&[Option<String>]>) -> String {
    let cols: Vec<String> = rel.columns.iter().map(|c| ident(&c.name)).collect();
    let mut sql =
        format!("DECLARE tidemark_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {}", cols.join(", "), table.quoted());
    if rel.by_primary_key {
        let keys: Vec<String> = rel.key.iter().map(|&k| ident(&rel.columns[k].name)).collect();
        if let Some(after) = after {
            let vals: Vec<String> = after.iter().map(|v| v.as_deref().map_or("NULL".to_string(), literal)).collect();
            sql.push_str(&format!(" WHERE ({}) > ({})", keys.join(", "), vals.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY {}", keys.join(", ")));
    }
    sql
}
