//! Binlog events: what each one does to the session, and the query events (transaction
//! control, DDL, TRUNCATE) among them.

use std::sync::Arc;

use mysql_async::binlog::events::{BinlogEventHeader, Event, EventData};

use super::super::binlog::{self, mariadb_gtid, mysql_source};
use super::super::server::info_columns;
use super::super::MyError;
use super::{has_crc, Session, Txn};
use crate::connector::position::coordinate;
use crate::connector::table_included;
use crate::event::{ChangeEvent, Op, Row, SnapshotFlag, SourceMeta, TableRef, Version};

impl Session<'_> {
    /// One binlog event: the events `mysql_common` does not decode first (by type code), then
    /// the decoded ones.
    pub(super) async fn handle(&mut self, ev: Event, first_rotate: &mut bool) -> Result<(), MyError> {
        let header = ev.header();
        if self.on_undecoded(&ev, &header).await? {
            return Ok(());
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
                let committed = g.original_commit_timestamp();
                self.txn = Txn {
                    gtid: None,
                    mysql_gtid: Some((source, g.gno())),
                    gtid_text: Some(text.into()),
                    commit_us: (committed > 0).then_some(committed as i64),
                    thread: None,
                    standalone: true,
                    open: true,
                };
                self.advance(&header);
            }
            EventData::QueryEvent(q) => self.on_query(&q.schema(), &q.query(), q.thread_id(), &header).await?,
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

    /// The events `mysql_common` does not decode (MariaDB's GTIDs, heartbeats v2, compressed
    /// events): whether this was one of them.
    async fn on_undecoded(&mut self, ev: &Event, header: &BinlogEventHeader) -> Result<bool, MyError> {
        match header.event_type_raw() {
            binlog::MARIADB_GTID => {
                let (g, flags) = mariadb_gtid(ev.data(), header.server_id())
                    .ok_or_else(|| MyError::Decode("short MariaDB GTID event".into()))?;
                self.txn = Txn {
                    gtid: Some(g),
                    mysql_gtid: None,
                    gtid_text: Some(g.to_string().into()),
                    // MariaDB's GTID events carry seconds only, and replace the `BEGIN`.
                    commit_us: None,
                    thread: None,
                    standalone: flags & binlog::GTID_FLAG_STANDALONE != 0,
                    open: true,
                };
                self.advance(header);
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
            binlog::MYSQL_HEARTBEAT_V2 => self.heartbeat(header.log_pos() as u64).await?,
            binlog::MARIADB_GTID_LIST | binlog::MARIADB_BINLOG_CHECKPOINT => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A query event: transaction control (BEGIN, COMMIT, ROLLBACK, XA), or a statement (DDL).
    async fn on_query(
        &mut self,
        schema: &str,
        sql: &str,
        thread: u32,
        header: &BinlogEventHeader,
    ) -> Result<(), MyError> {
        let trimmed = sql.trim();
        let upper = trimmed.get(..trimmed.len().min(32)).unwrap_or("").to_ascii_uppercase();
        let starts_txn = upper == "BEGIN"
            || upper.starts_with("XA START")
            || trimmed.to_ascii_uppercase().ends_with("START TRANSACTION");
        if starts_txn {
            self.txn.open = true;
            self.txn.standalone = false;
            self.txn.thread = Some(thread);
            if upper == "BEGIN" || upper.starts_with("XA START") {
                self.advance(header);
                return Ok(());
            }
        } else if upper == "COMMIT" {
            return self.commit(header).await;
        } else if upper == "ROLLBACK" {
            // Written when a rolled-back transaction touched a non-transactional table: its
            // transactional rows never happened.
            return self.rollback(header).await;
        } else if upper.starts_with("XA END") {
            self.advance(header);
            return Ok(());
        }
        self.on_ddl(schema, trimmed, header).await?;
        self.advance(header);
        if self.txn.standalone || !self.txn.open {
            self.commit(header).await?;
        }
        Ok(())
    }

    pub(super) async fn on_ddl(&mut self, schema: &str, sql: &str, header: &BinlogEventHeader) -> Result<(), MyError> {
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
                    commit_us: self.txn.commit_us(header),
                    snapshot: SnapshotFlag::No,
                    source: statement_meta(self.source_meta(header, 0)),
                };
                self.pending.push(ev);
            }
        }
        Ok(())
    }
}

/// A statement's source block: a statement, not rows, so Debezium names no thread for it.
fn statement_meta(meta: SourceMeta) -> SourceMeta {
    match meta {
        SourceMeta::Mysql { server_id, gtid, file, pos, row, .. } => {
            SourceMeta::Mysql { server_id, gtid, file, pos, row, thread: None }
        }
        other => other,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn truncate_targets() {
        assert_eq!(truncate_target("TRUNCATE TABLE `shop`.`orders`", "x"), Some(("shop".into(), "orders".into())));
        assert_eq!(truncate_target("truncate tablets", "shop"), Some(("shop".into(), "tablets".into())));
        assert_eq!(truncate_target("TRUNCATE orders;", "shop"), Some(("shop".into(), "orders".into())));
        assert_eq!(truncate_target("ALTER TABLE t TRUNCATE PARTITION p0", "shop"), None);
    }

    #[test]
    pub(super) fn table_names() {
        assert_eq!(split_table_name("`shop`.`orders`", "x"), ("shop".into(), "orders".into()));
        assert_eq!(split_table_name("orders;", "shop"), ("shop".into(), "orders".into()));
        assert_eq!(split_table_name("a.b", "shop"), ("a".into(), "b".into()));
    }
}
