//! A sink outage: the source pauses, memory stays bounded, `/health` says why, nothing is lost.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A private Redis with an append-only file, so a stop and start keeps its data (like a
/// production Redis with persistence).
fn start_redis(port: u16, dir: &Path) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/services.sh)")
}

async fn redis_up(port: u16) -> bool {
    match redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap().get_multiplexed_async_connection().await {
        Ok(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await.is_ok(),
        Err(_) => false,
    }
}

async fn slot_confirmed(env: &Env) -> u64 {
    let row = env
        .pg
        .query_one("SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE database = current_database()", &[])
        .await
        .unwrap();
    row.get::<_, i64>(0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_pauses_the_source_with_bounded_memory_and_loses_nothing() {
    let env = Env::new("outage").await;
    let port = free_port();
    let redis_dir = env.dir.join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let mut redis = start_redis(port, &redis_dir);
    wait_for("private redis", DEADLINE, || async { redis_up(port).await.then_some(()) }).await;

    env.pg
        .batch_execute(
            "CREATE TABLE events (id int PRIMARY KEY, payload text NOT NULL);
             INSERT INTO events SELECT i, md5(i::text) FROM generate_series(1, 1000) i;",
        )
        .await
        .unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    env.write_config(&env.postgres_source(
        r#""public.events""#,
        &format!("[[sink]]\nkind = \"redis\"\nurl = \"{url}\"\nconnect_timeout = \"1s\"\nresponse_timeout = \"2s\"\n"),
    ));
    let mut d = env.start();
    d.wait_streaming().await;
    let sql = "SELECT id, payload FROM events";
    let prefix = format!("{}:events", env.name);
    wait_equal_on(&url, &env.pg, sql, &prefix, Some(&d)).await;
    let baseline = d.rss_kib();

    // ~150 MB of changes, while Redis goes away in the middle; the daemon must not buffer them.
    let workload = {
        let url = env.db_url();
        tokio::spawn(async move {
            let pg = pg_connect(&url).await;
            for chunk in 0..20 {
                let from = 1001 + chunk * 5_000;
                pg.execute(
                    "INSERT INTO events SELECT i, repeat(md5(i::text), 48) FROM generate_series($1::int, $1::int + 4999) i",
                    &[&from],
                )
                .await
                .unwrap();
            }
        })
    };
    wait_for("the load to be flowing", DEADLINE, || async {
        let applied = d.connector().await?["events_applied"].as_u64()?;
        (applied > 5_000).then_some(())
    })
    .await;

    // Stop Redis under load (it writes its append-only file on the way out).
    let ok = Command::new("redis-cli").args(["-p", &port.to_string(), "shutdown"]).status().unwrap();
    assert!(ok.success() || redis.try_wait().unwrap().is_some());
    redis.wait().unwrap();
    let outage_start: i64 =
        env.pg.query_one("SELECT (pg_current_wal_lsn() - '0/0')::bigint", &[]).await.unwrap().get(0);

    // Health turns 503 and names the sink and its error.
    let reasons = wait_for("503 naming the redis sink", DEADLINE, || async {
        let (code, h) = d.health().await?;
        let reasons = h["connectors"][0]["reasons"].to_string();
        (code == 503 && reasons.contains("sink redis (redis) is retrying")).then_some(reasons)
    })
    .await;
    // The reason carries the driver's error (e.g. "broken pipe", "connection refused").
    let detail = reasons.split("is retrying: ").nth(1).unwrap_or("");
    assert!(detail.starts_with("redis") && detail.len() > "redis: ".len() + 2, "{reasons}");

    let mut peak = baseline;
    while !workload.is_finished() {
        peak = peak.max(d.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workload.await.unwrap();
    // Let the source read as far as it will, sampling memory meanwhile.
    let sample_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < sample_until {
        peak = peak.max(d.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth_mib = (peak - baseline) / 1024;
    assert!(
        growth_mib < 80,
        "memory grew by {growth_mib} MiB while the sink was down (baseline {} MiB)",
        baseline / 1024
    );
    // The source is paused: nothing written after Redis stopped was confirmed to the slot.
    let confirmed = slot_confirmed(&env).await;
    assert!(confirmed <= outage_start as u64, "slot confirmed {confirmed} past the outage start {outage_start}");
    let (code, _) = d.health().await.unwrap();
    assert_eq!(code, 503);

    // Redis returns: everything arrives, health recovers.
    let mut redis = start_redis(port, &redis_dir);
    wait_for("redis back", DEADLINE, || async { redis_up(port).await.then_some(()) }).await;
    wait_equal_on(&url, &env.pg, sql, &prefix, Some(&d)).await;
    wait_for("healthy again", DEADLINE, || async {
        let (code, _) = d.health().await?;
        (code == 200).then_some(())
    })
    .await;
    let metrics = d.metrics().await;
    assert!(metrics.contains("tidemark_sink_retries_total{connector="), "{metrics}");
    assert!(d.terminate().success());
    let _ = redis.kill();
    let _ = redis.wait();
    env.cleanup().await;
}
