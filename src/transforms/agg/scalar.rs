//! Values as aggregates see them (ordered, exact), and the byte keys made of them.

use serde::{Deserialize, Serialize};

use super::decimal::Dec;
use crate::event::{Row, TableRef, Value};

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
pub fn row_key(table: &TableRef, key: &Row) -> Vec<u8> {
    let mut k = Vec::with_capacity(table.schema.len() + table.name.len() + 2 + key.len() * 17);
    row_key_into(table, key, &mut k);
    k
}

/// [`row_key`] into a reused buffer.
pub fn row_key_into(table: &TableRef, key: &Row, k: &mut Vec<u8>) {
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
pub fn table_prefix(table: &TableRef) -> Vec<u8> {
    format!("{}.{}\0", table.schema, table.name).into_bytes()
}
