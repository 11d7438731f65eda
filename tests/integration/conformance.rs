//! Debezium conformance: tidemark's events against what the real Debezium 3.6.3 wrote for the
//! same schema and changes (tests/conformance/*.sql; captured into tests/fixtures/debezium/ by
//! scripts/conformance.sh). Every record is compared token for token — field names and order,
//! number text, string escapes — after two kinds of normalization, both listed here or in
//! tests/conformance/differences.toml and nowhere else:
//!
//! - values that belong to one run (LSNs, transaction ids, binlog positions, GTIDs, thread ids,
//!   timestamps, the connector and database names) are checked for their form and for how they
//!   relate to the event before (equal, greater), and compared by that relation only;
//! - the documented differences (differences.toml), each of which must still occur.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::mysql_redis::{my_connect, mysql8_url, MyEnv, BINLOGS};
use crate::support::*;

/// A JSON value that keeps what a byte-level comparison needs: key order, number text, and
/// string text with its escapes as written.
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn parse(text: &str) -> J {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        let v = p.value();
        assert_eq!(p.i, text.len(), "trailing text after JSON: {text}");
        v
    }

    fn write(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(s) => {
                out.push('"');
                out.push_str(s);
                out.push('"');
            }
            J::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "\"{k}\":");
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut J> {
        match self {
            J::Obj(fields) => fields.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value at a dotted path (`after.m2`).
    fn at_mut(&mut self, path: &str) -> Option<&mut J> {
        path.split('.').try_fold(self, |v, k| v.get_mut(k))
    }

    fn str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }

    fn int(&self) -> Option<i128> {
        match self {
            J::Num(n) => n.parse().ok(),
            _ => None,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> u8 {
        *self.s.get(self.i).unwrap_or_else(|| panic!("JSON ends early: {}", String::from_utf8_lossy(self.s)))
    }

    fn eat(&mut self, c: u8) {
        assert_eq!(self.peek() as char, c as char, "at {} of {}", self.i, String::from_utf8_lossy(self.s));
        self.i += 1;
    }

    fn lit(&mut self, word: &str, v: J) -> J {
        assert!(self.s[self.i..].starts_with(word.as_bytes()));
        self.i += word.len();
        v
    }

    fn value(&mut self) -> J {
        match self.peek() {
            b'n' => self.lit("null", J::Null),
            b't' => self.lit("true", J::Bool(true)),
            b'f' => self.lit("false", J::Bool(false)),
            b'"' => J::Str(self.string()),
            b'[' => {
                self.eat(b'[');
                let mut items = Vec::new();
                while self.peek() != b']' {
                    if !items.is_empty() {
                        self.eat(b',');
                    }
                    items.push(self.value());
                }
                self.eat(b']');
                J::Arr(items)
            }
            b'{' => {
                self.eat(b'{');
                let mut fields = Vec::new();
                while self.peek() != b'}' {
                    if !fields.is_empty() {
                        self.eat(b',');
                    }
                    let k = self.string();
                    self.eat(b':');
                    fields.push((k, self.value()));
                }
                self.eat(b'}');
                J::Obj(fields)
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"+-0123456789.eE".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                assert!(self.i > start, "unexpected byte at {} of {}", start, String::from_utf8_lossy(self.s));
                J::Num(String::from_utf8(self.s[start..self.i].to_vec()).unwrap())
            }
        }
    }

    /// A string's raw text between its quotes, escapes kept.
    fn string(&mut self) -> String {
        self.eat(b'"');
        let start = self.i;
        while self.peek() != b'"' {
            self.i += if self.peek() == b'\\' { 2 } else { 1 };
        }
        let raw = String::from_utf8(self.s[start..self.i].to_vec()).unwrap();
        self.i += 1;
        raw
    }
}

/// One documented difference (tests/conformance/differences.toml).
#[derive(Debug, serde::Deserialize)]
struct Difference {
    source: String,
    /// A kind of record only Debezium writes: `tombstone` or `schema_change`.
    records: Option<String>,
    table: Option<String>,
    field: Option<String>,
    /// `all`, `snapshot` or `stream`.
    #[serde(default = "all")]
    events: String,
    /// `differs`: both write the field, with other values; `json`: the same JSON document in
    /// other text; `instant`: the same instant in other text.
    compare: Option<String>,
    #[allow(dead_code)]
    why: String,
}

fn all() -> String {
    "all".into()
}

#[derive(Debug, serde::Deserialize)]
struct Differences {
    difference: Vec<Difference>,
}

fn differences(source: &str) -> Vec<Difference> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/differences.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let all: Differences = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    all.difference.into_iter().filter(|d| d.source == source).collect()
}

/// An event's value, for comparison: the record's table and op, and the envelope.
struct Record {
    table: String,
    op: String,
    value: J,
}

impl Record {
    fn new(value: J) -> Record {
        let source = value.get("source").expect("source block");
        Record {
            table: source.get("table").and_then(J::str).unwrap_or_default().to_string(),
            op: value.get("op").and_then(J::str).unwrap_or_default().to_string(),
            value,
        }
    }

    fn is_snapshot(&self) -> bool {
        self.op == "r"
    }

    fn describe(&self, i: usize) -> String {
        format!("event {i} ({} {})", self.op, self.table)
    }
}

/// Debezium's records, in order, minus the kinds the differences say only Debezium writes.
fn debezium_records(source: &str, diffs: &[Difference], seen: &mut [bool]) -> Vec<Record> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/debezium/{source}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for line in text.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        let kind = match rec["value"].as_str() {
            None => "tombstone",
            Some(v) if v.contains("\"ddl\":") && !v.contains("\"op\":") => "schema_change",
            Some(_) => "event",
        };
        if kind != "event" {
            let i = diffs
                .iter()
                .position(|d| d.records.as_deref() == Some(kind))
                .unwrap_or_else(|| panic!("Debezium wrote a {kind} record, which no documented difference covers"));
            seen[i] = true;
            continue;
        }
        out.push(Record::new(J::parse(rec["value"].as_str().unwrap())));
    }
    out
}

