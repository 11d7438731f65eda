//! MySQL/MariaDB positions: binlog coordinates, MariaDB GTID positions, MySQL GTID sets.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{snapshot_order, SnapshotProgress};

/// Where a MySQL/MariaDB connector resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyPosition {
    /// The binlog file and offset of the next transaction to read (during the initial snapshot:
    /// the snapshot's coordinates).
    pub file: String,
    pub pos: u64,
    /// The GTID position after the last durable transaction: MariaDB's `domain-server-seq` per
    /// domain (resumed with `@slave_connect_state`) or MySQL's executed GTID set (resumed with
    /// `COM_BINLOG_DUMP_GTID`). The server then finds the next transaction in whichever binlog
    /// holds it, across rotations and purges of older binlogs.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "gtid_or_none")]
    pub gtid: Option<GtidPosition>,
    /// The server the position was read from (MySQL's `server_uuid`, MariaDB's `server_id`):
    /// binlog coordinates, and the versions made of them, mean nothing on another server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Present until the initial snapshot has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
}

impl MyPosition {
    /// File and offset only.
    pub fn at(file: &str, pos: u64) -> Self {
        MyPosition { file: file.to_string(), pos, gtid: None, server: None, snapshot: None }
    }

    pub fn coordinate(&self) -> u64 {
        coordinate(&self.file, self.pos)
    }

    pub fn is_after(&self, older: &MyPosition) -> bool {
        snapshot_order(self.snapshot.as_ref(), older.snapshot.as_ref(), || self.coordinate() > older.coordinate())
    }
}

/// A GTID position of either server kind; stored as the server prints it (MariaDB
/// `0-1-100,1-2-7`, MySQL `uuid:1-5:7,uuid:tag:1-3`), and told apart by that form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtidPosition {
    MariaDb(GtidState),
    Mysql(GtidSet),
}

impl GtidPosition {
    /// Parse either form; `None` for neither.
    pub fn parse(s: &str) -> Option<GtidPosition> {
        GtidState::parse(s).map(GtidPosition::MariaDb).or_else(|| GtidSet::parse(s).map(GtidPosition::Mysql))
    }

    pub fn server_kind(&self) -> &'static str {
        match self {
            GtidPosition::MariaDb(_) => "MariaDB",
            GtidPosition::Mysql(_) => "MySQL",
        }
    }
}

impl fmt::Display for GtidPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidPosition::MariaDb(g) => g.fmt(f),
            GtidPosition::Mysql(g) => g.fmt(f),
        }
    }
}

impl Serialize for GtidPosition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A stored GTID text; an empty one (no transaction yet) is no GTID position.
fn gtid_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GtidPosition>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else { return Ok(None) };
    if s.trim().is_empty() {
        return Ok(None);
    }
    GtidPosition::parse(&s).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!("`{s}` is neither a MariaDB GTID position nor a MySQL GTID set"))
    })
}

/// The sequence number of a binlog file (`mysql-bin.000042` → 42).
pub fn file_seq(file: &str) -> u64 {
    let digits = file.rsplit('.').next().unwrap_or("");
    digits.parse().unwrap_or(0)
}

/// A binlog position as one number that grows across rotations: the file's sequence number in
/// the high 32 bits, the offset in the low 32 (binlog files are at most 1 GiB).
pub fn coordinate(file: &str, pos: u64) -> u64 {
    (file_seq(file) << 32) | (pos & 0xffff_ffff)
}

/// A MariaDB GTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// MariaDB's GTID position: the last GTID per replication domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState(BTreeMap<u32, Gtid>);

