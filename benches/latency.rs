//! Commit-to-visible latency, PostgreSQL → tidemark → Redis, at a steady rate.
//!
//! Run by `scripts/bench.sh` (not a criterion benchmark): it issues single-row UPDATEs at
//! `--rate` per second for `--seconds` (autocommit: one transaction each), noting the microsecond
//! each was sent, and listens to Redis keyspace notifications; when a row's hash changes it records
//! now minus that row's send time. The listener does no Redis I/O per notification, so it never
//! falls behind and adds nothing to what it measures. Prints p50/p99/max in milliseconds.
//!
//!   cargo bench --bench latency -- --pg URL --redis URL --prefix demo:lat --rate 5000 --seconds 20

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

fn arg(args: &HashMap<String, String>, name: &str, default: &str) -> String {
    args.get(name).cloned().unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() {
    let raw: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let args: HashMap<String, String> = raw
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].trim_start_matches('-').to_string(), c[1].clone()))
        .collect();
    let pg_url = arg(&args, "pg", "postgres://postgres@127.0.0.1:5432/tidemark_bench");
    let redis_url = arg(&args, "redis", "redis://127.0.0.1:6379/0");
    let prefix = arg(&args, "prefix", "bench:lat");
    let rate: u64 = arg(&args, "rate", "5000").parse().unwrap();
    let seconds: u64 = arg(&args, "seconds", "20").parse().unwrap();
    let rows: i32 = arg(&args, "rows", "50000").parse().unwrap();

    // Keyspace events are published per database: `__keyspace@<db>__:<key>`.
    let db: u32 = redis_url.rsplit('/').next().and_then(|d| d.parse().ok()).unwrap_or(0);
    let channel_prefix = format!("__keyspace@{db}__:");
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg("Kh").query_async(&mut conn).await.unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.psubscribe(format!("{channel_prefix}{prefix}:*")).await.unwrap();

    // When each row was last sent, by id (each id is updated at most once per `rows / rate` s).
    let sent: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();

    // The listener: every hset on a row key -> now minus that row's send time.
    let listener = {
        let sent = sent.clone();
        let prefix_len = channel_prefix.len() + prefix.len() + 1;
        tokio::spawn(async move {
            let mut samples: Vec<i64> = Vec::new();
            let mut stream = pubsub.on_message();
            let deadline = Instant::now() + Duration::from_secs(seconds + 5);
            while let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
                let received = now_us();
                let Ok(id) = msg.get_channel_name()[prefix_len..].parse::<i32>() else { continue };
                if let Some(at) = sent.lock().unwrap().remove(&id) {
                    samples.push(received - at);
                }
            }
            samples
        })
    };

    // The writers: `rate` single-row updates per second, spread over several sessions.
    let sessions = 8;
    let mut writers = Vec::new();
    let per_session = rate / sessions;
    for s in 0..sessions {
        let pg_url = pg_url.clone();
        let sent = sent.clone();
        writers.push(tokio::spawn(async move {
            let (pg, c) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(c);
            let stmt = pg.prepare("UPDATE lat SET sent_us = $1 WHERE id = $2").await.unwrap();
            let tick = Duration::from_micros(1_000_000 / per_session);
            let mut next = tokio::time::Instant::now();
            let end = Instant::now() + Duration::from_secs(seconds);
            let mut n = s as i32;
            while Instant::now() < end {
                next += tick;
                tokio::time::sleep_until(next).await;
                let id = n % rows + 1;
                let at = now_us();
                sent.lock().unwrap().insert(id, at);
                pg.execute(&stmt, &[&at, &id]).await.unwrap();
                n += sessions as i32;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut samples = listener.await.unwrap();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg("").query_async(&mut conn).await.unwrap();
    samples.sort_unstable();
    let pct = |p: f64| {
        samples.get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1))).copied().unwrap_or(0)
            as f64
            / 1000.0
    };
    println!(
        "{{\"samples\": {}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}}}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}
