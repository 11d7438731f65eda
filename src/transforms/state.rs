//! Keyed operator state, paged through the state store.
//!
//! A [`StateTable`] holds an operator's entries (aggregate groups, contributions of source rows,
//! windows) by key. The entries in use live in memory; the rest live in the state store and are
//! read back on first use. What changed since the last checkpoint is kept in memory until that
//! checkpoint — written in the same transaction as the source position — is durable; only then may
//! it be evicted. Memory therefore holds at most `max_cached` clean entries plus what changed
//! within one checkpoint interval.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::state::{StateDelta, StateError, StateStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Equal to the store.
    Clean,
    /// Changed since the last checkpoint began.
    Dirty,
    /// Handed to a checkpoint not yet durable.
    Flushing,
}

struct Entry<V> {
    value: Option<V>,
    mark: Mark,
}

/// An entry's key: up to [`Key::INLINE`] bytes held in place — a lookup compares it without
/// following a pointer to another cache line — and on the heap beyond.
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; Key::INLINE] },
    Heap(Box<[u8]>),
}

impl Key {
    /// Row keys of one integer column, group keys of a few columns.
    const INLINE: usize = 38;

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(b) => b,
        }
    }
}

impl From<&[u8]> for Key {
    fn from(k: &[u8]) -> Key {
        if k.len() <= Key::INLINE {
            let mut bytes = [0; Key::INLINE];
            bytes[..k.len()].copy_from_slice(k);
            Key::Inline { len: k.len() as u8, bytes }
        } else {
            Key::Heap(k.into())
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

// Hashed and compared as its bytes, so the table is searched with a `&[u8]`.
impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h)
    }
}

impl PartialEq for Key {
    fn eq(&self, o: &Key) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl Eq for Key {}

pub struct StateTable<V> {
    store: Option<StateStore>,
    connector: Arc<str>,
    operator: String,
    entries: HashMap<Key, Entry<V>, foldhash::fast::RandomState>,
    /// How many entries are `Clean` (only those can be evicted).
    clean: usize,
    max_cached: usize,
    /// Every entry is in memory: the store held none for this operator when it started and
    /// nothing has been evicted since, so a miss needs no read.
    complete: bool,
}

impl<V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> StateTable<V> {
    /// `store: None` keeps everything in memory (unit tests, benchmarks without a store).
    pub fn new(store: Option<StateStore>, connector: Arc<str>, operator: String, max_cached: usize) -> Self {
        let complete = store.as_ref().is_none_or(|s| !s.has_entries(&connector, &operator).unwrap_or(true));
        StateTable {
            store,
            connector,
            operator,
            entries: HashMap::default(),
            clean: 0,
            max_cached: max_cached.max(16),
            complete,
        }
    }

