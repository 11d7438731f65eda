//! Redis Cluster: key slots and which primary serves them.

use redis::Value as RValue;

use super::RedisSinkError;

/// The primaries of a Redis Cluster and the slot ranges each serves (from `CLUSTER SLOTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// (first slot, last slot, index into `nodes`)
    ranges: Vec<(u16, u16, usize)>,
    pub nodes: Vec<(String, u16)>,
}

impl SlotMap {
    pub fn parse(reply: RValue) -> Result<SlotMap, RedisSinkError> {
        let bad = |why: &str| RedisSinkError::Protocol { what: "CLUSTER SLOTS", reply: why.to_string() };
        let RValue::Array(entries) = reply else { return Err(bad("not an array")) };
        let mut map = SlotMap { ranges: Vec::new(), nodes: Vec::new() };
        for entry in entries {
            let RValue::Array(parts) = entry else { return Err(bad("entry is not an array")) };
            let (Some(RValue::Int(start)), Some(RValue::Int(end)), Some(RValue::Array(primary))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return Err(bad("malformed entry"));
            };
            let host = match primary.first() {
                Some(RValue::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(RValue::SimpleString(s)) => s.clone(),
                _ => return Err(bad("malformed node")),
            };
            let Some(RValue::Int(port)) = primary.get(1) else { return Err(bad("malformed port")) };
            let node = (host, *port as u16);
            let idx = match map.nodes.iter().position(|n| *n == node) {
                Some(i) => i,
                None => {
                    map.nodes.push(node);
                    map.nodes.len() - 1
                }
            };
            map.ranges.push((*start as u16, *end as u16, idx));
        }
        Ok(map)
    }

    pub fn node_of(&self, slot: u16) -> Option<usize> {
        self.ranges.iter().find(|(a, b, _)| (*a..=*b).contains(&slot)).map(|r| r.2)
    }
}

const SLOTS: usize = 16384;

fn crc16_slot(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % SLOTS as u16
}

/// The Redis Cluster slot of a key: CRC16/XMODEM of its hash tag (or of the whole key), mod 16384.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key.find('{').and_then(|open| {
        let len = key[open + 1..].find('}')?;
        (len > 0).then(|| &bytes[open + 1..open + 1 + len])
    });
    crc16_slot(tagged.unwrap_or(bytes))
}

/// A short string (no braces) that hashes to `slot`: wrapped in braces it pins a key to that slot.
pub fn slot_tag(slot: u16) -> &'static str {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        // Enumerate base-36 strings until every slot has one (a few hundred thousand CRCs).
        let mut tags = vec![String::new(); SLOTS];
        let mut missing = SLOTS;
        let mut n: u64 = 0;
        while missing > 0 {
            let mut tag = String::new();
            let mut v = n;
            loop {
                tag.insert(0, char::from_digit((v % 36) as u32, 36).expect("digit"));
                v /= 36;
                if v == 0 {
                    break;
                }
            }
            let slot = crc16_slot(tag.as_bytes()) as usize;
            if tags[slot].is_empty() {
                tags[slot] = tag;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    &tags[slot as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_slot_map() {
        // Known values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(key_slot("123456789"), 12739);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
        for slot in [0u16, 1, 12182, 16383] {
            assert_eq!(key_slot(&format!("{{{}}}", slot_tag(slot))), slot);
        }
        let node = |port: i64| {
            RValue::Array(vec![
                RValue::BulkString(b"127.0.0.1".to_vec()),
                RValue::Int(port),
                RValue::BulkString(b"id".to_vec()),
            ])
        };
        let reply = RValue::Array(vec![
            RValue::Array(vec![RValue::Int(0), RValue::Int(5460), node(7000)]),
            RValue::Array(vec![RValue::Int(5461), RValue::Int(10922), node(7001)]),
            RValue::Array(vec![RValue::Int(10923), RValue::Int(16383), node(7002), node(7005)]),
        ]);
        let map = SlotMap::parse(reply).unwrap();
        assert_eq!(map.nodes.len(), 3);
        assert_eq!(map.node_of(0), Some(0));
        assert_eq!(map.node_of(12182).map(|i| map.nodes[i].1), Some(7002));
    }
}
