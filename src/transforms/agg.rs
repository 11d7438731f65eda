//! Aggregate functions with retraction, shared by `aggregate` and `window`.
//!
//! Every function can take a value back out exactly: counts and sums subtract, and `min`, `max`
//! and `count_distinct` keep a multiset of the values (value → how many rows hold it), so deleting
//! the extreme row gives the next one, not an approximation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Func {
    /// `count(*)`: rows.
    CountRows,
    /// `count(col)`: rows where `col` is not NULL.
    Count,
    Sum,
    Min,
    Max,
    Avg,
    CountDistinct,
}

/// One output column: `name = "fn(column)"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggSpec {
    pub name: String,
    pub func: Func,
    /// `None` for `count(*)`.
    pub column: Option<String>,
}

impl AggSpec {
    pub fn parse(name: &str, text: &str) -> Result<AggSpec, String> {
        let t = text.trim();
        let (f, rest) = t.split_once('(').ok_or_else(|| format!("`{t}` is not fn(column), e.g. sum(total)"))?;
        let arg = rest.strip_suffix(')').ok_or_else(|| format!("`{t}` is missing its closing `)`"))?.trim();
        let func = match (f.trim().to_ascii_lowercase().as_str(), arg) {
            ("count", "*") => Func::CountRows,
            ("count", _) => Func::Count,
            ("sum", _) => Func::Sum,
            ("min", _) => Func::Min,
            ("max", _) => Func::Max,
            ("avg", _) => Func::Avg,
            ("count_distinct", _) => Func::CountDistinct,
            (other, _) => {
                return Err(format!("`{other}` is not an aggregate (use count, sum, min, max, avg, count_distinct)"))
            }
        };
        if arg.is_empty() || (arg == "*" && func != Func::CountRows) {
            return Err(format!("`{t}` needs a column"));
        }
        let column = (func != Func::CountRows).then(|| arg.to_string());
        Ok(AggSpec { name: name.to_string(), func, column })
    }
}

/// An exact decimal: `mant / 10^scale`.
///
/// The 128-bit mantissa is kept as two 64-bit halves: aligned to 8 bytes rather than 16, a
/// [`Scalar`] takes 32 bytes instead of 48, and multisets of them take fewer cache lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec {
    hi: i64,
    lo: u64,
    pub scale: u32,
}

/// How a decimal is stored.
#[derive(Serialize, Deserialize)]
struct StoredDec {
    mant: i128,
    scale: u32,
}

impl Serialize for Dec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredDec { mant: self.mant(), scale: self.scale }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = StoredDec::deserialize(d)?;
        Ok(Dec::new(s.mant, s.scale))
    }
}

impl Dec {
    pub const fn new(mant: i128, scale: u32) -> Dec {
        Dec { hi: (mant >> 64) as i64, lo: mant as u64, scale }
    }

    pub const fn mant(self) -> i128 {
        ((self.hi as i128) << 64) | self.lo as i128
    }

