//! Binlog coordinates, MariaDB GTIDs, and the MariaDB events `mysql_common` does not decode.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sources::SnapshotProgress;

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// The server the position was read from (MySQL's `server_uuid`, MariaDB's `server_id`):
    /// binlog coordinates, and the versions made of them, mean nothing on another server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Present until the initial snapshot has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
}

impl MyPosition {
    pub fn coordinate(&self) -> u64 {
        coordinate(&self.file, self.pos)
    }

    pub fn is_after(&self, older: &MyPosition) -> bool {
        match (&self.snapshot, &older.snapshot) {
            (None, None) => self.coordinate() > older.coordinate(),
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a.is_after(b),
        }
    }
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

    /// The set as `COM_BINLOG_DUMP_GTID` sends it.
    pub fn sids(&self) -> Result<Vec<mysql_async::Sid<'static>>, String> {
        self.0
            .iter()
            .map(|(source, intervals)| {
                let text = format!("{source}:{}", Intervals(intervals));
                text.parse().map_err(|e| format!("GTID set {text}: {e}"))
            })
            .collect()
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

/// A MySQL GTID event's source (`uuid` or `uuid:tag`), as [`GtidSet`] keys it.
pub fn mysql_source(sid: [u8; 16], tag: Option<&str>) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
    match tag {
        Some(t) => format!("{uuid}:{t}"),
        None => uuid,
    }
}

pub const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
pub const MARIADB_GTID: u8 = 162;
pub const MARIADB_GTID_LIST: u8 = 163;
/// 165-171: MariaDB's compressed QUERY and ROWS events (`log_bin_compress=ON`).
pub const MARIADB_COMPRESSED: std::ops::RangeInclusive<u8> = 165..=171;
/// MySQL's HEARTBEAT_LOG_EVENT_V2.
pub const MYSQL_HEARTBEAT_V2: u8 = 0x29;
/// MySQL's TRANSACTION_PAYLOAD_EVENT: a whole transaction, compressed
/// (`binlog_transaction_compression=ON`).
pub const MYSQL_TRANSACTION_PAYLOAD: u8 = 0x28;

/// The flag of a MariaDB GTID event saying the event group is one statement with no COMMIT/XID
/// (DDL, non-transactional statements).
pub const GTID_FLAG_STANDALONE: u8 = 0x01;

/// Decode a MariaDB GTID event body: `seq_no u64, domain_id u32, flags u8, ...`.
pub fn mariadb_gtid(body: &[u8], server_id: u32) -> Option<(Gtid, u8)> {
    let seq = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
    let flags = *body.get(12)?;
    Some((Gtid { domain, server: server_id, seq }, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_grow_across_rotations() {
        assert_eq!(file_seq("mysql-bin.000042"), 42);
        assert!(coordinate("mysql-bin.000002", 4) > coordinate("mysql-bin.000001", 1_000_000));
        let a = MyPosition { file: "b.000001".into(), pos: 500, gtid: None, server: None, snapshot: None };
        let b = MyPosition { file: "b.000002".into(), pos: 4, gtid: None, server: None, snapshot: None };
        assert!(b.is_after(&a) && !a.is_after(&b));
    }

    #[test]
    fn gtids() {
        let mut body = 100u64.to_le_bytes().to_vec();
        body.extend(0u32.to_le_bytes());
        body.push(GTID_FLAG_STANDALONE);
        let (g, flags) = mariadb_gtid(&body, 1).unwrap();
        assert_eq!(g.to_string(), "0-1-100");
        assert_eq!(flags & GTID_FLAG_STANDALONE, GTID_FLAG_STANDALONE);
        let mut state = GtidState::parse("0-1-5,2-1-9").unwrap();
        state.apply(g);
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
        let sids = set.sids().unwrap();
        assert_eq!(sids.len(), 3);
        assert_eq!(sids[1].intervals().len(), 2);
        assert_eq!((sids[0].intervals()[0].start(), sids[0].intervals()[0].end()), (1, 9)); // end exclusive
        assert_eq!(
            mysql_source(
                [0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62],
                None
            ),
            a
        );
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
}
