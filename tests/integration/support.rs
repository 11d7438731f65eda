//! Shared test support: real servers addressed by environment variables (localhost defaults), a
//! daemon child process, and comparisons of caches with tables.
//!
//! A test that cannot reach its server fails with the address it tried; nothing is skipped.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

pub fn pg_url() -> String {
    std::env::var("TIDEMARK_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn pg_replica_url() -> String {
    std::env::var("TIDEMARK_TEST_PG_REPLICA").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433".into())
}

pub fn redis_url() -> String {
    std::env::var("TIDEMARK_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn redis_cluster_url() -> String {
    std::env::var("TIDEMARK_TEST_REDIS_CLUSTER").unwrap_or_else(|_| "redis://127.0.0.1:7000".into())
}

pub const DEADLINE: Duration = Duration::from_secs(90);

/// Poll `check` until it returns `Some`, or fail after `deadline` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn pg_connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e} (run scripts/services.sh)"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

pub async fn redis_conn() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Redis at {url}: {e} (run scripts/services.sh)"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique, valid name (for a database, a connector, a slot).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("tmt_{prefix}_{}_{n}", std::process::id())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A test database, a working directory and a connector name, all unique to one test.
pub struct Env {
    pub name: String,
    pub dir: PathBuf,
    pub pg: Client,
    pub http_port: u16,
}

static CLEANUP: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Drop what earlier (crashed) test runs left behind: inactive test slots and test databases.
async fn cleanup_stale() {
    let admin = pg_connect(&format!("{}/postgres", pg_url())).await;
    let me = format!("tmt_%_{}_%", std::process::id());
    let _ = admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
              WHERE slot_name LIKE 'tidemark_tmt_%' AND NOT active AND database NOT LIKE $1",
            &[&me],
        )
        .await;
    let rows = admin
        .query("SELECT datname::text FROM pg_database WHERE datname LIKE 'tmt_%' AND datname NOT LIKE $1", &[&me])
        .await
        .unwrap();
    for r in rows {
        let db: String = r.get(0);
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).await;
    }
}

impl Env {
    pub async fn new(prefix: &str) -> Env {
        CLEANUP.get_or_init(cleanup_stale).await;
        let name = unique(prefix);
        let admin = pg_connect(&format!("{}/postgres", pg_url())).await;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        let pg = pg_connect(&format!("{}/{name}", pg_url())).await;
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it").join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("connectors")).unwrap();
        Env { name, dir, pg, http_port: free_port() }
    }

    pub fn db_url(&self) -> String {
        format!("{}/{}", pg_url(), self.name)
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// Write the daemon file and one connector file (its body after `name = ...`).
    pub fn write_config(&self, connector_body: &str) -> PathBuf {
        let daemon = self.dir.join("tidemark.toml");
        std::fs::write(
            &daemon,
            format!(
                "data_dir = \"data\"\nhttp_addr = \"{}\"\nconnectors_dir = \"connectors\"\nmax_lag = \"30s\"\n",
                self.http_addr()
            ),
        )
        .unwrap();
        std::fs::write(
            self.dir.join("connectors").join(format!("{}.toml", self.name)),
            format!("name = \"{}\"\n{connector_body}", self.name),
        )
        .unwrap();
        daemon
    }

    /// A connector body: this database's `tables`, then `extra` (sinks and options).
    pub fn postgres_source(&self, tables: &str, extra: &str) -> String {
        format!("[source]\nkind = \"postgres\"\nurl = \"{}\"\ntables = [{tables}]\n{extra}", self.db_url())
    }

    pub fn start(&self) -> Daemon {
        Daemon::start(&self.dir, self.http_addr())
    }

    /// `tidemark check` on the test's configuration: (exit code, everything it printed).
    pub fn check(&self) -> (Option<i32>, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["check", "-c"])
            .arg(self.dir.join("tidemark.toml"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    }

    /// A CA of the test's own, that signed nothing any server has.
    pub fn other_ca(&self) -> PathBuf {
        let (key, pem) = (self.dir.join("other-ca.key"), self.dir.join("other-ca.pem"));
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=another CA"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&pem)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        pem
    }

    /// Remove the slot, the database and the Redis keys of this test.
    pub async fn cleanup(self) {
        let admin = pg_connect(&format!("{}/postgres", pg_url())).await;
        let _ = admin
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
                &[&self.name],
            )
            .await;
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)).await;
        let mut r = redis_conn().await;
        for pattern in [format!("{}:*", self.name), format!("tidemark:v:{{{}:*", self.name)] {
            let keys: Vec<String> = scan(&mut r, &pattern).await;
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut r).await.unwrap();
            }
        }
    }
}