    pub fn parse(text: &str) -> Option<Dec> {
        let (neg, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let scale = frac.len() as u32;
        if scale > 30 || int.len() + frac.len() > 36 {
            return None;
        }
        // At most 36 digits: no overflow in an i128.
        let mant = int.bytes().chain(frac.bytes()).fold(0i128, |m, b| m * 10 + i128::from(b - b'0'));
        Some(Dec::new(if neg { -mant } else { mant }, scale))
    }

    fn rescale(self, scale: u32) -> Dec {
        Dec::new(self.mant() * 10i128.pow(scale - self.scale), scale)
    }

    pub fn plus(self, o: Dec) -> Dec {
        if self.scale == o.scale {
            return Dec::new(self.mant() + o.mant(), self.scale);
        }
        let s = self.scale.max(o.scale);
        Dec::new(self.rescale(s).mant() + o.rescale(s).mant(), s)
    }

    pub fn negated(self) -> Dec {
        Dec::new(-self.mant(), self.scale)
    }

    pub fn to_f64(self) -> f64 {
        self.mant() as f64 / 10f64.powi(self.scale as i32)
    }

    pub fn text(self) -> String {
        let mut out = String::with_capacity(self.scale as usize + 8);
        let _ = self.write(&mut out);
        out
    }

    /// The text, formatted on the stack: one allocation, of the right size.
    fn boxed_text(self) -> Box<str> {
        let mut buf = StackText { buf: [0; 48], len: 0 };
        match self.write(&mut buf) {
            Ok(()) => std::str::from_utf8(&buf.buf[..buf.len]).expect("ASCII digits").into(),
            Err(_) => self.text().into(),
        }
    }

    fn write(self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        if self.mant() < 0 {
            out.write_char('-')?;
        }
        let (abs, scale) = (self.mant().unsigned_abs(), self.scale as usize);
        if scale == 0 {
            return write!(out, "{abs}");
        }
        // u64 arithmetic when it fits: 128-bit division is a library call.
        match (u64::try_from(abs), scale <= 19) {
            (Ok(small), true) => {
                let p = 10u64.pow(self.scale);
                write!(out, "{}.{:0scale$}", small / p, small % p)
            }
            _ => {
                let p = 10u128.pow(self.scale);
                write!(out, "{}.{:0scale$}", abs / p, abs % p)
            }
        }
    }
}

/// A short text on the stack (a decimal's digits); writing past its end fails.
struct StackText {
    buf: [u8; 48],
    len: usize,
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl PartialOrd for Dec {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Dec {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        if self.scale == o.scale {
            return self.mant().cmp(&o.mant());
        }
        let s = self.scale.max(o.scale);
        self.rescale(s).mant().cmp(&o.rescale(s).mant())
    }
}

/// A column value as aggregates see it: ordered, exact for integers and decimals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    Bool(bool),
    /// Integers and decimals (and dates/times, as their numeric encodings).
    Num(Dec),
    Float(f64),
    Text(String),
}

impl Eq for Scalar {}

impl PartialOrd for Scalar {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Scalar {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        use Scalar::*;
        match (self, o) {
            (Bool(a), Bool(b)) => a.cmp(b),
            (Num(a), Num(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Num(a), Float(b)) => a.to_f64().total_cmp(b),
            (Float(a), Num(b)) => a.total_cmp(&b.to_f64()),
            (Text(a), Text(b)) => a.cmp(b),
            _ => self.rank().cmp(&o.rank()),
        }
    }
}

impl Scalar {
    fn rank(&self) -> u8 {
        match self {
            Scalar::Bool(_) => 0,
            Scalar::Num(_) | Scalar::Float(_) => 1,
            Scalar::Text(_) => 2,
        }
    }

    /// `None` for NULL.
    pub fn of(v: &Value) -> Option<Scalar> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Int(i) => Scalar::Num(Dec::new(*i as i128, 0)),
            Value::UInt(u) => Scalar::Num(Dec::new(*u as i128, 0)),
            Value::Float(f) => Scalar::Float(*f),
            Value::Numeric { text, .. } => match Dec::parse(text) {
                Some(d) => Scalar::Num(d),
                None => Scalar::Float(text.parse().unwrap_or(f64::NAN)),
            },
            Value::Date(d) => Scalar::Num(Dec::new(*d as i128, 0)),
            Value::Timestamp { micros, .. } | Value::TimestampTz { micros, .. } | Value::Time { micros, .. } => {
                Scalar::Num(Dec::new(*micros as i128, 0))
            }
            Value::Text(s) | Value::Json(s) => Scalar::Text(s.clone()),
            other => {
                let mut s = String::new();
                crate::event::Encoding::default().write_text(other, &mut s);
                Scalar::Text(s)
            }
        })
    }

    pub fn to_value(&self) -> Value {
        match self {
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Num(d) if d.scale == 0 && i64::try_from(d.mant()).is_ok() => Value::Int(d.mant() as i64),
            Scalar::Num(d) => Value::Numeric { text: d.boxed_text(), scale: Some(d.scale as u16) },
            Scalar::Float(f) => Value::Float(*f),
            Scalar::Text(s) => Value::Text(s.clone()),
        }
    }
}

/// A stable byte key for a list of values (group columns, a row's key): a tag per value, then
/// its bytes; equal lists give equal keys.
pub fn encode_key(parts: &[Option<Scalar>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.len() * 17);
    encode_key_into(parts, &mut out);
    out
}

