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

use std::sync::Arc;

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
    let key_json = key.map(parse).transpose()?.map(unwrap_payload);
    // A tombstone follows its delete, which did the work (and names the table, which a
    // tombstone does not).
    let Some(value) = value else { return Ok(Decoded::Skip) };
    let envelope = unwrap_payload(parse(value)?);
    // Debezium's heartbeat records (a topic pattern may take in the heartbeat topic): no change.
    if envelope.get("op").is_none()
        && envelope.get("ts_ms").is_some()
        && key_json.as_ref().is_some_and(|k| k.get("serverName").is_some())
    {
        return Ok(Decoded::Skip);
    }
    let op = match envelope.get("op").and_then(Json::as_str) {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("r") => Op::Read,
        Some("t") => Op::Truncate,
        Some(other) => return Err(format!("op `{other}` is not a row change")),
        None => return Err("no `op`: not a Debezium change event".into()),
    };
    let source = envelope.get("source").and_then(Json::as_object).ok_or("no `source` block")?;
    let text = |k: &str| source.get(k).and_then(Json::as_str);
    let connector = text("connector").unwrap_or_default();
    let db = text("db").ok_or("source.db missing")?;
    let name = text("table").ok_or("source.table missing")?;
    let schema = if connector == "postgresql" { text("schema").ok_or("source.schema missing")? } else { db };
    let table = Arc::new(TableRef { db: db.into(), schema: schema.into(), name: name.into() });
    let snapshot = match text("snapshot") {
        None | Some("false") => SnapshotFlag::No,
        Some("first") => SnapshotFlag::First,
        Some("first_in_data_collection") => SnapshotFlag::FirstInTable,
        Some("last_in_data_collection") => SnapshotFlag::LastInTable,
        Some("last") => SnapshotFlag::Last,
        Some(_) => SnapshotFlag::Yes,
    };
    let int = |k: &str| source.get(k).and_then(Json::as_u64);
    let commit_us = source
        .get("ts_us")
        .and_then(Json::as_i64)
        .or_else(|| source.get("ts_ms").and_then(Json::as_i64).map(|ms| ms * 1000))
        .unwrap_or(0);
    let (meta, derived) = match connector {
        "postgresql" => {
            let lsn = int("lsn").ok_or("source.lsn missing")?;
            (SourceMeta::Postgres { lsn, last_commit_lsn: None, tx_id: int("txId") }, Version::new(lsn, 0))
        }
        "mysql" => {
            let file = text("file").ok_or("source.file missing")?;
            let pos = int("pos").ok_or("source.pos missing")?;
            let row = int("row").unwrap_or(0);
            let lo = if op == Op::Read { 0 } else { row + 1 };
            let meta = SourceMeta::Mysql {
                server_id: int("server_id").unwrap_or(0) as u32,
                gtid: text("gtid").map(Arc::from),
                file: file.into(),
                pos,
                row: row as u32,
                thread: int("thread").map(|t| t as u32),
            };
            (meta, Version::new(coordinate(file, pos), lo))
        }
        other => return Err(format!("source.connector `{other}` is not postgresql or mysql")),
    };
    let row = |k: &str| -> Result<Option<Row>, String> {
        match envelope.get(k) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Object(m)) => {
                Ok(Some(Row(m.iter().map(|(n, v)| (Arc::from(n.as_str()), value_of(v))).collect())))
            }
            Some(_) => Err(format!("`{k}` is not an object")),
        }
    };
    let (before, after) = (row("before")?, row("after")?);
    let partial = after.as_ref().is_some_and(|r| r.0.iter().any(|(_, v)| matches!(v, Value::Unavailable)));
    let key = match (op, &key_json) {
        (Op::Truncate, _) => Row::default(),
        (_, Some(Json::Object(k))) => Row(k.iter().map(|(n, v)| (Arc::from(n.as_str()), value_of(v))).collect()),
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

fn parse(bytes: &[u8]) -> Result<Json, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))
}

/// Kafka Connect's JSON converter with schemas on wraps the value: `{"schema":…,"payload":…}`.
fn unwrap_payload(j: Json) -> Json {
    match j {
        Json::Object(mut m) if m.len() == 2 && m.contains_key("schema") && m.contains_key("payload") => {
            m.remove("payload").unwrap_or(Json::Null)
        }
        other => other,
    }
}

/// A column's JSON as a value: numbers, strings and booleans as themselves, arrays element by
/// element, objects (Debezium's structs: geometry, variable-scale decimals) as JSON text.
fn value_of(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) if s == crate::event::encode::UNAVAILABLE_PLACEHOLDER => Value::Unavailable,
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(value_of).collect()),
        Json::Object(_) => Value::Json(v.to_string()),
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
