//! `kind = "aggregate"`: keyed running aggregates maintained from creates, updates and deletes,
//! with retraction, emitted as change events of a derived table.
//!
//! The operator remembers each source row's contribution (its group and the values it fed in),
//! so an update retracts exactly what the row added before — whether or not the source sends a
//! `before` image (PostgreSQL does not, by default), and a partial row (unchanged TOASTed columns)
//! keeps its earlier values. A row moving between groups moves its contribution. A group is
//! created (`c`) when its first row arrives, updated (`u`) when it changes, deleted (`d`) when its
//! last row leaves. Derived events carry the version of the source event that caused them, so the
//! sinks fence them like any row.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::agg::{encode_key_into, row_key_into, table_prefix, AggSpec, Group, Output, Scalar};
use super::state::StateTable;
use crate::event::{ChangeEvent, Op, Row, TableRef, Value};
use crate::state::{StateDelta, StateError, StateStore};

#[derive(Debug, Clone)]
pub struct AggregateConfig {
    /// The derived table's name.
    pub name: String,
    pub group_by: Vec<String>,
    pub aggregates: Vec<AggSpec>,
    /// Whether the source events also continue down the chain.
    pub pass_through: bool,
    /// Entries kept in memory per state table (the rest are paged through the store).
    pub max_cached: usize,
    /// Updates carry the group's previous row as `before`, deletes its last row (like a
    /// PostgreSQL table with `REPLICA IDENTITY FULL`). Off (the default), updates carry no
    /// `before` and deletes the group columns only (like the default identity).
    pub before_images: bool,
}

/// What one source row feeds into its group: the group columns' values, then one value per
/// aggregate (one allocation for both).
#[derive(Debug, Clone, PartialEq)]
struct Contribution {
    cols: Box<[Option<Scalar>]>,
    /// Where the aggregates' values begin.
    split: usize,
}

impl Contribution {
    fn group(&self) -> &[Option<Scalar>] {
        &self.cols[..self.split]
    }

    fn values(&self) -> &[Option<Scalar>] {
        &self.cols[self.split..]
    }
}

/// How a contribution is stored.
#[derive(Serialize, Deserialize)]
struct StoredContribution<G, V> {
    group: G,
    values: V,
}

impl Serialize for Contribution {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredContribution { group: self.group(), values: self.values() }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Contribution {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let c = StoredContribution::<Vec<Option<Scalar>>, Vec<Option<Scalar>>>::deserialize(d)?;
        let split = c.group.len();
        Ok(Contribution { cols: c.group.into_iter().chain(c.values).collect(), split })
    }
}

/// A group's running aggregates, with the row last emitted for it when before images are on
/// (in memory only): the next change's `before`, without computing it again.
#[derive(Debug)]
struct GroupEntry {
    agg: Group,
    emitted: Option<Row>,
}

/// A copy of the aggregates, for a checkpoint (the emitted row is not stored).
impl Clone for GroupEntry {
    fn clone(&self) -> Self {
        GroupEntry { agg: self.agg.clone(), emitted: None }
    }
}

impl Serialize for GroupEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.agg.serialize(s)
    }
}

impl<'de> Deserialize<'de> for GroupEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(GroupEntry { agg: Group::deserialize(d)?, emitted: None })
    }
}

pub struct Aggregate {
    rows: StateTable<Contribution>,
    groups: Groups,
    /// Reused for each event's row key.
    key: Vec<u8>,
}

/// The groups and what a change to one emits.
struct Groups {
    cfg: AggregateConfig,
    names: Names,
    table: StateTable<GroupEntry>,
    /// The derived table of the latest event's database and schema.
    out_table: Option<Arc<TableRef>>,
    /// Reused for each group key.
    key: Vec<u8>,
    /// Reused for a group's outputs before a change, and after it.
    outputs: (Vec<Output>, Vec<Output>),
}