/// [`encode_key`] into a reused buffer.
pub fn encode_key_into(parts: &[Option<Scalar>], out: &mut Vec<u8>) {
    out.clear();
    for p in parts {
        encode_scalar(p.as_ref(), out);
    }
}

fn encode_scalar(v: Option<&Scalar>, out: &mut Vec<u8>) {
    match v {
        None => out.push(0),
        Some(Scalar::Bool(b)) => out.extend([1, u8::from(*b)]),
        Some(Scalar::Num(d)) => {
            out.push(2);
            out.extend(d.mant().to_be_bytes());
            out.extend(d.scale.to_be_bytes());
        }
        Some(Scalar::Float(f)) => {
            out.push(3);
            out.extend(f.to_bits().to_be_bytes());
        }
        Some(Scalar::Text(t)) => {
            out.push(4);
            out.extend((t.len() as u64).to_be_bytes());
            out.extend(t.as_bytes());
        }
    }
}

/// The key of a source row: its table and key values.
pub fn row_key(table: &crate::event::TableRef, key: &crate::event::Row) -> Vec<u8> {
    let mut k = Vec::with_capacity(table.schema.len() + table.name.len() + 2 + key.len() * 17);
    row_key_into(table, key, &mut k);
    k
}

/// [`row_key`] into a reused buffer.
pub fn row_key_into(table: &crate::event::TableRef, key: &crate::event::Row, k: &mut Vec<u8>) {
    k.clear();
    k.extend(table.schema.as_bytes());
    k.push(b'.');
    k.extend(table.name.as_bytes());
    k.push(0);
    for (_, v) in key.iter() {
        encode_scalar(Scalar::of(v).as_ref(), k);
    }
}

/// The prefix of [`row_key`] for every row of a table.
pub fn table_prefix(table: &crate::event::TableRef) -> Vec<u8> {
    format!("{}.{}\0", table.schema, table.name).into_bytes()
}

/// A multiset of values (value → how many rows hold it), in value order.
///
/// Small ones — most groups — are a sorted vector: a binary search over one contiguous block
/// touches a few cache lines where a tree's nodes are scattered. While every value is an integer
/// or a decimal of one scale that fits 64 bits (an id, a price column), the vector holds just
/// those mantissas: 16 bytes a value instead of 40. Past [`Counts::SMALL`] distinct values it
/// becomes a B-tree, so an insert stays O(log n).
#[derive(Debug, Clone)]
pub enum Counts {
    Nums { scale: u32, pairs: Vec<(i64, u64)> },
    Sorted(Vec<(Scalar, u64)>),
    Tree(BTreeMap<Scalar, u64>),
}

impl Default for Counts {
    fn default() -> Self {
        Counts::Sorted(Vec::new())
    }
}

impl PartialEq for Counts {
    fn eq(&self, o: &Self) -> bool {
        self.len() == o.len() && self.iter().eq(o.iter())
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Counts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut c = Counts::default();
        for (v, n) in Vec::<(Scalar, u64)>::deserialize(d)? {
            c.add(&v, n as i64);
        }
        Ok(c)
    }
}

/// Add `n` (negative: take back) to the count of the value at `found` (a binary search's
/// answer), inserting or removing it; `false` when the value is new but the vector is full.
fn add_sorted<K>(pairs: &mut Vec<(K, u64)>, found: Result<usize, usize>, n: i64, key: impl FnOnce() -> K) -> bool {
    match found {
        Ok(at) => {
            let c = (pairs[at].1 as i64).saturating_add(n);
            if c <= 0 {
                pairs.remove(at);
            } else {
                pairs[at].1 = c as u64;
            }
            true
        }
        Err(at) if n > 0 => {
            if pairs.len() >= Counts::SMALL {
                return false;
            }
            pairs.insert(at, (key(), n as u64));
            true
        }
        Err(_) => true,
    }
}

impl Counts {
    /// Distinct values a sorted vector holds before it becomes a tree.
    const SMALL: usize = 64;