/// tidemark's events from its stdout sink: each line must be exactly the compact text of its
/// parsed form (no whitespace, nothing after it).
fn tidemark_records(stdout: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(stdout).unwrap();
    text.lines()
        .map(|line| {
            let v = J::parse(line);
            assert_eq!(v.text(), line, "not compact JSON");
            Record::new(v)
        })
        .collect()
}

/// How a run-specific value relates to the same field of the event before.
fn relation(prev: Option<&J>, cur: &J) -> J {
    let token = match (prev, cur) {
        (_, J::Null) => "null",
        (None | Some(J::Null), _) => "first",
        (Some(p), c) if p == c => "same",
        (Some(p), c) => match (p.int(), c.int()) {
            (Some(a), Some(b)) if b > a => "greater",
            (Some(_), Some(_)) => "smaller",
            _ => "other",
        },
    };
    J::Str(format!("<{token}>"))
}

/// Check the form of the run-specific fields and replace each by its relation to the event
/// before (`prev` holds the original values of the previous event, by path).
fn normalize_run_values(rec: &mut Record, prev: &mut BTreeMap<String, J>, source: &str) -> Result<(), String> {
    let v = &mut rec.value;
    // Processing time: ts_ms = ts_us / 1000 = ts_ns / 1e6.
    let (ms, us, ns) = (
        v.get("ts_ms").and_then(J::int).ok_or("ts_ms")?,
        v.get("ts_us").and_then(J::int).ok_or("ts_us")?,
        v.get("ts_ns").and_then(J::int).ok_or("ts_ns")?,
    );
    if us / 1000 != ms || ns / 1000 != us {
        return Err(format!("ts_ms {ms}, ts_us {us}, ts_ns {ns} disagree"));
    }
    for k in ["ts_ms", "ts_us", "ts_ns"] {
        *v.get_mut(k).unwrap() = J::Str("<now>".into());
    }
    let src = v.get_mut("source").ok_or("no source")?;
    // Commit time: ts_ms = ts_us / 1000, ts_ns = ts_us * 1000.
    let (ms, us, ns) = (
        src.get("ts_ms").and_then(J::int).ok_or("source.ts_ms")?,
        src.get("ts_us").and_then(J::int).ok_or("source.ts_us")?,
        src.get("ts_ns").and_then(J::int).ok_or("source.ts_ns")?,
    );
    if us / 1000 != ms || ns != us * 1000 {
        return Err(format!("source.ts_ms {ms}, ts_us {us}, ts_ns {ns} disagree"));
    }
    for k in ["version", "name", "db"] {
        let f = src.get_mut(k).ok_or(k)?;
        if f.str().is_none() {
            return Err(format!("source.{k} is not a string"));
        }
        *f = J::Str(format!("<{k}>"));
    }
    relate(src, prev, "ts_us")?;
    for k in ["ts_ms", "ts_ns"] {
        *src.get_mut(k).unwrap() = J::Str("<commit time>".into());
    }
    if source == "postgres" {
        // sequence = ["<last commit lsn>","<lsn>"], as a string.
        let seq = src.get("sequence").and_then(J::str).ok_or("source.sequence is not a string")?.replace("\\\"", "\"");
        let seq = J::parse(&seq);
        let lsn = src.get("lsn").and_then(J::int).ok_or("source.lsn")?;
        let J::Arr(parts) = &seq else { return Err(format!("sequence {seq:?}")) };
        let (first, second) = (parts.first().cloned().unwrap_or(J::Null), parts.get(1).and_then(J::str));
        if second != Some(&lsn.to_string()) {
            return Err(format!("sequence {} does not end with the lsn {lsn}", seq.text()));
        }
        let last_commit = match first {
            J::Null => J::Null,
            J::Str(s) => J::Num(s),
            other => return Err(format!("sequence starts with {other:?}")),
        };
        if let Some(c) = last_commit.int() {
            if c > lsn {
                return Err(format!("the last commit {c} is after the change's lsn {lsn}"));
            }
        }
        let rel = relation(prev.get("last_commit"), &last_commit);
        prev.insert("last_commit".into(), last_commit);
        *src.get_mut("sequence").unwrap() = rel;
        relate(src, prev, "lsn")?;
        relate(src, prev, "txId")?;
    } else {
        for k in ["server_id", "file", "pos", "gtid", "thread"] {
            relate(src, prev, k)?;
        }
    }
    Ok(())
}

