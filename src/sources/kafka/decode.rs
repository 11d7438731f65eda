//! A Kafka record of a Debezium topic (tidemark's or Debezium's own, with or without the schema
//! envelope) as a change event.
//!
//! The version that fences the event comes from the `tidemark.version` header when tidemark's
//! sink wrote the record (exact), else from the `source` block:
//! - PostgreSQL: `(lsn, 0)`. A row's changes have growing LSNs in commit order (a transaction
//!   that changes a row holds its lock until it commits, so the next change of that row is
//!   written after that commit), and snapshot rows carry the snapshot's LSN, older than every
//!   streamed change. Weaker than tidemark's own: nothing, for one key.
//! - MySQL: `(binlog file sequence << 32 | pos, row + 1)`, snapshot rows `(… snapshot pos, 0)`: the
//!   binlog order. Weaker: positions belong to one server, so after a failover to another
//!   server (new binlog coordinates) versions are not comparable — re-snapshot the caches.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value as Json;

use crate::connector::position::coordinate;
use crate::event::{ChangeEvent, Op, Row, SnapshotFlag, SourceMeta, TableRef, Value, Version};
use crate::sinks::kafka::VERSION_HEADER;

/// What a record turned out to be.
#[derive(Debug)]
pub enum Decoded {
    Event(Box<ChangeEvent>),
    /// A tombstone (the delete before it did the work), or a heartbeat record.
    Skip,
}

/// Decode one record. `Err` says why it is not a change event (the record is then handled by
/// the source's `on_error`).
pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>, version_header: Option<&[u8]>) -> Result<Decoded, String> {
    let header_version = version_header
        .map(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(Version::from_hex)
                .ok_or_else(|| format!("bad {VERSION_HEADER} header"))
        })
        .transpose()?;
    let key_row = key.map(parse_key).transpose()?.flatten();
    // A tombstone follows its delete, which did the work (and names the table, which a
    // tombstone does not).
    let Some(value) = value else { return Ok(Decoded::Skip) };
    let mut doc: Doc<'_> = parse(value)?;
    // Kafka Connect's JSON converter with schemas on wraps the value: `{"schema":…,"payload":…}`.
    if let (Some(payload), Some(_)) = (doc.payload, &doc.schema) {
        doc = parse(payload.get().as_bytes())?;
    }
    // Debezium's heartbeat records (a topic pattern may take in the heartbeat topic): no change.
    if doc.op.is_none() && doc.ts_ms.is_some() && key_row.as_ref().is_some_and(|k| k.get("serverName").is_some()) {
        return Ok(Decoded::Skip);
    }
    let op = match doc.op.as_deref() {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("r") => Op::Read,
        Some("t") => Op::Truncate,
        Some(other) => return Err(format!("op `{other}` is not a row change")),
        None => return Err("no `op`: not a Debezium change event".into()),
    };
    let source = doc.source.ok_or("no `source` block")?;
    let connector = source.connector.as_deref().unwrap_or_default();
    let db = source.db.as_deref().ok_or("source.db missing")?;
    let name = source.table.as_deref().ok_or("source.table missing")?;
    let schema = if connector == "postgresql" { source.schema.as_deref().ok_or("source.schema missing")? } else { db };
    let table = Arc::new(TableRef { db: db.into(), schema: schema.into(), name: name.into() });
    let snapshot = match source.snapshot.as_deref() {
        None | Some("false") => SnapshotFlag::No,
        Some("first") => SnapshotFlag::First,
        Some("first_in_data_collection") => SnapshotFlag::FirstInTable,
        Some("last_in_data_collection") => SnapshotFlag::LastInTable,
        Some("last") => SnapshotFlag::Last,
        Some(_) => SnapshotFlag::Yes,
    };
    let commit_us = source.ts_us.or_else(|| source.ts_ms.map(|ms| ms * 1000)).unwrap_or(0);
    let (meta, derived) = match connector {
        "postgresql" => {
            let lsn = source.lsn.ok_or("source.lsn missing")?;
            (SourceMeta::Postgres { lsn, last_commit_lsn: None, tx_id: source.tx_id }, Version::new(lsn, 0))
        }
        "mysql" => {
            let file = source.file.as_deref().ok_or("source.file missing")?;
            let pos = source.pos.ok_or("source.pos missing")?;
            let row = source.row.unwrap_or(0);
            let lo = if op == Op::Read { 0 } else { row + 1 };
            let meta = SourceMeta::Mysql {
                server_id: source.server_id.unwrap_or(0) as u32,
                gtid: source.gtid.as_deref().map(Arc::from),
                file: file.into(),
                pos,
                row: row as u32,
                thread: source.thread.map(|t| t as u32),
            };
            (meta, Version::new(coordinate(file, pos), lo))
        }
        other => return Err(format!("source.connector `{other}` is not postgresql or mysql")),
    };
    let (before, after) = (doc.before.map(|c| c.0), doc.after.map(|c| c.0));
    let partial = after.as_ref().is_some_and(|r| r.0.iter().any(|(_, v)| matches!(v, Value::Unavailable)));
    let key = match (op, key_row) {
        (Op::Truncate, _) => Row::default(),
        (_, Some(k)) => k,
        _ => return Err("the record has no key object".into()),
    };
    if op != Op::Truncate && before.is_none() && after.is_none() {
        return Err("neither `before` nor `after`".into());
    }
    Ok(Decoded::Event(Box::new(ChangeEvent {
        op,
        table,
        key,
        before,
        after,
        partial,
        version: header_version.unwrap_or(derived),
        commit_us,
        snapshot,
        source: meta,
    })))
}