    /// Add `n` rows holding `v` (`n < 0` takes them back).
    fn add(&mut self, v: &Scalar, n: i64) {
        if self.is_empty() {
            // An empty multiset takes the most compact form its next value fits.
            let fits = match v {
                Scalar::Num(d) if i64::try_from(d.mant()).is_ok() => Some(d.scale),
                _ => None,
            };
            match (fits, &*self) {
                (Some(s), Counts::Nums { scale, .. }) if *scale == s => {}
                (Some(s), _) => *self = Counts::Nums { scale: s, pairs: Vec::new() },
                (None, Counts::Sorted(_)) => {}
                (None, _) => *self = Counts::Sorted(Vec::new()),
            }
        }
        let done = match self {
            Counts::Nums { scale, pairs } => match v {
                Scalar::Num(d) if d.scale == *scale && i64::try_from(d.mant()).is_ok() => {
                    let m = d.mant() as i64;
                    add_sorted(pairs, pairs.binary_search_by(|(k, _)| k.cmp(&m)), n, || m)
                }
                _ => false,
            },
            Counts::Sorted(pairs) => add_sorted(pairs, pairs.binary_search_by(|(k, _)| k.cmp(v)), n, || v.clone()),
            Counts::Tree(tree) => {
                if n > 0 {
                    *tree.entry(v.clone()).or_insert(0) += n as u64;
                } else if let Some(c) = tree.get_mut(v) {
                    let left = (*c as i64).saturating_add(n);
                    if left <= 0 {
                        tree.remove(v);
                    } else {
                        *c = left as u64;
                    }
                }
                true
            }
        };
        if !done {
            // A value the compact form cannot hold, or a full vector: the next form up.
            let pairs: Vec<(Scalar, u64)> = self.iter().collect();
            *self = match self {
                Counts::Nums { .. } if pairs.len() < Counts::SMALL => Counts::Sorted(pairs),
                _ => Counts::Tree(pairs.into_iter().collect()),
            };
            self.add(v, n);
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Counts::Nums { pairs, .. } => pairs.len(),
            Counts::Sorted(p) => p.len(),
            Counts::Tree(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values with their counts, in order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (Scalar, u64)> + '_> {
        match self {
            Counts::Nums { scale, pairs } => {
                Box::new(pairs.iter().map(|(m, n)| (Scalar::Num(Dec::new(*m as i128, *scale)), *n)))
            }
            Counts::Sorted(p) => Box::new(p.iter().map(|(k, n)| (k.clone(), *n))),
            Counts::Tree(t) => Box::new(t.iter().map(|(k, n)| (k.clone(), *n))),
        }
    }

    /// The smallest value, or the largest (`last`).
    fn extreme(&self, last: bool) -> Output {
        let pick = |len: usize| if last { len.checked_sub(1) } else { (len > 0).then_some(0) };
        match self {
            Counts::Nums { scale, pairs } => {
                pick(pairs.len()).map_or(Output::Null, |i| Output::Num(Dec::new(pairs[i].0 as i128, *scale)))
            }
            Counts::Sorted(p) => pick(p.len()).map_or(Output::Null, |i| Output::Value(p[i].0.clone())),
            Counts::Tree(t) => {
                let k = if last { t.keys().next_back() } else { t.keys().next() };
                k.map_or(Output::Null, |v| Output::Value(v.clone()))
            }
        }
    }
}

/// The running state of one aggregate function over one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AggState {
    Count(i64),
    /// Non-NULL inputs, their exact sum (integers and decimals) and float sum.
    Sum {
        n: i64,
        dec: Option<Dec>,
        float: f64,
        floats: i64,
    },
    Multi(Counts),
}

impl AggState {
    pub fn new(func: Func) -> AggState {
        match func {
            Func::CountRows | Func::Count => AggState::Count(0),
            Func::Sum | Func::Avg => AggState::Sum { n: 0, dec: None, float: 0.0, floats: 0 },
            Func::Min | Func::Max | Func::CountDistinct => AggState::Multi(Counts::default()),
        }
    }