    /// The entry of `key`, read from the store on a miss (one hash lookup when it is in memory),
    /// marked changed when `change`.
    fn slot(&mut self, key: &[u8], change: bool) -> Result<&mut Entry<V>, StateError> {
        // Room first: the entry about to be used may be evicted here, and is then read again.
        self.evict();
        let e = match self.entries.entry_ref(key) {
            EntryRef::Occupied(e) => e.into_mut(),
            EntryRef::Vacant(slot) => {
                let value = match &self.store {
                    Some(_) if self.complete => None,
                    Some(store) => match store.entry(&self.connector, &self.operator, key)? {
                        Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                            StateError::Storage(format!("operator {} entry unreadable: {e}", self.operator))
                        })?),
                        None => None,
                    },
                    None => None,
                };
                self.clean += 1;
                slot.insert_with_key(Key::from(key), Entry { value, mark: Mark::Clean })
            }
        };
        if change && e.mark == Mark::Clean {
            self.clean -= 1;
        }
        if change {
            e.mark = Mark::Dirty;
        }
        Ok(e)
    }

    /// The entry, to read.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<&V>, StateError> {
        Ok(self.slot(key, false)?.value.as_ref())
    }

    /// The entry, to change (it will be written with the next checkpoint).
    pub fn get_mut(&mut self, key: &[u8]) -> Result<&mut Option<V>, StateError> {
        Ok(&mut self.slot(key, true)?.value)
    }

    /// Replace an entry without reading it (it will be written with the next checkpoint).
    pub fn put(&mut self, key: &[u8], value: Option<V>) {
        let previous = self.entries.insert(Key::from(key), Entry { value, mark: Mark::Dirty });
        if previous.is_some_and(|e| e.mark == Mark::Clean) {
            self.clean -= 1;
        }
    }

    /// Every entry whose key starts with `prefix`: the stored ones overlaid with the ones in
    /// memory (a full read of that range; for rare events such as a truncate).
    pub fn keys_with_prefix(&mut self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        let mut keys: Vec<Vec<u8>> = match &self.store {
            Some(store) => {
                store.entries(&self.connector, &self.operator, prefix)?.into_iter().map(|(k, _)| k).collect()
            }
            None => Vec::new(),
        };
        for (k, e) in &self.entries {
            let k = k.as_slice();
            if k.starts_with(prefix) {
                match (&e.value, keys.binary_search_by(|probe| probe.as_slice().cmp(k))) {
                    (Some(_), Err(at)) => keys.insert(at, k.to_vec()),
                    (None, Ok(at)) => {
                        keys.remove(at);
                    }
                    _ => {}
                }
            }
        }
        Ok(keys)
    }

    /// Drop clean entries when more than `max_cached` are (changed ones stay until they are
    /// durable): down to half, so the scan is paid once per `max_cached / 2` loads.
    fn evict(&mut self) {
        if self.clean < self.max_cached {
            return;
        }
        let mut excess = self.clean - self.max_cached / 2;
        self.entries.retain(|_, e| {
            if excess > 0 && e.mark == Mark::Clean {
                excess -= 1;
                false
            } else {
                true
            }
        });
        self.clean = self.max_cached / 2 + excess;
        self.complete = false;
    }

    /// What changed since the last checkpoint, for the next one: copies of the changed entries,
    /// serialized by the thread that stores them.
    pub fn checkpoint(&mut self, out: &mut Vec<StateDelta>) {
        let mut entries = Vec::new();
        for (k, e) in self.entries.iter_mut().filter(|(_, e)| e.mark == Mark::Dirty) {
            e.mark = Mark::Flushing;
            entries.push((k.as_slice().to_vec(), e.value.clone()));
        }
        if !entries.is_empty() {
            // In key order: the store's B-tree takes sorted inserts page by page.
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            out.push(StateDelta::deferred(self.operator.clone(), entries));
        }
    }

    /// The last checkpoint is durable.
    pub fn stored(&mut self) {
        let mut clean = 0;
        self.entries.retain(|_, e| {
            if e.mark == Mark::Flushing {
                e.mark = Mark::Clean;
            }
            // A deleted entry that is durable needs no memory.
            let keep = !(e.mark == Mark::Clean && e.value.is_none());
            clean += usize::from(keep && e.mark == Mark::Clean);
            keep
        });
        self.clean = clean;
        self.evict();
    }

    /// Entries in memory (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::position::{Lsn, PgPosition};
    use crate::connector::Position;

    #[test]
    fn entries_page_through_the_store_and_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("tidemark-optable-{}-{}", std::process::id(), fastrand::u64(..)));
        let store = StateStore::open(&dir).unwrap();
        let mut t: StateTable<u64> = StateTable::new(Some(store.clone()), "c".into(), "op".into(), 16);
        for i in 0..100u64 {
            *t.get_mut(&i.to_be_bytes()).unwrap() = Some(i * 10);
        }
        let mut deltas = Vec::new();
        t.checkpoint(&mut deltas);
        store.commit("c", &Position::Postgres(PgPosition::streaming(Lsn(1))), &deltas).unwrap();
        t.stored();
        assert!(t.cached() <= 16, "clean entries are evicted once durable: {}", t.cached());
        // Evicted entries come back from the store; a delete is durable after its checkpoint.
        assert_eq!(t.get(&7u64.to_be_bytes()).unwrap(), Some(&70));
        *t.get_mut(&8u64.to_be_bytes()).unwrap() = None;
        assert_eq!(t.keys_with_prefix(&[0; 7]).unwrap().len(), 99);
        let mut deltas = Vec::new();
        t.checkpoint(&mut deltas);
        store.commit("c", &Position::Postgres(PgPosition::streaming(Lsn(2))), &deltas).unwrap();
        drop(t);
        drop(store);
        let store = StateStore::open(&dir).unwrap();
        let mut t: StateTable<u64> = StateTable::new(Some(store), "c".into(), "op".into(), 16);
        assert_eq!(t.get(&99u64.to_be_bytes()).unwrap(), Some(&990));
        assert_eq!(t.get(&8u64.to_be_bytes()).unwrap(), None);
        std::fs::remove_dir_all(dir).ok();
    }
}