/// Output column names, shared by every derived row.
pub struct Names {
    pub group_by: Vec<Arc<str>>,
    pub aggregates: Vec<Arc<str>>,
}

impl Names {
    pub fn new(group_by: &[String], aggregates: &[AggSpec]) -> Names {
        Names {
            group_by: group_by.iter().map(|c| Arc::from(c.as_str())).collect(),
            aggregates: aggregates.iter().map(|a| Arc::from(a.name.as_str())).collect(),
        }
    }

    /// The group columns with their values, with room for `more` columns.
    pub fn key(&self, group: &[Option<Scalar>], more: usize) -> Vec<(Arc<str>, Value)> {
        let mut cols = Vec::with_capacity(self.group_by.len() + more);
        cols.extend(
            self.group_by.iter().zip(group).map(|(c, v)| (c.clone(), v.as_ref().map_or(Value::Null, Scalar::to_value))),
        );
        cols
    }
}

/// The contribution of a row image, filling columns a partial row lacks from `old`.
fn contribution(cfg: &AggregateConfig, row: &Row, old: Option<&Contribution>) -> Contribution {
    let earlier = |i: usize| old.and_then(|o| o.cols[i].clone());
    let group = cfg.group_by.iter().map(|c| row.get(c));
    let values = cfg.aggregates.iter().map(|a| a.column.as_deref().map(|c| row.get(c)));
    let cols = group
        .enumerate()
        .map(|(i, v)| match v {
            Some(v) => Scalar::of(v),
            None => earlier(i),
        })
        .chain(values.enumerate().map(|(i, v)| match v {
            None => None,
            Some(Some(v)) => Scalar::of(v),
            Some(None) => earlier(cfg.group_by.len() + i),
        }))
        .collect();
    Contribution { cols, split: cfg.group_by.len() }
}

impl Aggregate {
    pub fn new(cfg: AggregateConfig, store: Option<StateStore>, connector: Arc<str>, operator: &str) -> Self {
        let rows = StateTable::new(store.clone(), connector.clone(), format!("{operator}/rows"), cfg.max_cached);
        let table = StateTable::new(store, connector, format!("{operator}/groups"), cfg.max_cached);
        let names = Names::new(&cfg.group_by, &cfg.aggregates);
        Aggregate {
            rows,
            groups: Groups { cfg, names, table, out_table: None, key: Vec::new(), outputs: Default::default() },
            key: Vec::new(),
        }
    }

    pub fn process(&mut self, ev: &ChangeEvent, out: &mut Vec<ChangeEvent>) -> Result<(), StateError> {
        if ev.op == Op::Truncate {
            for rk in self.rows.keys_with_prefix(&table_prefix(&ev.table))? {
                let slot = self.rows.get_mut(&rk)?;
                self.groups.moved(slot.take(), None, ev, out)?;
            }
            return Ok(());
        }
        row_key_into(&ev.table, &ev.key, &mut self.key);
        // One lookup: the slot is marked changed even when the row turns out not to be (a
        // replayed event), which only rewrites the same value at the next checkpoint.
        let slot = self.rows.get_mut(&self.key)?;
        let new = match (ev.op, &ev.after) {
            (Op::Delete, _) | (_, None) => None,
            (_, Some(a)) => Some(contribution(&self.groups.cfg, a, slot.as_ref())),
        };
        if *slot == new {
            return Ok(());
        }
        let old = std::mem::replace(slot, new);
        self.groups.moved(old, slot.as_ref(), ev, out)
    }

    pub fn checkpoint(&mut self, out: &mut Vec<StateDelta>) {
        self.rows.checkpoint(out);
        self.groups.table.checkpoint(out);
    }

    pub fn stored(&mut self) {
        self.rows.stored();
        self.groups.table.stored();
    }
}

