//! The Lua scripts that apply rows, and the builder of their calls.
//!
//! One `EVALSHA` applies up to [`ROWS_PER_CALL`] rows (on a cluster: one row, since the keys of a
//! call must share a slot). For each row the script compares the row's version with the stored
//! one and applies the row only if it is newer, then stores the version. Rows are applied in call
//! order, so per key the batch order holds. Each row answers 1 (applied), 0 (stale: the stored
//! version is the same or newer) or an error naming what Redis refused; one bad row does not stop
//! the others.
//!
//! KEYS: per row, the row key and its version key. ARGV[1]: row TTL in ms ('0': none). ARGV[2]:
//! tombstone TTL in ms. ARGV[3]: the rows, as one MessagePack array of arrays `[op, version, ...]`
//! (decoded by Redis' built-in `cmsgpack`: one argument per call instead of one per value, which
//! roughly halves the scripting overhead per row).

use redis::Cmd;

pub const ROWS_PER_CALL: usize = 256;

/// The part both scripts share: read every version of the call with one MGET, apply each row
/// whose version is newer than the stored one (and than any earlier row of the same key in this
/// call), and store the new versions with one MSET (rows with a TTL, and tombstones, set theirs
/// one by one). `apply(key, row)` writes one row and is called under pcall.
const FENCED_LOOP: &str = r#"
local rows = cmsgpack.unpack(ARGV[3])
local n = #KEYS / 2
local vkeys = {}
for r = 1, n do vkeys[r] = KEYS[2 * r] end
local stored = redis.call('MGET', unpack(vkeys))
local seen, out, mset = {}, {}, {}
for r = 1, n do
  local key, vkey, row = KEYS[2 * r - 1], vkeys[r], rows[r]
  local op, ver = row[1], row[2]
  local cur = seen[vkey] or stored[r]
  if cur and cur >= ver then
    out[r] = 0
  else
    local ok, err = pcall(apply, key, row)
    if ok then
      out[r] = 1
      seen[vkey] = ver
      if op == 'd' then
        redis.call('SET', vkey, ver, 'PX', ARGV[2])
      elseif ttl > 0 then
        redis.call('SET', vkey, ver, 'PX', ttl)
      else
        mset[#mset + 1] = vkey
        mset[#mset + 1] = ver
      end
    else
      out[r] = redis.error_reply(type(err) == 'table' and err.err or tostring(err))
    end
  end
end
if #mset > 0 then redis.call('MSET', unpack(mset)) end
return out
"#;

/// Hash rows: `['u', version, n, n field/value pairs..., fields to delete (NULL columns)...]` or
/// `['d', version]` (delete, leaving the version as a tombstone).
const ROWS_HASH_HEAD: &str = r#"
local ttl = tonumber(ARGV[1])
local function apply(key, row)
  if row[1] == 'd' then
    redis.call('DEL', key)
    return
  end
  local last = 3 + 2 * row[3]
  if last > 3 then redis.call('HSET', key, unpack(row, 4, last)) end
  if #row > last then redis.call('HDEL', key, unpack(row, last + 1)) end
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
"#;

/// JSON rows: `['r', version, document]` (replace), `['m', version, document, field names...]`
/// (merge: the stored document's fields the new one lacks — columns the source did not send — are
/// spliced in), or `['d', version]`.
const ROWS_JSON_HEAD: &str = r#"
local ttl = tonumber(ARGV[1])
-- The raw JSON text of each top-level field of an object, by name: kept fields are spliced in
-- byte for byte (no decode and re-encode, which would round numbers).
local function raw_fields(doc)
  local out, i = {}, 1
  local function str_end(j)
    j = j + 1
    while true do
      local k = string.find(doc, '["\\]', j)
      if not k then error('unterminated JSON string') end
      if string.byte(doc, k) == 92 then j = k + 2 else return k end
    end
  end
  i = string.find(doc, '{', 1, true)
  if not i then error('stored value is not a JSON object') end
  i = i + 1
  while true do
    local k = string.find(doc, '[^%s,]', i)
    if not k then error('unterminated JSON object') end
    if string.byte(doc, k) == 125 then break end
    local ke = str_end(k)
    local key = cjson.decode(string.sub(doc, k, ke))
    i = string.find(doc, ':', ke + 1, true) + 1
    local vs, depth = i, 0
    while true do
      local c = string.find(doc, '[%[%]{}",]', i)
      if not c then error('unterminated JSON value') end
      local b = string.byte(doc, c)
      if b == 34 then
        i = str_end(c) + 1
      elseif b == 123 or b == 91 then
        depth = depth + 1
        i = c + 1
      elseif depth == 0 and (b == 125 or b == 93 or b == 44) then
        i = c
        break
      else
        if b ~= 44 then depth = depth - 1 end
        i = c + 1
      end
    end
    out[key] = string.sub(doc, vs, i - 1)
  end
  return out
end
local function apply(key, row)
  local op = row[1]
  if op == 'd' then
    redis.call('DEL', key)
    return
  end
  local d = row[3]
  if op == 'm' then
    local old = redis.call('GET', key)
    if old then
      local present = {}
      for i = 4, #row do present[row[i]] = true end
      local extra = {}
      for k, raw in pairs(raw_fields(old)) do
        if not present[k] then extra[#extra + 1] = cjson.encode(k) .. ':' .. raw end
      end
      if #extra > 0 then
        local sep = (d == '{}') and '' or ','
        d = string.sub(d, 1, -2) .. sep .. table.concat(extra, ',') .. '}'
      end
    end
  end
  if ttl > 0 then redis.call('SET', key, d, 'PX', ttl) else redis.call('SET', key, d) end
end
"#;

/// The complete script for a format.
pub fn rows_script(json: bool) -> String {
    let head = if json { ROWS_JSON_HEAD } else { ROWS_HASH_HEAD };
    format!("{head}{FENCED_LOOP}")
}

/// MessagePack, the little of it the scripts need.
mod mp {
    pub fn array(out: &mut Vec<u8>, n: usize) {
        match n {
            0..=15 => out.push(0x90 | n as u8),
            16..=0xffff => {
                out.push(0xdc);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(0xdd);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }

    pub fn str(out: &mut Vec<u8>, s: &[u8]) {
        let n = s.len();
        match n {
            0..=31 => out.push(0xa0 | n as u8),
            32..=0xff => out.extend_from_slice(&[0xd9, n as u8]),
            0x100..=0xffff => {
                out.push(0xda);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(0xdb);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
        out.extend_from_slice(s);
    }

    pub fn uint(out: &mut Vec<u8>, v: usize) {
        match v {
            0..=0x7f => out.push(v as u8),
            0x80..=0xffff => {
                out.push(0xcd);
                out.extend_from_slice(&(v as u16).to_be_bytes());
            }
            _ => {
                out.push(0xce);
                out.extend_from_slice(&(v as u32).to_be_bytes());
            }
        }
    }
}

/// Accumulates the rows of one script call.
pub struct Call {
    /// Every key of the call (row key, version key, ...), concatenated; `key_ends` splits them.
    keys: String,
    key_ends: Vec<usize>,
    /// The rows' MessagePack arrays, concatenated (the outer array header is added at the end).
    body: Vec<u8>,
    /// The index (in the batch) of each row.
    pub rows: Vec<usize>,
}

impl Default for Call {
    fn default() -> Self {
        Self::new()
    }
}

impl Call {
    pub fn new() -> Self {
        Call {
            keys: String::with_capacity(4096),
            key_ends: Vec::new(),
            body: Vec::with_capacity(16 * 1024),
            rows: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn key(&self, k: usize) -> &str {
        let start = if k == 0 { 0 } else { self.key_ends[k - 1] };
        &self.keys[start..self.key_ends[k]]
    }

    /// The row key of the call's first row (for routing on a cluster).
    pub fn first_key(&self) -> &str {
        self.key(0)
    }

    pub fn row_key(&self, i: usize) -> &str {
        self.key(2 * i)
    }

    /// Start a row of `items` elements (op and version included): its keys, op and version.
    pub fn begin(&mut self, index: usize, key: &str, version_prefix: &str, items: usize, op: &str, version: &str) {
        self.rows.push(index);
        self.keys.push_str(key);
        self.key_ends.push(self.keys.len());
        super::keys::write_version_key(&mut self.keys, version_prefix, key);
        self.key_ends.push(self.keys.len());
        mp::array(&mut self.body, items);
        mp::str(&mut self.body, op.as_bytes());
        mp::str(&mut self.body, version.as_bytes());
    }

    /// Append a string element to the current row.
    pub fn str(&mut self, s: &[u8]) {
        mp::str(&mut self.body, s);
    }

    /// Append an integer element to the current row.
    pub fn uint(&mut self, v: usize) {
        mp::uint(&mut self.body, v);
    }

    /// The `EVALSHA` command for the rows added so far.
    pub fn command(&self, sha: &str, ttl_ms: u64, tombstone_ms: u64) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(self.key_ends.len());
        for k in 0..self.key_ends.len() {
            cmd.arg(self.key(k));
        }
        let mut packed = Vec::with_capacity(self.body.len() + 5);
        mp::array(&mut packed, self.rows.len());
        packed.extend_from_slice(&self.body);
        cmd.arg(ttl_ms).arg(tombstone_ms).arg(packed);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::mp;

    #[test]
    fn messagepack_headers() {
        let mut out = Vec::new();
        mp::array(&mut out, 3);
        mp::array(&mut out, 300);
        mp::str(&mut out, b"ab");
        mp::str(&mut out, &[b'x'; 40]);
        mp::uint(&mut out, 5);
        mp::uint(&mut out, 1000);
        assert_eq!(&out[..6], &[0x93, 0xdc, 0x01, 0x2c, 0xa2, b'a']);
        assert_eq!(&out[7..9], &[0xd9, 40]);
        assert_eq!(&out[49..], &[0x05, 0xcd, 0x03, 0xe8]);
    }
}
