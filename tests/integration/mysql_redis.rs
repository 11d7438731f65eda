//! MariaDB and MySQL → Redis, end to end, on the real servers. The flows that differ between
//! the two (GTID resumption, the snapshot's locking, binary JSON) run against both.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::*;

pub fn mysql_url() -> String {
    std::env::var("TIDEMARK_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// Oracle's MySQL (GTID mode on), from scripts/services.sh.
pub fn mysql8_url() -> String {
    std::env::var("TIDEMARK_TEST_MYSQL8").unwrap_or_else(|_| "mysql://root@127.0.0.1:3309".into())
}

pub fn mysql_minimal_url() -> String {
    std::env::var("TIDEMARK_TEST_MYSQL_MINIMAL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3308".into())
}

pub fn mysql_mixed_url() -> String {
    std::env::var("TIDEMARK_TEST_MYSQL_MIXED").unwrap_or_else(|_| "mysql://root@127.0.0.1:3307".into())
}

/// Tests that purge binlogs take this exclusively; every other MySQL test holds it shared, so a
/// purge never removes a binlog another test is about to resume from.
pub static BINLOGS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub async fn my_connect(url: &str) -> mysql_async::Conn {
    mysql_async::Conn::from_url(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to MariaDB/MySQL at {url}: {e} (run scripts/services.sh)"))
}

/// A test database on MariaDB, a working directory and a connector name.
pub struct MyEnv {
    pub url: String,
    pub name: String,
    pub dir: PathBuf,
    pub my: mysql_async::Conn,
    pub http_port: u16,
    /// Oracle's MySQL rather than MariaDB.
    pub mysql: bool,
}

impl MyEnv {
    pub async fn new(prefix: &str) -> MyEnv {
        Self::new_at(&mysql_url(), prefix).await
    }

    pub async fn new_at(url: &str, prefix: &str) -> MyEnv {
        let name = unique(prefix);
        let mut admin = my_connect(url).await;
        admin.query_drop(format!("CREATE DATABASE `{name}`")).await.unwrap();
        let mut my = my_connect(&format!("{url}/{name}")).await;
        my.query_drop("SET SESSION time_zone = '+00:00'").await.unwrap();
        let version: String = my.query_first("SELECT VERSION()").await.unwrap().unwrap();
        let mysql = !version.to_lowercase().contains("mariadb");
        if mysql {
            // `seq_1_to_N` (see `portable`) recurses N times.
            my.query_drop("SET SESSION cte_max_recursion_depth = 1000000").await.unwrap();
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it").join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("connectors")).unwrap();
        MyEnv { url: url.to_string(), name, dir, my, http_port: free_port(), mysql }
    }

    pub fn write_config(&self, tables: &str, extra: &str) {
        self.write_config_with_sinks(
            tables,
            &format!("{extra}[[sink]]\nkind = \"redis\"\nurl = \"{}\"\n", redis_url()),
        );
    }

    /// The daemon file and a connector of `tables`, followed by `rest` (options and sinks).
    pub fn write_config_with_sinks(&self, tables: &str, rest: &str) {
        std::fs::write(
            self.dir.join("tidemark.toml"),
            format!("data_dir = \"data\"\nhttp_addr = \"127.0.0.1:{}\"\nconnectors_dir = \"connectors\"\nmax_lag = \"30s\"\n", self.http_port),
        )
        .unwrap();
        std::fs::write(
            self.dir.join("connectors").join(format!("{}.toml", self.name)),
            format!(
                "name = \"{}\"\n[source]\nkind = \"mysql\"\nurl = \"{}\"\ntables = [{tables}]\n{rest}",
                self.name, self.url
            ),
        )
        .unwrap();
    }

    pub fn start(&self) -> Daemon {
        Daemon::start(&self.dir, format!("127.0.0.1:{}", self.http_port))
    }

    /// `tidemark ARGS -c tidemark.toml` in the environment's directory: exit code and standard
    /// output (standard error when that is empty).
    pub fn cli(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = tidemark(&self.dir, &[args, &["-c", "tidemark.toml"]].concat());
        let text = if out.stdout.is_empty() { &out.stderr } else { &out.stdout };
        (out.status.code(), String::from_utf8_lossy(text).to_string())
    }

    pub async fn exec(&mut self, sql: &str) {
        let sql = if self.mysql { portable(sql) } else { sql.to_string() };
        self.my.query_drop(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// How the server's GTIDs begin: MariaDB's domain 0 and server 1, or MySQL's server UUID.
    pub async fn gtid_prefix(&mut self) -> String {
        if self.mysql {
            let uuid: String = self.my.query_first("SELECT @@server_uuid").await.unwrap().unwrap();
            format!("{uuid}:")
        } else {
            "0-1-".to_string()
        }
    }

    /// The rows of `sql` as text (NULLs left out), keyed by the first column.
    pub async fn rows(&mut self, sql: &str) -> Rows {
        let rows: Vec<mysql_async::Row> = self.my.query(sql).await.unwrap();
        let mut out = Rows::new();
        for row in rows {
            let cols = row.columns();
            let (mut key, mut fields) = (String::new(), BTreeMap::new());
            for (i, v) in row.unwrap().into_iter().enumerate() {
                let text = match v {
                    mysql_async::Value::NULL => continue,
                    mysql_async::Value::Bytes(b) => String::from_utf8(b).unwrap(),
                    mysql_async::Value::Int(i) => i.to_string(),
                    mysql_async::Value::UInt(u) => u.to_string(),
                    other => panic!("unexpected {other:?} from the text protocol"),
                };
                if i == 0 {
                    key = text.clone();
                }
                fields.insert(cols[i].name_str().to_string(), text);
            }
            out.insert(key, fields);
        }
        out
    }

    /// Wait until the Redis hashes under `<connector>:<table>` equal the rows of `sql`.
    pub async fn wait_equal(&mut self, table: &str, sql: &str, daemon: &Daemon) {
        let prefix = format!("{}:{table}", self.name);
        let mut r = redis_conn().await;
        let start = std::time::Instant::now();
        loop {
            let expected = self.rows(sql).await;
            let actual = redis_hashes(&mut r, &prefix).await;
            if expected == actual {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "Redis ({prefix}) never matched MariaDB: {}\n{}",
                diff(&expected, &actual),
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Purge every binlog but the newest (the caller holds `BINLOGS` exclusively). Returns it.
    pub async fn purge_to_newest(&mut self) -> String {
        let logs: Vec<mysql_async::Row> = self.my.query("SHOW BINARY LOGS").await.unwrap();
        let newest: String = logs.last().unwrap().get(0).unwrap();
        // The server keeps a binlog a dump thread still reads; a daemon killed by another test may
        // have left one behind until the server notices, so every dump thread is ended (a running
        // daemon reconnects).
        let dumps: Vec<u64> = self
            .my
            .query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
            .await
            .unwrap();
        for id in dumps {
            let _ = self.my.query_drop(format!("KILL {id}")).await;
        }
        // KILL only flags the thread; the server keeps its binlog until the thread has ended, and
        // PURGE skips a binlog in use (with a warning). Purge until only the newest is left.
        let url = format!("{}/{}", self.url, self.name);
        wait_for("the purge to leave only the newest binlog", DEADLINE, || {
            let (url, newest) = (url.clone(), newest.clone());
            async move {
                let mut my = my_connect(&url).await;
                my.query_drop(format!("PURGE BINARY LOGS TO '{newest}'")).await.unwrap();
                let left: Vec<mysql_async::Row> = my.query("SHOW BINARY LOGS").await.unwrap();
                (left.len() == 1).then_some(())
            }
        })
        .await;
        newest
    }

    pub async fn cleanup(mut self) {
        let _ = self.my.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name)).await;
        let mut r = redis_conn().await;
        for pattern in [format!("{}:*", self.name), format!("tidemark:v:{{{}:*", self.name)] {
            let keys: Vec<String> = scan(&mut r, &pattern).await;
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut r).await.unwrap();
            }
        }
    }
}

/// MariaDB's sequence tables (`seq_1_to_N`) as a recursive CTE, for MySQL.
fn portable(sql: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("seq_1_to_") {
        out.push_str(&rest[..at]);
        let digits: String = rest[at + 9..].chars().take_while(char::is_ascii_digit).collect();
        out.push_str(&format!(
            "(WITH RECURSIVE s (seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM s WHERE seq < {digits}) SELECT seq FROM s) AS seq_1_to_{digits}"
        ));
        rest = &rest[at + 9 + digits.len()..];
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_transactions_across_two_tables_reach_redis() {
    snapshot_and_transactions(&mysql_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_transactions_across_two_tables_reach_redis_on_mysql() {
    snapshot_and_transactions(&mysql8_url()).await;
}

async fn snapshot_and_transactions(url: &str) {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new_at(url, "myflow").await;
    env.exec(
        "CREATE TABLE customers (id int PRIMARY KEY, name varchar(50) NOT NULL, balance decimal(10,2));
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, total decimal(12,2), status varchar(20));
         INSERT INTO customers SELECT seq, CONCAT('c', seq), seq * 1.25 FROM seq_1_to_300;
         INSERT INTO orders SELECT seq, seq % 30, seq * 10.5, 'new' FROM seq_1_to_200;",
    )
    .await;
    env.write_config(&format!(r#""{0}.customers", "{0}.orders""#, env.name), "snapshot_chunk_rows = 64\n");
    let mut d = env.start();
    d.wait_streaming().await;
    let customers = "SELECT id, name, CAST(balance AS CHAR) AS balance FROM customers";
    let orders = "SELECT id, customer_id, CAST(total AS CHAR) AS total, status FROM orders";
    env.wait_equal("customers", customers, &d).await;
    env.wait_equal("orders", orders, &d).await;

    // One transaction across both tables, then more single statements.
    env.exec(
        "START TRANSACTION;
           INSERT INTO orders VALUES (1001, 7, 99.95, 'paid');
           UPDATE customers SET balance = balance - 99.95 WHERE id = 7;
           DELETE FROM orders WHERE id = 3;
           UPDATE orders SET status = 'shipped' WHERE customer_id = 7;
         COMMIT;
         UPDATE customers SET name = CONCAT(name, '!') WHERE id % 9 = 0;
         DELETE FROM customers WHERE id % 13 = 0;
         UPDATE customers SET balance = NULL WHERE id < 5;
         UPDATE customers SET id = id + 5000 WHERE id = 11;
         INSERT INTO customers SELECT 300 + seq, 'late', 0 FROM seq_1_to_50;",
    )
    .await;
    env.wait_equal("customers", customers, &d).await;
    env.wait_equal("orders", orders, &d).await;
    env.exec("TRUNCATE TABLE orders; INSERT INTO orders VALUES (1, 1, 1.00, 'again');").await;
    env.wait_equal("orders", orders, &d).await;

    let c = wait_for("caught up", DEADLINE, || async {
        let c = d.connector().await?;
        // Caught up, and the first checkpoint stored.
        (c["lag_ms"] == 0 && c["healthy"] == true && c["position"]["gtid"].is_string()).then_some(c)
    })
    .await;
    assert_eq!(c["position"]["kind"], "mysql", "{c}");
    let prefix = env.gtid_prefix().await;
    assert!(c["position"]["gtid"].as_str().is_some_and(|g| g.starts_with(&prefix)), "{prefix}: {c}");
    assert!(c["lag_bytes"].is_u64(), "{c}");
    assert!(d.terminate().success(), "{}", d.log());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_leaves_only_its_non_transactional_rows() {
    // MariaDB only: MySQL in GTID mode refuses a transaction that mixes engines.
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new("myroll").await;
    env.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(10)) ENGINE=InnoDB;
         CREATE TABLE audit (id int PRIMARY KEY, what varchar(20)) ENGINE=MyISAM;
         INSERT INTO t VALUES (1, 'new');",
    )
    .await;
    env.write_config(&format!(r#""{0}.t", "{0}.audit""#, env.name), "");
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("t", "SELECT id, v FROM t", &d).await;
    // The MyISAM row cannot be undone; the InnoDB rows never happened. (In ROW format MariaDB logs
    // the MyISAM row as a group of its own; a server that logs the whole transaction ending in
    // ROLLBACK is handled by the source's transaction buffer.) Either way the caches must equal
    // the tables.
    env.exec("START TRANSACTION; UPDATE t SET v = 'paid' WHERE id = 1; INSERT INTO t VALUES (2, 'ghost'); INSERT INTO audit VALUES (1, 'tried'); ROLLBACK;")
        .await;
    env.exec("INSERT INTO t VALUES (3, 'after')").await;
    env.wait_equal("t", "SELECT id, v FROM t", &d).await;
    env.wait_equal("audit", "SELECT id, what FROM audit", &d).await;
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mysql_type_round_trips_with_the_documented_encoding() {
    every_type(&mysql_url()).await;
}

/// MySQL: no UUID type, and JSON is binary in the binlog (printed as MySQL prints it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mysql_type_round_trips_with_the_documented_encoding_on_mysql() {
    every_type(&mysql8_url()).await;
}

async fn every_type(url: &str) {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new_at(url, "mytypes").await;
    // Zero dates need a permissive mode on MySQL (MariaDB's default allows them).
    env.exec("SET SESSION sql_mode = ''").await;
    let uuid_col = if env.mysql { "" } else { ", u uuid" };
    env.exec(&format!(
        "CREATE TABLE t (
           id int PRIMARY KEY, ti tinyint, tiu tinyint unsigned, si smallint, siu smallint unsigned,
           mi mediumint, miu mediumint unsigned, i int, iu int unsigned, bi bigint, biu bigint unsigned,
           d decimal(20,6), f float, db double, ch char(5), vc varchar(30), tx text, bn binary(4),
           vb varbinary(10), bl blob, dt date, tm time(2), tm0 time, dtm datetime, dtm6 datetime(6),
           ts timestamp(3) NULL, y year, e enum('sad','happy'), st set('a','b','c'), b1 bit(1), b10 bit(10),
           js json{uuid_col}) CHARACTER SET utf8mb4"
    ))
    .await;
    // JSON with every kind of value: key order, escapes, doubles, big integers, nesting.
    let json = r#"{"zz": 1, "a": [1, 2, 100.0, 1e300, 1e-7, -0.5, 18446744073709551615, -9223372036854775808], "bb": "q\"\\\n\u0001 é 🎉", "n": null, "t": true, "f": false, "o": {"x": {}}, "e": []}"#;
    let uuid_val = if env.mysql { "" } else { ", 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'" };
    let insert = |id: i32| {
        format!(
            "INSERT INTO t VALUES ({id}, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
               -9223372036854775808, 18446744073709551615, -12345678901234.123456, 1.5, 3.141592653589793,
               'ab', 'héllo ✓ 🎉', 'long text', x'0102', x'00ff00', x'deadbeef', '2024-02-29', '-12:34:56.78',
               '838:59:59', '2024-02-29 13:45:30', '2024-02-29 13:45:30.123456', '2024-02-29 13:45:30.123', 2024,
               'happy', 'a,c', b'1', b'1000000001', '{}'{uuid_val});
             INSERT INTO t (id) VALUES ({});
             INSERT INTO t (id, tiu, biu, dt, dtm, y, tm, d) VALUES ({}, 0, 0, '0000-00-00', '0000-00-00 00:00:00', 0, '-00:00:00.01', 0);",
            json.replace('\\', "\\\\").replace('\'', "''"),
            id + 1,
            id + 2
        )
    };
    env.exec(&insert(1)).await; // through the snapshot
    env.write_config(&format!(r#""{}.t""#, env.name), "");
    let mut d = env.start();
    d.wait_streaming().await;
    env.exec(&insert(11)).await; // through the binlog

    // JSON as the server itself prints the column (MariaDB: the text as written); on MySQL
    // without the spaces between tokens, as Debezium writes binlog rows (no string here holds
    // ", " or ": ").
    let js: String = env.my.query_first("SELECT CAST(js AS CHAR) FROM t WHERE id = 1").await.unwrap().unwrap();
    let js = if env.mysql { js.replace(", ", ",").replace(": ", ":") } else { js };
    let mut expected: BTreeMap<&str, &str> = [
        ("ti", "-128"),
        ("tiu", "255"),
        ("si", "-32768"),
        ("siu", "65535"),
        ("mi", "-8388608"),
        ("miu", "16777215"),
        ("i", "-2147483648"),
        ("iu", "4294967295"),
        ("bi", "-9223372036854775808"),
        ("biu", "18446744073709551615"),
        ("d", "-12345678901234.123456"),
        ("f", "1.5"),
        ("db", "3.141592653589793"),
        ("ch", "ab"),
        ("vc", "héllo ✓ 🎉"),
        ("tx", "long text"),
        ("bn", "AQIAAA=="),
        ("vb", "AP8A"),
        ("bl", "3q2+7w=="),
        ("dt", "19782"),
        ("tm", "-45296780000"),
        ("tm0", "3020399000000"),
        ("dtm", "1709214330000"),
        ("dtm6", "1709214330123456"),
        ("ts", "2024-02-29T13:45:30.123Z"),
        ("y", "2024"),
        ("e", "happy"),
        ("st", "a,c"),
        ("b1", "true"),
        ("b10", "AQI="),
        ("js", js.as_str()),
        ("u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ]
    .into_iter()
    .collect();
    if env.mysql {
        expected.remove("u");
    }
    let r = redis_conn().await;
    let hash = |id: i32| {
        let key = format!("{}:t:{id}", env.name);
        let mut r = r.clone();
        async move {
            let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(&mut r).await.ok()?;
            (!h.is_empty()).then_some(h)
        }
    };
    for base in [1, 11] {
        let full = wait_for("the full row", DEADLINE, || hash(base)).await;
        for (col, want) in &expected {
            assert_eq!(full.get(*col).map(String::as_str), Some(*want), "row {base} column {col}: {full:?}");
        }
        assert_eq!(full.len(), expected.len() + 1, "row {base}: {full:?}");
        let nulls = wait_for("the NULL row", DEADLINE, || hash(base + 1)).await;
        assert_eq!(nulls, BTreeMap::from([("id".to_string(), (base + 1).to_string())]), "row {}", base + 1);
        let zeros = wait_for("the zero row", DEADLINE, || hash(base + 2)).await;
        // Zero dates are NULL (as Debezium has them); YEAR 0000 is 0.
        let want: BTreeMap<String, String> = [
            ("id", (base + 2).to_string()),
            ("tiu", "0".into()),
            ("biu", "0".into()),
            ("y", "0".into()),
            ("tm", "-10000".into()),
            ("d", "0.000000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(zeros, want, "row {}", base + 2);
    }
    let metrics = d.metrics().await;
    assert!(
        !metrics.lines().any(|l| l.starts_with("tidemark_type_fallbacks_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_snapshot_resumes_it() {
    kill9_during_snapshot(&mysql_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_snapshot_resumes_it_on_mysql() {
    kill9_during_snapshot(&mysql8_url()).await;
}

async fn kill9_during_snapshot(url: &str) {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new_at(url, "mysnap").await;
    env.exec("CREATE TABLE big (id int PRIMARY KEY, payload char(32) NOT NULL); INSERT INTO big SELECT seq, LEFT(SHA2(seq, 256), 32) FROM seq_1_to_60000;").await;
    env.write_config(
        &format!(r#""{}.big""#, env.name),
        "snapshot_chunk_rows = 500\n[pipeline]\nmax_batch_rows = 500\n",
    );
    let mut d = env.start();
    wait_for("snapshot under way", DEADLINE, || async {
        let c = d.connector().await?;
        (c["state"] == "snapshotting" && c["position"]["snapshot"]["after"].is_array()).then_some(())
    })
    .await;
    d.kill9();
    // Changes while the daemon is down, mid-snapshot, must arrive too.
    env.exec("UPDATE big SET payload = 'changed' WHERE id % 1000 = 0; DELETE FROM big WHERE id % 777 = 0;").await;
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("big", "SELECT id, payload FROM big", &d).await;
    let metrics = d.metrics().await;
    let read: f64 = metrics
        .lines()
        .find(|l| l.starts_with("tidemark_snapshot_rows_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no snapshot rows metric: {metrics}"));
    assert!(read > 0.0 && read < 60000.0, "second run read {read} rows: the snapshot was not resumed");
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_and_dropped_mid_stream_land_under_the_right_names() {
    columns_added_and_dropped(&mysql_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_and_dropped_mid_stream_land_under_the_right_names_on_mysql() {
    columns_added_and_dropped(&mysql8_url()).await;
}

async fn columns_added_and_dropped(url: &str) {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new_at(url, "myddl").await;
    env.exec("CREATE TABLE p (id int PRIMARY KEY, a varchar(10), b int); INSERT INTO p VALUES (1, 'one', 1);").await;
    env.write_config(&format!(r#""{}.p""#, env.name), "");
    let mut d = env.start();
    d.wait_streaming().await;
    env.exec(
        "INSERT INTO p VALUES (2, 'two', 2);
         ALTER TABLE p ADD COLUMN c varchar(10) DEFAULT 'cee' AFTER a;
         INSERT INTO p VALUES (3, 'three', 'C3', 3);
         UPDATE p SET b = 20 WHERE id = 2;
         ALTER TABLE p DROP COLUMN a;
         INSERT INTO p VALUES (4, 'C4', 4);
         UPDATE p SET c = 'C1' WHERE id = 1;
         ALTER TABLE p MODIFY b bigint;
         INSERT INTO p VALUES (5, 'C5', 9007199254740993);",
    )
    .await;
    // Rows written after each change carry exactly the table's columns at that time; a row last
    // written before DROP COLUMN keeps its old field (no event rewrites it), so compare the rows
    // written after the drop.
    let r = redis_conn().await;
    let hash = |id: i32| {
        let key = format!("{}:p:{id}", env.name);
        let mut r = r.clone();
        async move { redis::cmd("HGETALL").arg(&key).query_async::<BTreeMap<String, String>>(&mut r).await.unwrap() }
    };
    wait_for("row 5", DEADLINE, || async { (!hash(5).await.is_empty()).then_some(()) }).await;
    let row =
        |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
    assert_eq!(hash(3).await, row(&[("id", "3"), ("a", "three"), ("c", "C3"), ("b", "3")]));
    assert_eq!(hash(2).await, row(&[("id", "2"), ("a", "two"), ("c", "cee"), ("b", "20")]));
    assert_eq!(hash(4).await, row(&[("id", "4"), ("c", "C4"), ("b", "4")]));
    assert_eq!(hash(5).await, row(&[("id", "5"), ("c", "C5"), ("b", "9007199254740993")]));
    assert_eq!(hash(1).await.get("c").map(String::as_str), Some("C1"));
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_full_metadata_schema_history_decodes_events_from_before_a_ddl() {
    // 3308 writes row events without column names (binlog_row_metadata=MINIMAL).
    let mut env = MyEnv::new_at(&mysql_minimal_url(), "myhist").await;
    env.exec("CREATE TABLE h (id int PRIMARY KEY, a varchar(10), b int unsigned); INSERT INTO h VALUES (1, 'one', 1);")
        .await;
    env.write_config(&format!(r#""{}.h""#, env.name), "");
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("h", "SELECT id, a, b FROM h", &d).await;
    assert!(d.connector().await.unwrap()["notes"].to_string().contains("binlog_row_metadata is not FULL"));
    assert!(d.terminate().success());

    // While the daemon is down: a row in the old shape, a column added in the middle, a row in the
    // new shape. On restart information_schema shows only the new shape.
    env.exec("INSERT INTO h VALUES (2, 'two', 4294967295); ALTER TABLE h ADD COLUMN c int AFTER a; INSERT INTO h VALUES (3, 'three', -3, 3);").await;
    let mut d = env.start();
    d.wait_streaming().await;
    let r = redis_conn().await;
    let hash = |id: i32| {
        let key = format!("{}:h:{id}", env.name);
        let mut r = r.clone();
        async move { redis::cmd("HGETALL").arg(&key).query_async::<BTreeMap<String, String>>(&mut r).await.unwrap() }
    };
    wait_for("row 3", DEADLINE, || async { (!hash(3).await.is_empty()).then_some(()) }).await;
    let row =
        |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
    assert_eq!(hash(2).await, row(&[("id", "2"), ("a", "two"), ("b", "4294967295")]), "{}", d.log());
    assert_eq!(hash(3).await, row(&[("id", "3"), ("a", "three"), ("c", "-3"), ("b", "3")]));
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_stream_resumes_from_the_stored_gtid() {
    kill9_mid_stream(&mysql_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_stream_resumes_from_the_stored_gtid_on_mysql() {
    kill9_mid_stream(&mysql8_url()).await;
}

async fn kill9_mid_stream(url: &str) {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new_at(url, "mykill").await;
    env.exec("CREATE TABLE acc (id int PRIMARY KEY, v bigint NOT NULL, pad varchar(60)); INSERT INTO acc SELECT seq, 0, REPEAT('p', 50) FROM seq_1_to_300;").await;
    env.write_config(&format!(r#""{}.acc""#, env.name), "");
    let sql = "SELECT id, v, pad FROM acc";
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("acc", sql, &d).await;

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_accounts(format!("{}:acc", env.name), stop.clone()));
    let workload = {
        let url = format!("{}/{}", env.url, env.name);
        tokio::spawn(async move {
            let mut my = my_connect(&url).await;
            let mut rng = fastrand::Rng::with_seed(11);
            let mut next_id = 301;
            for step in 0..2500 {
                match rng.u8(0..10) {
                    0..=5 => {
                        my.exec_drop("UPDATE acc SET v = v + 1 WHERE id = ?", (rng.i32(1..next_id),)).await.unwrap()
                    }
                    6 | 7 => my.exec_drop("DELETE FROM acc WHERE id = ?", (rng.i32(1..next_id),)).await.unwrap(),
                    _ => {
                        my.exec_drop("INSERT INTO acc VALUES (?, ?, 'new')", (next_id, step)).await.unwrap();
                        next_id += 1;
                    }
                }
            }
        })
    };
    wait_for("part of the workload applied", DEADLINE, || async {
        (d.connector().await?["events_applied"].as_u64()? > 800).then_some(())
    })
    .await;
    d.kill9();
    // The stored position carries a GTID, and the restart resumes from it.
    let (_, shown) = env.cli(&["offsets", "show"]);
    let prefix = env.gtid_prefix().await;
    assert!(shown.contains(&format!("\"gtid\":\"{prefix}")), "{prefix}: {shown}");
    let mut d = env.start();
    workload.await.unwrap();
    d.wait_streaming().await;
    env.wait_equal("acc", sql, &d).await;
    assert!(d.log().contains("resuming from GTID"), "{}", d.log());
    stop.store(true, Ordering::Relaxed);
    let bad = watcher.await.unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_rotation_mid_stream_loses_nothing() {
    rotation(&mysql_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_rotation_mid_stream_loses_nothing_on_mysql() {
    rotation(&mysql8_url()).await;
}

async fn rotation(url: &str) {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new_at(url, "myrot").await;
    env.exec("CREATE TABLE r (id int PRIMARY KEY, v int);").await;
    env.write_config(&format!(r#""{}.r""#, env.name), "");
    let mut d = env.start();
    d.wait_streaming().await;
    let first_file = d.connector().await.unwrap()["position"]["file"].as_str().unwrap_or_default().to_string();
    for round in 0..4 {
        env.exec(&format!(
            "INSERT INTO r SELECT seq + {0}, seq FROM seq_1_to_200; UPDATE r SET v = v + 1 WHERE id % 7 = 0;",
            round * 1000
        ))
        .await;
        env.exec("FLUSH BINARY LOGS").await;
        env.exec(&format!("DELETE FROM r WHERE id % 11 = 0 AND id > {}", round * 1000)).await;
    }
    env.wait_equal("r", "SELECT id, v FROM r", &d).await;
    let pos = wait_for("a position in a later binlog", DEADLINE, || async {
        let c = d.connector().await?;
        let file = c["position"]["file"].as_str()?.to_string();
        (file > first_file).then_some(file)
    })
    .await;
    assert!(pos > first_file);
    // A restart from the position in the new file reads on.
    assert!(d.terminate().success());
    env.exec("INSERT INTO r VALUES (99999, 1)").await;
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("r", "SELECT id, v FROM r", &d).await;
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_position_fails_with_the_way_out() {
    purged_position(&mysql_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_position_fails_with_the_way_out_on_mysql() {
    purged_position(&mysql8_url()).await;
}

async fn purged_position(url: &str) {
    let _exclusive = BINLOGS.write().await;
    let mut env = MyEnv::new_at(url, "mypurge").await;
    env.exec("CREATE TABLE q (id int PRIMARY KEY); INSERT INTO q VALUES (1);").await;
    env.write_config(&format!(r#""{}.q""#, env.name), "");
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("q", "SELECT id FROM q", &d).await;
    assert!(d.terminate().success());
    // Rotate twice and purge everything before the newest binlog while the daemon is down.
    env.exec("INSERT INTO q VALUES (2); FLUSH BINARY LOGS; FLUSH BINARY LOGS;").await;
    env.purge_to_newest().await;
    let d = env.start();
    let reason = d.failure().await;
    assert!(reason.contains("purged") && reason.contains(&format!("tidemark offsets reset {}", env.name)), "{reason}");
    drop(d);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_fix_for_mixed_format_and_minimal_metadata() {
    let name = unique("mymixed");
    let mut admin = my_connect(&mysql_mixed_url()).await;
    admin.query_drop(format!("CREATE DATABASE `{name}`; CREATE TABLE `{name}`.t (id int PRIMARY KEY)")).await.unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it").join(&name);
    std::fs::create_dir_all(dir.join("connectors")).unwrap();
    std::fs::write(dir.join("tidemark.toml"), "data_dir = \"data\"\n").unwrap();
    std::fs::write(
        dir.join("connectors/m.toml"),
        format!("name = \"m\"\n[source]\nkind = \"mysql\"\nurl = \"{}\"\ntables = [\"{name}.*\"]\n[[sink]]\nkind = \"stdout\"\n", mysql_mixed_url()),
    )
    .unwrap();
    let out = tidemark(&dir, &["check", "-c", "tidemark.toml"]);
    let msg = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains("binlog_format is MIXED; SET GLOBAL binlog_format = 'ROW'"), "{msg}");
    assert!(
        msg.contains("binlog_row_metadata is MINIMAL") && msg.contains("SET GLOBAL binlog_row_metadata = 'FULL'"),
        "{msg}"
    );
    admin.query_drop(format!("DROP DATABASE `{name}`")).await.unwrap();
}

/// MySQL's default authentication (caching_sha2_password) with a password over plain TCP: the
/// first login of a user takes the full exchange (the password RSA-encrypted with the server's
/// key), which `check` and the stream must both get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_mysql_reports_gtid_mode_and_the_snapshot_grant() {
    let mut env = MyEnv::new_at(&mysql8_url(), "mycheck").await;
    env.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let user = env.name.clone();
    env.exec(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED WITH caching_sha2_password BY 's3cret!';
         GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD, SELECT ON *.* TO '{user}'@'127.0.0.1';"
    ))
    .await;
    let admin_url = env.url.clone();
    env.url = admin_url.replace("root@", &format!("{user}:s3cret%21@"));
    env.write_config(&format!(r#""{}.t""#, env.name), "");
    let (code, msg) = env.cli(&["check"]);
    assert_eq!(code, Some(0), "{msg}");
    assert!(msg.contains("connected to MySQL 9."), "{msg}");
    assert!(msg.contains("gtid_mode is ON: the stream resumes from the executed GTID set"), "{msg}");
    assert!(msg.contains("0 error(s), 0 warning(s)"), "{msg}");
    assert!(!msg.contains("s3cret"), "the password is shown: {msg}");
    assert!(msg.contains("may take the initial snapshot's global read lock (RELOAD)"), "{msg}");
    // The same user streams.
    env.exec("INSERT INTO t VALUES (1), (2)").await;
    let mut d = env.start();
    d.wait_streaming().await;
    env.exec("INSERT INTO t VALUES (3)").await;
    env.wait_equal("t", "SELECT id FROM t", &d).await;
    assert!(d.terminate().success());

    // Without RELOAD, MySQL's snapshot cannot take its global read lock: check says so, with the
    // grant, and so does the connector.
    env.exec(&format!("REVOKE RELOAD ON *.* FROM '{user}'@'127.0.0.1'")).await;
    let (code, msg) = env.cli(&["check"]);
    assert_eq!(code, Some(1), "{msg}");
    assert!(msg.contains("lacks RELOAD") && msg.contains("GRANT RELOAD ON *.* TO"), "{msg}");
    std::fs::remove_dir_all(env.dir.join("data")).unwrap(); // a first start: snapshot again
    let d = env.start();
    let reason = d.failure().await;
    assert!(reason.contains("GRANT RELOAD ON *.*"), "{reason}");
    drop(d);
    env.exec(&format!("DROP USER '{user}'@'127.0.0.1'")).await;
    env.cleanup().await;
}

/// MySQL 8.4+ tagged GTIDs (`uuid:tag:n`): the stored GTID set carries them, and a restart resumes
/// from a set that mixes tagged and untagged transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_gtids_are_stored_and_resumed_from_on_mysql() {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new_at(&mysql8_url(), "mytag").await;
    env.exec("CREATE TABLE g (id int PRIMARY KEY, v varchar(10))").await;
    env.write_config(&format!(r#""{}.g""#, env.name), "");
    let mut d = env.start();
    d.wait_streaming().await;
    env.exec(
        "SET gtid_next = 'AUTOMATIC:tm_batch'; INSERT INTO g VALUES (1, 'tagged'), (2, 'tagged');
         SET gtid_next = 'AUTOMATIC'; INSERT INTO g VALUES (3, 'plain');",
    )
    .await;
    env.wait_equal("g", "SELECT id, v FROM g", &d).await;
    wait_for("a checkpoint with the tagged GTID", DEADLINE, || async {
        let c = d.connector().await?;
        c["position"]["gtid"].as_str()?.contains(":tm_batch:").then_some(())
    })
    .await;
    assert!(d.terminate().success(), "{}", d.log());

    // While the daemon is down, more of both kinds.
    env.exec(
        "SET gtid_next = 'AUTOMATIC:tm_batch'; UPDATE g SET v = 'again' WHERE id = 1; DELETE FROM g WHERE id = 2;
         SET gtid_next = 'AUTOMATIC'; INSERT INTO g VALUES (4, 'plain');",
    )
    .await;
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("g", "SELECT id, v FROM g", &d).await;
    assert!(d.log().contains("resuming from GTID set"), "{}", d.log());
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_keeps_lag_at_zero_through_heartbeats() {
    idle_heartbeats(&mysql_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_keeps_lag_at_zero_through_heartbeats_on_mysql() {
    idle_heartbeats(&mysql8_url()).await;
}

/// With no write for several heartbeat periods, `lag_ms` stays 0 (the server's heartbeats say
/// nothing is pending) instead of growing with the time since the last commit.
async fn idle_heartbeats(url: &str) {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new_at(url, "myidle").await;
    env.exec("CREATE TABLE i (id int PRIMARY KEY)").await;
    env.write_config(&format!(r#""{}.i""#, env.name), "heartbeat_interval = \"1s\"\n");
    let mut d = env.start();
    d.wait_streaming().await;
    env.exec("INSERT INTO i VALUES (1)").await;
    env.wait_equal("i", "SELECT id FROM i", &d).await;
    // (file, offset): other tests may rotate the binlog meanwhile.
    let at =
        |c: &serde_json::Value| Some((c["position"]["file"].as_str()?.to_string(), c["position"]["pos"].as_u64()?));
    let before = wait_for("a first checkpoint", DEADLINE, || async { at(&d.connector().await?) }).await;
    // Idle for six heartbeat periods: without heartbeats, lag would be at least 6 s by now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let c = d.connector().await.unwrap();
    assert_eq!(c["lag_ms"], 0, "{c}");
    assert_eq!(c["lag_bytes"], 0, "{c}");
    assert_eq!(c["healthy"], true, "{c}");
    assert!(at(&c).unwrap() >= before, "{c}");
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_in_the_oldest_binlog_is_flagged_before_a_purge_could_lose_it() {
    purge_margin(&mysql_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_in_the_oldest_binlog_is_flagged_before_a_purge_could_lose_it_on_mysql() {
    purge_margin(&mysql8_url()).await;
}

async fn purge_margin(url: &str) {
    let _exclusive = BINLOGS.write().await;
    let mut env = MyEnv::new_at(url, "mymargin").await;
    env.exec("CREATE TABLE m (id int PRIMARY KEY); INSERT INTO m VALUES (1);").await;
    env.write_config(&format!(r#""{}.m""#, env.name), "heartbeat_interval = \"1s\"\n");
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("m", "SELECT id FROM m", &d).await;
    let oldest = env.purge_to_newest().await;
    let margin = |c: &serde_json::Value| c["binlog_purge_margin_files"].as_u64();
    let risk = |c: &serde_json::Value| c["notes"].to_string().contains("is the oldest the server keeps");
    wait_for("the checkpoint in the only binlog", DEADLINE, || async {
        let c = d.connector().await?;
        (c["position"]["file"] == oldest.as_str() && margin(&c) == Some(0)).then_some(())
    })
    .await;
    // The binlog being written cannot be purged: no warning yet.
    assert!(!risk(&d.connector().await.unwrap()), "{}", d.connector().await.unwrap());

    // Paused, the checkpoint stays in the oldest binlog while the server moves on to a new one.
    let path = format!("/connectors/{}/pause", env.name);
    let (code, _) = tidemark::http::request(&d.http, "POST", &path).await.unwrap();
    assert_eq!(code, 202);
    env.exec("FLUSH BINARY LOGS; INSERT INTO m VALUES (2);").await;
    let c = wait_for("the purge warning", DEADLINE, || async {
        let c = d.connector().await?;
        risk(&c).then_some(c)
    })
    .await;
    assert_eq!(margin(&c), Some(0), "{c}");
    let gauge = format!("tidemark_binlog_purge_margin_files{{connector=\"{}\"}} 0", env.name);
    assert!(d.metrics().await.lines().any(|l| l == gauge), "{gauge} in\n{}", d.metrics().await);

    // Resumed, it moves into the newer binlog: one file of margin, no warning.
    let path = format!("/connectors/{}/resume", env.name);
    let (code, _) = tidemark::http::request(&d.http, "POST", &path).await.unwrap();
    assert_eq!(code, 202);
    env.wait_equal("m", "SELECT id FROM m", &d).await;
    wait_for("one binlog of margin", DEADLINE, || async {
        let c = d.connector().await?;
        (margin(&c) == Some(1) && !risk(&c)).then_some(())
    })
    .await;
    assert!(d.terminate().success(), "{}", d.log());
    env.cleanup().await;
}

/// A position read from one server is refused on another (a failover, a restore, a changed URL):
/// its binlog coordinates, and the versions fencing the caches, mean nothing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_from_another_server_is_refused_with_the_way_out() {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new("myother").await;
    env.exec("CREATE TABLE o (id int PRIMARY KEY); INSERT INTO o VALUES (1);").await;
    env.write_config(&format!(r#""{}.o""#, env.name), "");
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("o", "SELECT id FROM o", &d).await;
    wait_for("a checkpoint naming the server", DEADLINE, || async {
        d.connector().await?["position"]["server"].as_str().map(str::to_string)
    })
    .await;
    assert!(d.terminate().success());

    // The same database and table on MySQL, and the connector pointed there.
    let mut other = my_connect(&mysql8_url()).await;
    other
        .query_drop(format!("CREATE DATABASE `{0}`; CREATE TABLE `{0}`.o (id int PRIMARY KEY)", env.name))
        .await
        .unwrap();
    let mariadb_url = std::mem::replace(&mut env.url, mysql8_url());
    env.write_config(&format!(r#""{}.o""#, env.name), "");
    let d = env.start();
    let reason = d.failure().await;
    assert!(
        reason.contains("another server") && reason.contains(&format!("tidemark offsets reset {}", env.name)),
        "{reason}"
    );
    drop(d);
    other.query_drop(format!("DROP DATABASE `{}`", env.name)).await.unwrap();
    env.url = mariadb_url;
    env.cleanup().await;
}

/// A MySQL position stored without a GTID set (before gtid_mode was on, or by an older tidemark)
/// resumes by file and offset, and stores a GTID set only once it is complete: from the next
/// binlog's PREVIOUS_GTIDS on. A partial set would make the server resend, or find purged,
/// everything it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_without_gtids_gains_the_complete_set_at_the_next_binlog_on_mysql() {
    // Exclusive: another test's rotation would complete the set before this one looks.
    let _exclusive = BINLOGS.write().await;
    let mut env = MyEnv::new_at(&mysql8_url(), "mynogtid").await;
    env.exec("CREATE TABLE n (id int PRIMARY KEY, v int); INSERT INTO n VALUES (1, 1);").await;
    env.write_config(&format!(r#""{}.n""#, env.name), "heartbeat_interval = \"1s\"\n");
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("n", "SELECT id, v FROM n", &d).await;
    assert!(d.terminate().success());

    // Store the position as file and offset only.
    let (code, shown) = env.cli(&["offsets", "show", &env.name]);
    assert_eq!(code, Some(0), "{shown}");
    let line = shown.lines().find(|l| l.contains("\"kind\":\"mysql\"")).unwrap_or_else(|| panic!("{shown}"));
    let mut pos: serde_json::Value = serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
    let stored_pos = pos["pos"].as_u64().unwrap();
    pos.as_object_mut().unwrap().remove("gtid");
    let (code, out) = env.cli(&["offsets", "set", &env.name, &pos.to_string()]);
    assert_eq!(code, Some(0), "{out}");

    env.exec("INSERT INTO n VALUES (2, 2); UPDATE n SET v = 10 WHERE id = 1;").await;
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("n", "SELECT id, v FROM n", &d).await;
    let c = wait_for("a checkpoint past the stored offset", DEADLINE, || async {
        let c = d.connector().await?;
        (c["position"]["pos"].as_u64()? > stored_pos).then_some(c)
    })
    .await;
    assert!(c["position"]["gtid"].is_null(), "a partial GTID set was stored: {c}");

    // The next binlog's PREVIOUS_GTIDS completes the set: it comes to hold every transaction the
    // server had executed by the last insert (other tests may add more meanwhile).
    env.exec("FLUSH BINARY LOGS; INSERT INTO n VALUES (3, 3);").await;
    let executed: String = env.my.query_first("SELECT @@gtid_executed").await.unwrap().unwrap();
    env.wait_equal("n", "SELECT id, v FROM n", &d).await;
    let url = format!("{}/{}", env.url, env.name);
    let gtid = wait_for("the complete GTID set", DEADLINE, || async {
        let gtid = d.connector().await?["position"]["gtid"].as_str()?.to_string();
        let mut my = my_connect(&url).await;
        let covers: i64 = my.exec_first("SELECT GTID_SUBSET(?, ?)", (&executed, &gtid)).await.ok()??;
        (covers == 1).then_some(gtid)
    })
    .await;
    let within: i64 = env.my.exec_first("SELECT GTID_SUBSET(?, @@gtid_executed)", (&gtid,)).await.unwrap().unwrap();
    assert_eq!(within, 1, "stored {gtid}");
    assert!(d.terminate().success());
    let mut d = env.start();
    d.wait_streaming().await;
    assert!(d.log().contains("resuming from GTID set"), "{}", d.log());
    assert!(d.terminate().success());
    env.cleanup().await;
}

/// TLS to MySQL with a private CA (`require_ssl=true` in the URL, `ca_file`): a user the server
/// lets in only over TLS checks and streams; without TLS it is refused, and a certificate from
/// another CA is rejected by tidemark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_on_mysql() {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new_at(&mysql8_url(), "mytls").await;
    env.exec("CREATE TABLE s (id int PRIMARY KEY); INSERT INTO s VALUES (1);").await;
    let user = env.name.clone();
    env.exec(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'tls-pw' REQUIRE SSL;
         GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD, SELECT ON *.* TO '{user}'@'127.0.0.1';"
    ))
    .await;
    // The server's CA (services.sh made it, with a certificate for 127.0.0.1).
    let (datadir, ca): (String, String) = env.my.query_first("SELECT @@datadir, @@ssl_ca").await.unwrap().unwrap();
    let ca = PathBuf::from(datadir).join(ca);
    let other = env.dir.join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=not the server's CA", "-days", "1"])
        .arg("-keyout")
        .arg(env.dir.join("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let admin_url = env.url.clone();
    let user_url = admin_url.replace("root@", &format!("{user}:tls-pw@"));
    let tls_url = format!("{user_url}?require_ssl=true");
    let tables = format!(r#""{}.s""#, env.name);

    // Another CA's certificate is refused.
    env.url = tls_url.clone();
    env.write_config(&tables, &format!("ca_file = \"{}\"\n", other.display()));
    let (code, msg) = env.cli(&["check"]);
    assert_eq!(code, Some(1), "{msg}");
    assert!(msg.contains("cannot connect"), "{msg}");

    // Without TLS, the server refuses the user.
    env.url = user_url;
    env.write_config(&tables, "");
    let (code, msg) = env.cli(&["check"]);
    assert_eq!(code, Some(1), "{msg}");
    assert!(msg.contains("cannot connect"), "{msg}");

    // With the server's CA: check passes and the connector streams.
    env.url = tls_url;
    env.write_config(&tables, &format!("ca_file = \"{}\"\n", ca.display()));
    let (code, msg) = env.cli(&["check"]);
    assert_eq!(code, Some(0), "{msg}");
    assert!(!msg.contains("tls-pw"), "the password is shown: {msg}");
    let mut d = env.start();
    d.wait_streaming().await;
    env.exec("INSERT INTO s VALUES (2)").await;
    env.wait_equal("s", "SELECT id FROM s", &d).await;
    let (code, body) = tidemark::http::request(&d.http, "GET", &format!("/connectors/{}", env.name)).await.unwrap();
    assert_eq!(code, 200);
    let described: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(described["config"]["source"]["tls"], true, "{described}");
    assert!(d.terminate().success());
    env.exec(&format!("DROP USER '{user}'@'127.0.0.1'")).await;
    env.url = admin_url;
    env.cleanup().await;
}

/// A stored GTID of the other server kind (here MariaDB's, on MySQL, in a position that names no
/// server) is refused with the way out rather than dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_gtid_on_mysql_is_refused_with_the_way_out() {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new_at(&mysql8_url(), "mykind").await;
    env.exec("CREATE TABLE k (id int PRIMARY KEY); INSERT INTO k VALUES (1);").await;
    env.write_config(&format!(r#""{}.k""#, env.name), "");
    let mut d = env.start();
    d.wait_streaming().await;
    env.wait_equal("k", "SELECT id FROM k", &d).await;
    assert!(d.terminate().success());
    let (code, shown) = env.cli(&["offsets", "show", &env.name]);
    assert_eq!(code, Some(0), "{shown}");
    let line = shown.lines().find(|l| l.contains("\"kind\":\"mysql\"")).unwrap_or_else(|| panic!("{shown}"));
    let mut pos: serde_json::Value = serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
    let obj = pos.as_object_mut().unwrap();
    obj.remove("server");
    obj.insert("gtid".into(), "0-1-100".into());
    let (code, out) = env.cli(&["offsets", "set", &env.name, &pos.to_string()]);
    assert_eq!(code, Some(0), "{out}");
    let d = env.start();
    let reason = d.failure().await;
    assert!(
        reason.contains("0-1-100 is not a MySQL GTID")
            && reason.contains(&format!("tidemark offsets reset {}", env.name)),
        "{reason}"
    );
    drop(d);
    env.cleanup().await;
}