/// A record value: Debezium's envelope, or the schema envelope around it. Read without building a
/// JSON tree: strings borrowed where they have no escapes, rows straight into [`Row`]s.
#[derive(Deserialize)]
struct Doc<'a> {
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    schema: Option<IgnoredAny>,
    #[serde(default)]
    before: Option<Cols>,
    #[serde(default)]
    after: Option<Cols>,
    #[serde(default, borrow)]
    source: Option<Source<'a>>,
    #[serde(default, borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<IgnoredAny>,
}

/// The fields of Debezium's `source` block tidemark reads (the others are skipped).
#[derive(Deserialize)]
struct Source<'a> {
    #[serde(default, borrow)]
    connector: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    db: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    schema: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    table: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    snapshot: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_us: Option<i64>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    lsn: Option<u64>,
    #[serde(default, rename = "txId")]
    tx_id: Option<u64>,
    #[serde(default, borrow)]
    file: Option<Cow<'a, str>>,
    #[serde(default)]
    pos: Option<u64>,
    #[serde(default)]
    row: Option<u64>,
    #[serde(default)]
    server_id: Option<u64>,
    #[serde(default, borrow)]
    gtid: Option<Cow<'a, str>>,
    #[serde(default)]
    thread: Option<u64>,
}

/// A JSON syntax error is "not JSON"; valid JSON of the wrong shape is not a change event.
fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!("not a Debezium change event: {e}"),
        _ => format!("not JSON: {e}"),
    })
}

/// A record key: the key columns, unwrapped from the schema envelope when it has one; `None`
/// for a null key.
fn parse_key(bytes: &[u8]) -> Result<Option<Row>, String> {
    let Some(Cols(row)) = parse::<Option<Cols>>(bytes)? else { return Ok(None) };
    if let [(s, _), (p, Value::Json(payload))] = row.0.as_slice() {
        if &**s == "schema" && &**p == "payload" {
            return parse::<Option<Cols>>(payload.as_bytes()).map(|c| c.map(|c| c.0));
        }
    }
    Ok(Some(row))
}

/// A JSON object as a row: each member a column, its value as [`Col`] reads it.
struct Cols(Row);

impl<'de> Deserialize<'de> for Cols {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cols;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of columns")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cols, A::Error> {
                let mut row = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Name(name)) = map.next_key()? {
                    let Col(v) = map.next_value()?;
                    row.push((name, v));
                }
                Ok(Cols(Row(row)))
            }
        }
        d.deserialize_map(V)
    }
}

