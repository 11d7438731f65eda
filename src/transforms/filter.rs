//! `kind = "filter"`: keep the events for which a CEL expression is true.
//!
//! The expression sees `op` (`"c"`, `"u"`, `"d"`, `"r"`, `"t"`), `db`, `schema`, `table` (the bare
//! name), `ts_ms` (commit time), `key`, `before` and `after` (maps, or `null`). Column values are
//! what the event's Debezium JSON holds (the connector's encoding options apply): numbers, strings,
//! booleans, lists; a `decimal_handling = "string"` column is a string, so compare it with
//! `double(after.price) > 10.0`.
//!
//! CEL is Google's Common Expression Language (the `cel` crate): side-effect free, always
//! terminating, and what users of Envoy, Kubernetes and Firebase rules already write.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cel::common::ast::{Expr, IdedExpr};
use cel::common::types::{CelBool, CelDouble, CelInt, CelMap, CelMapKey, CelNull, CelString, CelUInt};
use cel::common::value::Val;
use cel::objects::{Key, Map as JsonMap};
use cel::{Context, Program, Value as Cel};
use serde_json::Value as Json;

use crate::event::{ChangeEvent, Encoding, Row, Value};

/// The columns an expression reads from `before`/`after`, for checking them against a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnRefs {
    pub columns: BTreeSet<String>,
    /// `before`/`after` used whole (e.g. `size(after)`): every column is needed.
    pub whole_row: bool,
}

pub struct FilterExpr {
    program: Program,
    pub source: String,
    pub refs: ColumnRefs,
    uses: Uses,
    /// The expression is one comparison of a column with a literal.
    compare: Option<Compare>,
}

/// `after.COL <op> literal` or `before.COL <op> literal` (either way round): the most common
/// filter, evaluated without the interpreter when the column holds a string or an integer and
/// the literal is of the same type. Any other case — a NULL, another type, a missing row —
/// goes to CEL, so the answer is always CEL's.
#[derive(Debug, Clone)]
struct Compare {
    after: bool,
    column: String,
    literal: Literal,
    /// Which orderings of column against literal make it true.
    holds: fn(std::cmp::Ordering) -> bool,
}

#[derive(Debug, Clone)]
enum Literal {
    Text(String),
    Int(i64),
}

impl Compare {
    fn of(e: &IdedExpr) -> Option<Compare> {
        use std::cmp::Ordering;
        let Expr::Call(call) = &e.expr else { return None };
        let [a, b] = call.args.as_slice() else { return None };
        let (select, literal, flipped) = match (&a.expr, &b.expr) {
            (Expr::Select(s), Expr::Literal(l)) => (s, l, false),
            (Expr::Literal(l), Expr::Select(s)) => (s, l, true),
            _ => return None,
        };
        let after = match &select.operand.expr {
            Expr::Ident(row) if row == "after" => true,
            Expr::Ident(row) if row == "before" => false,
            _ => return None,
        };
        if call.target.is_some() || select.test {
            return None;
        }
        let literal = match literal {
            cel::common::ast::LiteralValue::String(t) => Literal::Text(t.inner().to_string()),
            cel::common::ast::LiteralValue::Int(i) => Literal::Int(*i.inner()),
            _ => return None,
        };
        // With the literal on the left, `lit < col` holds when col > lit.
        let holds: fn(Ordering) -> bool = match (call.func_name.as_str(), flipped) {
            ("_==_", _) => Ordering::is_eq,
            ("_!=_", _) => Ordering::is_ne,
            ("_<_", false) | ("_>_", true) => Ordering::is_lt,
            ("_<=_", false) | ("_>=_", true) => Ordering::is_le,
            ("_>_", false) | ("_<_", true) => Ordering::is_gt,
            ("_>=_", false) | ("_<=_", true) => Ordering::is_ge,
            _ => return None,
        };
        Some(Compare { after, column: select.field.clone(), literal, holds })
    }

