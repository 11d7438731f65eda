//! What a MySQL/MariaDB table looks like, and how its values become typed [`Value`]s.
//!
//! No DDL parser: a row event's table map (with `binlog_row_metadata=FULL`) names its columns,
//! key, ENUM/SET labels and widths, so every event is decoded against the schema it was written
//! with, even right after an ALTER TABLE. information_schema adds what the table map does not say
//! (UUID and other declared types, signedness, binary or text), matched by column name; without
//! FULL metadata it supplies the names too (best effort, see `check`).
//!
//! Values arrive in two forms: from the binlog (`BinlogValue`: ENUM as an index, SET as a bitmask,
//! TIMESTAMP as an epoch string, YEAR as text, UUID as raw bytes) and from snapshot queries (the
//! binary protocol: labels, dates in the session time zone, which tidemark pins to UTC). Both end
//! up as the same [`Value`].

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_async::Value as MyValue;
use prometheus_client::metrics::counter::Counter;

use crate::event::time::{days_from_civil, MICROS_PER_DAY, MICROS_PER_SEC};
use crate::event::{Row, TableRef, Value};
use crate::metrics::{self, Metrics, OpCounters};

/// How one column's values are read.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `bytes` wide: 1, 2, 3, 4 or 8.
    Int {
        unsigned: bool,
        bytes: u8,
    },
    Decimal {
        scale: Option<u16>,
    },
    Float,
    Double,
    Text,
    /// `pad_to`: BINARY(n), whose trailing zero bytes the binlog drops.
    Binary {
        pad_to: Option<usize>,
    },
    Date,
    Time {
        fsp: u8,
    },
    DateTime {
        fsp: u8,
    },
    Timestamp {
        fsp: u8,
    },
    Year,
    Enum(Arc<[String]>),
    Set(Arc<[String]>),
    Bit {
        bits: u16,
    },
    Json,
    /// MariaDB's UUID type: 16 bytes in the binlog, text in queries.
    Uuid,
    /// Anything else (GEOMETRY, INET6, VECTOR...): its bytes or text, with a warning metric.
    Other(String),
}

impl Kind {
    pub fn fallback_name(&self) -> Option<&str> {
        match self {
            Kind::Other(name) => Some(name),
            _ => None,
        }
    }
}

pub struct Column {
    pub name: Arc<str>,
    pub kind: Kind,
    pub fallbacks: Counter,
}

/// A captured table as one table map (or information_schema) describes it.
pub struct TableSchema {
    pub table: Arc<TableRef>,
    pub columns: Vec<Column>,
    /// Indices of the key columns (primary key, or all columns for a table without one).
    pub key: Vec<usize>,
    pub by_primary_key: bool,
    pub counters: OpCounters,
}

/// A column as information_schema describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InfoColumn {
    pub name: String,
    /// `DATA_TYPE`, lower case: `int`, `varchar`, `uuid`...
    pub data_type: String,
    /// `COLUMN_TYPE`: `int(10) unsigned`, `enum('a','b')`, `datetime(6)`...
    pub column_type: String,
    /// `CHARACTER_SET_NAME`; `None` for binary and non-character types.
    pub charset: Option<String>,
    pub primary: bool,
}

/// One entry of a table's schema history: its columns as information_schema showed them when the
/// stream was at `coordinate` (see [`super::binlog::coordinate`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryEntry {
    pub coordinate: u64,
    pub columns: Vec<InfoColumn>,
}

/// The latest entry at or before `coordinate` that has `count` columns.
pub fn history_at(history: &[HistoryEntry], coordinate: u64, count: usize) -> Option<&HistoryEntry> {
    history.iter().filter(|e| e.coordinate <= coordinate && e.columns.len() == count).max_by_key(|e| e.coordinate)
}

/// The digits of the first parenthesised number list in a column type: `decimal(10,2)` → [10, 2].
fn type_params(column_type: &str) -> Vec<u64> {
    let Some(open) = column_type.find('(') else { return Vec::new() };
    let Some(close) = column_type[open..].find(')') else { return Vec::new() };
    column_type[open + 1..open + close].split(',').filter_map(|p| p.trim().parse().ok()).collect()
}

