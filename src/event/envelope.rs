//! The Debezium envelope (`before`, `after`, `source`, `transaction`, `op`, `ts_ms`, `ts_us`,
//! `ts_ns`) and key, as Kafka Connect's JsonConverter writes them without a schema block
//! (`schemas.enable=false`): the same fields in the same order as Debezium 3.x, serialized through
//! [`super::json`] so the bytes match too.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value as Json};

use super::encode::Encoded;
use super::{ChangeEvent, Encoding, Op, Row, SourceMeta};

pub const TIDEMARK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A row's columns as a JSON object of Debezium values (documents, expressions).
pub fn row_json(row: &Row, enc: &Encoding) -> Json {
    let mut m = Map::with_capacity(row.len());
    for (name, v) in row.iter() {
        m.insert(name.to_string(), enc.to_json(v));
    }
    Json::Object(m)
}

/// Every column of a row, the placeholder for an unavailable one.
pub struct RowOut<'a>(pub &'a Row, pub &'a Encoding);

impl Serialize for RowOut<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(self.0 .0.len()))?;
        for (name, v) in self.0.iter_all() {
            m.serialize_entry(name, &Encoded(v, self.1))?;
        }
        m.end()
    }
}

/// The Debezium record key: the primary-key columns as an object; `null` for a truncate, which
/// has no key.
pub struct Key<'a>(pub &'a ChangeEvent, pub &'a Encoding);

impl Serialize for Key<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self.0.op {
            Op::Truncate => ser.serialize_unit(),
            _ => RowOut(&self.0.key, self.1).serialize(ser),
        }
    }
}

/// The whole envelope of one event; `now_ns` is when tidemark processed it (the top-level
/// `ts_ms`, `ts_us`, `ts_ns`).
pub struct Envelope<'a> {
    pub ev: &'a ChangeEvent,
    pub connector: &'a str,
    pub enc: &'a Encoding,
    pub now_ns: i64,
}

impl Serialize for Envelope<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let ev = self.ev;
        let mut m = ser.serialize_map(Some(8))?;
        m.serialize_entry("before", &ev.before.as_ref().map(|r| RowOut(r, self.enc)))?;
        m.serialize_entry("after", &ev.after.as_ref().map(|r| RowOut(r, self.enc)))?;
        m.serialize_entry("source", &Source { ev, connector: self.connector })?;
        m.serialize_entry("transaction", &())?;
        m.serialize_entry("op", ev.op.code())?;
        m.serialize_entry("ts_ms", &self.now_ns.div_euclid(1_000_000))?;
        m.serialize_entry("ts_us", &self.now_ns.div_euclid(1_000))?;
        m.serialize_entry("ts_ns", &self.now_ns)?;
        m.end()
    }
}

/// The `source` block, with the fields Debezium 3.x writes for the connector kind, in its order.
pub struct Source<'a> {
    pub ev: &'a ChangeEvent,
    pub connector: &'a str,
}

impl Serialize for Source<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let ev = self.ev;
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("version", TIDEMARK_VERSION)?;
        m.serialize_entry("connector", ev.source.connector())?;
        m.serialize_entry("name", self.connector)?;
        m.serialize_entry("ts_ms", &ev.commit_ts_ms())?;
        m.serialize_entry("snapshot", ev.snapshot.as_str())?;
        m.serialize_entry("db", &*ev.table.db)?;
        match &ev.source {
            SourceMeta::Postgres { lsn, last_commit_lsn, tx_id } => {
                m.serialize_entry("sequence", &sequence(*last_commit_lsn, *lsn))?;
                m.serialize_entry("ts_us", &ev.commit_us)?;
                m.serialize_entry("ts_ns", &ev.commit_us.saturating_mul(1000))?;
                m.serialize_entry("schema", &*ev.table.schema)?;
                m.serialize_entry("table", &*ev.table.name)?;
                m.serialize_entry("txId", tx_id)?;
                m.serialize_entry("lsn", lsn)?;
                m.serialize_entry("xmin", &())?;
                m.serialize_entry("origin", &())?;
                m.serialize_entry("origin_lsn", &())?;
            }
            SourceMeta::Mysql { server_id, gtid, file, pos, row, thread } => {
                m.serialize_entry("sequence", &())?;
                m.serialize_entry("ts_us", &ev.commit_us)?;
                m.serialize_entry("ts_ns", &ev.commit_us.saturating_mul(1000))?;
                m.serialize_entry("table", &*ev.table.name)?;
                m.serialize_entry("server_id", server_id)?;
                m.serialize_entry("gtid", &gtid.as_deref())?;
                m.serialize_entry("file", &**file)?;
                m.serialize_entry("pos", pos)?;
                m.serialize_entry("row", row)?;
                m.serialize_entry("thread", thread)?;
                m.serialize_entry("query", &())?;
            }
        }
        m.end()
    }
}

