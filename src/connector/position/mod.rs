//! Where a connector's source resumes: typed per source kind, each with its own order.
//!
//! Positions are stored as JSON (`{"kind": "postgres", "lsn": "0/16B3748"}`); the forms are a
//! stored format, kept readable across versions (a test reads checkpoints written by earlier
//! builds). Two positions of different kinds cannot be compared: asking is a bug, reported as
//! [`KindMismatch`] rather than answered.

mod binlog;
mod lsn;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::binlog::{coordinate, file_seq, Gtid, GtidPosition, GtidSet, GtidState, MyPosition};
pub use self::lsn::{Lsn, PgPosition};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    Postgres(PgPosition),
    Mysql(MyPosition),
    Kafka(PartitionOffsets),
}

/// Two positions of different source kinds were compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {new} position cannot be compared with a {old} position")]
pub struct KindMismatch {
    pub new: &'static str,
    pub old: &'static str,
}

impl Position {
    pub fn kind(&self) -> &'static str {
        match self {
            Position::Postgres(_) => "postgres",
            Position::Mysql(_) => "mysql",
            Position::Kafka(_) => "kafka",
        }
    }

    /// Is `self` a later point than `older` (so storing it moves forward)?
    pub fn is_after(&self, older: &Position) -> Result<bool, KindMismatch> {
        match (self, older) {
            (Position::Postgres(a), Position::Postgres(b)) => Ok(a.is_after(b)),
            (Position::Mysql(a), Position::Mysql(b)) => Ok(a.is_after(b)),
            (Position::Kafka(a), Position::Kafka(b)) => Ok(a.is_after(b)),
            _ => Err(KindMismatch { new: self.kind(), old: older.kind() }),
        }
    }
}

/// How far an initial snapshot has got; stored with the position while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// Tables read completely (`schema.table`).
    pub done: Vec<String>,
    /// The table being read, and the text of the key of the last row read from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<Option<String>>>,
}

impl SnapshotProgress {
    /// Later than `older` (key text cannot be ordered, so any change within the same table
    /// counts as progress).
    pub fn is_after(&self, older: &SnapshotProgress) -> bool {
        self != older && self.done.len() >= older.done.len()
    }
}

/// The order shared by positions that carry a snapshot in progress: a finished snapshot is later
/// than any point of a running one; two running ones compare by progress; two streaming ones by
/// `streaming_after`.
fn snapshot_order(
    new: Option<&SnapshotProgress>,
    old: Option<&SnapshotProgress>,
    streaming_after: impl FnOnce() -> bool,
) -> bool {
    match (new, old) {
        (None, None) => streaming_after(),
        (None, Some(_)) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a.is_after(b),
    }
}

/// A consumer's position in partitioned topics: per topic, per partition, the offset of the next
/// record to read. Stored as `[topic, partition, offset]` triples (JSON object keys would have
/// to be strings).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "StoredOffsets", from = "StoredOffsets")]
pub struct PartitionOffsets {
    pub offsets: BTreeMap<String, BTreeMap<i32, i64>>,
}

#[derive(Serialize, Deserialize)]
struct StoredOffsets {
    offsets: Vec<(String, i32, i64)>,
}

impl From<PartitionOffsets> for StoredOffsets {
    fn from(p: PartitionOffsets) -> Self {
        let offsets = p
            .offsets
            .into_iter()
            .flat_map(|(topic, parts)| parts.into_iter().map(move |(p, o)| (topic.clone(), p, o)))
            .collect();
        StoredOffsets { offsets }
    }
}

impl From<StoredOffsets> for PartitionOffsets {
    fn from(s: StoredOffsets) -> Self {
        let mut p = PartitionOffsets::default();
        for (topic, partition, offset) in s.offsets {
            p.set(&topic, partition, offset);
        }
        p
    }
}

impl PartitionOffsets {
    pub fn set(&mut self, topic: &str, partition: i32, next_offset: i64) {
        self.offsets.entry(topic.to_string()).or_default().insert(partition, next_offset);
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets.get(topic)?.get(&partition).copied()
    }