impl Groups {
    /// The derived table, in the database and schema of the event that caused the change.
    fn out_table(&mut self, cause: &TableRef) -> Arc<TableRef> {
        match &self.out_table {
            Some(t) if t.db == cause.db && t.schema == cause.schema => t.clone(),
            _ => {
                let t = Arc::new(TableRef {
                    db: cause.db.clone(),
                    schema: cause.schema.clone(),
                    name: self.cfg.name.as_str().into(),
                });
                self.out_table = Some(t.clone());
                t
            }
        }
    }

    /// Move one source row from its old contribution to its new one; emit each touched group's
    /// change once, from its state before to its state after.
    fn moved(
        &mut self,
        old: Option<Contribution>,
        new: Option<&Contribution>,
        cause: &ChangeEvent,
        out: &mut Vec<ChangeEvent>,
    ) -> Result<(), StateError> {
        match (&old, new) {
            (Some(o), Some(n)) if o.group() == n.group() => self.touch(o.group(), &[(o, -1), (n, 1)], cause, out),
            _ => {
                if let Some(o) = &old {
                    self.touch(o.group(), &[(o, -1)], cause, out)?;
                }
                match new {
                    Some(n) => self.touch(n.group(), &[(n, 1)], cause, out),
                    None => Ok(()),
                }
            }
        }
    }

    /// Add (`1`) or retract (`-1`) contributions to one group and emit its change, if any.
    fn touch(
        &mut self,
        group: &[Option<Scalar>],
        changes: &[(&Contribution, i64)],
        cause: &ChangeEvent,
        out: &mut Vec<ChangeEvent>,
    ) -> Result<(), StateError> {
        let (cfg, names) = (&self.cfg, &self.names);
        encode_key_into(group, &mut self.key);
        let slot = self.table.get_mut(&self.key)?;
        let existed = slot.is_some();
        let entry = slot.get_or_insert_with(|| GroupEntry { agg: Group::new(&cfg.aggregates), emitted: None });
        let (prior, now) = &mut self.outputs;
        let mut before = None;
        if cfg.before_images {
            // What was emitted last (computed again for a group read back from the store).
            before = match entry.emitted.take() {
                Some(row) => Some(row),
                None if existed => Some(output_row(cfg, names, group, &entry.agg)),
                None => None,
            };
        } else if existed {
            entry.agg.output_keys(&cfg.aggregates, prior);
        }
        for (c, sign) in changes {
            entry.agg.apply(&cfg.aggregates, c.values(), *sign);
        }
        let op = match (existed, entry.agg.rows > 0) {
            (false, true) => Op::Create,
            (true, false) => Op::Delete,
            (true, true) if cfg.before_images => Op::Update,
            (true, true) => {
                entry.agg.output_keys(&cfg.aggregates, now);
                if prior == now {
                    return Ok(());
                }
                Op::Update
            }
            (false, false) => {
                *slot = None;
                return Ok(());
            }
        };
        let after = if op == Op::Delete {
            *slot = None;
            None
        } else {
            let row = output_row(cfg, names, group, &entry.agg);
            if cfg.before_images {
                if before.as_ref() == Some(&row) {
                    entry.emitted = before;
                    return Ok(());
                }
                entry.emitted = Some(row.clone());
            }
            Some(row)
        };
        if op == Op::Delete && !cfg.before_images {
            // The deleted row's key, as a table with the default replica identity sends it.
            before = Some(Row(names.key(group, 0)));
        }
        out.push(ChangeEvent {
            op,
            table: self.out_table(&cause.table),
            key: Row(self.names.key(group, 0)),
            before,
            after,
            partial: false,
            version: cause.version,
            commit_us: cause.commit_us,
            snapshot: cause.snapshot,
            source: cause.source.clone(),
        });
        Ok(())
    }
}