/// Replace `src.key` by its relation to the previous event's.
fn relate(src: &mut J, prev: &mut BTreeMap<String, J>, key: &str) -> Result<(), String> {
    let cur = src.get(key).ok_or_else(|| format!("no source.{key}"))?.clone();
    let rel = relation(prev.get(key), &cur);
    prev.insert(key.to_string(), cur);
    *src.get_mut(key).unwrap() = rel;
    Ok(())
}

/// Apply the documented value differences to both sides of one pair of events.
fn apply_differences(source: &str, diffs: &[Difference], seen: &mut [bool], dbz: &mut Record, tm: &mut Record) {
    for (i, d) in diffs.iter().enumerate() {
        let (Some(field), Some(compare)) = (&d.field, &d.compare) else { continue };
        if d.table.as_deref().is_some_and(|t| t != dbz.table)
            || (d.events == "snapshot" && !dbz.is_snapshot())
            || (d.events == "stream" && dbz.is_snapshot())
        {
            continue;
        }
        let (Some(a), Some(b)) = (dbz.value.at_mut(field), tm.value.at_mut(field)) else { continue };
        if a == b {
            continue;
        }
        let same = match compare.as_str() {
            "differs" => true,
            "json" => {
                let parse = |j: &J| -> serde_json::Value {
                    serde_json::from_str(
                        &serde_json::from_str::<String>(&format!("\"{}\"", j.str().unwrap_or(""))).unwrap(),
                    )
                    .unwrap()
                };
                parse(a) == parse(b)
            }
            "instant" => {
                // The same seconds and the same fraction, however many zeros pad it.
                let parts = |j: &J| {
                    let t = j.str().unwrap_or("").trim_end_matches('Z');
                    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
                    (secs.to_string(), frac.trim_end_matches('0').to_string())
                };
                parts(a) == parts(b)
            }
            other => panic!("{source}: unknown comparison `{other}` in differences.toml"),
        };
        if same {
            seen[i] = true;
            *a = J::Str("<documented difference>".into());
            *b = J::Str("<documented difference>".into());
        }
    }
}