/// The labels of `enum('a','b''c')` / `set(...)`.
fn quoted_labels(column_type: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = column_type.as_bytes();
    let mut i = match column_type.find('(') {
        Some(p) => p + 1,
        None => return out,
    };
    while i < bytes.len() {
        if bytes[i] != b'\'' {
            i += 1;
            continue;
        }
        let mut label = Vec::new();
        i += 1;
        while i < bytes.len() {
            if bytes[i] == b'\'' {
                if bytes.get(i + 1) == Some(&b'\'') {
                    label.push(b'\'');
                    i += 2;
                    continue;
                }
                break;
            }
            if bytes[i] == b'\\' && i + 1 < bytes.len() {
                label.push(bytes[i + 1]);
                i += 2;
                continue;
            }
            label.push(bytes[i]);
            i += 1;
        }
        out.push(String::from_utf8_lossy(&label).into_owned());
        i += 1;
    }
    out
}

/// The kind of a column from information_schema alone (snapshots, and the fallback without FULL
/// metadata).
pub fn kind_from_info(c: &InfoColumn) -> Kind {
    let unsigned = c.column_type.contains("unsigned");
    let params = type_params(&c.column_type);
    let fsp = params.first().copied().unwrap_or(0).min(6) as u8;
    match c.data_type.as_str() {
        "tinyint" => Kind::Int { unsigned, bytes: 1 },
        "smallint" => Kind::Int { unsigned, bytes: 2 },
        "mediumint" => Kind::Int { unsigned, bytes: 3 },
        "int" | "integer" => Kind::Int { unsigned, bytes: 4 },
        "bigint" => Kind::Int { unsigned, bytes: 8 },
        "decimal" | "numeric" => Kind::Decimal { scale: Some(params.get(1).copied().unwrap_or(0) as u16) },
        "float" => Kind::Float,
        "double" | "real" => Kind::Double,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
            if c.charset.is_some() {
                Kind::Text
            } else {
                Kind::Binary { pad_to: None }
            }
        }
        "binary" => Kind::Binary { pad_to: params.first().map(|n| *n as usize) },
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary { pad_to: None },
        "date" => Kind::Date,
        "time" => Kind::Time { fsp },
        "datetime" => Kind::DateTime { fsp },
        "timestamp" => Kind::Timestamp { fsp },
        "year" => Kind::Year,
        "enum" => Kind::Enum(quoted_labels(&c.column_type).into()),
        "set" => Kind::Set(quoted_labels(&c.column_type).into()),
        "bit" => Kind::Bit { bits: params.first().copied().unwrap_or(1) as u16 },
        "json" => Kind::Json,
        "uuid" => Kind::Uuid,
        other => Kind::Other(other.to_string()),
    }
}

/// What a table map says about one column.
struct MapColumn {
    ty: Option<ColumnType>,
    meta: Vec<u8>,
}

