//! The Kafka sink against the real broker of scripts/services.sh (tansu), checked with an
//! independent reader (confluent-kafka, tests/kafka/read.py): topic names, keys, values byte for
//! byte, tombstones, key-change headers, and Java's murmur2 partitioning.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mysql_redis::{MyEnv, BINLOGS};
use crate::support::*;

pub fn kafka_brokers() -> String {
    std::env::var("TIDEMARK_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The Python of scripts/services.sh's virtual environment, which has confluent-kafka.
fn python() -> String {
    std::env::var("TIDEMARK_TEST_PYTHON").unwrap_or_else(|_| "/opt/tidemark/venv/bin/python".into())
}

/// Every record of `topics` (at least `count`), as the independent reader sees them.
fn read_topics(count: usize, topics: &[&str]) -> Vec<Value> {
    read_until_idle(count, 30, topics)
}

/// The records of `topics`: `count` of them, or as many as came before `idle_secs` without one.
fn read_until_idle(count: usize, idle_secs: u32, topics: &[&str]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/read.py");
    let out = Command::new(python())
        .env("IDLE_SECS", idle_secs.to_string())
        .arg(script)
        .arg(kafka_brokers())
        .arg(count.to_string())
        .args(topics)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the Kafka reader ({}): {e}; run scripts/services.sh", python()));
    assert!(out.status.success(), "the Kafka reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        records.len() >= count || count == usize::MAX,
        "expected {count} records in {topics:?}, the reader saw {}: {records:#?}",
        records.len()
    );
    records
}

/// An envelope without the top-level processing times (each sink stamps its own).
fn without_processing_time(envelope: &str) -> String {
    let at = envelope.rfind(",\"ts_ms\":").expect("a top-level ts_ms");
    envelope[..at].to_string()
}

/// Check what the reader saw against what the stdout sink printed for the same events:
/// per key, the same values in the same order; a tombstone after each delete; murmur2
/// partitions; key-change headers. Returns the records by key.
fn check_records(records: &[Value], stdout: &Path, topic: &str) -> BTreeMap<String, Vec<Value>> {
    let printed: Vec<String> = std::fs::read_to_string(stdout).unwrap().lines().map(str::to_string).collect();
    // The stdout sink's events for this topic's table, by key, in order.
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in &printed {
        let v: Value = serde_json::from_str(line).unwrap();
        let row = if v["op"] == "d" { &v["before"] } else { &v["after"] };
        let key = if v["op"] == "t" { "null".to_string() } else { key_of(row) };
        want.entry(key).or_default().push(without_processing_time(line));
    }
    let mut by_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut by_partition: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    for r in records {
        assert_eq!(r["topic"], topic);
        if !r["key"].is_null() {
            assert_eq!(r["partition"], r["murmur2_partition"], "not Java's murmur2 partition: {r}");
        }
        by_partition.entry(r["partition"].as_i64().unwrap()).or_default().push(r);
        by_key.entry(r["key"].as_str().unwrap_or("null").to_string()).or_default().push(r.clone());
    }
    for (key, recs) in &by_key {
        let values: Vec<String> =
            recs.iter().filter_map(|r| r["value"].as_str()).map(without_processing_time).collect();
        assert_eq!(Some(&values), want.get(key), "key {key}: the topic's values differ from the stdout sink's");
        // A tombstone right after every delete.
        for (i, r) in recs.iter().enumerate() {
            let is_delete = r["value"].as_str().is_some_and(|v| v.contains("\"op\":\"d\""));
            if is_delete {
                let next = recs.get(i + 1).unwrap_or_else(|| panic!("key {key}: no tombstone after {r}"));
                assert!(next["value"].is_null(), "key {key}: expected a tombstone after the delete, got {next}");
            }
        }
    }
    // Offsets rise within each partition (the reader saw every record once).
    for recs in by_partition.values() {
        assert!(recs.windows(2).all(|w| w[0]["offset"].as_i64() < w[1]["offset"].as_i64()));
    }
    by_key
}

/// The Debezium key text of a row of `items`: `{"id":N}`.
fn key_of(row: &Value) -> String {
    format!("{{\"id\":{}}}", row["id"])
}

fn header<'a>(r: &'a Value, name: &str) -> Option<&'a str> {
    r["headers"].as_array()?.iter().find(|h| h[0] == name).and_then(|h| h[1].as_str())
}