    /// The answer, when this event is a case it covers.
    fn eval(&self, ev: &ChangeEvent) -> Option<bool> {
        let row = if self.after { ev.after.as_ref() } else { ev.before.as_ref() }?;
        let ord = match (row.get(&self.column)?, &self.literal) {
            (Value::Text(v), Literal::Text(l)) => v.as_str().cmp(l.as_str()),
            (Value::Int(v), Literal::Int(l)) => v.cmp(l),
            _ => return None,
        };
        Some((self.holds)(ord))
    }
}

impl std::fmt::Debug for FilterExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FilterExpr({:?})", self.source)
    }
}

impl Clone for FilterExpr {
    fn clone(&self) -> Self {
        FilterExpr::compile(&self.source).expect("compiled once already")
    }
}

/// Which variables the expression reads, so only those are built per event.
#[derive(Debug, Clone, Copy, Default)]
struct Uses {
    op: bool,
    db: bool,
    schema: bool,
    table: bool,
    ts_ms: bool,
    before: bool,
    after: bool,
    key: bool,
}

/// The standard CEL environment, built once (building it registers every standard function).
fn env() -> Arc<cel::Env> {
    static ENV: std::sync::OnceLock<Arc<cel::Env>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

const VARIABLES: [&str; 8] = ["op", "db", "schema", "table", "ts_ms", "key", "before", "after"];

impl FilterExpr {
    pub fn compile(source: &str) -> Result<FilterExpr, String> {
        let program = Program::compile(source).map_err(|e| {
            let text = e.to_string().replace('\n', " ");
            format!("invalid expression `{source}`: {}", text.split_whitespace().collect::<Vec<_>>().join(" "))
        })?;
        let references = program.references();
        if let Some(unknown) = references.variables().into_iter().find(|v| !VARIABLES.contains(v)) {
            return Err(format!(
                "`{source}`: unknown variable `{unknown}` (available: {}; columns are after.NAME, before.NAME)",
                VARIABLES.join(", ")
            ));
        }
        let uses = Uses {
            op: references.has_variable("op"),
            db: references.has_variable("db"),
            schema: references.has_variable("schema"),
            table: references.has_variable("table"),
            ts_ms: references.has_variable("ts_ms"),
            before: references.has_variable("before"),
            after: references.has_variable("after"),
            key: references.has_variable("key"),
        };
        let mut refs = ColumnRefs::default();
        collect_refs(program.expression(), &mut refs);
        let compare = Compare::of(program.expression());
        Ok(FilterExpr { program, source: source.to_string(), refs, uses, compare })
    }

    /// Evaluate for one event; `Err` when the result is not a boolean or evaluation fails.
    pub fn matches(&self, ev: &ChangeEvent, enc: &Encoding) -> Result<bool, String> {
        match self.compare.as_ref().and_then(|c| c.eval(ev)) {
            Some(answer) => Ok(answer),
            None => self.interpret(ev, enc),
        }
    }

    /// Evaluate with the CEL interpreter.
    fn interpret(&self, ev: &ChangeEvent, enc: &Encoding) -> Result<bool, String> {
        // Values borrow from the event; only the variables (and, unless a row is used whole, the
        // columns) the expression reads are built.
        let mut ctx = Context::with_env(env());
        if self.uses.op {
            ctx.add_variable_as_val("op", text(ev.op.code()));
        }
        if self.uses.db {
            ctx.add_variable_as_val("db", text(&ev.table.db));
        }
        if self.uses.schema {
            ctx.add_variable_as_val("schema", text(&ev.table.schema));
        }
        if self.uses.table {
            ctx.add_variable_as_val("table", text(&ev.table.name));
        }
        if self.uses.ts_ms {
            ctx.add_variable_as_val("ts_ms", Box::new(CelInt::from(ev.commit_ts_ms())));
        }
        let only = (!self.refs.whole_row).then_some(&self.refs.columns);
        if self.uses.key {
            ctx.add_variable_as_val("key", row_val(&ev.key, enc, None));
        }
        if self.uses.before {
            ctx.add_variable_as_val("before", ev.before.as_ref().map_or_else(null, |r| row_val(r, enc, only)));
        }
        if self.uses.after {
            ctx.add_variable_as_val("after", ev.after.as_ref().map_or_else(null, |r| row_val(r, enc, only)));
        }
        match self.program.execute(&ctx) {
            Ok(Cel::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("`{}` gave {other:?}, not a boolean", self.source)),
            Err(e) => Err(format!("`{}`: {e}", self.source)),
        }
    }
}

/// Walk the expression for `after.NAME` / `before.NAME` (and `has(...)` tests of them).
fn collect_refs(e: &IdedExpr, refs: &mut ColumnRefs) {
    match &e.expr {
        Expr::Select(s) => match &s.operand.expr {
            Expr::Ident(name) if name == "after" || name == "before" => {
                refs.columns.insert(s.field.clone());
            }
            _ => collect_refs(&s.operand, refs),
        },
        Expr::Ident(name) if name == "after" || name == "before" => refs.whole_row = true,
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                collect_refs(t, refs);
            }
            for a in &c.args {
                collect_refs(a, refs);
            }
        }
        Expr::Comprehension(c) => {
            for x in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                collect_refs(x, refs);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(|x| collect_refs(x, refs)),
        Expr::Map(m) => {
            for entry in &m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                    collect_refs(&me.key, refs);
                    collect_refs(&me.value, refs);
                }
            }
        }
        _ => {}
    }
}