    /// Add (`sign = 1`) or take back (`sign = -1`) one row's value.
    pub fn apply(&mut self, func: Func, v: Option<&Scalar>, sign: i64) {
        match (self, func) {
            (AggState::Count(n), Func::CountRows) => *n += sign,
            (AggState::Count(n), _) => {
                if v.is_some() {
                    *n += sign
                }
            }
            (AggState::Sum { n, dec, float, floats }, _) => match v {
                Some(Scalar::Num(d)) => {
                    *n += sign;
                    let d = if sign > 0 { *d } else { d.negated() };
                    *dec = Some(dec.map_or(d, |s| s.plus(d)));
                }
                Some(Scalar::Float(f)) => {
                    *n += sign;
                    *floats += sign;
                    *float += f * sign as f64;
                }
                Some(Scalar::Bool(b)) => {
                    *n += sign;
                    let d = Dec::new(i128::from(*b) * sign as i128, 0);
                    *dec = Some(dec.map_or(d, |s| s.plus(d)));
                }
                _ => {}
            },
            (AggState::Multi(c), _) => {
                if let Some(v) = v {
                    c.add(v, sign)
                }
            }
        }
    }

    /// Fold another group's state of the same function into this one (session windows merging).
    pub fn merge(&mut self, other: &AggState) {
        match (self, other) {
            (AggState::Count(a), AggState::Count(b)) => *a += b,
            (AggState::Sum { n, dec, float, floats }, AggState::Sum { n: n2, dec: d2, float: f2, floats: fl2 }) => {
                *n += n2;
                *float += f2;
                *floats += fl2;
                if let Some(d2) = d2 {
                    *dec = Some(dec.map_or(*d2, |d| d.plus(*d2)));
                }
            }
            (AggState::Multi(a), AggState::Multi(b)) => {
                for (v, n) in b.iter() {
                    a.add(&v, n as i64);
                }
            }
            _ => {}
        }
    }

    /// The output column's value.
    pub fn output(&self, func: Func) -> Value {
        match self.output_key(func) {
            Output::Null => Value::Null,
            Output::Int(n) => Value::Int(n),
            Output::Float(bits) => Value::Float(f64::from_bits(bits)),
            Output::Num(d) => Scalar::Num(d).to_value(),
            Output::Value(Scalar::Text(t)) => Value::Text(t),
            Output::Value(v) => v.to_value(),
        }
    }
}

/// What an aggregate outputs, without formatting it: equal exactly when the output values are.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Null,
    Int(i64),
    /// The bits of a float.
    Float(u64),
    Num(Dec),
    Value(Scalar),
}

impl AggState {
    /// What [`AggState::output`] gives, comparable and cheap (no text for decimals).
    pub fn output_key(&self, func: Func) -> Output {
        let float = |f: f64| Output::Float(f.to_bits());
        match (self, func) {
            (AggState::Count(n), _) => Output::Int(*n),
            (AggState::Sum { n: 0, .. }, _) => Output::Null,
            (AggState::Sum { dec, float: f, floats, .. }, Func::Sum) => {
                if *floats > 0 {
                    float(dec.map_or(0.0, Dec::to_f64) + f)
                } else {
                    Output::Num(dec.unwrap_or(Dec::new(0, 0)))
                }
            }
            (AggState::Sum { n, dec, float: f, .. }, _) => float((dec.map_or(0.0, Dec::to_f64) + f) / *n as f64),
            (AggState::Multi(c), Func::Min) => c.extreme(false),
            (AggState::Multi(c), Func::Max) => c.extreme(true),
            (AggState::Multi(c), _) => Output::Int(c.len() as i64),
        }
    }
}

/// The running aggregates of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub rows: i64,
    pub states: Vec<AggState>,
}

impl Group {
    pub fn new(specs: &[AggSpec]) -> Group {
        Group { rows: 0, states: specs.iter().map(|a| AggState::new(a.func)).collect() }
    }

    /// Add (`sign = 1`) or take back (`-1`) one row's values (one per spec, `None` for NULL).
    pub fn apply(&mut self, specs: &[AggSpec], values: &[Option<Scalar>], sign: i64) {
        self.rows += sign;
        for ((state, a), v) in self.states.iter_mut().zip(specs).zip(values) {
            state.apply(a.func, v.as_ref(), sign);
        }
    }

    pub fn merge(&mut self, other: &Group) {
        self.rows += other.rows;
        for (a, b) in self.states.iter_mut().zip(&other.states) {
            a.merge(b);
        }
    }

