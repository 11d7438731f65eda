//! PostgreSQL → Redis, end to end, on the real servers.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::support::*;

fn redis_sink() -> String {
    format!("[[sink]]\nkind = \"redis\"\nurl = \"{}\"\n", redis_url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_stream_leaves_redis_equal_to_the_tables() {
    let env = Env::new("flow").await;
    env.pg
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, balance numeric(12,2), note varchar(20));
             CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, total numeric, status text);
             INSERT INTO customers SELECT i, 'c' || i, i * 1.25, NULL FROM generate_series(1, 500) i;
             INSERT INTO orders SELECT i, i % 50, i * 10.5, 'new' FROM generate_series(1, 300) i;",
        )
        .await
        .unwrap();
    env.write_config(&env.postgres_source(
        r#""public.customers", "public.orders""#,
        &format!("snapshot_chunk_rows = 128\n{}", redis_sink()),
    ));
    let mut d = env.start();
    d.wait_streaming().await;
    let customers = "SELECT id, name, balance, note FROM customers";
    let orders = "SELECT id, customer_id, total, status FROM orders";
    wait_equal(&env.pg, customers, &format!("{}:customers", env.name), Some(&d)).await;
    wait_equal(&env.pg, orders, &format!("{}:orders", env.name), Some(&d)).await;

    env.pg
        .batch_execute(
            "BEGIN;
               INSERT INTO customers SELECT i, 'late' || i, 0, 'x' FROM generate_series(501, 600) i;
               UPDATE orders SET status = 'paid', total = total + 1 WHERE id % 3 = 0;
             COMMIT;
             UPDATE customers SET name = name || '!' WHERE id % 7 = 0;
             DELETE FROM customers WHERE id % 11 = 0;
             UPDATE customers SET note = 'noted' WHERE id < 50;
             UPDATE customers SET note = NULL, balance = NULL WHERE id < 10;
             UPDATE customers SET id = id + 10000 WHERE id = 3;
             DELETE FROM orders WHERE id > 250;",
        )
        .await
        .unwrap();
    wait_equal(&env.pg, customers, &format!("{}:customers", env.name), Some(&d)).await;
    wait_equal(&env.pg, orders, &format!("{}:orders", env.name), Some(&d)).await;

    // The second truncate finds no row of the table in Redis (a SCAN without a match).
    env.pg
        .batch_execute("TRUNCATE orders; TRUNCATE orders; INSERT INTO orders VALUES (7, 1, 5, 'after truncate');")
        .await
        .unwrap();
    wait_equal(&env.pg, orders, &format!("{}:orders", env.name), Some(&d)).await;
    wait_equal(&env.pg, customers, &format!("{}:customers", env.name), Some(&d)).await;

    // Caught up and idle: lag is zero and the connector healthy.
    let c = wait_for("lag 0 and healthy", DEADLINE, || async {
        let c = d.connector().await?;
        (c["lag_ms"] == 0 && c["healthy"] == true).then_some(c)
    })
    .await;
    assert_eq!(c["state"], "streaming");
    assert!(c["position"]["lsn"].is_string(), "{c}");
    let metrics = d.metrics().await;
    assert!(metrics.contains("tidemark_events_total{connector=\"") && metrics.contains("op=\"t\""), "{metrics}");

    assert!(d.terminate().success(), "{}", d.log());
    env.cleanup().await;
}