/// Walk a table map's optional metadata before mysql_common parses it: its ENUM and SET value
/// lists reserve room for as many values as their (untrusted) counts say, so a malformed count
/// would ask for terabytes. Every count is checked against the bytes that must follow it.
pub fn check_optional_metadata(tme: &TableMapEvent<'_>) -> Result<(), String> {
    use mysql_common::proto::MySerialize;
    let mut raw = Vec::new();
    tme.serialize(&mut raw);
    let bad = || "a malformed table map".to_string();
    let mut r = Reader(&raw);
    // table id (6), flags (2), database and table names (length byte, bytes, NUL each).
    r.skip(8).ok_or_else(bad)?;
    for _ in 0..2 {
        let len = r.byte().ok_or_else(bad)? as usize;
        r.skip(len + 1).ok_or_else(bad)?;
    }
    let n = r.lenenc().ok_or_else(bad)?;
    r.skip(usize::try_from(n).map_err(|_| bad())?).ok_or_else(bad)?;
    let meta = r.lenenc().ok_or_else(bad)?;
    r.skip(usize::try_from(meta).map_err(|_| bad())?).ok_or_else(bad)?;
    r.skip(usize::try_from(n.div_ceil(8)).map_err(|_| bad())?).ok_or_else(bad)?;
    // The optional metadata: type, length, value, to the end.
    while let Some(kind) = r.byte() {
        let len = r.lenenc().and_then(|l| usize::try_from(l).ok()).ok_or_else(bad)?;
        let value = r.take(len).ok_or_else(bad)?;
        // SET_STR_VALUE (5) and ENUM_STR_VALUE (6): per column a count, then that many strings.
        if kind == 5 || kind == 6 {
            let mut v = Reader(value);
            while !v.0.is_empty() {
                let count = v.lenenc().ok_or_else(bad)?;
                for _ in 0..count {
                    let l = v.lenenc().and_then(|l| usize::try_from(l).ok()).ok_or_else(bad)?;
                    v.skip(l).ok_or_else(bad)?;
                }
            }
        }
    }
    Ok(())
}

/// Bounds-checked reads of MySQL's wire integers.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn lenenc(&mut self) -> Option<u64> {
        let le = |b: &[u8]| b.iter().rev().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
        match self.byte()? {
            n @ 0..=0xfa => Some(u64::from(n)),
            0xfc => self.take(2).map(le),
            0xfd => self.take(3).map(le),
            0xfe => self.take(8).map(le),
            _ => None,
        }
    }
}

/// Build a table's schema from a table map, using information_schema (`info`, by column name)
/// for what the map does not say.
pub fn from_table_map(
    tme: &TableMapEvent<'_>,
    info: &[InfoColumn],
    connector: &str,
    metrics: &Metrics,
) -> Result<TableSchema, String> {
    let n = tme.columns_count() as usize;
    check_optional_metadata(tme)?;
    let mut names: Vec<String> = Vec::new();
    let mut pk: Vec<usize> = Vec::new();
    let mut enums: Vec<Vec<String>> = Vec::new();
    let mut sets: Vec<Vec<String>> = Vec::new();
    for field in tme.iter_optional_meta() {
        match field {
            Ok(OptionalMetadataField::ColumnName(cols)) => {
                for c in cols.iter_names() {
                    names.push(c.map_err(|e| e.to_string())?.name().into_owned());
                }
            }
            Ok(OptionalMetadataField::SimplePrimaryKey(k)) => {
                for i in k.iter_indexes() {
                    pk.push(i.map_err(|e| e.to_string())? as usize);
                }
            }
            Ok(OptionalMetadataField::PrimaryKeyWithPrefix(k)) => {
                for key in k.iter_keys() {
                    pk.push(key.map_err(|e| e.to_string())?.column_index() as usize);
                }
            }
            Ok(OptionalMetadataField::EnumStrValue(e)) => {
                for col in e.iter_values() {
                    enums.push(
                        col.map_err(|e| e.to_string())?.values().iter().map(|v| v.value().into_owned()).collect(),
                    );
                }
            }
            Ok(OptionalMetadataField::SetStrValue(e)) => {
                for col in e.iter_values() {
                    sets.push(
                        col.map_err(|e| e.to_string())?.values().iter().map(|v| v.value().into_owned()).collect(),
                    );
                }
            }
            // Other fields (charsets, signedness, geometry) come from information_schema by name,
            // which avoids the servers' differing rules for which columns those lists count.
            Ok(_) | Err(_) => {}
        }
    }
    let by_name: HashMap<&str, &InfoColumn> = info.iter().map(|c| (c.name.as_str(), c)).collect();
    if names.len() != n {
        // No FULL metadata: take names from information_schema, when it agrees on the count.
        if info.len() != n {
            return Err(format!(
                "the table map has {n} columns and no column names (binlog_row_metadata is not FULL), and information_schema now lists {}; set binlog_row_metadata=FULL",
                info.len()
            ));
        }
        names = info.iter().map(|c| c.name.clone()).collect();
    }
    if pk.is_empty() {
        pk = names
            .iter()
            .enumerate()
            .filter(|(_, nm)| by_name.get(nm.as_str()).is_some_and(|c| c.primary))
            .map(|(i, _)| i)
            .collect();
    }
    let cols: Vec<MapColumn> = (0..n)
        .map(|i| MapColumn {
            ty: tme.get_column_type(i).ok().flatten(),
            meta: tme.get_column_metadata(i).map(<[u8]>::to_vec).unwrap_or_default(),
        })
        .collect();
    let table = Arc::new(TableRef {
        db: tme.database_name().as_ref().into(),
        schema: tme.database_name().as_ref().into(),
        name: tme.table_name().as_ref().into(),
    });
    let qualified = table.to_string();
    let (mut next_enum, mut next_set) = (0, 0);
    let mut columns = Vec::with_capacity(n);
    for (name, col) in names.iter().zip(&cols) {
        let info = by_name.get(name.as_str()).copied();
        let kind = kind_from_map(
            col,
            info,
            &mut || {
                next_enum += 1;
                enums.get(next_enum - 1).cloned()
            },
            &mut || {
                next_set += 1;
                sets.get(next_set - 1).cloned()
            },
        );
        let fallbacks =
            metrics::fallback_counter(metrics, connector, &qualified, name, kind.fallback_name().unwrap_or("none"));
        columns.push(Column { name: Arc::from(name.as_str()), kind, fallbacks });
    }
    if let Some(bad) = pk.iter().find(|&&i| i >= n) {
        return Err(format!("the table map names key column {bad} of {n}"));
    }
    let by_primary_key = !pk.is_empty();
    let key = if by_primary_key { pk } else { (0..n).collect() };
    let counters = OpCounters::new(metrics, connector, &qualified);
    Ok(TableSchema { table, columns, key, by_primary_key, counters })
}

