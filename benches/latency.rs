//! Commit latency at a steady rate, PostgreSQL → tidemark → Redis or Elasticsearch.
//!
//! Run by `scripts/bench.sh` (not a criterion benchmark): it issues single-row UPDATEs at
//! `--rate` per second for `--seconds` (autocommit: one transaction each), noting the microsecond
//! each was sent, and measures:
//! - Redis (`--redis URL --prefix P`): commit to visible. It listens to keyspace notifications;
//!   when a row's hash changes it records now minus that row's send time. The listener does no
//!   Redis I/O per notification, so it never falls behind and adds nothing to what it measures.
//! - Any sink (`--metrics HOST:PORT --sink NAME`): commit to acknowledged, from tidemark's own
//!   `tidemark_commit_to_ack_seconds` histogram (scraped before and after the run; percentiles
//!   interpolated inside its buckets). Elasticsearch has no change notifications, and polling it
//!   with real-time GETs would force refreshes and load the server being measured.
//!
//! Prints p50/p99/max in milliseconds (max: the upper bound of the highest bucket for metrics).
//!
//!   cargo bench --bench latency -- --pg URL --redis URL --prefix demo:lat --rate 5000 --seconds 20
//!   cargo bench --bench latency -- --pg URL --metrics 127.0.0.1:8080 --sink elasticsearch --rate 2000

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
    let metrics = args.get("metrics").cloned();
    let sink = arg(&args, "sink", "elasticsearch");
    let before = match &metrics {
        Some(addr) => Some(scrape(addr, &sink).await),
        None => None,
    };
    let listener = match &metrics {
        Some(_) => None,
        None => Some(tokio::spawn(redis_listener(redis_url.clone(), prefix.clone(), seconds, sent.clone()).await)),
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
    if let (Some(addr), Some(before)) = (&metrics, before) {
        // Let the last changes through, then take the difference of the two scrapes.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = scrape(addr, &sink).await;
        let buckets: Vec<(f64, u64)> = after.iter().zip(&before).map(|((le, a), (_, b))| (*le, a - b)).collect();
        let total = buckets.last().map_or(0, |(_, n)| *n);
        let max = buckets.iter().find(|(_, n)| *n == total).map_or(0.0, |(le, _)| *le);
        println!(
            "{{\"samples\": {total}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}, \"max_ms\": \"<= {:.0}\"}}",
            percentile(&buckets, 0.50) * 1000.0,
            percentile(&buckets, 0.99) * 1000.0,
            max * 1000.0
        );
        return;
    }
    let mut samples = listener.expect("redis listener").await.unwrap();
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

/// The cumulative buckets `(upper bound, count)` of the sink's commit-to-ack histogram.
async fn scrape(addr: &str, sink: &str) -> Vec<(f64, u64)> {
    let (_, body) = tidemark::http::request(addr, "GET", "/metrics").await.expect("tidemark /metrics");
    let label = format!("sink=\"{sink}\"");
    body.lines()
        .filter(|l| l.starts_with("tidemark_commit_to_ack_seconds_bucket{") && l.contains(&label))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The `p` quantile of cumulative buckets, interpolated linearly inside its bucket.
fn percentile(buckets: &[(f64, u64)], p: f64) -> f64 {
    let total = buckets.last().map_or(0, |(_, n)| *n) as f64;
    let rank = p * total;
    let mut lower = (0.0, 0u64);
    for &(le, n) in buckets {
        if n as f64 >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let inside = (n - lower.1) as f64;
            let frac = if inside > 0.0 { (rank - lower.1 as f64) / inside } else { 1.0 };
            return lower.0 + (le - lower.0) * frac;
        }
        lower = (le, n);
    }
    lower.0
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
