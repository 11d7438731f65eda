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
use crate::event::{ChangeEvent, Op, Row, SnapshotFlag, SourceMeta, Value, Version};
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
        let mut held: Option<ChangeEvent> = None; // one event of lookahead, to flag the last row
        let remaining: Vec<&(TableInfo, RelInfo)> =
            tables.iter().filter(|(t, _)| !progress.done.contains(&t.qualified())).collect();
        for (table, rel) in remaining {
            let resume_after = match &progress.table {
                Some(t) if *t == table.qualified() => progress.after.clone(),
                _ => None,
            };
            progress.table = Some(table.qualified());
            progress.after = resume_after;
            let rows_counter = self
                .metrics
                .snapshot_rows
                .get_or_create(&vec![
                    (metrics::CONNECTOR, self.connector.to_string()),
                    (metrics::TABLE, table.qualified()),
                ])
                .clone();
            self.client.batch_execute(&cursor_query(table, rel, progress.after.as_deref())).await?;
            let fetch = format!("FETCH FORWARD {} FROM tidemark_snapshot", self.chunk_rows);
            loop {
                let mut n = 0usize;
                let mut last_key: Option<Vec<Option<String>>> = None;
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
                    if rel.by_primary_key {
                        last_key = Some(rel.key.iter().map(|&k| r.get(k).map(str::to_string)).collect());
                    }
                    let after = Row(fields);
                    let ev = ChangeEvent {
                        op: Op::Read,
                        table: rel.table.clone(),
                        key: rel.key_of(&after),
                        before: None,
                        after: Some(after),
                        partial: false,
                        version: Version::new(self.consistent_lsn, 0),
                        commit_ts_ms: started_ms,
                        snapshot: SnapshotFlag::Yes,
                        source: SourceMeta::Postgres { lsn: self.consistent_lsn, tx_id: None },
                    };
                    if let Some(prev) = held.replace(ev) {
                        batcher.push(prev);
                    }
                }
                rows_counter.inc_by(n as u64);
                rel.count(Op::Read, n as u64);
                if n < self.chunk_rows {
                    break;
                }
                // A table keyed without a primary key has no order to resume in: after a crash
                // it is read again from its start (harmless, writes are fenced).
                progress.after = last_key;
                let pos =
                    Position::Postgres(PgPosition { lsn: Lsn(self.consistent_lsn), snapshot: Some(progress.clone()) });
                // The held event belongs to this chunk: release it so the checkpoint covers it.
                if let Some(prev) = held.take() {
                    batcher.push(prev);
                }
                batcher.mark(pos, Some(started_ms), None, false);
                batcher.flush().await?;
            }
            self.client.batch_execute("CLOSE tidemark_snapshot").await?;
            progress.done.push(table.qualified());
            progress.table = None;
            progress.after = None;
        }
        self.client.batch_execute("COMMIT").await?;
        if let Some(mut last) = held.take() {
            last.snapshot = SnapshotFlag::Last;
            batcher.push(last);
        }
        let done = Position::Postgres(PgPosition { lsn: Lsn(self.consistent_lsn), snapshot: None });
        batcher.mark(done, Some(started_ms), Some(self.consistent_lsn), false);
        batcher.flush().await?;
        Ok(())
    }
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
