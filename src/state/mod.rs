//! The embedded state store under `data_dir`: source positions, schema history and operator
//! state.
//!
//! Backed by [redb]: a pure-Rust, single-file, ACID key-value store with copy-on-write B-trees and
//! checksummed commits, so a `kill -9` (or power loss) mid-commit leaves the previous commit intact.
//! It builds in seconds (no C/C++ toolchain, unlike RocksDB or SQLite bindings), and one write
//! transaction can cover a connector's position *and* its operator state, which is what makes a
//! checkpoint atomic.
//!
//! The file is locked by the process that opens it, so `tidemark offsets` refuses to touch it while
//! the daemon runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadOnlyTable, ReadableTable, TableDefinition};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// connector -> JSON of its position (whatever type the caller stores: the store does not
/// interpret positions, so it depends on no source).
const POSITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("positions");
/// [`entry_key`] (connector, operator id, entry key) -> entry bytes: operator state, one entry per
/// group, row, window or id, so a checkpoint writes only what changed and state need not fit in
/// memory. The key is one byte string (length-prefixed names, then the entry key): it compares
/// with one `memcmp` and a prefix selects a connector or an operator.
const OPERATORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("operator_state");

/// The stored key of an operator entry; `entry_key(c, o, b"")` is the prefix of all of `o`'s.
fn entry_key(connector: &str, operator: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + connector.len() + operator.len() + key.len());
    for name in [connector, operator] {
        k.extend_from_slice(&(name.len() as u16).to_be_bytes());
        k.extend_from_slice(name.as_bytes());
    }
    k.extend_from_slice(key);
    k
}

fn connector_prefix(connector: &str) -> Vec<u8> {
    let mut k = (connector.len() as u16).to_be_bytes().to_vec();
    k.extend_from_slice(connector.as_bytes());
    k
}
/// (connector, table) -> schema history entry (sources that need it to decode old positions).
const SCHEMAS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("schema_history");

pub const STATE_FILE: &str = "state.redb";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("state store: {0}")]
    Storage(String),
    #[error("state store: stored position of `{connector}` is unreadable: {message}")]
    Corrupt { connector: String, message: String },
}

fn storage(e: impl std::fmt::Display) -> StateError {
    StateError::Storage(e.to_string())
}

/// A stored operator entry: key and value bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

/// What changed in one operator's entries since the last checkpoint: each key, in key order,
/// with its value's bytes (`None`: deleted). The values may be serialized only when the delta is
/// stored, so that work happens on the thread storing it, off the data path.
pub struct StateDelta {
    pub operator: String,
    entries: Box<dyn Fn(&mut Put<'_>) + Send + Sync>,
}

/// Takes one entry: its key and its value's bytes (`None`: deleted).
type Put<'a> = dyn FnMut(&[u8], Option<&[u8]>) + 'a;

impl StateDelta {
    /// Entries already serialized.
    #[cfg(test)]
    pub fn new(operator: String, entries: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> StateDelta {
        StateDelta { operator, entries: Box::new(move |put| entries.iter().for_each(|(k, v)| put(k, v.as_deref()))) }
    }

    /// Entries serialized as JSON when stored.
    pub fn deferred<V: serde::Serialize + Send + Sync + 'static>(
        operator: String,
        entries: Vec<(Vec<u8>, Option<V>)>,
    ) -> StateDelta {
        StateDelta {
            operator,
            entries: Box::new(move |put| {
                let mut bytes = Vec::new();
                for (k, v) in &entries {
                    match v {
                        Some(v) => {
                            bytes.clear();
                            serde_json::to_writer(&mut bytes, v).expect("operator state serializes");
                            put(k, Some(&bytes));
                        }
                        None => put(k, None),
                    }
                }
            }),
        }
    }

    /// Each entry, with its value's bytes.
    pub fn for_each(&self, mut put: impl FnMut(&[u8], Option<&[u8]>)) {
        (self.entries)(&mut put)
    }
}

impl std::fmt::Debug for StateDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDelta").field("operator", &self.operator).finish_non_exhaustive()
    }
}

