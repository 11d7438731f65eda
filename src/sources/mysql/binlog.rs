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
    /// MariaDB: the GTID position (`domain-server-seq` per domain) after the last durable
    /// transaction; streaming resumes from it with `@slave_connect_state`, which survives binlog
    /// rotations and failovers better than file and offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
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

pub const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
pub const MARIADB_GTID: u8 = 162;
pub const MARIADB_GTID_LIST: u8 = 163;
/// 165-171: MariaDB's compressed QUERY and ROWS events (`log_bin_compress=ON`).
pub const MARIADB_COMPRESSED: std::ops::RangeInclusive<u8> = 165..=171;
/// MySQL's HEARTBEAT_LOG_EVENT_V2.
pub const MYSQL_HEARTBEAT_V2: u8 = 0x29;

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
        let a = MyPosition { file: "b.000001".into(), pos: 500, gtid: None, snapshot: None };
        let b = MyPosition { file: "b.000002".into(), pos: 4, gtid: None, snapshot: None };
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
}