/// Streaming events printed by the stdout sink, as (txId, op, key) with the after-image.
fn stream_events(path: &std::path::Path) -> Vec<(i64, String, String, Value)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["op"] != "r")
        .map(|e| {
            let key = e["after"]["id"].as_i64().or(e["before"]["id"].as_i64()).unwrap();
            (
                e["source"]["txId"].as_i64().unwrap(),
                e["op"].as_str().unwrap().to_string(),
                key.to_string(),
                e["after"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_resumes_without_loss_or_duplicates() {
    let env = Env::new("sigterm").await;
    env.pg
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL); INSERT INTO items SELECT i, 0 FROM generate_series(1, 100) i;")
        .await
        .unwrap();
    env.write_config(
        &env.postgres_source(r#""public.items""#, &format!("{}[[sink]]\nkind = \"stdout\"\n", redis_sink())),
    );
    let sql = "SELECT id, v FROM items";
    let prefix = format!("{}:items", env.name);

    let mut first = env.start();
    first.wait_streaming().await;
    for i in 1..=50 {
        env.pg.execute("UPDATE items SET v = v + 1 WHERE id = $1", &[&i]).await.unwrap();
    }
    wait_equal(&env.pg, sql, &prefix, Some(&first)).await;
    assert!(first.terminate().success(), "{}", first.log());

    // Changes while the daemon is down.
    for i in 51..=100 {
        env.pg.execute("UPDATE items SET v = v + 1 WHERE id = $1", &[&i]).await.unwrap();
    }
    env.pg
        .batch_execute(
            "DELETE FROM items WHERE id <= 10; INSERT INTO items SELECT i, 7 FROM generate_series(101, 110) i;",
        )
        .await
        .unwrap();

    let mut second = env.start();
    second.wait_streaming().await;
    wait_equal(&env.pg, sql, &prefix, Some(&second)).await;
    assert!(second.terminate().success(), "{}", second.log());

    // Every change exactly once across both runs; the snapshot only in the first.
    let a = stream_events(&first.stdout);
    let b = stream_events(&second.stdout);
    let snapshot_rows_2 =
        std::fs::read_to_string(&second.stdout).unwrap().lines().filter(|l| l.contains("\"op\":\"r\"")).count();
    assert_eq!(snapshot_rows_2, 0, "the second run read the snapshot again");
    let all: Vec<_> = a.iter().chain(&b).map(|(tx, op, key, _)| (*tx, op.clone(), key.clone())).collect();
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "duplicate events across the restart");
    assert_eq!(a.len(), 50, "first run: {a:?}");
    assert_eq!(b.len(), 50 + 10 + 10, "second run saw {} events", b.len());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_stream_loses_nothing_and_never_goes_back() {
    let env = Env::new("kill9").await;
    env.create_accounts().await;
    env.write_config(&env.postgres_source(r#""public.accounts""#, &redis_sink()));
    let prefix = format!("{}:accounts", env.name);
    let mut d = env.start();
    d.wait_streaming().await;
    wait_equal(&env.pg, ACCOUNTS_ROWS, &prefix, Some(&d)).await;
    // Watch Redis while the workload runs; kill -9 once the daemon has applied part of it.
    let mut d = kill9_under_accounts_workload(&env, d, &prefix, 800, 3000, 7).await;
    let metrics = d.metrics().await;
    assert!(metrics.contains("tidemark_sink_events_total"), "{metrics}");
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_snapshot_resumes_the_snapshot() {
    let env = Env::new("snapkill").await;
    env.pg
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);
             INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 60000) i;",
        )
        .await
        .unwrap();
    env.write_config(&env.postgres_source(
        r#""public.big""#,
        &format!("snapshot_chunk_rows = 500\n{}[pipeline]\nmax_batch_rows = 500\n", redis_sink()),
    ));
    let sql = "SELECT id, payload FROM big";
    let prefix = format!("{}:big", env.name);
    let mut d = env.start();
    // Kill once a few chunks are checkpointed, while the snapshot is still running.
    wait_for("snapshot under way", DEADLINE, || async {
        let c = d.connector().await?;
        (c["state"] == "snapshotting" && c["position"]["snapshot"]["after"].is_array()).then_some(())
    })
    .await;
    d.kill9();
    // Changes made while the daemon is down, mid-snapshot, must arrive too.
    env.pg
        .batch_execute("UPDATE big SET payload = 'changed' WHERE id % 1000 = 0; DELETE FROM big WHERE id % 777 = 0;")
        .await
        .unwrap();
    let mut d = env.start();
    d.wait_streaming().await;
    wait_equal(&env.pg, sql, &prefix, Some(&d)).await;
    // The second run resumed: it read fewer rows than the table holds.
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
async fn update_leaving_a_toasted_column_unchanged_keeps_it() {
    let env = Env::new("toast").await;
    env.pg
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, n int, body text, nums bigint[]);
             ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
             ALTER TABLE docs ALTER COLUMN nums SET STORAGE EXTERNAL;
             INSERT INTO docs VALUES
               (1, 1, repeat('x', 20000), array_fill(1234567890123456789::bigint, ARRAY[500])),
               (2, 1, 'short', NULL);",
        )
        .await
        .unwrap();
    let sinks = format!(
        "{}[[sink]]\nkind = \"redis\"\nname = \"json\"\nurl = \"{}\"\nformat = \"json\"\nkey = \"{{connector}}:json:{{table}}:{{key}}\"\n[[sink]]\nkind = \"stdout\"\n",
        redis_sink(),
        redis_url()
    );
    env.write_config(&env.postgres_source(r#""public.docs""#, &sinks));
    let mut d = env.start();
    d.wait_streaming().await;
    // Arrays are JSON arrays in the hash: PostgreSQL's array_to_json writes the same text.
    let sql = "SELECT id, n, body, array_to_json(nums)::text AS nums FROM docs";
    wait_equal(&env.pg, sql, &format!("{}:docs", env.name), Some(&d)).await;

    env.pg
        .batch_execute(
            "UPDATE docs SET n = 2 WHERE id = 1; UPDATE docs SET n = 3, body = repeat('y', 20000) WHERE id = 2;",
        )
        .await
        .unwrap();
    wait_equal(&env.pg, sql, &format!("{}:docs", env.name), Some(&d)).await;

    // The stream really sent the update without the TOASTed value.
    let out = std::fs::read_to_string(&d.stdout).unwrap();
    let update = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["op"] == "u" && e["after"]["id"] == 1)
        .expect("update event");
    assert_eq!(update["after"]["body"], "__debezium_unavailable_value", "expected Debezium's placeholder: {update}");

    // The JSON format merges the partial row too.
    let mut r = redis_conn().await;
    let doc: String = redis::cmd("GET").arg(format!("{}:json:docs:1", env.name)).query_async(&mut r).await.unwrap();
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["n"], 2);
    assert_eq!(doc["body"].as_str().map(str::len), Some(20000));
    assert!(doc["body"].as_str().unwrap().bytes().all(|b| b == b'x'));
    // The kept array is spliced byte for byte: no rounding of 19-digit numbers.
    let raw: String = redis::cmd("GET").arg(format!("{}:json:docs:1", env.name)).query_async(&mut r).await.unwrap();
    assert!(raw.contains("[1234567890123456789,1234567890123456789,"), "{}", &raw[..200.min(raw.len())]);
    assert_eq!(doc["nums"].as_array().map(Vec::len), Some(500));
    let hash_nums: String =
        redis::cmd("HGET").arg(format!("{}:docs:1", env.name)).arg("nums").query_async(&mut r).await.unwrap();
    assert!(hash_nums.starts_with("[1234567890123456789,"), "{hash_nums}");
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_with_the_documented_encoding() {
    let env = Env::new("types").await;
    env.pg
        .batch_execute(
            r#"CREATE TYPE mood AS ENUM ('sad', 'happy');
               CREATE TABLE t (
                 id int PRIMARY KEY, c_int2 int2, c_int4 int4, c_int8 int8, c_numeric numeric(20,5), c_numeric_free numeric,
                 c_real real, c_double double precision, c_bool bool, c_text text, c_varchar varchar(10), c_char char(5),
                 c_date date, c_time time, c_time3 time(3), c_timetz timetz, c_timestamp timestamp, c_timestamp3 timestamp(3),
                 c_timestamptz timestamptz, c_interval interval, c_uuid uuid, c_json json, c_jsonb jsonb, c_bytea bytea,
                 c_int_arr int4[], c_text_arr text[], c_enum mood, c_enum_arr mood[]);"#,
        )
        .await
        .unwrap();
    let insert = |id: i32| {
        format!(
            r#"INSERT INTO t VALUES ({id}, -32768, 2147483647, 9223372036854775807, 12345678901234.56789, -0.000123,
                 1.5, 3.141592653589793, true, 'héllo ✓ "q"', 'abc', 'ab', '2024-02-29', '13:45:30.123456', '13:45:30.123',
                 '13:45:30+02', '2024-02-29 13:45:30.123456', '2024-02-29 13:45:30.123', '2024-02-29 13:45:30.123456+02',
                 '1 year 2 mons 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"a": [1, 2]}}',
                 '{{"b": 1, "a": "x"}}', '\xdeadbeef', '{{1,NULL,3}}', '{{"a b","c\"d"}}', 'happy', '{{sad,happy}}');
               INSERT INTO t (id) VALUES ({});
               INSERT INTO t (id, c_date, c_timestamp, c_timestamptz, c_numeric_free, c_double)
                 VALUES ({}, '0044-03-15 BC', 'infinity', '-infinity', 'NaN', '-Infinity');"#,
            id + 1,
            id + 2
        )
    };
    // Row 1-3 go through the snapshot, rows 11-13 through the stream.
    env.pg.batch_execute(&insert(1)).await.unwrap();
    env.write_config(&env.postgres_source(r#""public.t""#, &redis_sink()));
    let mut d = env.start();
    d.wait_streaming().await;
    env.pg.batch_execute(&insert(11)).await.unwrap();

    let interval_us: i64 =
        14 * 2_629_800_000_000 + 3 * 86_400_000_000 + ((4 * 3600 + 5 * 60 + 6) * 1_000_000 + 500_000);
    let expected: BTreeMap<&str, String> = [
        ("c_int2", "-32768".to_string()),
        ("c_int4", "2147483647".into()),
        ("c_int8", "9223372036854775807".into()),
        ("c_numeric", "12345678901234.56789".into()),
        ("c_numeric_free", "-0.000123".into()),
        ("c_real", "1.5".into()),
        ("c_double", "3.141592653589793".into()),
        ("c_bool", "true".into()),
        ("c_text", "héllo ✓ \"q\"".into()),
        ("c_varchar", "abc".into()),
        ("c_char", "ab   ".into()),
        ("c_date", "19782".into()),
        ("c_time", "49530123456".into()),
        ("c_time3", "49530123".into()),
        ("c_timetz", "11:45:30Z".into()),
        ("c_timestamp", "1709214330123456".into()),
        ("c_timestamp3", "1709214330123".into()),
        ("c_timestamptz", "2024-02-29T11:45:30.123456Z".into()),
        ("c_interval", interval_us.to_string()),
        ("c_uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        ("c_json", r#"{"a": [1, 2]}"#.into()),
        ("c_jsonb", r#"{"a": "x", "b": 1}"#.into()),
        ("c_bytea", "3q2+7w==".into()),
        ("c_int_arr", "[1,null,3]".into()),
        ("c_text_arr", r#"["a b","c\"d"]"#.into()),
        ("c_enum", "happy".into()),
        ("c_enum_arr", r#"["sad","happy"]"#.into()),
    ]
    .into_iter()
    .collect();

    let mut r = redis_conn().await;
    for base in [1, 11] {
        let full = wait_for("the full row", DEADLINE, || {
            let key = format!("{}:t:{base}", env.name);
            let mut r = r.clone();
            async move {
                let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(&mut r).await.ok()?;
                (!h.is_empty()).then_some(h)
            }
        })
        .await;
        for (col, want) in &expected {
            assert_eq!(full.get(*col), Some(want), "row {base} column {col}: {full:?}");
        }
        assert_eq!(full.get("id"), Some(&base.to_string()));
        assert_eq!(full.len(), expected.len() + 1, "unexpected fields: {full:?}");

        // All NULL: only the key is stored.
        let nulls: BTreeMap<String, String> = wait_for("the null row", DEADLINE, || {
            let key = format!("{}:t:{}", env.name, base + 1);
            let mut r = r.clone();
            async move {
                let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(&mut r).await.ok()?;
                (!h.is_empty()).then_some(h)
            }
        })
        .await;
        assert_eq!(nulls, BTreeMap::from([("id".to_string(), (base + 1).to_string())]));

        // Extremes: BC dates, infinities, NaN.
        let ext: BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(format!("{}:t:{}", env.name, base + 2)).query_async(&mut r).await.unwrap();
        assert_eq!(ext.get("c_date").map(String::as_str), Some("-735160"), "{ext:?}"); // 44 BC = proleptic year -43 (PostgreSQL agrees)
        assert_eq!(ext.get("c_timestamp").map(String::as_str), Some("9223372036825200000")); // the JDBC sentinel, as Debezium
        assert_eq!(ext.get("c_timestamptz").map(String::as_str), Some("-infinity"));
        assert_eq!(ext.get("c_numeric_free").map(String::as_str), Some("NaN"));
        assert_eq!(ext.get("c_double").map(String::as_str), Some("-Infinity"));
    }
    let metrics = d.metrics().await;
    assert!(
        !metrics.lines().any(|l| l.starts_with("tidemark_type_fallbacks_total") && !l.ends_with(" 0")),
        "no column should fall back to text: {metrics}"
    );
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusual_type_arrives_as_text_with_a_warning_metric() {
    let env = Env::new("odd").await;
    env.pg
        .batch_execute(
            "CREATE TABLE shapes (id int PRIMARY KEY, p circle, net inet, r int4range);
             INSERT INTO shapes VALUES (1, '<(1.5,2),3>', '10.0.0.1/8', '[1,5)');",
        )
        .await
        .unwrap();
    env.write_config(&env.postgres_source(r#""public.shapes""#, &redis_sink()));
    let mut d = env.start();
    d.wait_streaming().await;
    env.pg.batch_execute("INSERT INTO shapes VALUES (2, '<(3,4),1>', '::1', 'empty');").await.unwrap();
    wait_equal(&env.pg, "SELECT id, p, net, r FROM shapes", &format!("{}:shapes", env.name), Some(&d)).await;
    let metrics = d.metrics().await;
    let count = |ty: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with("tidemark_type_fallbacks_total{") && l.contains(&format!("type=\"{ty}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(count("circle"), 2.0, "{metrics}");
    assert_eq!(count("inet"), 2.0, "{metrics}");
    assert_eq!(count("int4range"), 2.0, "{metrics}");
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_key_is_reported_and_full_identity_is_keyed_by_the_row() {
    let env = Env::new("nokey").await;
    env.pg
        .batch_execute(
            "CREATE TABLE logs (msg text, n int);
             CREATE TABLE tags (name text, n int);
             ALTER TABLE tags REPLICA IDENTITY FULL;
             CREATE TABLE keyed (id int PRIMARY KEY, v text);
             CREATE TABLE coded (id int PRIMARY KEY, code text NOT NULL, v int);
             CREATE UNIQUE INDEX coded_code ON coded (code);
             ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code;
             INSERT INTO logs VALUES ('a', 1); INSERT INTO tags VALUES ('x', 1); INSERT INTO keyed VALUES (1, 'one');
             INSERT INTO coded VALUES (1, 'a', 1), (2, 'b', 2);",
        )
        .await
        .unwrap();
    env.write_config(&env.postgres_source(r#""public.*""#, &redis_sink()));
    let mut d = env.start();
    d.wait_streaming().await;
    env.pg
        .batch_execute(
            "INSERT INTO tags VALUES ('y', 2); UPDATE tags SET n = 5 WHERE name = 'x'; INSERT INTO keyed VALUES (2, 'two');
             UPDATE coded SET v = 10 WHERE code = 'a'; DELETE FROM coded WHERE code = 'b'; INSERT INTO coded VALUES (3, 'c', 3);",
        )
        .await
        .unwrap();
    wait_equal(&env.pg, "SELECT id, v FROM keyed", &format!("{}:keyed", env.name), Some(&d)).await;
    // Keyed by the replica identity index (what a delete's old row carries), not the primary key.
    wait_equal(&env.pg, "SELECT code, id, v FROM coded", &format!("{}:coded", env.name), Some(&d)).await;
    let mut r = redis_conn().await;
    let tags = wait_for("the FULL-identity table keyed by its whole row", DEADLINE, || {
        let mut r = r.clone();
        let prefix = format!("{}:tags", env.name);
        async move {
            let rows = redis_hashes(&mut r, &prefix).await;
            (rows.len() == 2 && rows.contains_key("x:5") && rows.contains_key("y:2")).then_some(rows)
        }
    })
    .await;
    assert_eq!(tags["x:5"]["n"], "5");
    assert!(scan(&mut r, &format!("{}:logs:*", env.name)).await.is_empty());
    let c = d.connector().await.unwrap();
    let notes = c["notes"].to_string();
    assert!(notes.contains("public.logs has no primary key") && notes.contains("REPLICA IDENTITY FULL"), "{c}");
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_redis_rejects_is_dead_lettered_with_its_key_and_the_rest_arrive() {
    let env = Env::new("reject").await;
    env.pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text);").await.unwrap();
    // Something else already owns the key of row 2, as a string: HSET on it fails (WRONGTYPE).
    let mut r = redis_conn().await;
    let _: () = redis::cmd("SET").arg(format!("{}:t:2", env.name)).arg("not a hash").query_async(&mut r).await.unwrap();
    let dead = env.dir.join("dead.jsonl");
    env.write_config(&env.postgres_source(
        r#""public.t""#,
        &format!(
            "[[sink]]\nkind = \"redis\"\nurl = \"{}\"\non_error = \"dead_letter\"\ndead_letter_path = \"{}\"\n",
            redis_url(),
            dead.display()
        ),
    ));
    let mut d = env.start();
    d.wait_streaming().await;
    env.pg
        .batch_execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c'); UPDATE t SET v = 'c2' WHERE id = 3;")
        .await
        .unwrap();
    let line = wait_for("the dead letter", DEADLINE, || async {
        std::fs::read_to_string(&dead).ok().filter(|s| !s.is_empty())
    })
    .await;
    let letter: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert!(letter["error"].as_str().unwrap().contains(&format!("key {}:t:2: WRONGTYPE", env.name)), "{letter}");
    assert_eq!(letter["key"], serde_json::json!({"id": 2}));
    assert_eq!(letter["value"]["after"]["v"], "b");
    assert_eq!(letter["value"]["op"], "c");
    // The rows around it arrived.
    let hget = |id: i32, r: redis::aio::MultiplexedConnection| {
        let key = format!("{}:t:{id}", env.name);
        async move {
            let mut r = r;
            redis::cmd("HGET").arg(key).arg("v").query_async::<Option<String>>(&mut r).await.unwrap()
        }
    };
    wait_for("row 3's update", DEADLINE, || async {
        (hget(3, r.clone()).await.as_deref() == Some("c2")).then_some(())
    })
    .await;
    assert_eq!(hget(1, r.clone()).await.as_deref(), Some("a"));
    let metrics = d.metrics().await;
    assert!(metrics.contains("outcome=\"dead_lettered\"} 1"), "{metrics}");
    assert!(d.terminate().success());

    // With the default policy (`fail`) the connector stops, and says which key.
    std::fs::write(
        env.dir.join("connectors").join(format!("{}.toml", env.name)),
        format!(
            "name = \"{}\"\n{}",
            env.name,
            env.postgres_source(r#""public.t""#, &format!("[[sink]]\nkind = \"redis\"\nurl = \"{}\"\n", redis_url()))
        ),
    )
    .unwrap();
    env.pg.batch_execute("UPDATE t SET v = 'b2' WHERE id = 2;").await.unwrap();
    let d = env.start();
    let reason = wait_for("the connector to fail naming the key", DEADLINE, || async {
        let (code, h) = d.health().await?;
        let c = &h["connectors"][0];
        (code == 503 && c["state"] == "failed").then(|| c["reasons"].to_string())
    })
    .await;
    assert!(reason.contains(&format!("key {}:t:2: WRONGTYPE", env.name)), "{reason}");
    drop(d);
    let _: () = redis::cmd("DEL").arg(format!("{}:t:2", env.name)).query_async(&mut r).await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_output_and_systemd_is_notified() {
    let env = Env::new("secret").await;
    env.pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);").await.unwrap();
    // The test server trusts local connections, so the password is accepted and ignored.
    let url_with_password = env.db_url().replacen("postgres@", "postgres:Sup3rS3cret@", 1);
    assert!(url_with_password.contains("Sup3rS3cret"), "test setup: {url_with_password}");
    env.write_config(&format!(
        "[source]\nkind = \"postgres\"\nurl = \"{url_with_password}\"\ntables = [\"public.t\"]\n[[sink]]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis_url()
    ));
    let sock_path = env.dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "-c", "tidemark.toml"])
        .current_dir(&env.dir)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(std::fs::File::create(env.dir.join("secret.log")).unwrap())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("READY=1 from tidemark");
    assert_eq!(&buf[..n], b"READY=1");
    let d = Daemon {
        child: Some(child),
        http: env.http_addr(),
        stdout: env.dir.join("none"),
        stderr: env.dir.join("secret.log"),
    };
    let (_, connectors) = d.get("/connectors").await.unwrap();
    let (_, health) = d.get("/health").await.unwrap();
    assert!(connectors.contains("postgres:***@"), "{connectors}");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["check", "-c", "tidemark.toml"])
        .current_dir(&env.dir)
        .output()
        .unwrap();
    let check = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    let mut d = d;
    assert!(d.terminate().success());
    let n = sock.recv(&mut buf).expect("STOPPING=1 from tidemark");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let log = std::fs::read_to_string(env.dir.join("secret.log")).unwrap();
    for (what, text) in [("/connectors", &connectors), ("/health", &health), ("check", &check), ("log", &log)] {
        assert!(!text.contains("Sup3rS3cret"), "the password leaked into {what}:\n{text}");
    }
    env.cleanup().await;
}

/// `${file:…}` and `${credential:…}` read secrets from files; whatever setting they land in, the
/// log, `check` and `/connectors` show `***`; a missing file names the key and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_files_and_systemd_credentials_are_used_and_never_shown() {
    let env = Env::new("secfile").await;
    env.pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);").await.unwrap();
    let secrets = env.dir.join("secrets");
    std::fs::create_dir_all(secrets.join("creds")).unwrap();
    // The test server trusts local connections: the password is accepted and ignored.
    std::fs::write(secrets.join("pg_password"), "F1leS3cret\n").unwrap();
    // A credential in a setting nothing else would redact (a Kafka client id).
    std::fs::write(secrets.join("creds/client"), "Cr3dS3cret").unwrap();
    let url = env.db_url().replacen(
        "postgres@",
        &format!("postgres:${{file:{}}}@", secrets.join("pg_password").display()),
        1,
    );
    env.write_config(&format!(
        "[source]\nkind = \"postgres\"\nurl = \"{url}\"\ntables = [\"public.t\"]\n\
         [[sink]]\nkind = \"redis\"\nurl = \"{}\"\n\
         [[sink]]\nkind = \"kafka\"\nbrokers = \"{}\"\n[sink.librdkafka_options]\n\"client.id\" = \"${{credential:client}}\"\n",
        redis_url(),
        crate::kafka::kafka_brokers()
    ));
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(args)
            .current_dir(&env.dir)
            .env("CREDENTIALS_DIRECTORY", secrets.join("creds"))
            .output()
            .unwrap()
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "-c", "tidemark.toml"])
        .current_dir(&env.dir)
        .env("CREDENTIALS_DIRECTORY", secrets.join("creds"))
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(env.dir.join("secret.log")).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon {
        child: Some(child),
        http: env.http_addr(),
        stdout: env.dir.join("none"),
        stderr: env.dir.join("secret.log"),
    };
    d.wait_streaming().await;
    wait_equal(&env.pg, "SELECT id FROM t", &format!("{}:t", env.name), Some(&d)).await;
    let (_, connectors) = d.get("/connectors").await.unwrap();
    let (_, health) = d.get("/health").await.unwrap();
    assert!(connectors.contains("postgres:***@") && connectors.contains("\"client.id\":\"***\""), "{connectors}");
    let check = run(&["check", "-c", "tidemark.toml"]);
    let check = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.contains("connector"), "{check}");
    assert!(d.terminate().success());
    let log = std::fs::read_to_string(env.dir.join("secret.log")).unwrap();
    for (what, text) in [("/connectors", &connectors), ("/health", &health), ("check", &check), ("log", &log)] {
        assert!(!text.contains("F1leS3cret") && !text.contains("Cr3dS3cret"), "a secret leaked into {what}:\n{text}");
    }
    // A missing file: a configuration error naming the key and the file.
    std::fs::remove_file(secrets.join("pg_password")).unwrap();
    let out = run(&["check", "--config-only", "-c", "tidemark.toml"]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("source.url (line 4)") && text.contains("pg_password"), "{text}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_publication_only_delivers_the_included_tables() {
    let env = Env::new("pubshare").await;
    env.pg
        .batch_execute(&format!(
            "CREATE TABLE wanted (id int PRIMARY KEY, v text); CREATE TABLE other (id int PRIMARY KEY, v text);
             CREATE PUBLICATION \"tidemark_{}\" FOR ALL TABLES;",
            env.name
        ))
        .await
        .unwrap();
    env.write_config(&env.postgres_source(r#""public.wanted""#, &redis_sink()));
    let mut d = env.start();
    d.wait_streaming().await;
    env.pg.batch_execute("INSERT INTO other VALUES (1, 'no'); INSERT INTO wanted VALUES (1, 'yes'); INSERT INTO other VALUES (2, 'no');").await.unwrap();
    wait_equal(&env.pg, "SELECT id, v FROM wanted", &format!("{}:wanted", env.name), Some(&d)).await;
    // Everything up to the last insert has been applied once a later heartbeat is through.
    let lsn: String = env.pg.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
    let target = tidemark::sources::postgres::parse_lsn(&lsn).unwrap();
    wait_for("a checkpoint past the inserts", DEADLINE, || async {
        let c = d.connector().await?;
        let at = tidemark::sources::postgres::parse_lsn(c["position"]["lsn"].as_str()?)?;
        (at > target).then_some(())
    })
    .await;
    let mut r = redis_conn().await;
    assert!(scan(&mut r, &format!("{}:other:*", env.name)).await.is_empty(), "an excluded table reached Redis");
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_during_a_snapshot_stops_the_connector_with_the_fix() {
    let env = Env::new("lostslot").await;
    env.pg
        .batch_execute("CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL); INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 40000) i;")
        .await
        .unwrap();
    env.write_config(&env.postgres_source(
        r#""public.big""#,
        &format!("snapshot_chunk_rows = 500\n{}[pipeline]\nmax_batch_rows = 500\n", redis_sink()),
    ));
    let mut d = env.start();
    wait_for("snapshot under way", DEADLINE, || async {
        let c = d.connector().await?;
        (c["state"] == "snapshotting" && c["position"]["snapshot"]["after"].is_array()).then_some(())
    })
    .await;
    d.kill9();
    let slot = format!("tidemark_{}", env.name);
    wait_for("the slot to be released", DEADLINE, || async {
        let row =
            env.pg.query_opt("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&slot]).await.ok()??;
        (!row.get::<_, bool>(0)).then_some(())
    })
    .await;
    env.pg.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.unwrap();
    let d = env.start();
    let reason = d.failure().await;
    assert!(
        reason.contains("no longer exists") && reason.contains(&format!("tidemark offsets reset {}", env.name)),
        "{reason}"
    );
    drop(d);
    env.cleanup().await;
}
