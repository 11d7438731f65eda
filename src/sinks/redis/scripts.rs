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
//! tombstone TTL in ms. Then per row: op, version, and op-specific arguments (below).

use redis::Cmd;

pub const ROWS_PER_CALL: usize = 256;

/// The part both scripts share: read every version of the call with one MGET, apply each row
/// whose version is newer than the stored one (and than any earlier row of the same key in this
/// call), and store the new versions with one MSET (rows with a TTL, and tombstones, set theirs
/// one by one). `apply(r, key, vkey, op, ver)` writes one row and is called under pcall.
const FENCED_LOOP: &str = r#"
local ttl = tonumber(ARGV[1])
local n = #KEYS / 2
local vkeys = {}
for r = 1, n do vkeys[r] = KEYS[2 * r] end
local stored = redis.call('MGET', unpack(vkeys))
local seen, out, mset = {}, {}, {}
a = 3
for r = 1, n do
  local key, vkey = KEYS[2 * r - 1], vkeys[r]
  local op, ver = ARGV[a], ARGV[a + 1]
  a = a + 2
  parse(op)
  local cur = seen[vkey] or stored[r]
  if cur and cur >= ver then
    out[r] = 0
  else
    local ok, err = pcall(apply, key, op)
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

/// Hash rows. Ops: `u` upsert — `n`, n field/value pairs, `m`, m fields to delete (NULL
/// columns); `d` delete, leaving the version as a tombstone.
pub const ROWS_HASH_HEAD: &str = r#"
local a, sf, st, df, dt
local function parse(op)
  if op == 'u' then
    local n = tonumber(ARGV[a])
    sf, st = a + 1, a + 2 * n
    local m = tonumber(ARGV[st + 1])
    df, dt = st + 2, st + 1 + m
    a = dt + 1
  end
end
local function apply(key, op)
  if op == 'd' then
    redis.call('DEL', key)
    return
  end
  if st >= sf then redis.call('HSET', key, unpack(ARGV, sf, st)) end
  if dt >= df then redis.call('HDEL', key, unpack(ARGV, df, dt)) end
  local ttl = tonumber(ARGV[1])
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
"#;

/// JSON rows. Ops: `r` replace — the document; `m` merge — the document, `n`, the n field names it
/// carries (the stored document's other fields, columns the source did not send, are spliced in);
/// `d` delete.
pub const ROWS_JSON_HEAD: &str = r#"
local a, doc, pf, pt
local function parse(op)
  if op == 'r' then
    doc = ARGV[a]
    a = a + 1
  elseif op == 'm' then
    doc = ARGV[a]
    local n = tonumber(ARGV[a + 1])
    pf, pt = a + 2, a + 1 + n
    a = pt + 1
  end
end
local function apply(key, op)
  if op == 'd' then
    redis.call('DEL', key)
    return
  end
  local d = doc
  if op == 'm' then
    local old = redis.call('GET', key)
    if old then
      local present = {}
      for i = pf, pt do present[ARGV[i]] = true end
      local extra = {}
      for k, v in pairs(cjson.decode(old)) do
        if not present[k] then extra[#extra + 1] = cjson.encode(k) .. ':' .. cjson.encode(v) end
      end
      if #extra > 0 then
        local sep = (d == '{}') and '' or ','
        d = string.sub(d, 1, -2) .. sep .. table.concat(extra, ',') .. '}'
      end
    end
  end
  local ttl = tonumber(ARGV[1])
  if ttl > 0 then redis.call('SET', key, d, 'PX', ttl) else redis.call('SET', key, d) end
end
"#;

/// The complete script for a format.
pub fn rows_script(json: bool) -> String {
    let head = if json { ROWS_JSON_HEAD } else { ROWS_HASH_HEAD };
    format!("{head}{FENCED_LOOP}")
}

/// Accumulates the rows of one script call.
pub struct Call {
    keys: Vec<String>,
    args: Vec<u8>,
    ends: Vec<usize>,
    /// The index (in the batch) of each row.
    pub rows: Vec<usize>,
}

impl Call {
    pub fn new() -> Self {
        Call { keys: Vec::new(), args: Vec::with_capacity(4096), ends: Vec::new(), rows: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row key of the call's first row (for routing on a cluster).
    pub fn first_key(&self) -> &str {
        &self.keys[0]
    }

    pub fn row_key(&self, i: usize) -> &str {
        &self.keys[2 * i]
    }

    /// Start a row: its keys, op and version.
    pub fn begin(&mut self, index: usize, key: &str, version_key: String, op: &str, version: &str) {
        self.rows.push(index);
        self.keys.push(key.to_string());
        self.keys.push(version_key);
        self.arg(op.as_bytes());
        self.arg(version.as_bytes());
    }

    pub fn arg(&mut self, a: &[u8]) {
        self.args.extend_from_slice(a);
        self.ends.push(self.args.len());
    }

    /// Append an argument written by `f` (avoids an intermediate String).
    pub fn arg_with(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.args);
        self.ends.push(self.args.len());
    }

    /// The `EVALSHA` command for the rows added so far.
    pub fn command(&self, sha: &str, ttl_ms: u64, tombstone_ms: u64) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(self.keys.len());
        for k in &self.keys {
            cmd.arg(k);
        }
        cmd.arg(ttl_ms).arg(tombstone_ms);
        let mut start = 0;
        for &end in &self.ends {
            cmd.arg(&self.args[start..end]);
            start = end;
        }
        cmd
    }
}