/// A row as a CEL map borrowing its names and text.
fn row_val<'v>(row: &'v Row, enc: &Encoding, only: Option<&BTreeSet<String>>) -> Box<dyn Val + 'v> {
    let mut map = HashMap::with_capacity(only.map_or(row.len(), BTreeSet::len));
    for (name, v) in row.iter() {
        if only.is_some_and(|only| !only.contains(name)) {
            continue;
        }
        map.insert(CelMapKey::String(CelString::from(name)), value(v, enc));
    }
    Box::new(CelMap::from(map))
}

/// A column value as CEL sees it: what the Debezium JSON holds.
fn value<'v>(v: &'v Value, enc: &Encoding) -> Box<dyn Val + 'v> {
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Int(i) => Box::new(CelInt::from(*i)),
        Value::UInt(u) => Box::new(CelUInt::from(*u)),
        Value::Float(f) => Box::new(CelDouble::from(*f)),
        Value::Text(s) => Box::new(CelString::from(s.as_str())),
        other => {
            let v: Result<Box<dyn Val>, _> = json(&enc.to_json(other)).try_into();
            v.unwrap_or_else(|_| null())
        }
    }
}

fn text(s: &str) -> Box<dyn Val + '_> {
    Box::new(CelString::from(s))
}

fn null<'v>() -> Box<dyn Val + 'v> {
    Box::new(CelNull)
}

