//! The Debezium envelope (`before`, `after`, `source`, `op`, `ts_ms`, `transaction`), as JSON
//! without a schema block (Kafka Connect's `schemas.enable=false`).

use serde_json::{Map, Value as Json};

use super::time::now_ms;
use super::{ChangeEvent, Encoding, Row, SourceMeta};

pub const TIDEMARK_VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn row_json(row: &Row, enc: &Encoding) -> Json {
    let mut m = Map::with_capacity(row.len());
    for (name, v) in row.iter() {
        m.insert(name.to_string(), enc.to_json(v));
    }
    Json::Object(m)
}

/// The Debezium key: the primary-key columns as an object.
pub fn key_json(ev: &ChangeEvent, enc: &Encoding) -> Json {
    row_json(&ev.key, enc)
}

/// The `source` block, with the fields Debezium writes for the connector kind.
pub fn source_json(ev: &ChangeEvent, connector: &str) -> Json {
    let mut m = Map::new();
    m.insert("version".into(), Json::from(TIDEMARK_VERSION));
    m.insert("connector".into(), Json::from(ev.source.connector()));
    m.insert("name".into(), Json::from(connector));
    m.insert("ts_ms".into(), Json::from(ev.commit_ts_ms));
    m.insert("snapshot".into(), Json::from(ev.snapshot.as_str()));
    m.insert("db".into(), Json::from(&*ev.table.db));
    match &ev.source {
        SourceMeta::Postgres { lsn, tx_id } => {
            m.insert("schema".into(), Json::from(&*ev.table.schema));
            m.insert("table".into(), Json::from(&*ev.table.name));
            m.insert("txId".into(), tx_id.map_or(Json::Null, Json::from));
            m.insert("lsn".into(), Json::from(*lsn));
        }
        SourceMeta::Mysql { server_id, gtid, file, pos, row } => {
            m.insert("table".into(), Json::from(&*ev.table.name));
            m.insert("server_id".into(), Json::from(*server_id));
            m.insert("gtid".into(), gtid.as_deref().map_or(Json::Null, Json::from));
            m.insert("file".into(), Json::from(&**file));
            m.insert("pos".into(), Json::from(*pos));
            m.insert("row".into(), Json::from(*row));
        }
    }
    Json::Object(m)
}

/// The whole envelope of one event.
pub fn envelope_json(ev: &ChangeEvent, connector: &str, enc: &Encoding) -> Json {
    let mut m = Map::with_capacity(6);
    m.insert("before".into(), ev.before.as_ref().map_or(Json::Null, |r| row_json(r, enc)));
    m.insert("after".into(), ev.after.as_ref().map_or(Json::Null, |r| row_json(r, enc)));
    m.insert("source".into(), source_json(ev, connector));
    m.insert("op".into(), Json::from(ev.op.code()));
    m.insert("ts_ms".into(), Json::from(now_ms()));
    m.insert("transaction".into(), Json::Null);
    Json::Object(m)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{Op, SnapshotFlag, TableRef, Value, Version};

    #[test]
    fn envelope_has_debeziums_fields() {
        let name: Arc<str> = "id".into();
        let ev = ChangeEvent {
            op: Op::Update,
            table: Arc::new(TableRef { db: "shop".into(), schema: "public".into(), name: "customers".into() }),
            key: Row(vec![(name.clone(), Value::Int(7))]),
            before: None,
            after: Some(Row(vec![(name, Value::Int(7)), ("email".into(), Value::Text("a@b".into()))])),
            partial: false,
            version: Version::new(100, 1),
            commit_ts_ms: 1_700_000_000_000,
            snapshot: SnapshotFlag::No,
            source: SourceMeta::Postgres { lsn: 100, tx_id: Some(42) },
        };
        let j = envelope_json(&ev, "shop", &Encoding::default());
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["before", "after", "source", "op", "ts_ms", "transaction"]);
        let src: Vec<&str> = j["source"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(src, ["version", "connector", "name", "ts_ms", "snapshot", "db", "schema", "table", "txId", "lsn"]);
        assert_eq!(j["op"], "u");
        assert_eq!(j["after"]["email"], "a@b");
        assert_eq!(j["source"]["connector"], "postgresql");
        assert_eq!(key_json(&ev, &Encoding::default()), serde_json::json!({"id": 7}));
    }
}
