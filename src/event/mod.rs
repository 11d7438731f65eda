//! Change events: typed values inside the daemon, Debezium envelopes on the wire.

pub mod encode;
pub mod envelope;
pub mod json;
pub mod time;

use std::fmt;
use std::sync::Arc;

pub use encode::Encoding;

/// Debezium's operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// A row read by a snapshot.
    Read,
    Truncate,
}

impl Op {
    pub const fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// A table as the source names it. For PostgreSQL `db` is the database and `schema` the schema;
/// for MySQL both are the database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub db: Arc<str>,
    pub schema: Arc<str>,
    pub name: Arc<str>,
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The monotonic source version of a change, which fences every sink write: a write whose version
/// is not newer than the stored one is a no-op. `hi` is the source coordinate of the commit
/// (PostgreSQL: commit LSN), `lo` the change's index inside it (0 for snapshot reads, which sort
/// before every streamed change of the same coordinate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    pub hi: u64,
    pub lo: u64,
}

impl Version {
    pub const fn new(hi: u64, lo: u64) -> Self {
        Version { hi, lo }
    }

    /// Fixed-width lowercase hex (32 characters), so byte-wise string comparison (as in a Redis
    /// Lua script) orders versions correctly.
    pub fn to_hex(self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(32);
        for word in [self.hi, self.lo] {
            for shift in (0..16).rev() {
                out.push(DIGITS[((word >> (shift * 4)) & 0xf) as usize] as char);
            }
        }
        out
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        Some(Version { hi: u64::from_str_radix(&s[..16], 16).ok()?, lo: u64::from_str_radix(&s[16..], 16).ok()? })
    }
}

/// A column value, typed. Encoding to Debezium JSON (and to Redis hash fields) happens at the
/// edges, in [`encode`], according to the connector's [`Encoding`] options.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// An exact decimal in its canonical text form (`"-12.340"`, `"NaN"`), with the column's
    /// declared scale when it has one.
    Numeric {
        text: Box<str>,
        scale: Option<u16>,
    },
    Text(String),
    Bytes(Vec<u8>),
    /// JSON text, passed through unchanged.
    Json(String),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since midnight, and the column's fractional-second precision.
    Time {
        micros: i64,
        precision: u8,
    },
    /// Time of day with a UTC offset.
    TimeTz {
        micros: i64,
        offset_secs: i32,
        precision: u8,
    },
    /// Microseconds since the epoch, wall clock without a time zone.
    Timestamp {
        micros: i64,
        precision: u8,
    },
    /// Microseconds since the epoch, UTC.
    TimestampTz {
        micros: i64,
        precision: u8,
    },
    Interval {
        months: i32,
        days: i32,
        micros: i64,
    },
    Array(Vec<Value>),
    /// A 2-D point (PostgreSQL `point`), written as Debezium's geometry struct.
    Point {
        x: f64,
        y: f64,
    },
    /// A value the source did not send: an unchanged TOASTed PostgreSQL column. Envelopes write
    /// the placeholder in its place; rows hide it ([`Row::get`], [`Row::iter`]), so caches keep
    /// the value they hold.
    Unavailable,
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Rough heap size, for batching by bytes.
    pub fn approx_bytes(&self) -> usize {
        16 + match self {
            Value::Numeric { text, .. } => text.len(),
            Value::Text(s) | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Array(items) => items.iter().map(Value::approx_bytes).sum(),
            _ => 0,
        }
    }
}

/// Named column values. A row may be *partial*: a column whose value the source did not send
/// (an unchanged TOASTed PostgreSQL value) holds [`Value::Unavailable`], which every accessor but
/// [`Row::iter_all`] hides, so sinks and transforms see it as absent and leave it untouched.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row(pub Vec<(Arc<str>, Value)>);

impl Row {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, v)| &**n == name && !matches!(v, Value::Unavailable)).map(|(_, v)| v)
    }

    /// How many columns hold a value (unavailable ones not counted).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The columns that hold a value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().filter(|(_, v)| !matches!(v, Value::Unavailable)).map(|(n, v)| (&**n, v))
    }

    /// Every column, unavailable ones included (for envelopes, which write the placeholder).
    pub fn iter_all(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (&**n, v))
    }

    pub fn approx_bytes(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.approx_bytes()).sum()
    }
}

/// Where a snapshot row sits in its snapshot (Debezium's `source.snapshot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFlag {
    /// A streamed change.
    No,
    /// The first row of the snapshot.
    First,
    /// The first row of a table (not the snapshot's first).
    FirstInTable,
    /// Any other snapshot row.
    Yes,
    /// The last row of a table (not the snapshot's last).
    LastInTable,
    /// The snapshot's last row.
    Last,
}

