//! `kind = "dedup"`: drop an event whose id was already seen within `ttl`.
//!
//! The default id is the change itself — table, key and source version (commit position and
//! index) — so a replay of the same change (e.g. after `tidemark offsets set` rewinds a MySQL
//! connector, or a source that redelivers) is dropped, while a genuine second change to the same
//! row is not. With `columns`, the id is the table and those columns' values (e.g. an idempotency
//! key written by the application).
//!
//! Ids expire `ttl` after they were seen, in event (commit) time, and the oldest go first beyond
//! `max_entries`: memory and disk stay bounded. The seen ids are written to the state store in the
//! same transaction as the position they belong to, so a replay after `kill -9` is still
//! recognised — and a change applied after the last checkpoint is not mistaken for one.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::agg::Scalar;
use super::agg::{encode_key, row_key, table_prefix};
use super::state::StateTable;
use crate::event::{ChangeEvent, Op};
use crate::state::{StateDelta, StateError, StateStore};

#[derive(Debug, Clone)]
pub struct DedupConfig {
    /// `None`: the change itself (table, key, version).
    pub columns: Option<Vec<String>>,
    /// Milliseconds.
    pub ttl: i64,
    pub max_entries: usize,
}

pub struct Dedup {
    cfg: DedupConfig,
    seen: StateTable<i64>,
    /// Every id held, by when it was seen: the expiry order.
    by_time: BTreeSet<(i64, Vec<u8>)>,
    /// Latest event time seen.
    now: i64,
    pub dropped: u64,
}

impl Dedup {
    pub fn new(
        cfg: DedupConfig,
        store: Option<StateStore>,
        connector: Arc<str>,
        operator: &str,
    ) -> Result<Dedup, StateError> {
        let mut seen: StateTable<i64> = StateTable::new(store, connector, operator.to_string(), cfg.max_entries);
        let mut by_time = BTreeSet::new();
        let mut now = i64::MIN;
        for k in seen.keys_with_prefix(b"")? {
            if let Some(at) = seen.get(&k)?.copied() {
                now = now.max(at);
                by_time.insert((at, k));
            }
        }
        Ok(Dedup { cfg, seen, by_time, now, dropped: 0 })
    }

    fn id(&self, ev: &ChangeEvent) -> Option<Vec<u8>> {
        match &self.cfg.columns {
            None => {
                let mut id = row_key(&ev.table, &ev.key);
                id.extend(ev.version.hi.to_be_bytes());
                id.extend(ev.version.lo.to_be_bytes());
                Some(id)
            }
            Some(cols) => {
                let row = ev.after.as_ref().or(ev.before.as_ref())?;
                let values: Vec<Option<Scalar>> = cols.iter().map(|c| row.get(c).and_then(Scalar::of)).collect();
                if values.iter().all(Option::is_none) {
                    return None;
                }
                let mut id = table_prefix(&ev.table);
                id.extend(encode_key(&values));
                Some(id)
            }
        }
    }

    /// Whether to keep the event (its id was not seen within `ttl`); remembers it.
    pub fn keep(&mut self, ev: &ChangeEvent) -> Result<bool, StateError> {
        if ev.op == Op::Truncate {
            return Ok(true);
        }
        let Some(id) = self.id(ev) else { return Ok(true) };
        self.now = self.now.max(ev.commit_ts_ms());
        self.expire()?;
        if let Some(at) = self.seen.get(&id)?.copied() {
            if self.now - at < self.cfg.ttl {
                self.dropped += 1;
                return Ok(false);
            }
            self.by_time.remove(&(at, id.clone()));
        }
        *self.seen.get_mut(&id)? = Some(ev.commit_ts_ms());
        self.by_time.insert((ev.commit_ts_ms(), id));
        if self.by_time.len() > self.cfg.max_entries {
            if let Some((_, oldest)) = self.by_time.pop_first() {
                *self.seen.get_mut(&oldest)? = None;
            }
        }
        Ok(true)
    }

    fn expire(&mut self) -> Result<(), StateError> {
        while let Some((at, _)) = self.by_time.first() {
            if self.now - *at < self.cfg.ttl {
                break;
            }
            let (_, id) = self.by_time.pop_first().expect("checked above");
            *self.seen.get_mut(&id)? = None;
        }
        Ok(())
    }

    pub fn checkpoint(&mut self, out: &mut Vec<StateDelta>) {
        self.seen.checkpoint(out);
    }

    pub fn stored(&mut self) {
        self.seen.stored();
    }

    pub fn held(&self) -> usize {
        self.by_time.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Row, SnapshotFlag, SourceMeta, TableRef, Value, Version};

    fn ev(id: i64, v: u64, t: i64, token: &str) -> ChangeEvent {
        ChangeEvent {
            op: Op::Update,
            table: Arc::new(TableRef { db: "d".into(), schema: "public".into(), name: "orders".into() }),
            key: Row(vec![(Arc::from("id"), Value::Int(id))]),
            before: None,
            after: Some(Row(vec![(Arc::from("id"), Value::Int(id)), (Arc::from("token"), Value::Text(token.into()))])),
            partial: false,
            version: Version::new(v, 1),
            commit_us: t * 1000,
            snapshot: SnapshotFlag::No,
            source: SourceMeta::Postgres { lsn: v, last_commit_lsn: None, tx_id: None },
        }
    }

    fn dedup(columns: Option<Vec<String>>, ttl: i64, max: usize) -> Dedup {
        Dedup::new(DedupConfig { columns, ttl, max_entries: max }, None, "c".into(), "dedup").unwrap()
    }

    #[test]
    fn a_replayed_change_is_dropped_a_new_change_to_the_row_is_not() {
        let mut d = dedup(None, 60_000, 1000);
        assert!(d.keep(&ev(1, 10, 0, "a")).unwrap());
        assert!(!d.keep(&ev(1, 10, 0, "a")).unwrap(), "the same change again");
        assert!(d.keep(&ev(1, 11, 5, "a")).unwrap(), "a second change to the row");
        assert_eq!(d.dropped, 1);
    }

    #[test]
    fn ids_expire_after_the_ttl_and_beyond_max_entries() {
        let mut d = dedup(Some(vec!["token".into()]), 1_000, 3);
        assert!(d.keep(&ev(1, 1, 0, "t1")).unwrap());
        assert!(!d.keep(&ev(2, 2, 999, "t1")).unwrap(), "same token within the ttl");
        assert!(d.keep(&ev(3, 3, 1_000, "t1")).unwrap(), "the ttl has passed");
        for (i, t) in ["t2", "t3", "t4"].into_iter().enumerate() {
            assert!(d.keep(&ev(10 + i as i64, 10 + i as u64, 1_001, t)).unwrap());
        }
        assert_eq!(d.held(), 3, "bounded by max_entries");
        assert!(d.keep(&ev(20, 20, 1_002, "t1")).unwrap(), "the oldest id was evicted");
    }
}
