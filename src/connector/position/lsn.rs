//! PostgreSQL positions: log sequence numbers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{snapshot_order, SnapshotProgress};

/// A PostgreSQL log sequence number: a byte offset in the WAL, written `X/X` (hex, high and low
/// 32 bits) as the server prints it, and stored in that form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// Not an `X/X` LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an LSN")]
pub struct BadLsn(String);

impl FromStr for Lsn {
    type Err = BadLsn;

    fn from_str(s: &str) -> Result<Lsn, BadLsn> {
        let bad = || BadLsn(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let half = |h: &str| match h.len() {
            1..=8 => u32::from_str_radix(h, 16).map_err(|_| bad()),
            _ => Err(bad()),
        };
        Ok(Lsn(((half(hi)? as u64) << 32) | half(lo)? as u64))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a PostgreSQL connector resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgPosition {
    /// Streaming resumes here: the end of the last durable transaction or heartbeat. While the
    /// initial snapshot runs, the slot's consistent point.
    pub lsn: Lsn,
    /// Present until the initial snapshot has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
}

impl PgPosition {
    pub fn streaming(lsn: Lsn) -> Self {
        PgPosition { lsn, snapshot: None }
    }

    pub fn is_after(&self, older: &PgPosition) -> bool {
        snapshot_order(self.snapshot.as_ref(), older.snapshot.as_ref(), || self.lsn > older.lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Position;
    use super::*;

    #[test]
    fn lsns_print_and_parse_as_the_server_does() {
        assert_eq!(Lsn(0x16B3748).to_string(), "0/16B3748");
        assert_eq!(Lsn(0x1_0000_00FF).to_string(), "1/FF");
        assert_eq!("1/ff".parse::<Lsn>(), Ok(Lsn(0x1_0000_00FF)));
        for bad in ["", "1", "x/1", "1/123456789", "/1"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn position_round_trips_with_readable_lsn() {
        let p = Position::Postgres(PgPosition::streaming(Lsn(0x16B3748)));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"kind":"postgres","lsn":"0/16B3748"}"#);
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), p);
    }

    #[test]
    fn positions_order() {
        let snap = PgPosition { lsn: Lsn(10), snapshot: Some(SnapshotProgress::default()) };
        let streaming = PgPosition::streaming(Lsn(10));
        assert!(streaming.is_after(&snap));
        assert!(!snap.is_after(&streaming));
        assert!(PgPosition::streaming(Lsn(11)).is_after(&streaming));
        assert!(!streaming.is_after(&streaming));
    }
}
