//! Transaction boundaries: a transaction's events are held until it commits (a ROLLBACK of a
//! transaction that touched a non-transactional table discards the rest), then handed over with
//! the position after it.

use mysql_async::binlog::events::BinlogEventHeader;
use mysql_async::prelude::Queryable;

use super::super::{MyError, SPILL_BATCHES};
use super::{Session, Txn};
use crate::connector::position::coordinate;
use crate::connector::snapshot_again;
use crate::event::time::now_ms;

impl Session<'_> {
    /// Hand the open transaction's events to the batcher.
    pub(super) async fn release(&mut self) -> Result<(), MyError> {
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
    pub(super) async fn spill_if_large(&mut self) -> Result<(), MyError> {
        if self.pending_bytes > SPILL_BATCHES * self.ctx.batcher.max_bytes() {
            self.spilled = true;
            self.release().await?;
        }
        Ok(())
    }

    pub(super) async fn rollback(&mut self, header: &BinlogEventHeader) -> Result<(), MyError> {
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

    pub(super) async fn is_transactional(&mut self, db: &str, table: &str) -> Result<bool, MyError> {
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

    pub(super) async fn commit(&mut self, header: &BinlogEventHeader) -> Result<(), MyError> {
        self.release().await?;
        self.spilled = false;
        self.advance(header);
        if let Some(g) = self.txn.gtid {
            self.gtid.apply(g);
        }
        if let Some((source, gno)) = &self.txn.mysql_gtid {
            self.gtid_set.add(source, *gno);
        }
        let commit_ms = self.txn.commit_us(header).div_euclid(1000);
        self.txn = Txn::default();
        let pos = self.position();
        self.ctx.batcher.mark(pos, Some(commit_ms), Some(coordinate(&self.file, self.pos)), false);
        self.ctx.batcher.after_boundary().await?;
        Ok(())
    }

    /// The server was idle: everything before this point has been sent.
    pub(super) async fn heartbeat(&mut self, log_pos: u64) -> Result<(), MyError> {
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
}