impl SnapshotFlag {
    pub const fn as_str(self) -> &'static str {
        match self {
            SnapshotFlag::No => "false",
            SnapshotFlag::First => "first",
            SnapshotFlag::FirstInTable => "first_in_data_collection",
            SnapshotFlag::Yes => "true",
            SnapshotFlag::LastInTable => "last_in_data_collection",
            SnapshotFlag::Last => "last",
        }
    }

    pub const fn is_snapshot(self) -> bool {
        !matches!(self, SnapshotFlag::No)
    }
}

/// Sets Debezium's snapshot markers with one row of lookahead: a snapshot reader hands every
/// row to [`SnapshotMarks::push`] and says where each table ends; rows come back out one behind,
/// marked.
#[derive(Debug, Default)]
pub struct SnapshotMarks {
    held: Option<ChangeEvent>,
    started: bool,
    table_started: bool,
}

impl SnapshotMarks {
    /// Take the next row; returns the previous one, now that its marker is known.
    pub fn push(&mut self, mut ev: ChangeEvent) -> Option<ChangeEvent> {
        ev.snapshot = if !self.started {
            SnapshotFlag::First
        } else if !self.table_started {
            SnapshotFlag::FirstInTable
        } else {
            SnapshotFlag::Yes
        };
        self.started = true;
        self.table_started = true;
        self.held.replace(ev)
    }

    /// The current table has no more rows: the held row is its last.
    pub fn end_table(&mut self) {
        if self.table_started {
            if let Some(ev) = &mut self.held {
                // Debezium: the first row of the snapshot stays `first` unless it is also the last.
                if ev.snapshot != SnapshotFlag::First {
                    ev.snapshot = SnapshotFlag::LastInTable;
                }
            }
        }
        self.table_started = false;
    }

    /// Give up the held row (at a checkpoint, which must cover it) with the marker it has now.
    pub fn release(&mut self) -> Option<ChangeEvent> {
        self.held.take()
    }

    /// The snapshot is complete: the held row is its last.
    pub fn finish(&mut self) -> Option<ChangeEvent> {
        let mut ev = self.held.take()?;
        ev.snapshot = SnapshotFlag::Last;
        Some(ev)
    }
}

/// Source-specific fields of Debezium's `source` block.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceMeta {
    /// PostgreSQL: the change's own LSN, the end LSN of the last transaction committed before it
    /// in this stream (Debezium's `sequence` is `[last_commit_lsn, lsn]`), and the transaction id
    /// (the snapshot transaction's for snapshot rows).
    Postgres { lsn: u64, last_commit_lsn: Option<u64>, tx_id: Option<u64> },
    /// MySQL/MariaDB: the binlog coordinates of the rows event, the row's index in it, the
    /// transaction's GTID (`domain-server-seq` on MariaDB, `uuid:gno` on MySQL) and the thread
    /// that wrote it (`None` for snapshot rows and statements).
    Mysql { server_id: u32, gtid: Option<Arc<str>>, file: Arc<str>, pos: u64, row: u32, thread: Option<u32> },
}

impl SourceMeta {
    pub const fn connector(&self) -> &'static str {
        match self {
            SourceMeta::Postgres { .. } => "postgresql",
            SourceMeta::Mysql { .. } => "mysql",
        }
    }
}

/// One committed row change (or truncate).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    pub table: Arc<TableRef>,
    /// The primary-key columns (empty for a truncate).
    pub key: Row,
    pub before: Option<Row>,
    pub after: Option<Row>,
    /// `after` lacks columns the source did not send (unchanged TOASTed values): sinks merge it
    /// into the stored row instead of replacing the row.
    pub partial: bool,
    pub version: Version,
    /// Commit time at the source, microseconds since the epoch (as precise as the source
    /// records it: PostgreSQL and MySQL 8+ to the microsecond, MariaDB to the second).
    pub commit_us: i64,
    pub snapshot: SnapshotFlag,
    pub source: SourceMeta,
}

impl ChangeEvent {
    /// Commit time at the source, milliseconds since the epoch.
    pub fn commit_ts_ms(&self) -> i64 {
        self.commit_us.div_euclid(1000)
    }

    pub fn approx_bytes(&self) -> usize {
        64 + self.key.approx_bytes()
            + self.before.as_ref().map_or(0, Row::approx_bytes)
            + self.after.as_ref().map_or(0, Row::approx_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_hex_orders_like_the_version() {
        let a = Version::new(0x16B3748, 2);
        let b = Version::new(0x16B3748, 10);
        let c = Version::new(0x1_0000_0000, 0);
        assert!(a.to_hex() < b.to_hex() && b.to_hex() < c.to_hex());
        assert_eq!(Version::from_hex(&b.to_hex()), Some(b));
        assert_eq!(a.to_hex().len(), 32);
    }
}
