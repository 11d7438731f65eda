//! `kind = "window"`: aggregates over event-time windows — tumbling (`size`), hopping (`size`,
//! `slide`) and session (`gap`) — emitted as change events of a derived table keyed by the group
//! columns and `window_start`.
//!
//! Event time is the commit time, or a column. The watermark is the largest event time seen minus
//! `out_of_orderness`; on a quiet database source heartbeats move event time on by the commit time
//! elapsed since the latest event, so windows still close. A window closes
//! when the watermark passes its end plus `allowed_lateness`; an event whose windows have all
//! closed is late: counted, logged, and written to the dead-letter target when one is configured,
//! never dropped silently. `emit = "final"` emits a window once, when it closes; `"update"` on
//! every change and once more when it closes (`final = true`). `retention` deletes a closed window
//! from the sinks that long after its end.
//!
//! Windows count events (the configured `ops`, inserts by default): an update adds its new row to
//! the window of its commit time, it does not retract the old one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::agg::{encode_key, values_of, AggSpec, Group, Scalar};
use super::aggregate::Names;
use super::state::StateTable;
use crate::connector::DeadLetterTarget;
use crate::event::{ChangeEvent, Op, Row, SourceMeta, TableRef, Value, Version};
use crate::state::{StateDelta, StateError, StateStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: i64 },
    Hopping { size: i64, slide: i64 },
    Session { gap: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSource {
    Commit,
    Column(String),
}

#[derive(Debug, Clone)]
pub struct WindowConfig {
    pub name: String,
    pub kind: WindowKind,
    pub time: TimeSource,
    pub group_by: Vec<String>,
    pub aggregates: Vec<AggSpec>,
    pub ops: Vec<Op>,
    /// Milliseconds.
    pub out_of_orderness: i64,
    pub allowed_lateness: i64,
    pub retention: Option<i64>,
    pub emit_updates: bool,
    pub pass_through: bool,
    pub max_cached: usize,
    pub dead_letter: Option<DeadLetterTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WindowState {
    group: Vec<Option<Scalar>>,
    start: i64,
    end: i64,
    agg: Group,
    /// Emitted at least once (so the next emission is an update).
    emitted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Meta {
    /// Largest event (or heartbeat) time seen.
    max_time: Option<i64>,
    /// Newest source version seen, for emissions no event caused (heartbeats).
    last: (u64, u64),
    /// The latest event's time and commit time: on a quiet database, heartbeats advance event
    /// time by the commit time elapsed since (so column-based event time keeps moving too).
    #[serde(default)]
    anchor: Option<(i64, i64)>,
    /// Database and schema of the source table, for emissions no event caused.
    #[serde(default)]
    db: String,
    #[serde(default)]
    schema: String,
    /// The source's connector kind (`source.connector`: `postgresql`, `mysql`), so emissions no
    /// event caused carry a `source` block of the right kind, also after a restart.
    #[serde(default)]
    connector: String,
}

/// A closed window kept for its retention delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Retained {
    group: Vec<Option<Scalar>>,
    start: i64,
    end: i64,
}

/// i64 as bytes that sort like the numbers.
fn ord_bytes(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ord_bytes(b: &[u8]) -> i64 {
    (u64::from_be_bytes(b[..8].try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

/// Open windows sort by end: `w` + end + start + group.
fn window_key(end: i64, start: i64, group: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + group.len());
    k.push(b'w');
    k.extend(ord_bytes(end));
    k.extend(ord_bytes(start));
    k.extend(group);
    k
}

/// Closed windows awaiting their retention delete sort by expiry: `r` + expiry + start + group.
fn retained_key(expire: i64, start: i64, group: &[u8]) -> Vec<u8> {
    let mut k = window_key(expire, start, group);
    k[0] = b'r';
    k
}

const META: &[u8] = b"m";

pub struct Window {
    cfg: WindowConfig,
    names: Names,
    /// `window_start`, `window_end`, `final`.
    columns: [Arc<str>; 3],
    table: Arc<TableRef>,
    windows: StateTable<WindowState>,
    retained: StateTable<Retained>,
    meta_table: StateTable<Meta>,
    meta: Meta,
    /// Keys of open windows (sorted by end) and of retained ones (sorted by expiry).
    open: BTreeSet<Vec<u8>>,
    expiring: BTreeSet<Vec<u8>>,
    /// Session windows per group: (start, end) of each open session.
    sessions: HashMap<Vec<u8>, Vec<(i64, i64)>>,
    /// Late events since the last call to `take_late`.
    late: Vec<(ChangeEvent, String)>,
    /// The `source` block of the latest event (in memory only).
    last_source: Option<SourceMeta>,
    pub late_total: u64,
}

impl Window {
    pub fn new(
        cfg: WindowConfig,
        store: Option<StateStore>,
        connector: Arc<str>,
        operator: &str,
    ) -> Result<Window, StateError> {
        let mut windows =
            StateTable::new(store.clone(), connector.clone(), format!("{operator}/windows"), cfg.max_cached);
        let mut retained =
            StateTable::new(store.clone(), connector.clone(), format!("{operator}/retained"), cfg.max_cached);
        let mut meta_table = StateTable::new(store, connector, format!("{operator}/meta"), 16);
        let meta = meta_table.get(META)?.cloned().unwrap_or_default();
        let open: BTreeSet<Vec<u8>> = windows.keys_with_prefix(b"w")?.into_iter().collect();
        let expiring: BTreeSet<Vec<u8>> = retained.keys_with_prefix(b"r")?.into_iter().collect();
        let mut sessions: HashMap<Vec<u8>, Vec<(i64, i64)>> = HashMap::new();
        if matches!(cfg.kind, WindowKind::Session { .. }) {
            for k in &open {
                sessions
                    .entry(k[17..].to_vec())
                    .or_default()
                    .push((from_ord_bytes(&k[9..17]), from_ord_bytes(&k[1..9])));
            }
        }
        let table = Arc::new(TableRef { db: "".into(), schema: "".into(), name: cfg.name.as_str().into() });
        Ok(Window {
            names: Names::new(&cfg.group_by, &cfg.aggregates),
            columns: ["window_start", "window_end", "final"].map(Arc::from),
            cfg,
            table,
            windows,
            retained,
            meta_table,
            meta,
            open,
            expiring,
            sessions,
            late: Vec::new(),
            last_source: None,
            late_total: 0,
        })
    }

    fn watermark(&self) -> Option<i64> {
        self.meta.max_time.map(|t| t - self.cfg.out_of_orderness)
    }

    fn closed(&self, end: i64) -> bool {
        self.watermark().is_some_and(|wm| end + self.cfg.allowed_lateness <= wm)
    }

    fn event_time(&self, ev: &ChangeEvent) -> Option<i64> {
        match &self.cfg.time {
            TimeSource::Commit => Some(ev.commit_ts_ms()),
            TimeSource::Column(c) => {
                let row = ev.after.as_ref().or(ev.before.as_ref())?;
                match row.get(c)? {
                    Value::Timestamp { micros, .. } | Value::TimestampTz { micros, .. } => {
                        Some(micros.div_euclid(1000))
                    }
                    Value::Date(days) => Some(*days as i64 * 86_400_000),
                    Value::Int(ms) => Some(*ms),
                    _ => None,
                }
            }
        }
    }

    /// The `[start, end)` windows an event time falls in (tumbling and hopping).
    fn assign(&self, t: i64) -> Vec<(i64, i64)> {
        match self.cfg.kind {
            WindowKind::Tumbling { size } => {
                let start = t.div_euclid(size) * size;
                vec![(start, start + size)]
            }
            WindowKind::Hopping { size, slide } => {
                let mut out = Vec::new();
                let mut start = t.div_euclid(slide) * slide;
                while start > t - size {
                    out.push((start, start + size));
                    start -= slide;
                }
                out.reverse();
                out
            }
            WindowKind::Session { gap } => vec![(t, t + gap)],
        }
    }

    fn derived(
        &self,
        op: Op,
        w: &WindowState,
        final_: bool,
        version: Version,
        cause: Option<&ChangeEvent>,
    ) -> ChangeEvent {
        let mut key = self.names.key(&w.group, 1);
        let ts = |ms: i64| Value::TimestampTz { micros: ms * 1000, precision: 3 };
        let [start, end, final_col] = &self.columns;
        key.push((start.clone(), ts(w.start)));
        let after = (op != Op::Delete).then(|| {
            let mut cols = Vec::with_capacity(key.len() + self.names.aggregates.len() + 2);
            cols.extend(key.iter().cloned());
            cols.push((end.clone(), ts(w.end)));
            w.agg.output(&self.cfg.aggregates, &self.names.aggregates, &mut cols);
            cols.push((final_col.clone(), Value::Bool(final_)));
            Row(cols)
        });
        let (db, schema, source, commit) = match cause {
            Some(c) => (c.table.db.clone(), c.table.schema.clone(), Some(c.source.clone()), c.commit_ts_ms()),
            None => {
                (self.meta.db.as_str().into(), self.meta.schema.as_str().into(), None, self.meta.max_time.unwrap_or(0))
            }
        };
        ChangeEvent {
            op,
            table: Arc::new(TableRef { db, schema, name: self.table.name.clone() }),
            key: Row(key),
            before: None,
            after,
            partial: false,
            version,
            commit_us: commit * 1000,
            snapshot: crate::event::SnapshotFlag::No,
            source: source.unwrap_or_else(|| self.heartbeat_source(version)),
        }
    }

    /// The `source` block of an emission no event caused: of the source's connector kind (the
    /// last event's, or after a restart the stored one), at the emission's version, in no
    /// transaction.
    fn heartbeat_source(&self, version: Version) -> SourceMeta {
        match (&self.last_source, self.meta.connector.as_str()) {
            // Where the stream was, but in no transaction.
            (Some(SourceMeta::Mysql { server_id, file, pos, .. }), _) => SourceMeta::Mysql {
                server_id: *server_id,
                gtid: None,
                file: file.clone(),
                pos: *pos,
                row: 0,
                thread: None,
            },
            (None, "mysql") => SourceMeta::Mysql {
                server_id: 0,
                gtid: None,
                file: "".into(),
                pos: version.hi & 0xffff_ffff,
                row: 0,
                thread: None,
            },
            _ => SourceMeta::Postgres { lsn: version.hi, last_commit_lsn: None, tx_id: None },
        }
    }

    /// A version for an emission no event caused, newer than any before it.
    fn synthetic_version(&mut self) -> Version {
        self.meta.last.1 += 1;
        Version::new(self.meta.last.0, self.meta.last.1)
    }

    fn note_version(&mut self, v: Version) {
        if (v.hi, v.lo) > self.meta.last {
            self.meta.last = (v.hi, v.lo);
        }
    }

    pub fn process(&mut self, ev: &ChangeEvent, out: &mut Vec<ChangeEvent>) -> Result<(), StateError> {
        self.note_version(ev.version);
        if *self.meta.schema != *ev.table.schema || *self.meta.db != *ev.table.db {
            self.meta.db = ev.table.db.to_string();
            self.meta.schema = ev.table.schema.to_string();
        }
        if self.meta.connector != ev.source.connector() {
            self.meta.connector = ev.source.connector().to_string();
        }
        if self.last_source.as_ref() != Some(&ev.source) {
            self.last_source = Some(ev.source.clone());
        }
        if !self.cfg.ops.contains(&ev.op) {
            return Ok(());
        }
        let Some(t) = self.event_time(ev) else {
            let why = match &self.cfg.time {
                TimeSource::Column(c) => format!("no event time: column `{c}` is missing, NULL or not a time"),
                TimeSource::Commit => "no event time".into(),
            };
            self.late(ev, why);
            return Ok(());
        };
        self.meta.max_time = Some(self.meta.max_time.map_or(t, |m| m.max(t)));
        self.meta.anchor = Some((self.meta.max_time.expect("set above"), ev.commit_ts_ms()));
        let Some(row) = ev.after.as_ref().or(ev.before.as_ref()) else { return Ok(()) };
        let group: Vec<Option<Scalar>> = self.cfg.group_by.iter().map(|c| row.get(c).and_then(Scalar::of)).collect();
        let values = values_of(&self.cfg.aggregates, row);
        let gkey = encode_key(&group);
        let mut accepted = false;
        if let WindowKind::Session { gap } = self.cfg.kind {
            accepted = self.add_to_session(&group, &gkey, t, gap, &values, ev, out)?;
        } else {
            for (start, end) in self.assign(t) {
                if self.closed(end) {
                    continue;
                }
                accepted = true;
                let key = window_key(end, start, &gkey);
                let specs = &self.cfg.aggregates;
                let slot = self.windows.get_mut(&key)?;
                if slot.is_none() {
                    // A new window (every open one is in `open`, also those read back at start).
                    self.open.insert(key.clone());
                }
                let w = slot.get_or_insert_with(|| WindowState {
                    group: group.clone(),
                    start,
                    end,
                    agg: Group::new(specs),
                    emitted: false,
                });
                w.agg.apply(specs, &values, 1);
                if self.cfg.emit_updates {
                    let w = self.windows.get_mut(&key)?.as_mut().expect("just set");
                    let op = if w.emitted { Op::Update } else { Op::Create };
                    w.emitted = true;
                    let w = w.clone();
                    out.push(self.derived(op, &w, false, ev.version, Some(ev)));
                }
            }
        }
        if !accepted {
            let wm = self.watermark().unwrap_or(t);
            self.late(
                ev,
                format!("late: event time {t} ms is behind the watermark {wm} ms by more than the allowed lateness"),
            );
        }
        self.advance(Some(ev), out)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_to_session(
        &mut self,
        group: &[Option<Scalar>],
        gkey: &[u8],
        t: i64,
        gap: i64,
        values: &[Option<Scalar>],
        ev: &ChangeEvent,
        out: &mut Vec<ChangeEvent>,
    ) -> Result<bool, StateError> {
        let (mut start, mut end) = (t, t + gap);
        let existing = self.sessions.get(gkey).cloned().unwrap_or_default();
        let overlapping: Vec<(i64, i64)> = existing.iter().copied().filter(|(s, e)| *s <= end && t <= *e).collect();
        for (s, e) in &overlapping {
            start = start.min(*s);
            end = end.max(*e);
        }
        if overlapping.is_empty() && self.closed(end) {
            return Ok(false);
        }
        // The merged session: the event's own contribution plus every session it touches.
        let specs = &self.cfg.aggregates;
        let mut merged = WindowState { group: group.to_vec(), start, end, agg: Group::new(specs), emitted: false };
        merged.agg.apply(specs, values, 1);
        let mut old_keys = Vec::new();
        for (s, e) in &overlapping {
            let key = window_key(*e, *s, gkey);
            if let Some(w) = self.windows.get_mut(&key)?.take() {
                merged.agg.merge(&w.agg);
                if w.emitted && (w.start != start) {
                    // The session's row moves to its new start: the old one goes.
                    out.push(self.derived(Op::Delete, &w, false, ev.version, Some(ev)));
                } else if w.emitted {
                    merged.emitted = true;
                }
            }
            self.open.remove(&key);
            old_keys.push((*s, *e));
        }
        let list = self.sessions.entry(gkey.to_vec()).or_default();
        list.retain(|x| !old_keys.contains(x));
        list.push((start, end));
        let key = window_key(end, start, gkey);
        if self.cfg.emit_updates {
            let op = if merged.emitted { Op::Update } else { Op::Create };
            merged.emitted = true;
            out.push(self.derived(op, &merged, false, ev.version, Some(ev)));
        }
        *self.windows.get_mut(&key)? = Some(merged);
        self.open.insert(key);
        Ok(true)
    }

    fn late(&mut self, ev: &ChangeEvent, why: String) {
        self.late_total += 1;
        self.late.push((ev.clone(), why));
    }

    pub fn take_late(&mut self) -> Vec<(ChangeEvent, String)> {
        std::mem::take(&mut self.late)
    }

    /// Event time moved without an event (a source heartbeat).
    pub fn heartbeat(&mut self, ts: i64, out: &mut Vec<ChangeEvent>) -> Result<(), StateError> {
        let t = match (&self.cfg.time, self.meta.anchor) {
            (TimeSource::Commit, _) => Some(ts),
            (TimeSource::Column(_), Some((event, commit))) => Some(event + (ts - commit).max(0)),
            // No event yet: nothing is open, and no column time to go on.
            (TimeSource::Column(_), None) => None,
        };
        if let Some(t) = t {
            self.meta.max_time = Some(self.meta.max_time.map_or(t, |m| m.max(t)));
        }
        self.advance(None, out)
    }

    /// Close the windows the watermark has passed; delete retained ones past their retention.
    fn advance(&mut self, cause: Option<&ChangeEvent>, out: &mut Vec<ChangeEvent>) -> Result<(), StateError> {
        let Some(wm) = self.watermark() else { return Ok(()) };
        while let Some(key) = self.open.first().cloned() {
            let end = from_ord_bytes(&key[1..9]);
            if end + self.cfg.allowed_lateness > wm {
                break;
            }
            self.open.remove(&key);
            let Some(w) = self.windows.get_mut(&key)?.take() else { continue };
            let version = match cause {
                Some(c) => c.version,
                None => self.synthetic_version(),
            };
            let op = if w.emitted { Op::Update } else { Op::Create };
            out.push(self.derived(op, &w, true, version, cause));
            if let WindowKind::Session { .. } = self.cfg.kind {
                if let Some(list) = self.sessions.get_mut(&key[17..]) {
                    list.retain(|x| *x != (w.start, w.end));
                    if list.is_empty() {
                        self.sessions.remove(&key[17..]);
                    }
                }
            }
            if let Some(r) = self.cfg.retention {
                let rk = retained_key(w.end + r, w.start, &key[17..]);
                *self.retained.get_mut(&rk)? = Some(Retained { group: w.group.clone(), start: w.start, end: w.end });
                self.expiring.insert(rk);
            }
        }
        while let Some(rk) = self.expiring.first().cloned() {
            if from_ord_bytes(&rk[1..9]) > wm {
                break;
            }
            self.expiring.remove(&rk);
            let Some(r) = self.retained.get_mut(&rk)?.take() else { continue };
            let version = match cause {
                Some(c) => c.version,
                None => self.synthetic_version(),
            };
            let w = WindowState { group: r.group, start: r.start, end: r.end, agg: Group::new(&[]), emitted: true };
            out.push(self.derived(Op::Delete, &w, true, version, cause));
        }
        Ok(())
    }

    pub fn checkpoint(&mut self, out: &mut Vec<StateDelta>) {
        // The watermark and versions go with every checkpoint (they change with every event).
        self.meta_table.put(META, Some(self.meta.clone()));
        self.windows.checkpoint(out);
        self.retained.checkpoint(out);
        self.meta_table.checkpoint(out);
    }

    pub fn stored(&mut self) {
        self.windows.stored();
        self.retained.stored();
        self.meta_table.stored();
    }

    pub fn dead_letter(&self) -> Option<&DeadLetterTarget> {
        self.cfg.dead_letter.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{SnapshotFlag, SourceMeta};

    fn cfg(kind: WindowKind, emit_updates: bool) -> WindowConfig {
        WindowConfig {
            name: "per_minute".into(),
            kind,
            time: TimeSource::Commit,
            group_by: vec!["status".into()],
            aggregates: vec![AggSpec::parse("n", "count(*)").unwrap(), AggSpec::parse("total", "sum(amount)").unwrap()],
            ops: vec![Op::Create],
            out_of_orderness: 0,
            allowed_lateness: 0,
            retention: None,
            emit_updates,
            pass_through: true,
            max_cached: 1000,
            dead_letter: None,
        }
    }

    fn ev(t: i64, status: &str, amount: i64, v: u64) -> ChangeEvent {
        ChangeEvent {
            op: Op::Create,
            table: Arc::new(TableRef { db: "d".into(), schema: "public".into(), name: "orders".into() }),
            key: Row(vec![(Arc::from("id"), Value::Int(v as i64))]),
            before: None,
            after: Some(Row(vec![
                (Arc::from("id"), Value::Int(v as i64)),
                (Arc::from("status"), Value::Text(status.into())),
                (Arc::from("amount"), Value::Int(amount)),
            ])),
            partial: false,
            version: Version::new(v, 1),
            commit_us: t * 1000,
            snapshot: SnapshotFlag::No,
            source: SourceMeta::Postgres { lsn: v, last_commit_lsn: None, tx_id: None },
        }
    }

    fn col(e: &ChangeEvent, c: &str) -> Value {
        e.after.as_ref().unwrap().get(c).cloned().unwrap()
    }

    fn start_of(e: &ChangeEvent) -> i64 {
        match e.key.get("window_start") {
            Some(Value::TimestampTz { micros, .. }) => micros / 1000,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tumbling_windows_close_at_the_watermark() {
        let mut w = Window::new(cfg(WindowKind::Tumbling { size: 60_000 }, false), None, "c".into(), "w").unwrap();
        let mut out = Vec::new();
        w.process(&ev(1_000, "paid", 10, 1), &mut out).unwrap();
        w.process(&ev(59_999, "paid", 5, 2), &mut out).unwrap();
        assert!(out.is_empty(), "emit = final: nothing before the window closes");
        // An event at exactly the end belongs to the next window and closes this one.
        w.process(&ev(60_000, "paid", 1, 3), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].op, start_of(&out[0]), col(&out[0], "n"), col(&out[0], "total")),
            (Op::Create, 0, Value::Int(2), Value::Int(15))
        );
        assert_eq!(col(&out[0], "final"), Value::Bool(true));
        // A heartbeat closes the next one on a quiet database.
        out.clear();
        w.heartbeat(125_000, &mut out).unwrap();
        assert_eq!((out.len(), start_of(&out[0])), (1, 60_000));
        assert!(out[0].version > Version::new(3, 1), "a heartbeat emission gets a newer version");
    }

    #[test]
    fn emissions_no_event_caused_name_the_real_connector_kind() {
        let mysql = |e: ChangeEvent| ChangeEvent {
            source: SourceMeta::Mysql {
                server_id: 7,
                gtid: None,
                file: "b.000003".into(),
                pos: 400,
                row: 0,
                thread: None,
            },
            ..e
        };
        let dir = std::env::temp_dir().join(format!("tidemark-window-{}-{}", std::process::id(), fastrand::u64(..)));
        let store = StateStore::open(&dir).unwrap();
        let config = || cfg(WindowKind::Tumbling { size: 60_000 }, false);
        let mut w = Window::new(config(), Some(store.clone()), "c".into(), "w").unwrap();
        let mut out = Vec::new();
        w.process(&mysql(ev(1_000, "paid", 10, 1)), &mut out).unwrap();
        w.process(&mysql(ev(61_000, "paid", 10, 2)), &mut out).unwrap();
        out.clear();
        w.heartbeat(125_000, &mut out).unwrap();
        assert_eq!(out[0].source.connector(), "mysql");
        // After a restart, before any event, the kind comes from the stored state.
        w.process(&mysql(ev(130_000, "paid", 1, 3)), &mut Vec::new()).unwrap();
        let mut deltas = Vec::new();
        w.checkpoint(&mut deltas);
        store.commit("c", &1u64, &deltas).unwrap();
        drop(w);
        let mut w = Window::new(config(), Some(store), "c".into(), "w").unwrap();
        out.clear();
        w.heartbeat(250_000, &mut out).unwrap();
        assert!(!out.is_empty());
        assert!(out.iter().all(|e| e.source.connector() == "mysql"), "{:?}", out[0].source);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn late_events_are_counted_and_handed_back_within_lateness_they_count() {
        let mut c = cfg(WindowKind::Tumbling { size: 10_000 }, true);
        c.out_of_orderness = 2_000;
        c.allowed_lateness = 5_000;
        let mut w = Window::new(c, None, "c".into(), "w").unwrap();
        let mut out = Vec::new();
        w.process(&ev(1_000, "a", 1, 1), &mut out).unwrap();
        w.process(&ev(15_000, "a", 1, 2), &mut out).unwrap();
        // Watermark 13s: window [0,10s) is past its end but within lateness (closes at 15s).
        w.process(&ev(9_000, "a", 1, 3), &mut out).unwrap();
        assert!(w.take_late().is_empty());
        let updates: Vec<_> = out.iter().filter(|e| start_of(e) == 0).collect();
        assert_eq!(col(updates.last().unwrap(), "n"), Value::Int(2));
        assert_eq!(updates.last().unwrap().op, Op::Update);
        out.clear();
        w.process(&ev(17_000, "a", 1, 4), &mut out).unwrap();
        let finals: Vec<_> = out.iter().filter(|e| col(e, "final") == Value::Bool(true)).collect();
        assert_eq!((finals.len(), start_of(finals[0]), col(finals[0], "n")), (1, 0, Value::Int(2)));
        w.process(&ev(8_000, "a", 1, 5), &mut out).unwrap();
        let late = w.take_late();
        assert_eq!(late.len(), 1);
        assert!(late[0].1.starts_with("late"), "{}", late[0].1);
        assert_eq!(w.late_total, 1);
    }

    #[test]
    fn hopping_windows_overlap() {
        let mut w =
            Window::new(cfg(WindowKind::Hopping { size: 10_000, slide: 5_000 }, true), None, "c".into(), "w").unwrap();
        let mut out = Vec::new();
        w.process(&ev(7_000, "a", 1, 1), &mut out).unwrap();
        let starts: Vec<i64> = out.iter().map(start_of).collect();
        assert_eq!(starts, [0, 5_000]);
    }

    #[test]
    fn sessions_merge_when_an_event_bridges_them() {
        let mut c = cfg(WindowKind::Session { gap: 1_000 }, true);
        c.out_of_orderness = 5_000;
        let mut w = Window::new(c, None, "c".into(), "w").unwrap();
        let mut out = Vec::new();
        w.process(&ev(10_000, "a", 1, 1), &mut out).unwrap();
        w.process(&ev(12_000, "a", 2, 2), &mut out).unwrap();
        assert_eq!(w.sessions[&encode_key(&[Some(Scalar::Text("a".into()))])].len(), 2);
        out.clear();
        // 10.9s touches the first session ([10s, 11s)); 11.5s then bridges both.
        w.process(&ev(10_900, "a", 4, 3), &mut out).unwrap();
        w.process(&ev(11_500, "a", 8, 4), &mut out).unwrap();
        let last = out.last().unwrap();
        assert_eq!((start_of(last), col(last, "n"), col(last, "total")), (10_000, Value::Int(4), Value::Int(15)));
        assert_eq!(col(last, "window_end"), Value::TimestampTz { micros: 13_000_000, precision: 3 });
        assert!(out.iter().any(|e| e.op == Op::Delete && start_of(e) == 12_000), "the merged-away session's row goes");
        out.clear();
        w.heartbeat(17_999, &mut out).unwrap();
        assert!(out.is_empty(), "the watermark (12.999s) has not passed the end (13s)");
        w.heartbeat(18_000, &mut out).unwrap();
        assert_eq!((out.len(), col(&out[0], "final"), out[0].op), (1, Value::Bool(true), Op::Update));
    }

    #[test]
    fn retention_deletes_closed_windows() {
        let mut c = cfg(WindowKind::Tumbling { size: 1_000 }, false);
        c.retention = Some(5_000);
        let mut w = Window::new(c, None, "c".into(), "w").unwrap();
        let mut out = Vec::new();
        w.process(&ev(500, "a", 1, 1), &mut out).unwrap();
        w.heartbeat(1_000, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        w.heartbeat(5_999, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        w.heartbeat(6_000, &mut out).unwrap();
        assert_eq!((out.len(), out[1].op, start_of(&out[1])), (2, Op::Delete, 0));
    }
}
