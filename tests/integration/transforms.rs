//! The processing stage, end to end on the real servers.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::*;

const MASK_KEY: &str = "an-hmac-key-for-tests";

fn hmac_hex(text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(MASK_KEY.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_project_mask_and_route_shape_what_reaches_redis() {
    let env = Env::new("tstateless").await;
    env.pg
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, customer text, email text, status text, total numeric(10,2), note text);
             INSERT INTO orders SELECT i, 'c' || (i % 7), 'user' || i || '@example.com',
               CASE WHEN i % 5 = 0 THEN 'test' ELSE 'paid' END, i * 1.5, 'internal' FROM generate_series(1, 200) i;",
        )
        .await
        .unwrap();
    let body = format!(
        r#"[[transform]]
kind = "filter"
expr = "op == 'd' || after.status != 'test'"

[[transform]]
kind = "project"
drop = ["note"]
rename = {{ status = "state" }}

[[transform]]
kind = "mask"
columns = ["email"]
key = "{MASK_KEY}"

[[transform]]
kind = "route"
table = "{{table}}_v2"

[[sink]]
kind = "redis"
url = "{}"
"#,
        redis_url()
    );
    env.write_config(&env.postgres_source(r#""public.orders""#, &body));
    let mut d = env.start();
    d.wait_streaming().await;
    env.pg
        .batch_execute(
            "INSERT INTO orders VALUES (201, 'c1', 'new@example.com', 'paid', 10, 'x'), (202, 'c2', 'x@y.z', 'test', 1, 'x');
             UPDATE orders SET total = total + 100, email = 'changed' || id || '@example.com' WHERE id % 3 = 0 AND status <> 'test';
             DELETE FROM orders WHERE id % 11 = 0;",
        )
        .await
        .unwrap();
    // What Redis must hold: the non-test rows, without `note`, `status` renamed, `email` hashed,
    // under the routed table name.
    let prefix = format!("{}:orders_v2", env.name);
    let sql = "SELECT id, customer, email, status AS state, total FROM orders WHERE status <> 'test'";
    let mut r = redis_conn().await;
    let start = std::time::Instant::now();
    loop {
        let mut expected = table_rows(&env.pg, sql).await;
        for row in expected.values_mut() {
            let email = row.get("email").cloned().unwrap();
            row.insert("email".into(), hmac_hex(&email));
        }
        let actual = redis_hashes(&mut r, &prefix).await;
        if expected == actual {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "Redis never matched: {}\n{}", diff(&expected, &actual), d.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Nothing went under the original table name.
    assert!(scan(&mut r, &format!("{}:orders:*", env.name)).await.is_empty());
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_naming_a_missing_column_stops_the_connector_at_startup() {
    let env = Env::new("tmissing").await;
    env.pg.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, status text)").await.unwrap();
    let body = format!(
        "[[transform]]\nkind = \"project\"\nrename = {{ status = \"state\" }}\n\n[[transform]]\nkind = \"filter\"\nexpr = \"after.status == 'x'\"\n\n[[sink]]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis_url()
    );
    env.write_config(&env.postgres_source(r#""public.orders""#, &body));
    let d = env.start();
    let reason = d.failure().await;
    let file = format!("{}.toml", env.name);
    assert!(
        reason.contains(&file)
            && reason.contains(
                "transform[1].expr: column `status` is not a column of public.orders (its columns here: id, state)"
            ),
        "{reason}"
    );

    // An invalid expression and a mask without its key never get that far: the configuration is
    // refused, every error with its file and key.
    let body = "[[transform]]\nkind = \"filter\"\nexpr = \"after.status ==\"\n\n[[transform]]\nkind = \"mask\"\ncolumns = [\"status\"]\n\n[[sink]]\nkind = \"stdout\"\n";
    env.write_config(&env.postgres_source(r#""public.orders""#, body));
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["check", "--config-only", "-c"])
        .arg(env.dir.join("tidemark.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains(&format!("{file}: transform[0].expr: invalid expression")), "{text}");
    assert!(text.contains(&format!("{file}: transform[1].key: is required")), "{text}");
    env.cleanup().await;
}

/// A random workload of inserts, updates (including moves between groups) and deletes.
async fn orders_workload(url: String, steps: usize, seed: u64, done: Arc<AtomicUsize>) {
    let pg = pg_connect(&url).await;
    let mut rng = fastrand::Rng::with_seed(seed);
    let statuses = ["new", "paid", "shipped"];
    for step in 0..steps {
        done.store(step, Ordering::Relaxed);
        let id = rng.i32(1..400);
        let customer = format!("c{}", rng.u8(0..12));
        let total = format!("{}.{:02}", rng.u32(1..500), rng.u8(0..100));
        let status = statuses[rng.usize(0..3)];
        match rng.u8(0..10) {
            0..=3 => {
                pg.execute(
                    "INSERT INTO orders VALUES ($1, $2, $3::text::numeric, $4) ON CONFLICT (id) DO NOTHING",
                    &[&id, &customer, &total, &status],
                )
                .await
                .unwrap();
            }
            4..=6 => {
                pg.execute(
                    "UPDATE orders SET total = $2::text::numeric, status = $3 WHERE id = $1",
                    &[&id, &total, &status],
                )
                .await
                .unwrap();
            }
            7 => {
                pg.execute("UPDATE orders SET customer = $2 WHERE id = $1", &[&id, &customer]).await.unwrap();
            }
            _ => {
                pg.execute("DELETE FROM orders WHERE id = $1", &[&id]).await.unwrap();
            }
        }
    }
}

/// `kill -9` the daemon once the workload has made each of `steps` steps and the daemon has
/// applied part of it; restart it each time.
async fn kill9_as_the_workload_runs(env: &Env, mut d: Daemon, progress: &AtomicUsize, steps: [usize; 2]) -> Daemon {
    for at in steps {
        wait_for("the workload to get on", DEADLINE, || async {
            (progress.load(Ordering::Relaxed) >= at).then_some(())
        })
        .await;
        wait_for("part of the workload applied", DEADLINE, || async {
            let applied = d.connector().await?["events_applied"].as_u64()?;
            (applied > 100).then_some(())
        })
        .await;
        d.kill9();
        d = env.start();
        d.wait_streaming().await;
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_survive_two_kill9s_and_equal_sql_group_by() {
    let env = Env::new("taggkill").await;
    env.pg
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2), status text);
             INSERT INTO orders SELECT i, 'c' || (i % 12), (i % 97) + 0.25, 'new' FROM generate_series(1, 150) i;",
        )
        .await
        .unwrap();
    let body = format!(
        r#"# With before images (their cache is memory only, rebuilt after each kill); the orders pass on.
[[transform]]
kind = "aggregate"
tables = ["public.orders"]
name = "full_revenue"
group_by = ["customer"]
before_images = true
aggregates = {{ orders = "count(*)", total = "sum(total)", biggest = "max(total)", smallest = "min(total)", average = "avg(total)", statuses = "count_distinct(status)" }}

[[transform]]
kind = "aggregate"
tables = ["public.orders"]
name = "revenue"
group_by = ["customer"]
pass_through = false
aggregates = {{ orders = "count(*)", total = "sum(total)", biggest = "max(total)", smallest = "min(total)", average = "avg(total)", statuses = "count_distinct(status)" }}

[[sink]]
kind = "redis"
url = "{}"
"#,
        redis_url()
    );
    env.write_config(&env.postgres_source(r#""public.orders""#, &body));
    let mut d = env.start();
    d.wait_streaming().await;
    let progress = Arc::new(AtomicUsize::new(0));
    let workload = tokio::spawn(orders_workload(env.db_url(), 3000, 42, progress.clone()));
    // Two kill -9s while the workload runs, each once the daemon has applied part of it.
    let mut d = kill9_as_the_workload_runs(&env, d, &progress, [1000, 2000]).await;
    workload.await.unwrap();

    let sql = "SELECT customer, count(*) AS orders, sum(total)::text AS total, max(total)::text AS biggest,
                      min(total)::text AS smallest, count(DISTINCT status) AS statuses
                 FROM orders GROUP BY customer";
    let mut r = redis_conn().await;
    for table in ["revenue", "full_revenue"] {
        let prefix = format!("{}:{table}", env.name);
        let start = std::time::Instant::now();
        loop {
            let expected = table_rows(&env.pg, sql).await;
            let mut actual = redis_hashes(&mut r, &prefix).await;
            let averages: Vec<(String, f64)> = actual
                .iter_mut()
                .filter_map(|(k, row)| Some((k.clone(), row.remove("average")?.parse().ok()?)))
                .collect();
            if expected == actual {
                // The averages agree with SQL's too.
                for (customer, avg) in averages {
                    let row = env
                        .pg
                        .query_one("SELECT avg(total)::float8 FROM orders WHERE customer = $1", &[&customer])
                        .await
                        .unwrap();
                    let want: f64 = row.get(0);
                    assert!((avg - want).abs() < 1e-6, "average of {customer}: {avg} vs {want}");
                }
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the aggregate {table} never matched SQL: {}\n{}",
                diff(&expected, &actual),
                d.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    assert!(d.terminate().success());
    env.cleanup().await;
}

/// `2020-01-01T00:00:10Z` (or with a fraction, or `+00:00`) as milliseconds since the epoch.
fn epoch_ms(iso: &str) -> i64 {
    let (date, time) = iso.split_once('T').unwrap_or_else(|| panic!("not a timestamp: {iso}"));
    let mut d = date.split('-').map(|p| p.parse::<i64>().unwrap());
    let (y, m, day) = (d.next().unwrap(), d.next().unwrap(), d.next().unwrap());
    let time = time.trim_end_matches('Z').split('+').next().unwrap();
    let mut t = time.split(':');
    let (h, min) = (t.next().unwrap().parse::<i64>().unwrap(), t.next().unwrap().parse::<i64>().unwrap());
    let secs: f64 = t.next().unwrap().parse().unwrap();
    let days = tidemark::event::time::days_from_civil(y, m as u32, day as u32);
    days * 86_400_000 + h * 3_600_000 + min * 60_000 + (secs * 1000.0).round() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_windows_survive_kill9s_and_equal_sql_buckets_and_late_events_are_dead_lettered() {
    let env = Env::new("twindow").await;
    env.pg
        .batch_execute("CREATE TABLE events (id int PRIMARY KEY, status text NOT NULL, amount int NOT NULL, at timestamptz NOT NULL)")
        .await
        .unwrap();
    let late_file = env.dir.join("late.jsonl");
    let body = format!(
        r#"[[transform]]
kind = "window"
tables = ["public.events"]
name = "per_status"
type = "tumbling"
size = "10s"
time_column = "at"
group_by = ["status"]
out_of_orderness = "2s"
aggregates = {{ n = "count(*)", total = "sum(amount)", biggest = "max(amount)" }}
pass_through = false
dead_letter_path = "{}"

[[sink]]
kind = "redis"
url = "{}"
"#,
        late_file.display(),
        redis_url()
    );
    env.write_config(&env.postgres_source(r#""public.events""#, &body));
    let mut d = env.start();
    d.wait_streaming().await;

    // Event times start in 2020 and advance 250 ms per insert, each up to 1.5 s out of order
    // (within the 2 s the watermark allows); two kill -9s on the way.
    let progress = Arc::new(AtomicUsize::new(0));
    let workload = {
        let (url, progress) = (env.db_url(), progress.clone());
        tokio::spawn(async move {
            let pg = pg_connect(&url).await;
            let mut rng = fastrand::Rng::with_seed(9);
            for i in 0..1500i32 {
                progress.store(i as usize, Ordering::Relaxed);
                let at_ms = 1_577_836_800_000i64 + i as i64 * 250 - rng.i64(0..1500);
                let status = ["new", "paid", "shipped"][rng.usize(0..3)];
                pg.execute(
                    "INSERT INTO events VALUES ($1, $2, $3, to_timestamp($4::float8 / 1000))",
                    &[&i, &status, &rng.i32(1..100), &(at_ms as f64)],
                )
                .await
                .unwrap();
            }
        })
    };
    let mut d = kill9_as_the_workload_runs(&env, d, &progress, [500, 1000]).await;
    workload.await.unwrap();

    // Heartbeats carry today's time, far past 2020: every window closes. Each one in Redis is
    // final and equals SQL over the same 10 s buckets.
    let sql = "SELECT status || ':' || (floor(extract(epoch FROM at) * 1000 / 10000) * 10000)::bigint AS k,
                      count(*) AS n, sum(amount) AS total, max(amount) AS biggest
                 FROM events GROUP BY 1";
    let prefix = format!("{}:per_status", env.name);
    let mut r = redis_conn().await;
    let start = std::time::Instant::now();
    loop {
        let expected = table_rows(&env.pg, sql).await;
        let mut actual = Rows::new();
        for (_, row) in redis_hashes(&mut r, &prefix).await {
            let mut row = row;
            let k = format!("{}:{}", row["status"], epoch_ms(&row["window_start"]));
            let complete = row.get("final").map(String::as_str) == Some("true");
            for c in ["status", "window_start", "window_end", "final"] {
                row.remove(c);
            }
            if complete {
                row.insert("k".into(), k.clone());
                actual.insert(k, row);
            }
        }
        if expected == actual {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "closed windows never matched SQL: {}\n{}",
            diff(&expected, &actual),
            d.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    // An event for a window closed long ago is late: counted, dead-lettered with the reason,
    // and not added to the closed window.
    env.pg.execute("INSERT INTO events VALUES (99999, 'paid', 7, '2020-01-01T00:00:01Z')", &[]).await.unwrap();
    let line = wait_for("the late event in the dead-letter file", DEADLINE, || async {
        std::fs::read_to_string(&late_file).ok().filter(|t| !t.is_empty())
    })
    .await;
    let letter: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(letter["key"], serde_json::json!({ "id": 99999 }));
    assert!(letter["error"].as_str().unwrap().starts_with("late"), "{letter}");
    assert_eq!(letter["sink"], "window per_status");
    let metrics = d.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("tidemark_late_events_total{")
            && l.contains("window=\"per_status\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    let first: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(
            redis_hashes(&mut r, &prefix)
                .await
                .keys()
                .find(|k| k.starts_with("paid:2020-01-01T00:00:00"))
                .map(|k| format!("{prefix}:{k}"))
                .unwrap(),
        )
        .query_async(&mut r)
        .await
        .unwrap();
    let want: i64 = env
        .pg
        .query_one("SELECT count(*) FROM events WHERE status = 'paid' AND at >= '2020-01-01T00:00:00Z' AND at < '2020-01-01T00:00:10Z' AND id <> 99999", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(first["n"], want.to_string());
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_drops_a_replayed_range_so_nothing_is_output_or_counted_twice() {
    use crate::mysql_redis::{MyEnv, BINLOGS};
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new("tdedup").await;
    env.exec("CREATE TABLE t (id INT PRIMARY KEY, g INT NOT NULL, v INT NOT NULL)").await;
    let rest = format!(
        r#"[[transform]]
kind = "dedup"
ttl = "1h"

[[transform]]
kind = "aggregate"
name = "by_g"
group_by = ["g"]
aggregates = {{ n = "count(*)", total = "sum(v)" }}

[[sink]]
kind = "stdout"

[[sink]]
kind = "redis"
url = "{}"
"#,
        redis_url()
    );
    env.write_config_with_sinks(&format!("\"{}.t\"", env.name), &rest);
    let mut d = env.start();
    d.wait_streaming().await;
    let start_pos = wait_for("a checkpointed position", DEADLINE, || async {
        let p = d.connector().await?["position"].clone();
        p.get("file").is_some().then_some(p)
    })
    .await;
    for i in 0..60 {
        env.exec(&format!("INSERT INTO t VALUES ({i}, {}, {i})", i % 4)).await;
    }
    env.exec("UPDATE t SET v = v + 1000 WHERE id % 3 = 0; DELETE FROM t WHERE id % 7 = 0;").await;
    let sql = "SELECT g, COUNT(*) AS n, SUM(v) AS total FROM t GROUP BY g";
    env.wait_equal("by_g", sql, &d).await;
    assert!(d.terminate().success());

    // Rewind to where streaming began, keeping operator state: the whole range is read again.
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["offsets", "set", &env.name, &start_pos.to_string(), "-c"])
        .arg(env.dir.join("tidemark.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut d = env.start();
    d.wait_streaming().await;
    env.exec("INSERT INTO t VALUES (1000, 1, 5)").await;
    env.wait_equal("by_g", sql, &d).await;
    assert!(d.terminate().success());

    // Every change of `t` reached stdout exactly once over both runs.
    let mut seen = std::collections::HashMap::new();
    for f in std::fs::read_dir(&env.dir)
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().starts_with("stdout-"))
    {
        for line in std::fs::read_to_string(f.path()).unwrap().lines() {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            if e["source"]["table"] == "t" {
                let id = format!("{}:{}:{}", e["source"]["file"], e["source"]["pos"], e["source"]["row"]);
                *seen.entry(id).or_insert(0) += 1;
            }
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "output twice: {twice:?}");
    assert_eq!(seen.len(), 60 + 20 + 9 + 1, "every change once: 60 inserts, 20 updates, 9 deletes, 1 insert");
    env.cleanup().await;
}