/// A column name, borrowed from the record while read.
struct Name(Arc<str>);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a column name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Name, E> {
                Ok(Name(Arc::from(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A column's JSON as a value: numbers, strings and booleans as themselves, arrays element by
/// element, objects (Debezium's structs: geometry, variable-scale decimals) as JSON text.
struct Col(Value);

impl<'de> Deserialize<'de> for Col {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Col;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a column value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Col, E> {
                Ok(Col(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Col, E> {
                Ok(Col(Value::Null))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Col, E> {
                Ok(Col(Value::Bool(b)))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<Col, E> {
                Ok(Col(Value::Int(i)))
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<Col, E> {
                Ok(Col(i64::try_from(u).map_or(Value::UInt(u), Value::Int)))
            }
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<Col, E> {
                Ok(Col(Value::Float(f)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Col, E> {
                Ok(Col(if s == crate::event::encode::UNAVAILABLE_PLACEHOLDER {
                    Value::Unavailable
                } else {
                    Value::Text(s.to_string())
                }))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Col, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                while let Some(Col(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Col(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Col, A::Error> {
                let j = Json::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Col(Value::Json(j.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, value: &str, header: Option<&str>) -> ChangeEvent {
        match decode(Some(key.as_bytes()), Some(value.as_bytes()), header.map(str::as_bytes)).unwrap() {
            Decoded::Event(e) => *e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debeziums_records_with_and_without_schemas() {
        let value = r#"{"before":null,"after":{"id":6,"n":"AeJA","big":"__debezium_unavailable_value","f":1.25},
            "source":{"connector":"postgresql","db":"shop","schema":"public","table":"t","ts_us":1796134139425851,
            "lsn":35432520,"txId":745},"op":"u","ts_ms":1}"#;
        let e = event(r#"{"id":6}"#, value, None);
        assert_eq!((e.op, e.version, e.commit_us), (Op::Update, Version::new(35_432_520, 0), 1_796_134_139_425_851));
        assert_eq!(e.key, Row(vec![("id".into(), Value::Int(6))]));
        assert!(e.partial && e.after.as_ref().unwrap().get("big").is_none());
        let wrapped = format!(r#"{{"schema":{{"type":"struct"}},"payload":{value}}}"#);
        let w = event(r#"{"schema":{"type":"struct"},"payload":{"id":6}}"#, &wrapped, None);
        assert_eq!((w.op, w.version, &w.key), (e.op, e.version, &e.key));
        // tidemark's header wins over the derived version.
        let h = event(r#"{"id":6}"#, value, Some(&Version::new(9, 3).to_hex()));
        assert_eq!(h.version, Version::new(9, 3));
    }

    #[test]
    fn mysql_versions_follow_the_binlog() {
        let v = |op: &str, pos: u64, row: u64| {
            let value = format!(
                r#"{{"before":null,"after":{{"id":1}},"source":{{"connector":"mysql","db":"shop","table":"t",
                "file":"binlog.000002","pos":{pos},"row":{row},"ts_ms":5}},"op":"{op}"}}"#
            );
            event(r#"{"id":1}"#, &value, None).version
        };
        assert!(v("r", 4987, 0) < v("c", 5292, 0));
        assert!(v("c", 5292, 0) < v("u", 5292, 1));
        assert_eq!(v("c", 5292, 1).lo, 2);
    }

    #[test]
    fn what_is_not_a_change_is_said() {
        let bad =
            |key: Option<&str>, value: &str| decode(key.map(str::as_bytes), Some(value.as_bytes()), None).unwrap_err();
        assert!(bad(Some("{}"), "not json").contains("not JSON"));
        assert!(bad(Some("{}"), r#"{"op":"m","source":{}}"#).contains("op `m`"));
        assert!(bad(Some("{}"), r#"{"after":{}}"#).contains("no `op`"));
        assert!(matches!(decode(Some(b"{\"id\":1}"), None, None), Ok(Decoded::Skip)));
        let heartbeat = decode(Some(b"{\"serverName\":\"shop\"}"), Some(b"{\"ts_ms\":1796000000000}"), None);
        assert!(matches!(heartbeat, Ok(Decoded::Skip)), "{heartbeat:?}");
    }
}
