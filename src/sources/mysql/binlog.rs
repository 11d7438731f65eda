//! The MariaDB events `mysql_common` does not decode, and the GTID forms the binlog protocol
//! speaks. (The positions themselves are [`crate::connector::position`]'s.)

use crate::connector::position::{Gtid, GtidSet};

/// The set as `COM_BINLOG_DUMP_GTID` sends it.
pub fn sids(set: &GtidSet) -> Result<Vec<mysql_async::Sid<'static>>, String> {
    let text = set.to_string();
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|part| part.parse().map_err(|e| format!("GTID set {part}: {e}")))
        .collect()
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
    fn gtids() {
        let mut body = 100u64.to_le_bytes().to_vec();
        body.extend(0u32.to_le_bytes());
        body.push(GTID_FLAG_STANDALONE);
        let (g, flags) = mariadb_gtid(&body, 1).unwrap();
        assert_eq!(g.to_string(), "0-1-100");
        assert_eq!(flags & GTID_FLAG_STANDALONE, GTID_FLAG_STANDALONE);
    }

    #[test]
    fn gtid_sets_as_the_protocol_sends_them() {
        let a = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let set = GtidSet::parse(&format!(
            "{a}:1-8,4f22fa47-71ca-11e1-9e33-c80aa9429562:1-3:10,5a000000-0000-0000-0000-000000000001:batch:1"
        ))
        .unwrap();
        let sids = sids(&set).unwrap();
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
    }
}