/// A group's derived row: its group columns and aggregates.
fn output_row(cfg: &AggregateConfig, names: &Names, group: &[Option<Scalar>], g: &Group) -> Row {
    let mut cols = names.key(group, names.aggregates.len());
    g.output(&cfg.aggregates, &names.aggregates, &mut cols);
    Row(cols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{SnapshotFlag, SourceMeta, Version};

    fn cfg() -> AggregateConfig {
        AggregateConfig {
            name: "by_customer".into(),
            group_by: vec!["customer".into()],
            aggregates: vec![
                AggSpec::parse("n", "count(*)").unwrap(),
                AggSpec::parse("revenue", "sum(total)").unwrap(),
                AggSpec::parse("biggest", "max(total)").unwrap(),
                AggSpec::parse("smallest", "min(total)").unwrap(),
            ],
            pass_through: true,
            max_cached: 1000,
            before_images: false,
        }
    }

    fn ev(op: Op, id: i64, customer: &str, total: i64, v: u64) -> ChangeEvent {
        let row = Row(vec![
            (Arc::from("id"), Value::Int(id)),
            (Arc::from("customer"), Value::Text(customer.into())),
            (Arc::from("total"), Value::Int(total)),
        ]);
        ChangeEvent {
            op,
            table: Arc::new(TableRef { db: "d".into(), schema: "public".into(), name: "orders".into() }),
            key: Row(vec![(Arc::from("id"), Value::Int(id))]),
            before: None,
            after: (op != Op::Delete).then_some(row),
            partial: false,
            version: Version::new(v, 1),
            commit_us: 0,
            snapshot: SnapshotFlag::No,
            source: SourceMeta::Postgres { lsn: v, last_commit_lsn: None, tx_id: None },
        }
    }

    fn run(a: &mut Aggregate, e: ChangeEvent) -> Vec<(Op, String, Option<Row>)> {
        let mut out = Vec::new();
        a.process(&e, &mut out).unwrap();
        out.into_iter()
            .map(|d| {
                let k = match d.key.get("customer") {
                    Some(Value::Text(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                (d.op, k, d.after)
            })
            .collect()
    }

    fn get(r: &Option<Row>, col: &str) -> Value {
        r.as_ref().unwrap().get(col).cloned().unwrap()
    }

    #[test]
    fn groups_appear_change_move_and_empty() {
        let mut a = Aggregate::new(cfg(), None, "c".into(), "agg");
        let out = run(&mut a, ev(Op::Create, 1, "ann", 10, 1));
        assert_eq!(out[0].0, Op::Create);
        assert_eq!(get(&out[0].2, "revenue"), Value::Int(10));
        let out = run(&mut a, ev(Op::Create, 2, "ann", 30, 2));
        assert_eq!(
            (out[0].0, get(&out[0].2, "n"), get(&out[0].2, "biggest")),
            (Op::Update, Value::Int(2), Value::Int(30))
        );
        // Row 2 moves to bob: ann loses it (and its max), bob appears.
        let out = run(&mut a, ev(Op::Update, 2, "bob", 30, 3));
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].0, out[0].1.as_str()), (Op::Update, "ann"));
        assert_eq!((get(&out[0].2, "n"), get(&out[0].2, "biggest")), (Value::Int(1), Value::Int(10)));
        assert_eq!((out[1].0, out[1].1.as_str()), (Op::Create, "bob"));
        // Deleting ann's last row deletes the group.
        let out = run(&mut a, ev(Op::Delete, 1, "", 0, 4));
        assert_eq!((out[0].0, out[0].1.as_str(), out[0].2.is_none()), (Op::Delete, "ann", true));
        // A replayed, unchanged row changes nothing.
        assert!(run(&mut a, ev(Op::Update, 2, "bob", 30, 5)).is_empty());
    }

    #[test]
    fn before_images_are_full_rows_when_asked_and_keys_otherwise() {
        let full = AggregateConfig { before_images: true, ..cfg() };
        let mut a = Aggregate::new(full, None, "c".into(), "agg");
        let mut b = Aggregate::new(cfg(), None, "c".into(), "agg");
        let mut both = |e: ChangeEvent| {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            a.process(&e, &mut x).unwrap();
            b.process(&e, &mut y).unwrap();
            let strip = |d: &ChangeEvent| (d.op, d.key.clone(), d.after.clone(), d.version);
            assert_eq!(x.iter().map(strip).collect::<Vec<_>>(), y.iter().map(strip).collect::<Vec<_>>());
            (x, y)
        };
        both(ev(Op::Create, 1, "ann", 10, 1));
        let (full, bare) = both(ev(Op::Create, 2, "ann", 30, 2));
        assert_eq!(get(&full[0].before, "revenue"), Value::Int(10), "the row emitted before");
        assert_eq!(bare[0].before, None);
        both(ev(Op::Delete, 2, "", 0, 3));
        let (full, bare) = both(ev(Op::Delete, 1, "", 0, 4));
        assert_eq!(full[0].op, Op::Delete);
        assert_eq!(get(&full[0].before, "revenue"), Value::Int(10), "the group's last row");
        assert_eq!(bare[0].before, Some(bare[0].key.clone()), "the group columns, as a default replica identity");
    }

    #[test]
    fn a_change_that_leaves_every_output_equal_emits_nothing() {
        for before_images in [false, true] {
            let spec = |n, t| AggSpec::parse(n, t).unwrap();
            let only_extremes = AggregateConfig {
                aggregates: vec![spec("n", "count(*)"), spec("biggest", "max(total)")],
                before_images,
                ..cfg()
            };
            let mut a = Aggregate::new(only_extremes, None, "c".into(), "agg");
            run(&mut a, ev(Op::Create, 1, "ann", 10, 1));
            run(&mut a, ev(Op::Create, 2, "ann", 50, 2));
            // Row 1 changes, but neither the count nor the max does.
            assert!(run(&mut a, ev(Op::Update, 1, "ann", 20, 3)).is_empty(), "before_images = {before_images}");
            let out = run(&mut a, ev(Op::Update, 2, "ann", 5, 4));
            assert_eq!((out[0].0, get(&out[0].2, "biggest")), (Op::Update, Value::Int(20)));
        }
    }

    #[test]
    fn min_after_deleting_the_extreme_row() {
        let mut a = Aggregate::new(cfg(), None, "c".into(), "agg");
        for (id, t) in [(1, 5), (2, 1), (3, 9)] {
            run(&mut a, ev(Op::Create, id, "ann", t, id as u64));
        }
        let out = run(&mut a, ev(Op::Delete, 2, "", 0, 10));
        assert_eq!(get(&out[0].2, "smallest"), Value::Int(5));
        let out = run(&mut a, ev(Op::Update, 3, "ann", 4, 11));
        assert_eq!((get(&out[0].2, "smallest"), get(&out[0].2, "biggest")), (Value::Int(4), Value::Int(5)));
    }

    #[test]
    fn a_partial_row_keeps_its_earlier_values() {
        let mut a = Aggregate::new(cfg(), None, "c".into(), "agg");
        run(&mut a, ev(Op::Create, 1, "ann", 10, 1));
        let mut partial = ev(Op::Update, 1, "ann", 0, 2);
        partial.after =
            Some(Row(vec![(Arc::from("id"), Value::Int(1)), (Arc::from("customer"), Value::Text("ann".into()))]));
        partial.partial = true;
        assert!(run(&mut a, partial).is_empty(), "the total did not change");
    }

    #[test]
    fn truncate_retracts_every_row_of_the_table() {
        let mut a = Aggregate::new(cfg(), None, "c".into(), "agg");
        run(&mut a, ev(Op::Create, 1, "ann", 10, 1));
        run(&mut a, ev(Op::Create, 2, "bob", 10, 2));
        let mut t = ev(Op::Truncate, 0, "", 0, 3);
        t.key = Row::default();
        t.after = None;
        let out = run(&mut a, t);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|(op, _, after)| *op == Op::Delete && after.is_none()));
    }
}