/// Build a table's schema from information_schema alone (for snapshots).
pub fn from_info(db: &str, table: &str, info: &[InfoColumn], connector: &str, metrics: &Metrics) -> TableSchema {
    let table = Arc::new(TableRef { db: db.into(), schema: db.into(), name: table.into() });
    let qualified = table.to_string();
    let columns: Vec<Column> = info
        .iter()
        .map(|c| {
            let kind = kind_from_info(c);
            let fallbacks = metrics::fallback_counter(
                metrics,
                connector,
                &qualified,
                &c.name,
                kind.fallback_name().unwrap_or("none"),
            );
            Column { name: Arc::from(c.name.as_str()), kind, fallbacks }
        })
        .collect();
    let pk: Vec<usize> = info.iter().enumerate().filter(|(_, c)| c.primary).map(|(i, _)| i).collect();
    let by_primary_key = !pk.is_empty();
    let key = if by_primary_key { pk } else { (0..columns.len()).collect() };
    let counters = OpCounters::new(metrics, connector, &qualified);
    TableSchema { table, columns, key, by_primary_key, counters }
}

fn kind_from_map(
    col: &MapColumn,
    info: Option<&InfoColumn>,
    next_enum: &mut dyn FnMut() -> Option<Vec<String>>,
    next_set: &mut dyn FnMut() -> Option<Vec<String>>,
) -> Kind {
    use ColumnType::*;
    let from_info = info.map(kind_from_info);
    let unsigned = matches!(from_info, Some(Kind::Int { unsigned: true, .. }));
    let m0 = col.meta.first().copied().unwrap_or(0);
    let m1 = col.meta.get(1).copied().unwrap_or(0);
    let Some(ty) = col.ty else { return Kind::Other("unknown".into()) };
    match ty {
        MYSQL_TYPE_TINY => Kind::Int { unsigned, bytes: 1 },
        MYSQL_TYPE_SHORT => Kind::Int { unsigned, bytes: 2 },
        MYSQL_TYPE_INT24 => Kind::Int { unsigned, bytes: 3 },
        MYSQL_TYPE_LONG => Kind::Int { unsigned, bytes: 4 },
        MYSQL_TYPE_LONGLONG => Kind::Int { unsigned, bytes: 8 },
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => Kind::Decimal { scale: Some(m1 as u16) },
        MYSQL_TYPE_FLOAT => Kind::Float,
        MYSQL_TYPE_DOUBLE => Kind::Double,
        MYSQL_TYPE_YEAR => Kind::Year,
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Kind::Date,
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => Kind::Time { fsp: m0.min(6) },
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => Kind::DateTime { fsp: m0.min(6) },
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp { fsp: m0.min(6) },
        MYSQL_TYPE_BIT => Kind::Bit { bits: m1 as u16 * 8 + m0 as u16 },
        MYSQL_TYPE_ENUM => match next_enum() {
            Some(labels) => Kind::Enum(labels.into()),
            None => from_info.filter(|k| matches!(k, Kind::Enum(_))).unwrap_or(Kind::Other("enum".into())),
        },
        MYSQL_TYPE_SET => match next_set() {
            Some(labels) => Kind::Set(labels.into()),
            None => from_info.filter(|k| matches!(k, Kind::Set(_))).unwrap_or(Kind::Other("set".into())),
        },
        MYSQL_TYPE_JSON => Kind::Json,
        MYSQL_TYPE_STRING
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB => match from_info {
            Some(k @ (Kind::Uuid | Kind::Json | Kind::Text | Kind::Other(_))) => k,
            Some(Kind::Binary { .. }) if ty == MYSQL_TYPE_STRING => {
                // CHAR/BINARY(n): byte length from the metadata.
                let len = if m0 & 0x30 != 0x30 {
                    (m1 as usize) | ((((m0 & 0x30) ^ 0x30) as usize) << 4)
                } else {
                    m1 as usize
                };
                Kind::Binary { pad_to: Some(len) }
            }
            Some(Kind::Binary { .. }) => Kind::Binary { pad_to: None },
            // Not in information_schema (dropped since): decide per value (valid UTF-8 is text).
            _ => Kind::Text,
        },
        MYSQL_TYPE_GEOMETRY => Kind::Other("geometry".into()),
        other => Kind::Other(format!("{other:?}").trim_start_matches("MYSQL_TYPE_").to_lowercase()),
    }
}