/// Debezium's PostgreSQL `sequence`: the JSON text `["<last commit lsn>","<lsn>"]`, both as
/// decimal strings, the first `null` before any commit in the stream.
fn sequence(last_commit: Option<u64>, lsn: u64) -> String {
    struct Pair(Option<u64>, u64);
    impl Serialize for Pair {
        fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            let mut seq = ser.serialize_seq(Some(2))?;
            seq.serialize_element(&self.0.map(|l| l.to_string()))?;
            seq.serialize_element(&self.1.to_string())?;
            seq.end()
        }
    }
    super::json::to_string(&Pair(last_commit, lsn))
}

/// The envelope as a `serde_json` value (dead-letter records embed it).
pub fn envelope_json(ev: &ChangeEvent, connector: &str, enc: &Encoding) -> Json {
    serde_json::to_value(Envelope { ev, connector, enc, now_ns: super::time::now_ns() }).unwrap_or(Json::Null)
}

/// The key as a `serde_json` value.
pub fn key_json(ev: &ChangeEvent, enc: &Encoding) -> Json {
    serde_json::to_value(Key(ev, enc)).unwrap_or(Json::Null)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{SnapshotFlag, TableRef, Value, Version};

    fn event(source: SourceMeta) -> ChangeEvent {
        let name: Arc<str> = "id".into();
        ChangeEvent {
            op: Op::Update,
            table: Arc::new(TableRef { db: "shop".into(), schema: "public".into(), name: "customers".into() }),
            key: Row(vec![(name.clone(), Value::Int(7))]),
            before: None,
            after: Some(Row(vec![
                (name, Value::Int(7)),
                ("email".into(), Value::Text("a@b".into())),
                ("bio".into(), Value::Unavailable),
            ])),
            partial: true,
            version: Version::new(100, 1),
            commit_us: 1_700_000_000_123_456,
            snapshot: SnapshotFlag::No,
            source,
        }
    }

    #[test]
    fn envelope_is_debeziums_byte_for_byte() {
        let ev = event(SourceMeta::Postgres { lsn: 35_433_296, last_commit_lsn: Some(35_433_032), tx_id: Some(748) });
        let out = super::super::json::to_string(&Envelope {
            ev: &ev,
            connector: "shop",
            enc: &Encoding::default(),
            now_ns: 1_700_000_001_000_000_007,
        });
        let want = format!(
            concat!(
                r#"{{"before":null,"after":{{"id":7,"email":"a@b","bio":"__debezium_unavailable_value"}},"#,
                r#""source":{{"version":"{}","connector":"postgresql","name":"shop","ts_ms":1700000000123,"#,
                r#""snapshot":"false","db":"shop","sequence":"[\"35433032\",\"35433296\"]","#,
                r#""ts_us":1700000000123456,"ts_ns":1700000000123456000,"schema":"public","table":"customers","#,
                r#""txId":748,"lsn":35433296,"xmin":null,"origin":null,"origin_lsn":null}},"#,
                r#""transaction":null,"op":"u","ts_ms":1700000001000,"ts_us":1700000001000000,"#,
                r#""ts_ns":1700000001000000007}}"#
            ),
            TIDEMARK_VERSION
        );
        assert_eq!(out, want);
        assert_eq!(super::super::json::to_string(&Key(&ev, &Encoding::default())), r#"{"id":7}"#);
    }

    #[test]
    fn mysql_source_block_has_debeziums_fields() {
        let ev = event(SourceMeta::Mysql {
            server_id: 9,
            gtid: Some("u:1".into()),
            file: "binlog.000002".into(),
            pos: 4,
            row: 0,
            thread: Some(31),
        });
        let j: Json = serde_json::from_str(&super::super::json::to_string(&Source { ev: &ev, connector: "shop" }))
            .expect("valid JSON");
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "version",
                "connector",
                "name",
                "ts_ms",
                "snapshot",
                "db",
                "sequence",
                "ts_us",
                "ts_ns",
                "table",
                "server_id",
                "gtid",
                "file",
                "pos",
                "row",
                "thread",
                "query"
            ]
        );
        assert_eq!(j["thread"], 31);
    }
}