    /// Later than `older`: no partition went back, and one moved on or was added.
    pub fn is_after(&self, older: &PartitionOffsets) -> bool {
        let mut moved = false;
        for (topic, parts) in &older.offsets {
            for (p, old) in parts {
                match self.get(topic, *p) {
                    Some(new) if new < *old => return false,
                    Some(new) => moved |= new > *old,
                    None => return false,
                }
            }
        }
        moved || self.offsets.iter().any(|(t, ps)| ps.keys().any(|p| older.get(t, *p).is_none()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_different_kinds_do_not_compare() {
        let pg = Position::Postgres(PgPosition::streaming(Lsn(10)));
        let my = Position::Mysql(MyPosition::at("b.000001", 4));
        assert_eq!(pg.is_after(&my), Err(KindMismatch { new: "postgres", old: "mysql" }));
        assert_eq!(pg.is_after(&pg), Ok(false));
    }

    #[test]
    fn partition_offsets_order() {
        let mut a = PartitionOffsets::default();
        a.set("t", 0, 10);
        a.set("t", 1, 5);
        let mut b = a.clone();
        assert!(!b.is_after(&a));
        b.set("t", 1, 6);
        assert!(b.is_after(&a) && !a.is_after(&b));
        let mut c = b.clone();
        c.set("t", 0, 9);
        assert!(!c.is_after(&b), "a partition went back");
        let mut d = a.clone();
        d.set("u", 0, 0);
        assert!(d.is_after(&a), "a partition was added");
        let json = serde_json::to_string(&Position::Kafka(b.clone())).unwrap();
        assert_eq!(json, r#"{"kind":"kafka","offsets":[["t",0,10],["t",1,6]]}"#);
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), Position::Kafka(b));
    }
}

/// Checkpoints written by the tidemark of before the typed positions (0.1.0, commit 3ff9a69)
/// must stay readable: the fixture is a state file that build wrote, streaming from PostgreSQL
/// (with aggregate state), MariaDB and MySQL, plus two snapshots in progress (`offsets set`).
#[cfg(test)]
mod stored_format {
    use std::io::Read;

    use super::*;
    use crate::state::{StateStore, STATE_FILE};

    #[test]
    fn checkpoints_of_the_previous_build_are_read_unchanged() {
        let dir = std::env::temp_dir().join(format!("tidemark-fixture-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let gz = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-0.1.0.redb.gz")).unwrap();
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut bytes).unwrap();
        std::fs::write(dir.join(STATE_FILE), bytes).unwrap();
        let store = StateStore::open(&dir).unwrap();

        let uuid = "d34bf988-ed76-11f1-84bd-02fc00000001";
        let expected = [
            ("fixture-maria", r#"{"kind":"mysql","file":"mysql-bin.000001","pos":1334,"gtid":"0-1-5","server":"1"}"#),
            (
                "fixture-maria-snapshot",
                r#"{"kind":"mysql","file":"mysql-bin.000003","pos":4,"gtid":"0-1-100,1-2-7","server":"1","snapshot":{"done":[]}}"#,
            ),
            (
                "fixture-mysql",
                &*format!(
                    r#"{{"kind":"mysql","file":"binlog.000002","pos":2097,"gtid":"{uuid}:1-8","server":"{uuid}"}}"#
                ),
            ),
            ("fixture-pg", r#"{"kind":"postgres","lsn":"0/21AB3E0"}"#),
            (
                "fixture-pg-snapshot",
                r#"{"kind":"postgres","lsn":"0/16B3748","snapshot":{"done":["public.a"],"table":"public.b","after":["42",null]}}"#,
            ),
        ];
        assert_eq!(store.connectors().unwrap(), expected.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>());
        for (connector, json) in expected {
            let p: Position = store.position(connector).unwrap().unwrap();
            assert_eq!(serde_json::to_string(&p).unwrap(), json, "{connector}");
        }
        let Some(Position::Mysql(maria)) = store.position("fixture-maria").unwrap() else { panic!() };
        assert!(matches!(maria.gtid, Some(GtidPosition::MariaDb(_))));
        let Some(Position::Mysql(mysql)) = store.position("fixture-mysql").unwrap() else { panic!() };
        let Some(GtidPosition::Mysql(set)) = mysql.gtid else { panic!("{mysql:?}") };
        assert_eq!(set, GtidSet::parse(&format!("{uuid}:1-8")).unwrap());
        let Some(Position::Postgres(pg)) = store.position("fixture-pg").unwrap() else { panic!() };
        assert_eq!(pg.lsn, Lsn(0x21AB3E0));
        // The aggregate's state, stored in the same transactions, is there too.
        // 50 rows in 5 groups.
        assert_eq!(store.entries("fixture-pg", "aggregate:revenue/rows", b"").unwrap().len(), 50);
        assert_eq!(store.entries("fixture-pg", "aggregate:revenue/groups", b"").unwrap().len(), 5);
        std::fs::remove_dir_all(dir).ok();
    }
}