/// Where a value comes from: the binlog and the query protocol encode some types differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Binlog,
    Query,
}

fn float_from_f32(f: f32) -> f64 {
    // Keep what MySQL shows (1.1, not 1.100000023841858).
    f.to_string().parse().unwrap_or(f as f64)
}

fn date_days(y: u16, m: u8, d: u8) -> Option<i32> {
    if y == 0 || m == 0 || d == 0 {
        return None; // MySQL's zero date
    }
    i32::try_from(days_from_civil(y as i64, m as u32, d as u32)).ok()
}

fn datetime_micros(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Option<i64> {
    let days = date_days(y, mo, d)? as i64;
    Some(days * MICROS_PER_DAY + ((h as i64 * 60 + mi as i64) * 60 + s as i64) * MICROS_PER_SEC + us as i64)
}

fn uuid_text(mut b: Vec<u8>) -> String {
    b.resize(16, 0);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn text_or_bytes(b: Vec<u8>) -> (Value, bool) {
    match String::from_utf8(b) {
        Ok(s) => (Value::Text(s), false),
        Err(e) => (Value::Bytes(e.into_bytes()), true),
    }
}

/// Convert one value. Returns the value and whether it fell back (unsupported type or an
/// unexpected form, passed on as text or bytes).
pub fn convert(kind: &Kind, v: BinlogValue<'_>, origin: Origin) -> (Value, bool) {
    let v = match v {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(j) => {
            return match j.parse() {
                Ok(dom) => (Value::Json(super::json::to_text(&dom)), false),
                Err(e) => (Value::Text(format!("invalid JSON in binlog: {e}")), true),
            }
        }
        BinlogValue::JsonDiff(_) => {
            return (
                Value::Text("partial JSON update (binlog_row_value_options=PARTIAL_JSON is not supported)".into()),
                true,
            )
        }
    };
    if matches!(v, MyValue::NULL) {
        return (Value::Null, false);
    }
    let converted = match (kind, v) {
        (Kind::Int { unsigned, bytes }, MyValue::Int(i)) => Some(int_value(i as u64, *unsigned, *bytes)),
        (Kind::Int { unsigned, bytes }, MyValue::UInt(u)) => Some(int_value(u, *unsigned, *bytes)),
        (Kind::Decimal { scale }, MyValue::Bytes(b)) => {
            String::from_utf8(b).ok().map(|t| Value::Numeric { text: t.into(), scale: *scale })
        }
        (Kind::Float, MyValue::Float(f)) => Some(Value::Float(float_from_f32(f))),
        (Kind::Float | Kind::Double, MyValue::Double(f)) => Some(Value::Float(f)),
        (Kind::Double, MyValue::Float(f)) => Some(Value::Float(float_from_f32(f))),
        (Kind::Text, MyValue::Bytes(b)) => return text_or_bytes(b),
        (Kind::Json, MyValue::Bytes(b)) => String::from_utf8(b).ok().map(|t| Value::Json(super::json::compact(&t))),
        (Kind::Binary { pad_to }, MyValue::Bytes(mut b)) => {
            if let Some(n) = pad_to {
                if origin == Origin::Binlog && b.len() < *n {
                    b.resize(*n, 0);
                }
            }
            Some(Value::Bytes(b))
        }
        (Kind::Date, MyValue::Date(y, m, d, ..)) => Some(date_days(y, m, d).map_or(Value::Null, Value::Date)),
        (Kind::DateTime { fsp }, MyValue::Date(y, mo, d, h, mi, s, us)) => Some(
            datetime_micros(y, mo, d, h, mi, s, us)
                .map_or(Value::Null, |micros| Value::Timestamp { micros, precision: *fsp }),
        ),
        (Kind::Timestamp { fsp }, MyValue::Date(y, mo, d, h, mi, s, us)) => Some(
            datetime_micros(y, mo, d, h, mi, s, us)
                .map_or(Value::Null, |micros| Value::TimestampTz { micros, precision: *fsp }),
        ),
        (Kind::Timestamp { fsp }, MyValue::Bytes(b)) => parse_epoch(&b).map(|micros| {
            if micros == 0 {
                Value::Null // MySQL's zero timestamp
            } else {
                Value::TimestampTz { micros, precision: *fsp }
            }
        }),
        (Kind::Timestamp { fsp }, MyValue::Int(secs)) => {
            Some(Value::TimestampTz { micros: secs * MICROS_PER_SEC, precision: *fsp })
        }
        (Kind::Time { fsp }, MyValue::Time(neg, days, h, m, s, us)) => {
            let micros = ((days as i64 * 24 + h as i64) * 3600 + m as i64 * 60 + s as i64) * MICROS_PER_SEC + us as i64;
            Some(Value::Time { micros: if neg { -micros } else { micros }, precision: *fsp })
        }
        (Kind::Year, MyValue::Bytes(b)) => {
            // The binlog decoder writes 1900 + the stored byte, so YEAR 0000 arrives as "1900".
            std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .map(|y| Value::Int(if y == 1900 { 0 } else { y }))
        }
        (Kind::Year, MyValue::Int(y)) => Some(Value::Int(y)),
        (Kind::Year, MyValue::UInt(y)) => Some(Value::Int(y as i64)),
        (Kind::Enum(labels), MyValue::Int(i)) => Some(Value::Text(if i <= 0 {
            String::new()
        } else {
            labels.get(i as usize - 1).cloned().unwrap_or_default()
        })),
        (Kind::Enum(_) | Kind::Set(_), MyValue::Bytes(b)) if origin == Origin::Query => return text_or_bytes(b),
        (Kind::Set(labels), MyValue::Bytes(b)) => {
            let mut chosen = Vec::new();
            for (i, label) in labels.iter().enumerate() {
                if b.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0) {
                    chosen.push(label.as_str());
                }
            }
            Some(Value::Text(chosen.join(",")))
        }
        (Kind::Set(labels), MyValue::Int(mask)) => Some(Value::Text(
            labels
                .iter()
                .enumerate()
                .filter(|(i, _)| mask as u64 & (1 << i) != 0)
                .map(|(_, l)| l.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )),
        (Kind::Bit { bits }, MyValue::Bytes(b)) => Some(if *bits == 1 {
            Value::Bool(b.iter().any(|x| *x != 0))
        } else {
            // Debezium's Bits: little-endian bytes.
            Value::Bytes(b.into_iter().rev().collect())
        }),
        (Kind::Bit { bits }, MyValue::Int(i)) => Some(if *bits == 1 {
            Value::Bool(i != 0)
        } else {
            Value::Bytes((i as u64).to_le_bytes()[..(*bits as usize).div_ceil(8)].to_vec())
        }),
        (Kind::Uuid, MyValue::Bytes(b)) if origin == Origin::Binlog => Some(Value::Text(uuid_text(b))),
        (Kind::Uuid, MyValue::Bytes(b)) => return text_or_bytes(b),
        (Kind::Other(_), MyValue::Bytes(b)) => {
            let (v, _) = text_or_bytes(b);
            return (v, true);
        }
        (_, other) => return (Value::Text(format!("{other:?}")), true),
    };
    match converted {
        Some(v) => (v, false),
        None => (Value::Text("unparsable value".into()), true),
    }
}

/// An integer reinterpreted at the column's width and signedness (the binlog decoder applies
/// signedness only as far as the server's metadata lets it).
fn int_value(raw: u64, unsigned: bool, bytes: u8) -> Value {
    let bits = bytes as u32 * 8;
    if unsigned {
        let v = if bits == 64 { raw } else { raw & ((1u64 << bits) - 1) };
        if v > i64::MAX as u64 {
            Value::UInt(v)
        } else {
            Value::Int(v as i64)
        }
    } else if bits == 64 {
        Value::Int(raw as i64)
    } else {
        let shift = 64 - bits;
        Value::Int(((raw << shift) as i64) >> shift)
    }
}

/// `"1700000000"` or `"1700000000.120000"` to microseconds.
fn parse_epoch(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let micros = if frac.is_empty() {
        0
    } else {
        let f: i64 = frac.get(..frac.len().min(6))?.parse().ok()?;
        f * 10i64.pow(6 - frac.len().min(6) as u32)
    };
    Some(secs.parse::<i64>().ok()? * MICROS_PER_SEC + micros)
}

impl TableSchema {
    /// Convert a row image (values by image position) into a row. `present` lists the table
    /// column index of each image position. Returns the row and how many values fell back.
    pub fn row(&self, values: Vec<(usize, BinlogValue<'_>)>, origin: Origin) -> Row {
        let mut fields = Vec::with_capacity(values.len());
        for (i, v) in values {
            let Some(col) = self.columns.get(i) else { continue };
            let (value, fallback) = convert(&col.kind, v, origin);
            if fallback {
                col.fallbacks.inc();
            }
            fields.push((col.name.clone(), value));
        }
        Row(fields)
    }

    /// The key of a row, `None` when a key column is missing from it.
    pub fn key_of(&self, row: &Row) -> Option<Row> {
        let mut out = Vec::with_capacity(self.key.len());
        for &i in &self.key {
            let name = &self.columns[i].name;
            out.push((name.clone(), row.get(name)?.clone()));
        }
        Some(Row(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(data_type: &str, column_type: &str, charset: Option<&str>) -> InfoColumn {
        InfoColumn {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            charset: charset.map(str::to_string),
            primary: false,
        }
    }

    #[test]
    fn kinds_from_information_schema() {
        assert_eq!(
            kind_from_info(&info("bigint", "bigint(20) unsigned", None)),
            Kind::Int { unsigned: true, bytes: 8 }
        );
        assert_eq!(kind_from_info(&info("decimal", "decimal(10,2)", None)), Kind::Decimal { scale: Some(2) });
        assert_eq!(kind_from_info(&info("datetime", "datetime(6)", None)), Kind::DateTime { fsp: 6 });
        assert_eq!(kind_from_info(&info("binary", "binary(16)", None)), Kind::Binary { pad_to: Some(16) });
        assert_eq!(kind_from_info(&info("varchar", "varchar(10)", Some("utf8mb4"))), Kind::Text);
        assert_eq!(
            kind_from_info(&info("enum", "enum('a','it''s','c\\\\d')", None)),
            Kind::Enum(vec!["a".to_string(), "it's".into(), "c\\d".into()].into())
        );
        assert_eq!(kind_from_info(&info("bit", "bit(5)", None)), Kind::Bit { bits: 5 });
    }

    #[test]
    fn integers_at_their_width() {
        assert_eq!(int_value(-56i64 as u64, true, 1), Value::Int(200));
        assert_eq!(int_value(200, false, 1), Value::Int(-56));
        assert_eq!(int_value(u64::MAX, true, 8), Value::UInt(u64::MAX));
        assert_eq!(int_value(-1i64 as u64, false, 8), Value::Int(-1));
        assert_eq!(int_value(0xFF_FFFF, false, 3), Value::Int(-1));
        assert_eq!(int_value(-1i64 as u64, true, 3), Value::Int(0xFF_FFFF));
    }

    #[test]
    fn binlog_forms() {
        let bin = |kind: &Kind, v: MyValue| convert(kind, BinlogValue::Value(v), Origin::Binlog).0;
        assert_eq!(
            bin(&Kind::Timestamp { fsp: 6 }, MyValue::Bytes(b"1700000000.120000".to_vec())),
            Value::TimestampTz { micros: 1_700_000_000_120_000, precision: 6 }
        );
        assert_eq!(bin(&Kind::Year, MyValue::Bytes(b"1900".to_vec())), Value::Int(0));
        assert_eq!(bin(&Kind::Year, MyValue::Bytes(b"2024".to_vec())), Value::Int(2024));
        let labels: Arc<[String]> = vec!["a".to_string(), "b".into(), "c".into()].into();
        assert_eq!(bin(&Kind::Enum(labels.clone()), MyValue::Int(2)), Value::Text("b".into()));
        assert_eq!(bin(&Kind::Set(labels), MyValue::Bytes(vec![0b101])), Value::Text("a,c".into()));
        assert_eq!(bin(&Kind::Bit { bits: 1 }, MyValue::Bytes(vec![1])), Value::Bool(true));
        assert_eq!(bin(&Kind::Bit { bits: 10 }, MyValue::Bytes(vec![0x02, 0x01])), Value::Bytes(vec![0x01, 0x02]));
        assert_eq!(bin(&Kind::Binary { pad_to: Some(4) }, MyValue::Bytes(vec![1])), Value::Bytes(vec![1, 0, 0, 0]));
        assert_eq!(
            bin(&Kind::Uuid, MyValue::Bytes(vec![0x12, 0x34])),
            Value::Text("12340000-0000-0000-0000-000000000000".into())
        );
        assert_eq!(
            bin(&Kind::Time { fsp: 6 }, MyValue::Time(true, 1, 2, 3, 4, 5)),
            Value::Time { micros: -((26 * 3600 + 3 * 60 + 4) * 1_000_000 + 5), precision: 6 }
        );
        assert_eq!(bin(&Kind::Float, MyValue::Float(1.1)), Value::Float(1.1));
        assert_eq!(bin(&Kind::Date, MyValue::Date(0, 0, 0, 0, 0, 0, 0)), Value::Null);
    }
}