/// Cheap to clone; every clone shares the one open database.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
    /// A read snapshot of the operator entries, reused by reads until the next write (paging
    /// state in would otherwise begin a transaction per entry). Begun and dropped under the lock,
    /// after a write has committed, so it never predates a commit that finished before a read.
    reader: Arc<Mutex<Option<EntriesSnapshot>>>,
}

type EntriesSnapshot = ReadOnlyTable<&'static [u8], &'static [u8]>;

impl StateStore {
    /// Open (creating if needed) `data_dir/state.redb`.
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        let path = data_dir.join(STATE_FILE);
        let open_err = |message: String| StateError::Open { path: path.clone(), message };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| open_err(format!("cannot create {}: {e}", data_dir.display())))?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                open_err("already open by another process (is the daemon running?)".into())
            }
            other => open_err(other.to_string()),
        })?;
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(POSITIONS).map_err(storage)?;
            txn.open_table(OPERATORS).map_err(storage)?;
            txn.open_table(SCHEMAS).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(StateStore { db: Arc::new(db), reader: Arc::default() })
    }

    /// Run `f` on the shared read snapshot of the operator entries.
    fn read<T>(&self, f: impl FnOnce(&EntriesSnapshot) -> Result<T, StateError>) -> Result<T, StateError> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            let txn = self.db.begin_read().map_err(storage)?;
            *reader = Some(txn.open_table(OPERATORS).map_err(storage)?);
        }
        f(reader.as_ref().expect("opened above"))
    }

    /// After a write to the operator entries: later reads see it.
    fn written(&self) {
        *self.reader.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn position<P: DeserializeOwned>(&self, connector: &str) -> Result<Option<P>, StateError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(POSITIONS).map_err(storage)?;
        let Some(raw) = table.get(connector).map_err(storage)? else {
            return Ok(None);
        };
        serde_json::from_slice(raw.value())
            .map(Some)
            .map_err(|e| StateError::Corrupt { connector: connector.into(), message: e.to_string() })
    }

    /// Every connector with a stored position.
    pub fn connectors(&self) -> Result<Vec<String>, StateError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(POSITIONS).map_err(storage)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(storage)? {
            let (k, _) = item.map_err(storage)?;
            out.push(k.value().to_string());
        }
        Ok(out)
    }

    /// Store a position alone (operator state untouched): `tidemark offsets set`.
    pub fn set_position<P: Serialize>(&self, connector: &str, position: &P) -> Result<(), StateError> {
        self.commit(connector, position, &[])
    }

    /// One stored operator entry.
    pub fn entry(&self, connector: &str, operator: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let key = entry_key(connector, operator, key);
        self.read(|t| Ok(t.get(key.as_slice()).map_err(storage)?.map(|v| v.value().to_vec())))
    }

    /// Whether an operator has any stored entry.
    pub fn has_entries(&self, connector: &str, operator: &str) -> Result<bool, StateError> {
        Ok(!self.entries_limited(connector, operator, b"", 1)?.is_empty())
    }

    /// The stored entries of an operator whose keys start with `prefix`, in key order.
    pub fn entries(&self, connector: &str, operator: &str, prefix: &[u8]) -> Result<Vec<Entry>, StateError> {
        self.entries_limited(connector, operator, prefix, usize::MAX)
    }

    fn entries_limited(
        &self,
        connector: &str,
        operator: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StateError> {
        let start = entry_key(connector, operator, prefix);
        let skip = start.len() - prefix.len();
        self.read(|t| {
            let mut out = Vec::new();
            for item in t.range(start.as_slice()..).map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                if out.len() >= limit || !k.value().starts_with(&start) {
                    break;
                }
                out.push((k.value()[skip..].to_vec(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Store `position` and the operator entries that changed up to it in one transaction: after
    /// a crash either both are the new ones or both the old.
    pub fn commit<P: Serialize>(&self, connector: &str, position: &P, deltas: &[StateDelta]) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(position).map_err(storage)?;
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut positions = txn.open_table(POSITIONS).map_err(storage)?;
            positions.insert(connector, bytes.as_slice()).map_err(storage)?;
            let mut ops = txn.open_table(OPERATORS).map_err(storage)?;
            let mut failed = None;
            for d in deltas {
                d.for_each(|key, value| {
                    if failed.is_some() {
                        return;
                    }
                    let key = entry_key(connector, &d.operator, key);
                    let done = match value {
                        Some(v) => ops.insert(key.as_slice(), v).map(drop),
                        None => ops.remove(key.as_slice()).map(drop),
                    };
                    failed = done.err();
                });
            }
            if let Some(e) = failed {
                return Err(storage(e));
            }
        }
        txn.commit().map_err(storage)?;
        self.written();
        Ok(())
    }

    pub fn schema(&self, connector: &str, table: &str) -> Result<Option<Vec<u8>>, StateError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(SCHEMAS).map_err(storage)?;
        Ok(t.get((connector, table)).map_err(storage)?.map(|v| v.value().to_vec()))
    }

    pub fn put_schema(&self, connector: &str, table: &str, entry: &[u8]) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut t = txn.open_table(SCHEMAS).map_err(storage)?;
            t.insert((connector, table), entry).map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    /// Forget everything stored for `connector` (position, operator state, schema history).
    /// Returns whether anything was stored.
    pub fn reset(&self, connector: &str) -> Result<bool, StateError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let existed;
        {
            let mut positions = txn.open_table(POSITIONS).map_err(storage)?;
            existed = positions.remove(connector).map_err(storage)?.is_some();
            {
                let mut t = txn.open_table(OPERATORS).map_err(storage)?;
                let prefix = connector_prefix(connector);
                t.retain_in(prefix.as_slice().., |k, _| !k.starts_with(&prefix)).map_err(storage)?;
            }
            for def in [SCHEMAS] {
                let mut t = txn.open_table(def).map_err(storage)?;
                let keys: Vec<String> = t
                    .range((connector, "")..)
                    .map_err(storage)?
                    .map_while(|item| {
                        let (k, _) = item.ok()?;
                        let (c, id) = k.value();
                        (c == connector).then(|| id.to_string())
                    })
                    .collect();
                for id in keys {
                    t.remove((connector, id.as_str())).map_err(storage)?;
                }
            }
        }
        txn.commit().map_err(storage)?;
        self.written();
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions are the caller's; any serde type will do here.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Position(u64);

    fn tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tidemark-state-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn position_and_operator_state_commit_together() {
        let dir = tmp();
        let store = StateStore::open(&dir).unwrap();
        assert_eq!(store.position::<Position>("a").unwrap(), None);
        let pos = Position(0x1000);
        let delta = |v: &[u8]| {
            StateDelta::new(
                "agg".into(),
                vec![(b"g1".to_vec(), Some(v.to_vec())), (b"g2".to_vec(), Some(b"x".to_vec()))],
            )
        };
        store.commit("a", &pos, &[delta(b"s1")]).unwrap();
        store.commit("b", &pos, &[delta(b"other")]).unwrap();
        let removal = StateDelta::new("agg".into(), vec![(b"g2".to_vec(), None)]);
        store.commit("a", &pos, &[removal]).unwrap();
        drop(store);

        let store = StateStore::open(&dir).unwrap();
        assert_eq!(store.position("a").unwrap(), Some(pos));
        assert_eq!(store.entries("a", "agg", b"").unwrap(), vec![(b"g1".to_vec(), b"s1".to_vec())]);
        assert_eq!(store.entry("b", "agg", b"g1").unwrap(), Some(b"other".to_vec()));
        assert!(store.reset("a").unwrap());
        assert_eq!(store.position::<Position>("a").unwrap(), None);
        assert!(store.entries("a", "agg", b"").unwrap().is_empty());
        assert_eq!(store.entries("b", "agg", b"g").unwrap().len(), 2);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn second_open_is_refused() {
        let dir = tmp();
        let _store = StateStore::open(&dir).unwrap();
        let err = StateStore::open(&dir).err().unwrap().to_string();
        assert!(err.contains("already open"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
