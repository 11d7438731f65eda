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

use super::agg::{AggSpec, Group, Scalar};
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
}

/// What one source row feeds into its group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Contribution {
    group: Vec<Option<Scalar>>,
    values: Vec<Option<Scalar>>,
}

pub struct Aggregate {
    cfg: AggregateConfig,
    rows: StateTable<Contribution>,
    groups: StateTable<Group>,
}

/// A stable byte key for a list of values.
pub fn encode_key(parts: &[Option<Scalar>]) -> Vec<u8> {
    serde_json::to_vec(parts).expect("scalars serialize")
}

fn row_key(table: &TableRef, key: &Row) -> Vec<u8> {
    let mut k = format!("{}.{}\0", table.schema, table.name).into_bytes();
    let values: Vec<Option<Scalar>> = key.iter().map(|(_, v)| Scalar::of(v)).collect();
    k.extend(encode_key(&values));
    k
}

impl Aggregate {
    pub fn new(cfg: AggregateConfig, store: Option<StateStore>, connector: Arc<str>, operator: &str) -> Self {
        let rows = StateTable::new(store.clone(), connector.clone(), format!("{operator}/rows"), cfg.max_cached);
        let groups = StateTable::new(store, connector, format!("{operator}/groups"), cfg.max_cached);
        Aggregate { cfg, rows, groups }
    }

    /// The contribution of a row image, filling columns a partial row lacks from `old`.
    fn contribution(&self, row: &Row, old: Option<&Contribution>) -> Contribution {
        let group = self
            .cfg
            .group_by
            .iter()
            .enumerate()
            .map(|(i, c)| match row.get(c) {
                Some(v) => Scalar::of(v),
                None => old.and_then(|o| o.group[i].clone()),
            })
            .collect();
        let values = self
            .cfg
            .aggregates
            .iter()
            .enumerate()
            .map(|(i, a)| match (&a.column, a.column.as_deref().and_then(|c| row.get(c))) {
                (None, _) => None,
                (Some(_), Some(v)) => Scalar::of(v),
                (Some(_), None) => old.and_then(|o| o.values[i].clone()),
            })
            .collect();
        Contribution { group, values }
    }

    fn output_row(&self, group: &[Option<Scalar>], g: &Group) -> Row {
        let mut cols: Vec<(Arc<str>, Value)> = self
            .cfg
            .group_by
            .iter()
            .zip(group)
            .map(|(c, v)| (Arc::from(c.as_str()), v.as_ref().map_or(Value::Null, Scalar::to_value)))
            .collect();
        g.output(&self.cfg.aggregates, &mut cols);
        Row(cols)
    }

    fn group_key_row(&self, group: &[Option<Scalar>]) -> Row {
        Row(self
            .cfg
            .group_by
            .iter()
            .zip(group)
            .map(|(c, v)| (Arc::from(c.as_str()), v.as_ref().map_or(Value::Null, Scalar::to_value)))
            .collect())
    }

    /// Add (`sign = 1`) or retract (`-1`) a contribution to its group.
    fn apply(&mut self, c: &Contribution, sign: i64) -> Result<(), StateError> {
        let specs = &self.cfg.aggregates;
        let slot = self.groups.get_mut(&encode_key(&c.group))?;
        let g = slot.get_or_insert_with(|| Group::new(specs));
        g.apply(specs, &c.values, sign);
        if g.rows <= 0 {
            *slot = None;
        }
        Ok(())
    }

    /// Move one source row from its old contribution to its new one; emit each touched group's
    /// change once, from its state before to its state after.
    fn change(
        &mut self,
        rk: &[u8],
        new: Option<Contribution>,
        cause: &ChangeEvent,
        out: &mut Vec<ChangeEvent>,
    ) -> Result<(), StateError> {
        let old = self.rows.get(rk)?.cloned();
        if old == new {
            return Ok(());
        }
        let mut touched: Vec<(Vec<Option<Scalar>>, Option<Group>)> = Vec::with_capacity(2);
        for (c, sign) in [(&old, -1), (&new, 1)] {
            let Some(c) = c else { continue };
            if !touched.iter().any(|(g, _)| *g == c.group) {
                let before = self.groups.get(&encode_key(&c.group))?.cloned();
                touched.push((c.group.clone(), before));
            }
            self.apply(c, sign)?;
        }
        *self.rows.get_mut(rk)? = new;
        for (group, before) in touched {
            let after = self.groups.get(&encode_key(&group))?.cloned();
            let op = match (&before, &after) {
                (None, Some(_)) => Op::Create,
                (Some(b), Some(a)) if b != a => Op::Update,
                (Some(_), None) => Op::Delete,
                _ => continue,
            };
            out.push(ChangeEvent {
                op,
                table: Arc::new(TableRef {
                    db: cause.table.db.clone(),
                    schema: cause.table.schema.clone(),
                    name: self.cfg.name.as_str().into(),
                }),
                key: self.group_key_row(&group),
                before: before.as_ref().map(|g| self.output_row(&group, g)),
                after: after.as_ref().map(|g| self.output_row(&group, g)),
                partial: false,
                version: cause.version,
                commit_ts_ms: cause.commit_ts_ms,
                snapshot: cause.snapshot,
                source: cause.source.clone(),
            });
        }
        Ok(())
    }

    pub fn process(&mut self, ev: &ChangeEvent, out: &mut Vec<ChangeEvent>) -> Result<(), StateError> {
        match ev.op {
            Op::Truncate => {
                let prefix = format!("{}.{}\0", ev.table.schema, ev.table.name).into_bytes();
                for rk in self.rows.keys_with_prefix(&prefix)? {
                    self.change(&rk, None, ev, out)?;
                }
            }
            Op::Delete => self.change(&row_key(&ev.table, &ev.key), None, ev, out)?,
            _ => {
                let rk = row_key(&ev.table, &ev.key);
                let old = self.rows.get(&rk)?.cloned();
                let new = ev.after.as_ref().map(|a| self.contribution(a, old.as_ref()));
                self.change(&rk, new, ev, out)?;
            }
        }
        Ok(())
    }

    pub fn checkpoint(&mut self, out: &mut Vec<StateDelta>) {
        self.rows.checkpoint(out);
        self.groups.checkpoint(out);
    }

    pub fn stored(&mut self) {
        self.rows.stored();
        self.groups.stored();
    }
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
            commit_ts_ms: 0,
            snapshot: SnapshotFlag::No,
            source: SourceMeta::Postgres { lsn: v, tx_id: None },
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
