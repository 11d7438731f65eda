//! Commit-to-visible latency, PostgreSQL → tidemark → Redis or Elasticsearch, at a steady rate.
//!
//! Run by `scripts/bench.sh` (not a criterion benchmark): it issues single-row UPDATEs at
//! `--rate` per second for `--seconds` (autocommit: one transaction each), noting the microsecond
//! each was sent, and watches the sink:
//! - Redis: it listens to keyspace notifications; when a row's hash changes it records now minus
//!   that row's send time. The listener does no Redis I/O per notification, so it never falls
//!   behind and adds nothing to what it measures.
//! - Elasticsearch (`--es URL --index NAME`): Elasticsearch has no notifications, so it reads the
//!   rows still in flight with one `_mget` (a real-time GET by `_id`: visible as soon as the bulk
//!   request that wrote them is acknowledged) every `--poll-ms` (default 5), and records now minus
//!   the send time of each row whose document carries its latest `sent_us`. Polling adds up to one
//!   interval to each sample.
//! Prints p50/p99/max in milliseconds.
//!
//!   cargo bench --bench latency -- --pg URL --redis URL --prefix demo:lat --rate 5000 --seconds 20
//!   cargo bench --bench latency -- --pg URL --es http://127.0.0.1:9200 --index c.public.lat --rate 2000

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

    // When each row was last sent, by id (each id is updated at most once per `rows / rate` s).
    let sent: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();
    let listener = match args.get("es") {
        Some(es) => tokio::spawn(es_listener(es.clone(), arg(&args, "index", "bench.public.lat"), poll_ms(&args), seconds, sent.clone())),
        None => tokio::spawn(redis_listener(redis_url.clone(), prefix.clone(), seconds, sent.clone()).await),
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

fn poll_ms(args: &HashMap<String, String>) -> u64 {
    arg(args, "poll-ms", "5").parse().unwrap()
}

/// Subscribe to the row keys' keyspace notifications; the returned future collects the samples.
async fn redis_listener(
    redis_url: String,
    prefix: String,
    seconds: u64,
    sent: Arc<Mutex<HashMap<i32, i64>>>,
) -> impl std::future::Future<Output = Vec<i64>> {
    // Keyspace events are published per database: `__keyspace@<db>__:<key>`.
    let db: u32 = redis_url.rsplit('/').next().and_then(|d| d.parse().ok()).unwrap_or(0);
    let channel_prefix = format!("__keyspace@{db}__:");
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg("Kh").query_async(&mut conn).await.unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.psubscribe(format!("{channel_prefix}{prefix}:*")).await.unwrap();
    let prefix_len = channel_prefix.len() + prefix.len() + 1;
    async move {
        let mut samples: Vec<i64> = Vec::new();
        {
            let mut stream = pubsub.on_message();
            let deadline = Instant::now() + Duration::from_secs(seconds + 5);
            while let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
                let received = now_us();
                let Ok(id) = msg.get_channel_name()[prefix_len..].parse::<i32>() else { continue };
                if let Some(at) = sent.lock().unwrap().remove(&id) {
                    samples.push(received - at);
                }
            }
        }
        let _: () =
            redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg("").query_async(&mut conn).await.unwrap();
        samples
    }
}

/// Poll the rows in flight with `_mget` until every sent row was seen or the time is up.
async fn es_listener(url: String, index: String, poll_ms: u64, seconds: u64, sent: Arc<Mutex<HashMap<i32, i64>>>) -> Vec<i64> {
    use elasticsearch::http::transport::Transport;
    let client = elasticsearch::Elasticsearch::new(Transport::single_node(&url).unwrap());
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds + 5);
    let mut tick = tokio::time::interval(Duration::from_millis(poll_ms));
    while Instant::now() < deadline {
        tick.tick().await;
        let pending: Vec<(i32, i64)> = sent.lock().unwrap().iter().map(|(k, v)| (*k, *v)).collect();
        if pending.is_empty() {
            continue;
        }
        let docs: Vec<serde_json::Value> =
            pending.iter().map(|(id, _)| serde_json::json!({ "_index": index, "_id": id.to_string() })).collect();
        let Ok(resp) = client
            .mget(elasticsearch::MgetParts::None)
            ._source_includes(&["sent_us"])
            .body(serde_json::json!({ "docs": docs }))
            .send()
            .await
        else {
            continue;
        };
        let Ok(reply) = resp.json::<serde_json::Value>().await else { continue };
        let received = now_us();
        let mut sent = sent.lock().unwrap();
        for d in reply["docs"].as_array().into_iter().flatten() {
            let (Some(id), Some(seen)) = (d["_id"].as_str().and_then(|i| i.parse::<i32>().ok()), d["_source"]["sent_us"].as_i64())
            else {
                continue;
            };
            if let Some(&at) = sent.get(&id) {
                if seen >= at {
                    sent.remove(&id);
                    samples.push(received - at);
                }
            }
        }
    }
    samples
}