/// The first place two values differ, as a path.
fn first_difference(path: &str, a: &J, b: &J) -> Option<String> {
    match (a, b) {
        (J::Obj(x), J::Obj(y)) => {
            let (kx, ky): (Vec<&str>, Vec<&str>) =
                (x.iter().map(|(k, _)| k.as_str()).collect(), y.iter().map(|(k, _)| k.as_str()).collect());
            if kx != ky {
                return Some(format!("{path}: fields {kx:?} (Debezium) vs {ky:?} (tidemark)"));
            }
            x.iter().zip(y).find_map(|((k, va), (_, vb))| first_difference(&format!("{path}.{k}"), va, vb))
        }
        (J::Arr(x), J::Arr(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (va, vb))| first_difference(&format!("{path}[{i}]"), va, vb))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: Debezium {} vs tidemark {}", a.text(), b.text())),
    }
}

/// Compare tidemark's events with Debezium's, event by event; panics with every mismatch.
fn compare(source: &str, stdout: &Path) {
    let diffs = differences(source);
    let mut seen = vec![false; diffs.len()];
    let mut dbz = debezium_records(source, &diffs, &mut seen);
    let mut tm = tidemark_records(stdout);
    let mut problems = Vec::new();
    if dbz.len() != tm.len() {
        let list = |rs: &[Record]| rs.iter().map(|r| format!("{} {}", r.op, r.table)).collect::<Vec<_>>().join(", ");
        panic!(
            "{source}: Debezium wrote {} events, tidemark {}\nDebezium: {}\ntidemark: {}",
            dbz.len(),
            tm.len(),
            list(&dbz),
            list(&tm)
        );
    }
    let (mut prev_d, mut prev_t) = (BTreeMap::new(), BTreeMap::new());
    for (i, (d, t)) in dbz.iter_mut().zip(tm.iter_mut()).enumerate() {
        if let Err(e) = normalize_run_values(d, &mut prev_d, source) {
            panic!("{source}: Debezium's {}: {e}", d.describe(i));
        }
        if let Err(e) = normalize_run_values(t, &mut prev_t, source) {
            problems.push(format!("{}: {e}", t.describe(i)));
            continue;
        }
        apply_differences(source, &diffs, &mut seen, d, t);
        if let Some(diff) = first_difference("", &d.value, &t.value) {
            problems.push(format!("{}: {diff}", d.describe(i)));
        }
    }
    for (d, seen) in diffs.iter().zip(&seen) {
        if !seen {
            problems.push(format!("documented difference no longer seen: {d:?}"));
        }
    }
    assert!(problems.is_empty(), "{source}: tidemark differs from Debezium:\n{}", problems.join("\n"));
}

/// Wait until the stdout sink has printed the `rows` snapshot rows.
async fn wait_for_snapshot(d: &Daemon, rows: i64) {
    wait_for("the snapshot", Duration::from_secs(60), || async {
        let text = std::fs::read_to_string(&d.stdout).ok()?;
        (text.lines().count() as i64 >= rows).then_some(())
    })
    .await;
}