fn kafka_sink(extra: &str) -> String {
    format!(
        "[[sink]]\nkind = \"kafka\"\nbrokers = \"{}\"\npartitions = 3\n{extra}[[sink]]\nkind = \"stdout\"\n",
        kafka_brokers()
    )
}

const CHANGES: [&str; 6] = [
    "INSERT INTO items VALUES (10, 'new', 1)",
    "UPDATE items SET qty = qty + 1 WHERE id = 1",
    "DELETE FROM items WHERE id = 2",
    "UPDATE items SET id = 30 WHERE id = 3",
    "UPDATE items SET name = 'renamed' WHERE id = 30",
    "INSERT INTO items VALUES (11, 'last', 9)",
];

/// snapshot rows + changes as records: 5 + 1 + 1 + (1 + tombstone) + (delete + tombstone +
/// create) + 1 + 1.
const RECORDS: usize = 5 + 1 + 1 + 2 + 3 + 1 + 1;

fn check_key_change(by_key: &BTreeMap<String, Vec<Value>>) {
    let old = &by_key["{\"id\":3}"];
    let delete = old.iter().find(|r| r["value"].as_str().is_some_and(|v| v.contains("\"op\":\"d\""))).unwrap();
    assert_eq!(header(delete, "__debezium.newkey"), Some("{\"id\":30}"), "{delete}");
    let create = &by_key["{\"id\":30}"][0];
    assert!(create["value"].as_str().unwrap().contains("\"op\":\"c\""), "{create}");
    assert_eq!(header(create, "__debezium.oldkey"), Some("{\"id\":3}"), "{create}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_reach_kafka_as_debezium_publishes_them() {
    let env = Env::new("kafka").await;
    env.pg
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
             INSERT INTO items SELECT i, 'item ' || i, i FROM generate_series(1, 5) i;",
        )
        .await
        .unwrap();
    let heartbeats = "heartbeat_topic = \"__debezium-heartbeat.{connector}\"\nheartbeat_interval = \"1s\"\n";
    env.write_config(&env.postgres_source(r#""public.items""#, &kafka_sink(heartbeats)));
    let mut d = env.start();
    d.wait_streaming().await;
    for sql in CHANGES {
        env.pg.batch_execute(sql).await.unwrap();
    }
    let topic = format!("{}.public.items", env.name);
    let records = read_topics(RECORDS, &[&topic]);
    let by_key = check_records(&records, &d.stdout, &topic);
    check_key_change(&by_key);
    // Debezium's heartbeat records, about one a second while the daemon runs (idle or not).
    let beats = read_topics(3, &[&format!("__debezium-heartbeat.{}", env.name)]);
    let started = now_ms_test() - 600_000;
    for b in &beats {
        assert_eq!(b["key"], format!("{{\"serverName\":\"{}\"}}", env.name), "{b}");
        let value: Value = serde_json::from_str(b["value"].as_str().unwrap()).unwrap();
        let ts = value["ts_ms"].as_i64().unwrap();
        assert!(ts > started && value.as_object().unwrap().len() == 1, "{b}");
    }
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_changes_reach_kafka_as_debezium_publishes_them() {
    let _binlogs = BINLOGS.read().await;
    let mut env = MyEnv::new("kafka").await;
    env.exec(
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
         INSERT INTO items VALUES (1, 'item 1', 1), (2, 'item 2', 2), (3, 'item 3', 3), (4, 'item 4', 4), (5, 'item 5', 5);",
    )
    .await;
    env.write_config_with_sinks(&format!("\"{}.items\"", env.name), &kafka_sink(""));
    let mut d = env.start();
    d.wait_streaming().await;
    for sql in CHANGES {
        env.exec(sql).await;
    }
    let topic = format!("{0}.{0}.items", env.name);
    let records = read_topics(RECORDS, &[&topic]);
    let by_key = check_records(&records, &d.stdout, &topic);
    check_key_change(&by_key);
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_without_create_topics_stops_the_connector_naming_it() {
    let env = Env::new("kafkano").await;
    env.pg.batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1);").await.unwrap();
    env.write_config(&env.postgres_source(r#""public.items""#, &kafka_sink("create_topics = false\n")));
    let d = env.start();
    let reasons = d.failure().await;
    let topic = format!("{}.public.items", env.name);
    assert!(reasons.contains(&format!("topic `{topic}` does not exist")), "{reasons}");
    assert!(reasons.contains("create_topics = true"), "{reasons}");
    drop(d);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_loses_no_change_and_keeps_each_keys_order() {
    let env = Env::new("kafkakill").await;
    env.pg
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, v bigint NOT NULL, pad text);
             INSERT INTO accounts SELECT i, 0, repeat('p', 50) FROM generate_series(1, 300) i;
             CREATE TABLE zz_end (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    env.write_config(&env.postgres_source(r#""public.accounts", "public.zz_end""#, &kafka_sink("")));
    let mut d = env.start();
    d.wait_streaming().await;
    let workload = tokio::spawn(accounts_workload(env.db_url(), 3000, 11));
    wait_for("part of the workload published", DEADLINE, || async {
        let applied = d.connector().await?["events_applied"].as_u64()?;
        (applied > 800).then_some(())
    })
    .await;
    d.kill9();
    let mut d = env.start();
    workload.await.unwrap();
    d.wait_streaming().await;
    // Everything before the marker is published once the marker is: a batch is acknowledged
    // only when all its records are, and the next is produced after it.
    env.pg.batch_execute("INSERT INTO zz_end VALUES (1)").await.unwrap();
    read_topics(1, &[&format!("{}.public.zz_end", env.name)]);
    let records = read_until_idle(usize::MAX, 3, &[&format!("{}.public.accounts", env.name)]);

    let rows: BTreeMap<i64, i64> = env
        .pg
        .query("SELECT id::bigint, v FROM accounts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in &records {
        assert_eq!(r["partition"], r["murmur2_partition"], "{r}");
        by_key.entry(r["key"].as_str().expect("keyed").to_string()).or_default().push(r);
    }
    let mut problems = Vec::new();
    for (key, recs) in &by_key {
        let id: i64 = serde_json::from_str::<Value>(key).unwrap()["id"].as_i64().unwrap();
        let events: Vec<Value> =
            recs.iter().filter_map(|r| r["value"].as_str()).map(|v| serde_json::from_str(v).unwrap()).collect();
        // A replay publishes a range again; without the repeats, the changes of a key follow
        // its commit order (the change's LSN, then its place in the transaction).
        let mut seen = std::collections::HashSet::new();
        let order: Vec<(i64, String)> = events
            .iter()
            .map(|e| (e["source"]["lsn"].as_i64().unwrap(), e["op"].as_str().unwrap().to_string()))
            .filter(|k| seen.insert(k.clone()))
            .collect();
        if order.windows(2).any(|w| w[0] > w[1]) {
            problems.push(format!("{key}: out of commit order: {order:?}"));
        }
        // Every change is there: `v` only ever grows by one, so the values seen are contiguous.
        let mut vs: Vec<i64> = events.iter().filter_map(|e| e["after"]["v"].as_i64()).collect();
        vs.sort_unstable();
        vs.dedup();
        if vs.windows(2).any(|w| w[1] != w[0] + 1) {
            problems.push(format!("{key}: a change is missing, v went {vs:?}"));
        }
        // The last record says what the table says.
        let last = recs.last().unwrap();
        match rows.get(&id) {
            Some(v) => {
                let e: Value = serde_json::from_str(last["value"].as_str().unwrap_or("null")).unwrap();
                if e["after"]["v"].as_i64() != Some(*v) {
                    problems.push(format!("{key}: the table has v={v}, the topic ends with {last}"));
                }
            }
            None if !last["value"].is_null() => {
                problems.push(format!("{key}: deleted, but the topic ends with {last}"))
            }
            None => {}
        }
    }
    for id in rows.keys() {
        if !by_key.contains_key(&format!("{{\"id\":{id}}}")) {
            problems.push(format!("row {id} never reached the topic"));
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    assert!(d.terminate().success());
    env.cleanup().await;
}

/// The second broker of scripts/services.sh listens on 9093 and advertises 9094, where this
/// test's proxy forwards to it: cutting the proxy cuts every path to that broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_pauses_the_source_with_bounded_memory_and_loses_nothing() {
    let env = Env::new("kafkaout").await;
    let proxy = Proxy::start_on(9094, "127.0.0.1:9093".into()).await;
    env.pg
        .batch_execute(
            "CREATE TABLE events (id int PRIMARY KEY, payload text NOT NULL);
             INSERT INTO events SELECT i, md5(i::text) FROM generate_series(1, 1000) i;
             CREATE TABLE zz_end (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    let sink = "[[sink]]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9094\"\npartitions = 2\n\
                [sink.librdkafka_options]\n\"message.timeout.ms\" = \"3000\"\n";
    env.write_config(&env.postgres_source(r#""public.events", "public.zz_end""#, sink));
    let mut d = env.start();
    d.wait_streaming().await;
    let baseline = d.rss_kib();
    // ~60 MB of changes, while the broker is unreachable in the middle.
    let workload = {
        let url = env.db_url();
        tokio::spawn(async move {
            let pg = pg_connect(&url).await;
            for chunk in 0..10 {
                let from = 1001 + chunk * 4_000;
                pg.execute(
                    "INSERT INTO events SELECT i, repeat(md5(i::text), 48) FROM generate_series($1::int, $1::int + 3999) i",
                    &[&from],
                )
                .await
                .unwrap();
            }
        })
    };
    wait_for("the load to be flowing", DEADLINE, || async {
        let applied = d.connector().await?["events_applied"].as_u64()?;
        (applied > 3_000).then_some(())
    })
    .await;
    proxy.cut();
    let reasons = wait_for("503 naming the kafka sink", DEADLINE, || async {
        let (code, h) = d.health().await?;
        let reasons = h["connectors"][0]["reasons"].to_string();
        (code == 503 && reasons.contains("sink kafka (kafka) is retrying")).then_some(reasons)
    })
    .await;
    assert!(reasons.contains("kafka: "), "{reasons}");
    let mut peak = baseline;
    while !workload.is_finished() {
        peak = peak.max(d.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workload.await.unwrap();
    let sample_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < sample_until {
        peak = peak.max(d.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth_mib = (peak - baseline) / 1024;
    assert!(growth_mib < 80, "memory grew by {growth_mib} MiB while the broker was unreachable");

    // The broker is back: everything arrives, health recovers.
    proxy.restore();
    env.pg.batch_execute("INSERT INTO zz_end VALUES (1)").await.unwrap();
    wait_for("every change published", Duration::from_secs(120), || async {
        let applied = d.connector().await?["events_applied"].as_u64()?;
        (applied >= 41_001).then_some(())
    })
    .await;
    let out = Command::new(python())
        .env("IDLE_SECS", "3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/read.py"))
        .args(["127.0.0.1:9093", &usize::MAX.to_string(), &format!("{}.public.events", env.name)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids: std::collections::BTreeSet<i64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| serde_json::from_str::<Value>(r["key"].as_str()?).ok()?["id"].as_i64())
        .collect();
    let missing: Vec<i64> = (1..=41_000).filter(|i| !ids.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} rows never reached the topic, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    wait_for("healthy again", DEADLINE, || async {
        let (code, _) = d.health().await?;
        (code == 200).then_some(())
    })
    .await;
    assert!(d.terminate().success());
    env.cleanup().await;
}

/// An applier daemon: a Kafka source in `group` reading `topic`, writing to Redis under
/// `prefix:{table}:{key}`, in its own directory.
fn applier(env: &Env, n: usize, group: &str, topic: &str, prefix: &str) -> (std::path::PathBuf, String) {
    applier_with(env, n, group, topic, prefix, "")
}

/// As [`applier`], with more `[source]` settings.
fn applier_with(
    env: &Env,
    n: usize,
    group: &str,
    topic: &str,
    prefix: &str,
    source_extra: &str,
) -> (std::path::PathBuf, String) {
    let dir = env.dir.join(format!("applier-{n}"));
    std::fs::create_dir_all(dir.join("connectors")).unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join("tidemark.toml"),
        format!("data_dir = \"data\"\nhttp_addr = \"{http}\"\nconnectors_dir = \"connectors\"\nmax_lag = \"30s\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("connectors/apply.toml"),
        format!(
            "name = \"apply\"\n[source]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"{topic}\"]\ngroup = \"{group}\"\n{source_extra}\
             [source.librdkafka_options]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
             [[sink]]\nkind = \"redis\"\nurl = \"{}\"\nkey = \"{prefix}:{{table}}:{{key}}\"\n",
            kafka_brokers(),
            redis_url()
        ),
    )
    .unwrap();
    (dir, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_appliers_in_a_group_leave_redis_equal_to_the_table_through_a_kill9() {
    let env = Env::new("kafkaapply").await;
    env.create_accounts().await;
    // The producer: PostgreSQL → Kafka, four partitions.
    env.write_config(&env.postgres_source(
        r#""public.accounts""#,
        &format!("[[sink]]\nkind = \"kafka\"\nbrokers = \"{}\"\npartitions = 4\n", kafka_brokers()),
    ));
    let mut producer = env.start();
    producer.wait_streaming().await;
    let topic = format!("{}.public.accounts", env.name);
    read_topics(300, &[&topic]);
    // Two appliers in one group: Kafka → Redis.
    let group = format!("{}-cache", env.name);
    let (dir1, http1) = applier(&env, 1, &group, &topic, &env.name);
    let (dir2, http2) = applier(&env, 2, &group, &topic, &env.name);
    // check: the brokers, the topic, and the group (new, then joined by the first applier).
    let check = |dir: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["check", "-c"])
            .arg(dir.join("tidemark.toml"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
    };
    let text = check(&dir2);
    assert!(
        text.contains(&format!("topic {topic} exists")) && text.contains(&format!("group {group} is new")),
        "{text}"
    );
    let mut a1 = Daemon::start(&dir1, http1.clone());
    let sql = "SELECT id, v, pad FROM accounts";
    let prefix = format!("{}:accounts", env.name);
    wait_equal(&env.pg, sql, &prefix, Some(&a1)).await;
    // (tansu describes every group as empty, members or not, so the member count and the
    // assignment protocol of a live group are not seen here; a real cluster shows them.)
    let text = check(&dir2);
    assert!(text.contains(&format!("ok    group {group} ")), "{text}");
    let a2 = Daemon::start(&dir2, http2);

    let workload = tokio::spawn(accounts_workload(env.db_url(), 2000, 5));
    wait_for("the appliers at work", DEADLINE, || async {
        let applied = a1.connector().await?["events_applied"].as_u64()?;
        (applied > 400).then_some(())
    })
    .await;
    a1.kill9();
    let a1 = Daemon::start(&dir1, http1);
    workload.await.unwrap();
    wait_equal(&env.pg, sql, &prefix, Some(&a2)).await;
    // Both members applied records (the group shared the partitions; the first one before the
    // kill, see above).
    let n2 = a2.connector().await.and_then(|c| c["events_applied"].as_u64()).unwrap_or(0);
    assert!(n2 > 0, "the second applier applied nothing");
    // Offsets and lag per partition, in /metrics and /health.
    let (metrics, health) = wait_for("the lag sampled", DEADLINE, || async {
        let c = a2.connector().await?;
        let m = a2.metrics().await;
        (c["lag_records"].is_u64() && m.contains("tidemark_kafka_consumer_offset{")).then_some((m, c))
    })
    .await;
    assert!(metrics.contains(&format!("topic=\"{topic}\"")), "{metrics}");
    assert!(health["notes"].to_string().contains(&format!("{topic}[")), "{health}");
    assert!(producer.terminate().success());
    drop((a1, a2));
    env.cleanup().await;
}

/// What Redis must hold after the records of a Debezium capture: per table and key, the last
/// image's columns as hash fields (strings as they are, other values as compact JSON, NULL
/// absent), a placeholder column keeping the earlier value, a truncate emptying the table.
fn expected_from_capture(path: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut state: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let rec: Value = serde_json::from_str(line).unwrap();
        let Some(value) = rec["value"].as_str() else { continue };
        let mut v: Value = serde_json::from_str(value).unwrap();
        if v.get("payload").is_some() && v.get("schema").is_some() {
            v = v["payload"].take();
        }
        let table = v["source"]["table"].as_str().unwrap().to_string();
        if v["op"] == "t" {
            state.retain(|k, _| !k.starts_with(&format!("{table}:")));
            continue;
        }
        let mut key: Value = serde_json::from_str(rec["key"].as_str().unwrap()).unwrap();
        if key.get("payload").is_some() && key.get("schema").is_some() {
            key = key["payload"].take();
        }
        let key_text: Vec<String> = key
            .as_object()
            .unwrap()
            .values()
            .map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_string))
            .collect();
        let id = format!("{table}:{}", key_text.join(":"));
        if v["op"] == "d" {
            state.remove(&id);
            continue;
        }
        let row = state.entry(id).or_default();
        for (col, val) in v["after"].as_object().unwrap() {
            match val {
                Value::Null => {
                    row.remove(col);
                }
                Value::String(s) if s == "__debezium_unavailable_value" => {}
                Value::String(s) => {
                    row.insert(col.clone(), s.clone());
                }
                other => {
                    row.insert(col.clone(), other.to_string());
                }
            }
        }
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_own_events_through_the_kafka_source_reach_redis() {
    let env = Env::new("kafkadbz").await;
    for fixture in ["postgres.jsonl", "postgres-schemas.jsonl"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debezium").join(fixture);
        let topic = format!("{}-{}", env.name, fixture.trim_end_matches(".jsonl"));
        let out = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/produce.py"))
            .args([&kafka_brokers(), &topic, path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "produce.py: {}", String::from_utf8_lossy(&out.stderr));
        let prefix = format!("{topic}:r");
        let (dir, http) = applier(&env, 0, &format!("{topic}-g"), &topic, &prefix);
        let d = Daemon::start(&dir, http);
        let want = expected_from_capture(&path);
        let mut r = redis_conn().await;
        let got = wait_for("Redis equal to Debezium's final images", DEADLINE, || {
            let (mut r, prefix, want) = (r.clone(), prefix.clone(), want.clone());
            async move {
                let mut got: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
                for key in scan(&mut r, &format!("{prefix}:*")).await {
                    let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(&mut r).await.ok()?;
                    got.insert(key[prefix.len() + 1..].to_string(), h);
                }
                (got == want).then_some(got)
            }
        })
        .await;
        assert_eq!(got.len(), want.len());
        let keys = scan(&mut r, &format!("{prefix}:*")).await;
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut r).await.unwrap();
        drop(d);
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_a_change_is_skipped_or_dead_lettered_with_its_coordinates_or_stops_the_applier() {
    let env = Env::new("kafkapoison").await;
    let topic = format!("{}-poison", env.name);
    let change = |id: u32, lsn: u32| {
        serde_json::json!({
            "topic": "t",
            "key": format!("{{\"id\":{id}}}"),
            "value": format!(
                "{{\"before\":null,\"after\":{{\"id\":{id},\"v\":\"row {id}\"}},\"source\":{{\"connector\":\"postgresql\",\
                 \"db\":\"d\",\"schema\":\"public\",\"table\":\"poison\",\"lsn\":{lsn}}},\"op\":\"c\"}}"
            ),
        })
    };
    let poison = serde_json::json!({"topic": "t", "key": "{\"id\":9}", "value": "{not json"});
    let file = env.dir.join("poison.jsonl");
    std::fs::write(&file, format!("{}\n{}\n{}\n", change(1, 100), poison, change(2, 200))).unwrap();
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/produce.py"))
        .args([&kafka_brokers(), &topic, file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "produce.py: {}", String::from_utf8_lossy(&out.stderr));

    // on_error = "skip": the records after it are applied, the poison counted and logged.
    let prefix = format!("{}:skip", env.name);
    let (dir, http) = applier_with(&env, 1, &format!("{topic}-skip"), &topic, &prefix, "on_error = \"skip\"\n");
    let d = Daemon::start(&dir, http);
    let mut r = redis_conn().await;
    wait_for("both rows applied", DEADLINE, || {
        let (mut r, prefix) = (r.clone(), prefix.clone());
        async move { (scan(&mut r, &format!("{prefix}:poison:*")).await.len() == 2).then_some(()) }
    })
    .await;
    let metrics = d.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("tidemark_events_skipped_total{")
            && l.contains("reason=\"not_a_change\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(d.log().contains(&format!("{topic} partition 0 offset 1")), "{}", d.log());
    drop(d);
    let v: String = redis::cmd("HGET").arg(format!("{prefix}:poison:2")).arg("v").query_async(&mut r).await.unwrap();
    assert_eq!(v, "row 2");

    // on_error = "dead_letter": the record, with its coordinates and bytes, in the dead-letter
    // file before the records after it count as read.
    let prefix = format!("{}:dl", env.name);
    let letters = env.dir.join("letters.jsonl");
    let extra = format!("on_error = \"dead_letter\"\ndead_letter_path = \"{}\"\n", letters.display());
    let (dir, http) = applier_with(&env, 3, &format!("{topic}-dl"), &topic, &prefix, &extra);
    let d = Daemon::start(&dir, http);
    wait_for("both rows applied", DEADLINE, || {
        let (mut r, prefix) = (r.clone(), prefix.clone());
        async move { (scan(&mut r, &format!("{prefix}:poison:*")).await.len() == 2).then_some(()) }
    })
    .await;
    let text = std::fs::read_to_string(&letters).unwrap_or_else(|e| panic!("{}: {e}\n{}", letters.display(), d.log()));
    let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 1, "{text}");
    let letter = &records[0];
    assert_eq!(
        (letter["topic"].as_str(), letter["partition"].as_i64(), letter["offset"].as_i64()),
        (Some(&*topic), Some(0), Some(1)),
        "{letter}"
    );
    assert_eq!(letter["value"], "{not json", "{letter}");
    assert_eq!(letter["key"], "{\"id\":9}", "{letter}");
    assert!(letter["error"].as_str().unwrap().contains("not JSON"), "{letter}");
    let metrics = d.metrics().await;
    assert!(metrics.lines().any(|l| l.contains("reason=\"dead_letter\"") && l.ends_with(" 1")), "{metrics}");
    drop(d);

    // The default, on_error = "fail": the connector stops, naming where the record is.
    let (dir, http) = applier_with(&env, 2, &format!("{topic}-fail"), &topic, &format!("{}:fail", env.name), "");
    let d = Daemon::start(&dir, http);
    let reasons = d.failure().await;
    assert!(reasons.contains(&format!("{topic} partition 0 offset 1")) && reasons.contains("not JSON"), "{reasons}");
    drop(d);
    env.cleanup().await;
}

/// Milliseconds since the epoch, now.
fn now_ms_test() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