/// The daemon as a child process; killed (-9) when dropped.
pub struct Daemon {
    pub child: Option<Child>,
    pub http: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// Run the tidemark command line in `dir`.
pub fn tidemark(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark")).args(args).current_dir(dir).output().expect("run tidemark")
}

impl Daemon {
    pub fn start(dir: &Path, http: String) -> Daemon {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let stdout = dir.join(format!("stdout-{n}.jsonl"));
        let stderr = dir.join(format!("stderr-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["run", "-c", "tidemark.toml"])
            .current_dir(dir)
            .env("RUST_LOG", "info,tidemark=debug")
            .stdout(Stdio::from(File::create(&stdout).unwrap()))
            .stderr(Stdio::from(File::create(&stderr).unwrap()))
            .spawn()
            .expect("start tidemark");
        Daemon { child: Some(child), http, stdout, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        tidemark::http::request(&self.http, "GET", path).await.ok()
    }

    pub async fn health(&self) -> Option<(u16, Value)> {
        let (code, body) = self.get("/health").await?;
        Some((code, serde_json::from_str(&body).ok()?))
    }

    /// The health JSON of the (single) connector.
    pub async fn connector(&self) -> Option<Value> {
        let (_, h) = self.health().await?;
        h["connectors"].get(0).cloned()
    }

    /// Wait until the connector has failed; its reasons, as JSON text.
    pub async fn failure(&self) -> String {
        wait_for("the connector to fail", DEADLINE, || async {
            let c = self.connector().await?;
            (c["state"] == "failed").then(|| c["reasons"].to_string())
        })
        .await
    }

    /// Wait until the connector streams; fail with the daemon's log otherwise.
    pub async fn wait_streaming(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(c) = self.connector().await {
                if c["state"] == "streaming" {
                    return;
                }
                assert_ne!(c["state"], "failed", "connector failed: {c}\n{}", self.log());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("tidemark exited with {status} before streaming:\n{}", self.log());
            }
            assert!(start.elapsed() < DEADLINE, "not streaming after {DEADLINE:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.map(|(_, b)| b).unwrap_or_default()
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_kill(child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("tidemark did not exit within 60s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Resident memory of the daemon, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn unsafe_kill(pid: u32, signal: &str) {
    let ok = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill -{signal} {pid} failed");
}

pub async fn scan(r: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(r)
            .await
            .unwrap();
        out.extend(keys);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

pub type Rows = BTreeMap<String, BTreeMap<String, String>>;

/// Every hash under `<prefix>:<key>`, by key.
pub async fn redis_hashes(r: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Rows {
    let mut out = Rows::new();
    let keys = scan(r, &format!("{prefix}:*")).await;
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("HGETALL").arg(key);
        }
        let hashes: Vec<BTreeMap<String, String>> = pipe.query_async(r).await.unwrap();
        for (key, fields) in chunk.iter().zip(hashes) {
            out.insert(key[prefix.len() + 1..].to_string(), fields);
        }
    }
    out
}

/// The rows of `sql` in PostgreSQL's text form, keyed by the first column, NULLs left out (as the
/// Redis hash leaves them out).
pub async fn table_rows(pg: &Client, sql: &str) -> Rows {
    let mut out = Rows::new();
    for msg in pg.simple_query(sql).await.unwrap() {
        if let SimpleQueryMessage::Row(r) = msg {
            let mut fields = BTreeMap::new();
            for (i, col) in r.columns().iter().enumerate() {
                if let Some(v) = r.get(i) {
                    fields.insert(col.name().to_string(), v.to_string());
                }
            }
            out.insert(r.get(0).unwrap().to_string(), fields);
        }
    }
    out
}

fn short(row: &BTreeMap<String, String>) -> String {
    let cut = |v: &String| {
        if v.len() > 80 {
            let end = (0..=80).rev().find(|&i| v.is_char_boundary(i)).unwrap_or(0);
            format!("{}…({} bytes)", &v[..end], v.len())
        } else {
            v.clone()
        }
    };
    format!("{:?}", row.iter().map(|(k, v)| (k.as_str(), cut(v))).collect::<BTreeMap<_, _>>())
}

/// Describe the first differences between two row sets.
pub fn diff(expected: &Rows, actual: &Rows) -> String {
    let mut out = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => out.push(format!("missing key {k}: {}", short(v))),
            Some(a) if a != v => out.push(format!("key {k}: expected {}, found {}", short(v), short(a))),
            _ => {}
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            out.push(format!("unexpected key {k}: {}", short(&actual[k])));
        }
    }
    let n = out.len();
    out.truncate(10);
    format!("{n} difference(s): {}", out.join("; "))
}

/// Wait until the Redis hashes under `prefix` equal the rows of `sql`; fail with a diff.
pub async fn wait_equal(pg: &Client, sql: &str, prefix: &str, daemon: Option<&Daemon>) {
    wait_equal_on(&redis_url(), pg, sql, prefix, daemon).await
}

/// [`wait_equal`] against the Redis at `url`.
pub async fn wait_equal_on(url: &str, pg: &Client, sql: &str, prefix: &str, daemon: Option<&Daemon>) {
    let mut r = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Redis at {url}: {e}"));
    let start = Instant::now();
    loop {
        let expected = table_rows(pg, sql).await;
        let actual = redis_hashes(&mut r, prefix).await;
        if expected == actual {
            return;
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "Redis ({prefix}:*) never matched the table: {}\n{}",
                diff(&expected, &actual),
                daemon.map(|d| d.log()).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TCP forwarder in front of a real server, to cut the network between tidemark and it (an
/// outage the server itself survives, so its data stays), and to see what a client sends.
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    /// The first bytes every client sent (up to 64 KiB per connection).
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        Proxy::start_on(0, target).await
    }

    /// A proxy on a given port (0: any free one).
    pub async fn start_on(port: u16, target: String) -> Proxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2, sent2) = (up.clone(), conns.clone(), sent.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { return };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (target, sent) = (target.clone(), sent2.clone());
                let task = tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    let (mut in_r, mut in_w) = inbound.into_split();
                    let (mut out_r, mut out_w) = outbound.into_split();
                    let upstream = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut seen = 0;
                        while let Ok(n) = in_r.read(&mut buf).await {
                            if n == 0 || out_w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            if seen < 64 * 1024 {
                                sent.lock().unwrap().extend_from_slice(&buf[..n]);
                                seen += n;
                            }
                        }
                        let _ = out_w.shutdown().await;
                    };
                    let downstream = async move {
                        let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
                        let _ = in_w.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { port, up, conns, sent }
    }

    /// Close every open connection and refuse new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// What clients sent so far, as text.
    pub fn sent_text(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }
}

/// A file of the test CA services.sh made for `server` (`/opt/tidemark/tls/<server>/<name>`).
pub fn tls_file(server: &str, name: &str) -> String {
    let p = Path::new("/opt/tidemark/tls").join(server).join(name);
    assert!(p.is_file(), "{} is missing: run scripts/services.sh", p.display());
    p.display().to_string()
}

/// The `accounts` table of the kill -9 tests: ids 1..=300, `v` 0.
pub const ACCOUNTS: &str = "CREATE TABLE accounts (id int PRIMARY KEY, v bigint NOT NULL, pad text);
     INSERT INTO accounts SELECT i, 0, repeat('p', 50) FROM generate_series(1, 300) i;";

/// What Redis must equal for `accounts`.
pub const ACCOUNTS_ROWS: &str = "SELECT id, v, pad FROM accounts";

impl Env {
    /// Create [`ACCOUNTS`] in the test's database.
    pub async fn create_accounts(&self) {
        self.pg.batch_execute(ACCOUNTS).await.unwrap();
    }
}

/// Run [`accounts_workload`] (`steps`, `seed`) against a streaming daemon `d` whose Redis rows
/// live under `prefix`, kill -9 it once it has applied `kill_after` events and start it again at
/// once. Returns the restarted daemon when Redis equals the table, having checked with
/// [`watch_accounts`] that no row went back to an older value or came back after its delete.
pub async fn kill9_under_accounts_workload(
    env: &Env,
    mut d: Daemon,
    prefix: &str,
    kill_after: u64,
    steps: usize,
    seed: u64,
) -> Daemon {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_accounts(prefix.to_string(), stop.clone()));
    let workload = tokio::spawn(accounts_workload(env.db_url(), steps, seed));
    wait_for("part of the workload applied", DEADLINE, || async {
        let applied = d.connector().await?["events_applied"].as_u64()?;
        (applied > kill_after).then_some(())
    })
    .await;
    d.kill9();
    let mut d = env.start();
    workload.await.unwrap();
    d.wait_streaming().await;
    wait_equal(&env.pg, ACCOUNTS_ROWS, prefix, Some(&d)).await;
    stop.store(true, Ordering::Relaxed);
    let violations = watcher.await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    d
}

/// A random mix of updates, deletes and inserts on `accounts` (ids 1..=300 to start with), and
/// now and then a multi-row transaction: the workload of the kill -9 tests.
pub async fn accounts_workload(url: String, steps: usize, seed: u64) {
    let pg = pg_connect(&url).await;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next_id = 301;
    for step in 0..steps {
        match rng.u8(0..10) {
            0..=5 => {
                let id = rng.i32(1..next_id);
                pg.execute("UPDATE accounts SET v = v + 1 WHERE id = $1", &[&id]).await.unwrap();
            }
            6 | 7 => {
                let id = rng.i32(1..next_id);
                pg.execute("DELETE FROM accounts WHERE id = $1", &[&id]).await.unwrap();
            }
            _ => {
                pg.execute("INSERT INTO accounts VALUES ($1, $2, 'new')", &[&next_id, &(step as i64)]).await.unwrap();
                next_id += 1;
            }
        }
        if step % 100 == 0 {
            pg.batch_execute(
                "BEGIN; UPDATE accounts SET v = v + 1 WHERE id % 13 = 0; \
                 DELETE FROM accounts WHERE id % 97 = 0 AND v > 3; COMMIT;",
            )
            .await
            .unwrap();
        }
    }
}

/// Watch every fifth `accounts` row in Redis (`PREFIX:ID` hashes) until `stop`: a row's `v` only
/// grows, and a row deleted for good (ids are never reused) never comes back. Returns what broke
/// those rules.
pub async fn watch_accounts(prefix: String, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut r = redis_conn().await;
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut gone: HashSet<String> = HashSet::new();
    let mut violations = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for id in (1..=300).step_by(5) {
            let key = format!("{prefix}:{id}");
            let v: Option<i64> = redis::cmd("HGET").arg(&key).arg("v").query_async(&mut r).await.unwrap();
            match v {
                Some(v) => {
                    if gone.contains(&key) {
                        violations.push(format!("{key} resurrected with v={v}"));
                    }
                    let prev = seen.entry(key.clone()).or_insert(v);
                    if v < *prev {
                        violations.push(format!("{key} went back from {prev} to {v}"));
                    }
                    *prev = (*prev).max(v);
                }
                None => {
                    gone.insert(key);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    violations
}
