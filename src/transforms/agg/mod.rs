//! Aggregate functions with retraction, shared by `aggregate` and `window`.
//!
//! Every function can take a value back out exactly: counts and sums subtract, and `min`, `max`
//! and `count_distinct` keep a multiset of the values (value → how many rows hold it), so deleting
//! the extreme row gives the next one, not an approximation.

mod decimal;
mod multiset;
mod scalar;

use serde::{Deserialize, Serialize};

pub use self::decimal::Dec;
pub use self::multiset::Counts;
pub use self::scalar::{encode_key, encode_key_into, row_key, row_key_into, table_prefix, Scalar};
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