impl GtidState {
    /// Parse `0-1-100,1-2-7` (empty: no domain yet).
    pub fn parse(s: &str) -> Option<GtidState> {
        let mut state = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.splitn(3, '-');
            let g = Gtid {
                domain: it.next()?.parse().ok()?,
                server: it.next()?.parse().ok()?,
                seq: it.next()?.parse().ok()?,
            };
            state.insert(g.domain, g);
        }
        Some(GtidState(state))
    }

    pub fn apply(&mut self, g: Gtid) {
        self.0.insert(g.domain, g);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

/// MySQL's GTID set (`@@gtid_executed`): per source (server UUID, and tag on MySQL 8.4+), the
/// transaction numbers executed, as sorted, disjoint, closed intervals. Streaming resumes from it
/// with `COM_BINLOG_DUMP_GTID`: the server sends every transaction not in the set, from whichever
/// binlog holds it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet(BTreeMap<String, Vec<(u64, u64)>>);

impl GtidSet {
    /// Parse `3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,<uuid>:tag:1-3` (whitespace and
    /// newlines, as `@@gtid_executed` prints them, are ignored; empty: no transaction yet).
    pub fn parse(s: &str) -> Option<GtidSet> {
        let mut set = GtidSet::default();
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        for part in compact.split(',').filter(|p| !p.is_empty()) {
            let mut fields = part.split(':');
            let uuid = fields.next()?.to_ascii_lowercase();
            if uuid.len() != 36 || !uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
                return None;
            }
            let mut source = uuid;
            let mut any = false;
            for field in fields {
                if field.starts_with(|c: char| c.is_ascii_digit()) {
                    let (a, b) = field.split_once('-').unwrap_or((field, field));
                    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
                    // Transaction numbers are 1..2^63-1.
                    if a == 0 || b < a || b >= i64::MAX as u64 {
                        return None;
                    }
                    set.add_range(&source, a, b);
                    any = true;
                } else {
                    // A tag (`[a-z_][a-z0-9_]{0,31}`): the intervals after it belong to `uuid:tag`.
                    let tag = field.to_ascii_lowercase();
                    let valid = tag.len() <= 32
                        && tag.starts_with(|c: char| c == '_' || c.is_ascii_lowercase())
                        && tag.chars().all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit());
                    if !valid {
                        return None;
                    }
                    source = format!("{}:{tag}", &source[..36]);
                }
            }
            if !any {
                return None;
            }
        }
        Some(set)
    }

    /// Add transaction `gno` of `source` (`uuid` or `uuid:tag`).
    pub fn add(&mut self, source: &str, gno: u64) {
        self.add_range(source, gno, gno);
    }

    /// Add transactions `start..end` (end exclusive, as the binlog's intervals are).
    pub fn add_interval(&mut self, source: &str, start: u64, end: u64) {
        if start >= 1 && end > start {
            self.add_range(source, start, end - 1);
        }
    }

    fn add_range(&mut self, source: &str, a: u64, b: u64) {
        let intervals = match self.0.get_mut(source) {
            Some(i) => i,
            None => self.0.entry(source.to_string()).or_default(),
        };
        // The common case: the next transaction of the newest interval.
        if let Some(last) = intervals.last_mut() {
            if a >= last.0 && a <= last.1.saturating_add(1) {
                last.1 = last.1.max(b);
                return;
            }
        }
        intervals.push((a, b));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(a, b) in intervals.iter() {
            match merged.last_mut() {
                Some(m) if a <= m.1.saturating_add(1) => m.1 = m.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *intervals = merged;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Intervals<'a>(&'a [(u64, u64)]);

impl fmt::Display for Intervals<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (source, intervals)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{source}:{}", Intervals(intervals))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_grow_across_rotations() {
        assert_eq!(file_seq("mysql-bin.000042"), 42);
        assert!(coordinate("mysql-bin.000002", 4) > coordinate("mysql-bin.000001", 1_000_000));
        let a = MyPosition::at("b.000001", 500);
        let b = MyPosition::at("b.000002", 4);
        assert!(b.is_after(&a) && !a.is_after(&b));
    }

    #[test]
    fn gtid_states() {
        let mut state = GtidState::parse("0-1-5,2-1-9").unwrap();
        state.apply(Gtid { domain: 0, server: 1, seq: 100 });
        assert_eq!(state.to_string(), "0-1-100,2-1-9");
        assert!(GtidState::parse("").unwrap().is_empty());
        assert_eq!(GtidState::parse("x"), None);
    }

    #[test]
    fn gtid_sets() {
        let a = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let b = "4f22fa47-71ca-11e1-9e33-c80aa9429562";
        // As @@gtid_executed prints it: sources in order, a newline after each comma.
        let mut set = GtidSet::parse(&format!("{b}:1-3,\n{a}:1-5:7")).unwrap();
        assert_eq!(set.to_string(), format!("{a}:1-5:7,{b}:1-3"));
        set.add(a, 6); // closes the gap
        set.add(a, 8);
        set.add(b, 10);
        set.add("5a000000-0000-0000-0000-000000000001:batch", 1);
        assert_eq!(set.to_string(), format!("{a}:1-8,{b}:1-3:10,5a000000-0000-0000-0000-000000000001:batch:1"));
        assert_eq!(GtidSet::parse(&set.to_string()), Some(set.clone()));
        assert!(GtidSet::parse("").unwrap().is_empty());
        // MariaDB's positions and garbage are not GTID sets.
        assert_eq!(GtidSet::parse("0-1-100"), None);
        assert_eq!(GtidSet::parse(&format!("{a}:5-3")), None);
        assert_eq!(GtidSet::parse(a), None);
        assert_eq!(GtidSet::parse(&format!("{a}:1-18446744073709551615")), None);
        assert_eq!(GtidSet::parse(&format!("{a}:bad-tag:1")), None);
        let mut from_binlog = GtidSet::default();
        from_binlog.add_interval(a, 1, 6); // 1-5
        from_binlog.add_interval(a, 7, 8); // 7
        assert_eq!(from_binlog.to_string(), format!("{a}:1-5:7"));
    }

    #[test]
    fn gtid_positions_are_stored_as_the_server_prints_them() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        for (text, kind) in [("0-1-100,1-2-7", "MariaDB"), (&*format!("{uuid}:1-5:7"), "MySQL")] {
            let json = format!(r#"{{"file":"b.000001","pos":4,"gtid":"{text}"}}"#);
            let p: MyPosition = serde_json::from_str(&json).unwrap();
            assert_eq!(p.gtid.as_ref().unwrap().server_kind(), kind);
            assert_eq!(serde_json::to_string(&p).unwrap(), json);
        }
        let p: MyPosition = serde_json::from_str(r#"{"file":"b.000001","pos":4,"gtid":""}"#).unwrap();
        assert_eq!(p.gtid, None);
        assert!(serde_json::from_str::<MyPosition>(r#"{"file":"b.000001","pos":4,"gtid":"nonsense"}"#).is_err());
    }
}