/// Wait until `stdout` holds an event of table `zz_end` (the last change of every script).
async fn wait_for_end(d: &Daemon) {
    wait_for("the end marker", Duration::from_secs(90), || async {
        let text = std::fs::read_to_string(&d.stdout).ok()?;
        text.contains("\"table\":\"zz_end\"").then_some(())
    })
    .await;
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance").join(name)
}

/// Run a script through the command-line client Debezium's capture used (scripts/conformance/
/// debezium.py), so statements commit the same way: `psql` for PostgreSQL, `mariadb` for MySQL.
fn run_script(client: &str, args: &[&str], name: &str) {
    let file = std::fs::File::open(script(name)).unwrap();
    let out = std::process::Command::new(client)
        .args(args)
        .stdin(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {client}: {e}"));
    assert!(out.status.success(), "{client} {name}: {}", String::from_utf8_lossy(&out.stderr));
}

fn psql(env: &Env, name: &str) {
    let url = env.db_url();
    run_script("psql", &["-X", "-q", "-v", "ON_ERROR_STOP=1", &url], name);
}

fn mysql_cli(env: &MyEnv, name: &str) {
    // mysql://USER@HOST:PORT, as the test servers are reached (no password).
    let rest = env.url.strip_prefix("mysql://").expect("a mysql:// URL");
    let (user, addr) = rest.split_once('@').expect("a user in the URL");
    let (host, port) = addr.trim_end_matches('/').split_once(':').unwrap_or((addr, "3306"));
    run_script("mariadb", &["--no-defaults", "-u", user, "-h", host, "-P", port, "--protocol=TCP", &env.name], name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_events_match_debeziums() {
    let env = Env::new("conf").await;
    psql(&env, "postgres.sql");
    let rows: i64 = {
        let tables = ["numbers", "texts", "times", "arrays", "pairs", "single", "toasted"];
        let sql = tables.map(|t| format!("(SELECT count(*) FROM {t})")).join(" + ");
        env.pg.query_one(&format!("SELECT {sql}"), &[]).await.unwrap().get(0)
    };
    // Debezium's decimal default; a heartbeat far off, so nothing else is written in between.
    env.write_config(&env.postgres_source(
        r#""public.*""#,
        "decimal_handling = \"precise\"\nheartbeat_interval = \"1h\"\n[[sink]]\nkind = \"stdout\"\n",
    ));
    let mut d = env.start();
    d.wait_streaming().await;
    wait_for_snapshot(&d, rows).await;
    psql(&env, "postgres_changes.sql");
    wait_for_end(&d).await;
    assert!(d.terminate().success());
    compare("postgres", &d.stdout);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_events_match_debeziums() {
    let _binlogs = BINLOGS.read().await;
    let env = MyEnv::new_at(&mysql8_url(), "conf").await;
    mysql_cli(&env, "mysql.sql");
    let mut conn = my_connect(&format!("{}/{}", env.url, env.name)).await;
    let rows: i64 = conn
        .query_first("SELECT (SELECT count(*) FROM numbers) + (SELECT count(*) FROM texts) + (SELECT count(*) FROM times) + (SELECT count(*) FROM pairs)")
        .await
        .unwrap()
        .unwrap();
    env.write_config_with_sinks(
        &format!("\"{}.*\"", env.name),
        "decimal_handling = \"precise\"\n[[sink]]\nkind = \"stdout\"\n",
    );
    let mut d = env.start();
    d.wait_streaming().await;
    wait_for_snapshot(&d, rows).await;
    mysql_cli(&env, "mysql_changes.sql");
    wait_for_end(&d).await;
    assert!(d.terminate().success());
    compare("mysql", &d.stdout);
    let mut admin = my_connect(&env.url).await;
    admin.query_drop(format!("DROP DATABASE `{}`", env.name)).await.unwrap();
}