    /// The outputs of every spec, comparable (into `out`, cleared first).
    pub fn output_keys(&self, specs: &[AggSpec], out: &mut Vec<Output>) {
        out.clear();
        out.extend(specs.iter().zip(&self.states).map(|(a, s)| s.output_key(a.func)));
    }

    /// Append the output columns (`names`, one per spec, and values) of every spec.
    pub fn output(
        &self,
        specs: &[AggSpec],
        names: &[std::sync::Arc<str>],
        cols: &mut Vec<(std::sync::Arc<str>, Value)>,
    ) {
        for ((a, name), s) in specs.iter().zip(names).zip(&self.states) {
            cols.push((name.clone(), s.output(a.func)));
        }
    }
}

/// The values a row feeds into the specs (`None` for `count(*)`, a NULL or a missing column).
pub fn values_of(specs: &[AggSpec], row: &crate::event::Row) -> Vec<Option<Scalar>> {
    specs.iter().map(|a| a.column.as_deref().and_then(|c| row.get(c)).and_then(Scalar::of)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Scalar {
        Scalar::Num(Dec::parse(s).unwrap())
    }

    #[test]
    fn decimals_are_exact() {
        let a = Dec::parse("12.50").unwrap();
        let b = Dec::parse("-0.125").unwrap();
        assert_eq!(a.plus(b).text(), "12.375");
        assert_eq!(Dec::parse("0.05").unwrap().text(), "0.05");
        assert_eq!(Dec::parse("-3").unwrap().text(), "-3");
        assert_eq!(Dec::parse("-.05").unwrap().text(), "-0.05");
        assert_eq!(Dec::new(123456, 2).text(), "1234.56");
        assert_eq!(&*Dec::new(-7, 3).boxed_text(), "-0.007");
        let huge = Dec::new(-(10i128.pow(36)) - 5, 30);
        assert_eq!(&*huge.boxed_text(), "-1000000.000000000000000000000000000005");
        assert_eq!(huge.text(), &*huge.boxed_text());
        // Stored as before the mantissa was split in halves.
        assert_eq!(serde_json::to_string(&huge).unwrap(), format!("{{\"mant\":{},\"scale\":30}}", huge.mant()));
        assert_eq!(serde_json::from_str::<Dec>(&serde_json::to_string(&huge).unwrap()).unwrap(), huge);
        assert!(Dec::parse("1.5e3").is_none());
        assert_eq!(Dec::parse("2.0").unwrap().cmp(&Dec::parse("2").unwrap()), std::cmp::Ordering::Equal);
    }

    #[test]
    fn min_and_max_stay_exact_when_the_extreme_is_deleted() {
        let mut min = AggState::new(Func::Min);
        let mut max = AggState::new(Func::Max);
        for v in ["5.00", "1.50", "9.25", "1.50"] {
            min.apply(Func::Min, Some(&num(v)), 1);
            max.apply(Func::Max, Some(&num(v)), 1);
        }
        assert_eq!(min.output(Func::Min), num("1.50").to_value());
        // One of the two 1.50 rows goes: still 1.50; the other goes too: 5.00.
        min.apply(Func::Min, Some(&num("1.50")), -1);
        assert_eq!(min.output(Func::Min), num("1.50").to_value());
        min.apply(Func::Min, Some(&num("1.50")), -1);
        assert_eq!(min.output(Func::Min), num("5.00").to_value());
        max.apply(Func::Max, Some(&num("9.25")), -1);
        assert_eq!(max.output(Func::Max), num("5.00").to_value());
    }

    #[test]
    fn a_multiset_past_its_small_form_keeps_every_count() {
        let mut max = AggState::new(Func::Max);
        let mut distinct = AggState::new(Func::CountDistinct);
        // Each value twice, in an order that is neither ascending nor descending.
        let values: Vec<i64> = (0..200).map(|i| (i * 37) % 200).chain(0..200).collect();
        for v in &values {
            max.apply(Func::Max, Some(&Scalar::Num(Dec::new(*v as i128, 0))), 1);
            distinct.apply(Func::CountDistinct, Some(&Scalar::Num(Dec::new(*v as i128, 0))), 1);
        }
        assert!(matches!(&max, AggState::Multi(Counts::Tree(_))), "200 distinct values make a tree");
        assert_eq!(distinct.output(Func::CountDistinct), Value::Int(200));
        let stored: AggState = serde_json::from_slice(&serde_json::to_vec(&max).unwrap()).unwrap();
        assert_eq!(stored, max);
        // Take 199 back once: it is still held by one row; twice: 198 is the max.
        let top = Scalar::Num(Dec::new(199, 0));
        max.apply(Func::Max, Some(&top), -1);
        assert_eq!(max.output(Func::Max), Value::Int(199));
        max.apply(Func::Max, Some(&top), -1);
        assert_eq!(max.output(Func::Max), Value::Int(198));
        // The small forms: integers of one scale as bare mantissas, anything else as values.
        let mut small = AggState::new(Func::Min);
        for v in [5, 3, 9, 3] {
            small.apply(Func::Min, Some(&Scalar::Num(Dec::new(v, 0))), 1);
        }
        assert!(matches!(&small, AggState::Multi(Counts::Nums { pairs, .. }) if pairs.len() == 3));
        let mut mixed = small.clone();
        mixed.apply(Func::Min, Some(&num("2.5")), 1);
        assert!(matches!(&mixed, AggState::Multi(Counts::Sorted(p)) if p.len() == 4), "another scale: {mixed:?}");
        assert_eq!(mixed.output(Func::Min), num("2.5").to_value());
        mixed.apply(Func::Min, Some(&num("2.5")), -1);
        assert_eq!(mixed.output(Func::Min), Value::Int(3));
        let mut texts = AggState::new(Func::Max);
        for t in ["b", "a", "c"] {
            texts.apply(Func::Max, Some(&Scalar::Text(t.into())), 1);
        }
        assert!(matches!(&texts, AggState::Multi(Counts::Sorted(p)) if p.len() == 3));
        assert_eq!(texts.output(Func::Max), Value::Text("c".into()));
        small.apply(Func::Min, Some(&Scalar::Num(Dec::new(3, 0))), -1);
        assert_eq!(small.output(Func::Min), Value::Int(3));
        small.apply(Func::Min, Some(&Scalar::Num(Dec::new(3, 0))), -1);
        assert_eq!(small.output(Func::Min), Value::Int(5));
    }

    #[test]
    fn sums_counts_and_averages_retract() {
        let mut sum = AggState::new(Func::Sum);
        let mut avg = AggState::new(Func::Avg);
        let mut cnt = AggState::new(Func::Count);
        let mut distinct = AggState::new(Func::CountDistinct);
        for v in [Some("1.25"), Some("2.75"), None, Some("2.75")] {
            let s = v.map(num);
            sum.apply(Func::Sum, s.as_ref(), 1);
            avg.apply(Func::Avg, s.as_ref(), 1);
            cnt.apply(Func::Count, s.as_ref(), 1);
            distinct.apply(Func::CountDistinct, s.as_ref(), 1);
        }
        assert_eq!(sum.output(Func::Sum), Value::Numeric { text: "6.75".into(), scale: Some(2) });
        assert_eq!(avg.output(Func::Avg), Value::Float(2.25));
        assert_eq!(cnt.output(Func::Count), Value::Int(3));
        assert_eq!(distinct.output(Func::CountDistinct), Value::Int(2));
        for v in ["1.25", "2.75", "2.75"] {
            sum.apply(Func::Sum, Some(&num(v)), -1);
            avg.apply(Func::Avg, Some(&num(v)), -1);
        }
        assert_eq!(sum.output(Func::Sum), Value::Null, "a sum of no values is NULL, as in SQL");
        assert_eq!(avg.output(Func::Avg), Value::Null);
    }

    #[test]
    fn specs_parse() {
        assert_eq!(AggSpec::parse("n", "count(*)").unwrap().func, Func::CountRows);
        assert_eq!(AggSpec::parse("s", "SUM(total)").unwrap().column.as_deref(), Some("total"));
        assert!(AggSpec::parse("x", "median(total)").unwrap_err().contains("not an aggregate"));
        assert!(AggSpec::parse("x", "sum(*)").unwrap_err().contains("needs a column"));
        assert!(AggSpec::parse("x", "sum").is_err());
    }
}