fn json(j: &Json) -> Cel {
    match j {
        Json::Null => Cel::Null,
        Json::Bool(b) => Cel::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Cel::String(Arc::new(s.clone())),
        Json::Array(items) => Cel::List(Arc::new(items.iter().map(json).collect())),
        Json::Object(m) => Cel::Map(JsonMap {
            map: Arc::new(m.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), json(v))).collect()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Op, SnapshotFlag, SourceMeta, TableRef, Version};

    fn ev(op: Op, after: Vec<(&str, Value)>) -> ChangeEvent {
        let row = Row(after.into_iter().map(|(n, v)| (Arc::from(n), v)).collect());
        ChangeEvent {
            op,
            table: Arc::new(TableRef { db: "shop".into(), schema: "public".into(), name: "orders".into() }),
            key: Row(vec![(Arc::from("id"), Value::Int(1))]),
            before: None,
            after: (op != Op::Delete).then_some(row),
            partial: false,
            version: Version::new(1, 1),
            commit_us: 1_000_000,
            snapshot: SnapshotFlag::No,
            source: SourceMeta::Postgres { lsn: 1, last_commit_lsn: None, tx_id: None },
        }
    }

    #[test]
    fn expressions_over_op_and_columns() {
        let enc = Encoding::default();
        let f = FilterExpr::compile("op != 'd' && after.status == 'paid' && after.total > 10").unwrap();
        assert_eq!(f.refs.columns, BTreeSet::from(["status".to_string(), "total".to_string()]));
        let paid = ev(Op::Create, vec![("status", Value::Text("paid".into())), ("total", Value::Int(20))]);
        assert!(f.matches(&paid, &enc).unwrap());
        let small = ev(Op::Create, vec![("status", Value::Text("paid".into())), ("total", Value::Int(5))]);
        assert!(!f.matches(&small, &enc).unwrap());
        // `d` short-circuits before `after` (null) is read.
        assert!(!f.matches(&ev(Op::Delete, vec![]), &enc).unwrap());
        let f = FilterExpr::compile("table == 'orders' && has(after.note)").unwrap();
        assert!(!f.matches(&paid, &enc).unwrap());
        let f = FilterExpr::compile("double(after.price) >= 9.5").unwrap();
        let priced = ev(Op::Create, vec![("price", Value::Numeric { text: "9.50".into(), scale: Some(2) })]);
        assert!(f.matches(&priced, &enc).unwrap());
    }

    #[test]
    fn a_comparison_with_a_literal_answers_as_cel_does() {
        let enc = Encoding::default();
        let rows = [
            vec![("status", Value::Text("paid".into())), ("n", Value::Int(5))],
            vec![("status", Value::Text("new".into())), ("n", Value::Int(-3))],
            vec![("status", Value::Text("pay".into())), ("n", Value::Int(10))],
            vec![("status", Value::Null), ("n", Value::Null)],
            vec![("status", Value::Int(1)), ("n", Value::Text("5".into()))],
            vec![("status", Value::Text("é".into())), ("n", Value::UInt(5))],
        ];
        let mut fast = 0;
        for op in ["==", "!=", "<", "<=", ">", ">="] {
            for (left, right) in
                [("after.status", "'paid'"), ("'paid'", "after.status"), ("after.n", "5"), ("5", "after.n")]
            {
                let source = format!("{left} {op} {right}");
                let f = FilterExpr::compile(&source).unwrap();
                assert!(f.compare.is_some(), "{source}");
                for row in &rows {
                    let e = ev(Op::Create, row.clone());
                    fast += usize::from(f.compare.as_ref().unwrap().eval(&e).is_some());
                    let (a, b) = (f.matches(&e, &enc), f.interpret(&e, &enc));
                    assert_eq!(a, b, "{source} on {row:?}");
                }
            }
        }
        assert!(fast >= 6 * 4 * 3, "the string and integer rows took the fast path: {fast}");
        // A delete has no `after`: CEL answers (here, an error), not the fast path.
        let f = FilterExpr::compile("after.status != 'test'").unwrap();
        assert!(f.matches(&ev(Op::Delete, vec![]), &enc).is_err());
        for other in ["after.status != 'a' && op == 'c'", "after.total > 1.5", "key.id == 1", "has(after.x)"] {
            assert!(FilterExpr::compile(other).unwrap().compare.is_none(), "{other}");
        }
    }

    #[test]
    fn bad_expressions_are_refused_when_read() {
        assert!(FilterExpr::compile("op ==").unwrap_err().contains("invalid expression"));
        assert!(FilterExpr::compile("row.x == 1").unwrap_err().contains("unknown variable `row`"));
        let f = FilterExpr::compile("after.total").unwrap();
        let e = f.matches(&ev(Op::Create, vec![("total", Value::Int(1))]), &Encoding::default()).unwrap_err();
        assert!(e.contains("not a boolean"), "{e}");
        assert!(FilterExpr::compile("size(after) > 2").unwrap().refs.whole_row);
    }
}
