//! The pipeline's own logic, under a memory source and memory sinks (test-only stand-ins that
//! implement the connector contract; the servers' kinds are tested against real servers in
//! `tests/`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::Semaphore;

use super::*;
use crate::check::Finding;
use crate::connector::position::{Lsn, PgPosition};
use crate::connector::{
    Delivery, Exclusive, PipelineConfig, Position, Sink, SinkSpec, Source, SourceError, WriteReport,
};
use crate::event::encode::SkippedOps;
use crate::event::{ChangeEvent, Encoding, Op, Row, SnapshotFlag, SourceMeta, TableRef, Value, Version};
use crate::retry::{Classify, ErrorClass};
use crate::settings::{Diag, Section};
use crate::state::StateDelta;
use crate::transforms::TransformConfig;

const NAME: &str = "mem";

fn pos(lsn: u64) -> Position {
    Position::Postgres(PgPosition::streaming(Lsn(lsn)))
}

fn event(lsn: u64, index: u64, commit_ms: i64) -> ChangeEvent {
    let table = Arc::new(TableRef { db: "db".into(), schema: "public".into(), name: "t".into() });
    let key = Row(vec![("id".into(), Value::Int(index as i64))]);
    ChangeEvent {
        op: Op::Create,
        table,
        after: Some(Row(vec![("id".into(), Value::Int(index as i64)), ("v".into(), Value::Int(1))])),
        key,
        before: None,
        partial: false,
        version: Version::new(lsn, index),
        commit_us: commit_ms * 1000,
        snapshot: SnapshotFlag::No,
        source: SourceMeta::Postgres { lsn, last_commit_lsn: None, tx_id: None },
    }
}

/// One batch a memory source hands over: its events (versions `(lsn, 1..)`), then a boundary at
/// `lsn` unless `boundary` is false (a transaction split across batches).
#[derive(Debug, Clone)]
struct Step {
    lsn: u64,
    events: usize,
    commit_ms: i64,
    heartbeat: bool,
    boundary: bool,
}

fn steps(lsns: impl IntoIterator<Item = u64>) -> Vec<Step> {
    lsns.into_iter().map(|lsn| Step { lsn, events: 2, commit_ms: 1_000, heartbeat: false, boundary: true }).collect()
}

/// Hands over its steps as batches (each flush waits for room, as a real source's does), then
/// waits to be cancelled.
#[derive(Debug)]
struct MemorySource {
    steps: Vec<Step>,
    /// Batches handed over to the pipeline.
    handed: Arc<AtomicUsize>,
    /// When set, every step after the first waits for a permit of it.
    hold: Option<Arc<Semaphore>>,
    /// Its health section's figures.
    figures: &'static [&'static str],
    encoding: Encoding,
}

impl Source for MemorySource {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn tables(&self) -> &[String] {
        &[]
    }

    fn encoding(&self) -> Encoding {
        self.encoding.clone()
    }

    fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn health_figures(&self) -> &'static [&'static str] {
        self.figures
    }

    fn exclusive(&self) -> Option<Exclusive> {
        None
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "memory" })
    }

    fn title(&self) -> String {
        "memory".into()
    }

    fn check(&self) -> BoxFuture<'_, Vec<Finding>> {
        async { Vec::new() }.boxed()
    }

    fn run(&self, mut ctx: SourceContext) -> BoxFuture<'_, Result<(), SourceError>> {
        async move {
            for (n, step) in self.steps.iter().enumerate() {
                if let (Some(hold), true) = (&self.hold, n > 0) {
                    hold.acquire().await.expect("hold open").forget();
                }
                for i in 0..step.events {
                    ctx.batcher.push(event(step.lsn, i as u64 + 1, step.commit_ms));
                }
                if step.boundary {
                    ctx.batcher.mark(pos(step.lsn), Some(step.commit_ms), Some(step.lsn), step.heartbeat);
                }
                if ctx.batcher.flush().await.is_err() {
                    return Ok(());
                }
                self.handed.fetch_add(1, Ordering::SeqCst);
            }
            ctx.cancel.cancelled().await;
            Ok(())
        }
        .boxed()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("memory sink: {0:?}")]
struct MemoryError(ErrorClass);

impl Classify for MemoryError {
    fn class(&self) -> ErrorClass {
        self.0
    }
}

/// What a memory sink was asked to do, and did.
#[derive(Debug, Default)]
struct Log {
    /// Each successful write: the versions of its events, in order.
    writes: Vec<Vec<Version>>,
    /// Failures to answer the next writes with, in order.
    fail: VecDeque<ErrorClass>,
    /// Failed attempts, each with the position stored at that moment.
    failed: Vec<Option<Position>>,
    /// At each successful write's completion, the position stored at that moment.
    stored_when_written: Vec<Option<Position>>,
}

/// A sink that keeps what it is written in memory. With a gate, each write (probes included)
/// first takes a permit from it, so a test holds writes until it adds permits.
#[derive(Clone)]
struct MemorySink {
    log: Arc<Mutex<Log>>,
    /// Writes begun (before the gate).
    entered: Arc<AtomicUsize>,
    gate: Option<Arc<Semaphore>>,
    store: StateStore,
}

impl MemorySink {
    fn new(store: &StateStore, gated: bool) -> Self {
        MemorySink {
            log: Arc::default(),
            entered: Arc::default(),
            gate: gated.then(|| Arc::new(Semaphore::new(0))),
            store: store.clone(),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap()
    }

    fn open(&self) {
        if let Some(g) = &self.gate {
            g.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Events written so far (probes, which carry none, are not writes of events).
    fn batches(&self) -> Vec<Vec<Version>> {
        self.log().writes.iter().filter(|w| !w.is_empty()).cloned().collect()
    }
}

impl std::fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemorySink")
    }
}

impl SinkSpec for MemorySink {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn delivery(&self) -> Delivery {
        Delivery::Fenced
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    fn title(&self) -> String {
        "memory".into()
    }

    fn check<'a>(&'a self, _: &'a str, _: &'a [String]) -> BoxFuture<'a, Vec<Finding>> {
        async { Vec::new() }.boxed()
    }

    fn build(&self, _ctx: SinkContext) -> Box<dyn Sink> {
        Box::new(self.clone())
    }
}

impl Sink for MemorySink {
    fn write<'a>(&'a mut self, events: &'a [ChangeEvent]) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        async move {
            self.entered.fetch_add(1, Ordering::SeqCst);
            if let Some(g) = &self.gate {
                g.acquire().await.expect("gate open").forget();
            }
            let stored = self.store.position::<Position>(NAME).unwrap();
            let mut log = self.log();
            if let Some(class) = log.fail.pop_front() {
                log.failed.push(stored);
                return Err(SinkError::new(MemoryError(class)));
            }
            log.writes.push(events.iter().map(|e| e.version).collect());
            log.stored_when_written.push(stored);
            Ok(WriteReport { applied: events.len() as u64, ..WriteReport::default() })
        }
        .boxed()
    }
}

struct Harness {
    handle: Arc<ConnectorHandle>,
    store: StateStore,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    handed: Arc<AtomicUsize>,
    /// Holds the source after its first step until permits are added.
    hold: Arc<Semaphore>,
}

fn tmp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidemark-pipeline-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn daemon(dir: &std::path::Path) -> DaemonConfig {
    DaemonConfig {
        file: dir.join("tidemark.toml"),
        data_dir: dir.to_path_buf(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        connectors_dir: dir.to_path_buf(),
        log_format: crate::config::LogFormat::Text,
        max_lag: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(30),
        http_token: None,
        http_auth: crate::config::HttpAuth::Mutating,
    }
}

fn transform(toml: &str) -> TransformConfig {
    let mut d = Diag::new(std::path::Path::new("mem.toml"));
    let t = TransformConfig::read(
        std::path::Path::new("mem.toml"),
        NAME,
        Section::new("transform[0]", toml.parse().unwrap()),
        &mut d,
    );
    assert!(d.is_empty(), "{:?}", d.into_errors());
    t.unwrap()
}

impl Harness {
    fn start(
        store: &StateStore,
        steps: Vec<Step>,
        sinks: &[&MemorySink],
        transforms: Vec<TransformConfig>,
        pipeline: PipelineConfig,
        paused: bool,
    ) -> Harness {
        Harness::start_with(store, steps, sinks, transforms, pipeline, paused, false, Encoding::default())
    }

    /// With `held`, the source waits after its first step until [`Harness::release`]; its
    /// events are written under `encoding`.
    #[allow(clippy::too_many_arguments)]
    fn start_with(
        store: &StateStore,
        steps: Vec<Step>,
        sinks: &[&MemorySink],
        transforms: Vec<TransformConfig>,
        pipeline: PipelineConfig,
        paused: bool,
        held: bool,
        encoding: Encoding,
    ) -> Harness {
        let dir = tmp_dir();
        let handed = Arc::new(AtomicUsize::new(0));
        let hold = Arc::new(Semaphore::new(0));
        let source =
            MemorySource { steps, handed: handed.clone(), hold: held.then(|| hold.clone()), figures: &[], encoding };
        let config = ConnectorConfig {
            file: dir.join("mem.toml"),
            name: NAME.into(),
            source: Arc::new(source),
            transforms,
            sinks: sinks
                .iter()
                .enumerate()
                .map(|(i, s)| SinkConfig {
                    name: format!("memory-{i}"),
                    on_error: ErrorPolicy::Fail,
                    dead_letter: None,
                    spec: Arc::new((*s).clone()),
                })
                .collect(),
            pipeline,
        };
        let daemon = daemon(&dir);
        let handle = ConnectorHandle::new(config, &daemon);
        if paused {
            handle.pause();
        }
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_connector(
            handle.clone(),
            daemon,
            store.clone(),
            metrics.clone(),
            stop.clone(),
            CancellationToken::new(),
        ));
        Harness { handle, store: store.clone(), metrics, stop, task, handed, hold }
    }

    fn release(&self) {
        self.hold.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    fn stored(&self) -> Option<Position> {
        self.store.position(NAME).unwrap()
    }

    async fn stop(self) -> Arc<ConnectorHandle> {
        self.stop.cancel();
        self.task.await.unwrap();
        self.handle
    }
}

/// Wait until the connector has failed; its error.
async fn failure(h: &Harness) -> String {
    until("the connector failed", || h.handle.status.state() == ConnectorState::Failed).await;
    h.handle.status.to_json()["last_error"].as_str().unwrap_or_default().to_string()
}

/// Wait (with a deadline) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn limits(buffer_batches: usize) -> PipelineConfig {
    PipelineConfig { buffer_batches: std::num::NonZeroUsize::new(buffer_batches).unwrap(), ..PipelineConfig::default() }
}

fn open_store() -> StateStore {
    StateStore::open(&tmp_dir()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_is_stored_only_after_every_sink_made_its_batch_durable() {
    let store = open_store();
    let fast = MemorySink::new(&store, false);
    let slow = MemorySink::new(&store, true);
    let h = Harness::start(&store, steps([100]), &[&fast, &slow], vec![], limits(4), false);
    until("the fast sink has the batch", || fast.batches().len() == 1).await;
    assert_eq!(h.stored(), None, "one sink of two has the batch");
    slow.open();
    until("the position is stored", || h.stored() == Some(pos(100))).await;
    // At the moment the slow sink made the batch durable, nothing of it was stored yet.
    assert_eq!(slow.log().stored_when_written, vec![None]);
    assert_eq!(slow.batches(), vec![vec![Version::new(100, 1), Version::new(100, 2)]]);
    let handle = h.stop().await;
    assert_eq!(handle.status.state(), ConnectorState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_that_queue_behind_a_busy_sink_go_out_as_one_write() {
    let store = open_store();
    let sink = MemorySink::new(&store, true);
    let h = Harness::start_with(
        &store,
        steps([10, 20, 30, 40]),
        &[&sink],
        vec![],
        limits(4),
        false,
        true,
        Encoding::default(),
    );
    // The first batch is at the sink (held by its gate); the other three queue up behind it.
    until("the first batch is at the sink", || sink.entered.load(Ordering::SeqCst) == 1).await;
    h.release();
    until("the source handed every batch over", || h.handed.load(Ordering::SeqCst) == 4).await;
    sink.open();
    until("the last position is stored", || h.stored() == Some(pos(40))).await;
    let v = |lsn| [Version::new(lsn, 1), Version::new(lsn, 2)];
    assert_eq!(sink.batches(), vec![v(10).to_vec(), [v(20), v(30), v(40)].concat()]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_pipeline_backs_up_the_source() {
    let store = open_store();
    let sink = MemorySink::new(&store, false);
    let h = Harness::start(&store, steps((1..=10).map(|i| i * 10)), &[&sink], vec![], limits(2), true);
    // The channel holds two batches; the third flush waits for room that a paused pipeline
    // never makes.
    until("the channel is full", || h.handed.load(Ordering::SeqCst) == 2).await;
    assert_eq!(h.handle.status.state(), ConnectorState::Paused);
    assert!(sink.batches().is_empty(), "a paused pipeline writes nothing");
    assert_eq!(h.stored(), None);
    assert_eq!(h.handed.load(Ordering::SeqCst), 2, "the source is held at the channel's capacity");
    h.handle.resume();
    until("everything arrived", || h.stored() == Some(pos(100))).await;
    assert_eq!(sink.batches().concat().len(), 20);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_is_retried_and_nothing_is_checkpointed_past_it() {
    let store = open_store();
    let sink = MemorySink::new(&store, true);
    let h =
        Harness::start_with(&store, steps([100, 200]), &[&sink], vec![], limits(4), false, true, Encoding::default());
    sink.open();
    until("the first batch is written", || sink.batches().len() == 1).await;
    // The second batch fails three times, transiently; then goes through.
    sink.log().fail.extend([ErrorClass::Retry; 3]);
    h.release();
    until("the last position is stored", || h.stored() == Some(pos(200))).await;
    let failed = sink.log().failed.clone();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|p| *p != Some(pos(200))), "stored past the failing batch: {failed:?}");
    let v = |lsn| vec![Version::new(lsn, 1), Version::new(lsn, 2)];
    assert_eq!(sink.batches(), vec![v(100), v(200)], "each batch written once, in order");
    let labels = metrics::sink_labels(NAME, "memory-0");
    assert_eq!(h.metrics.sink_retries.get_or_create(&labels).get(), 3);
    assert_eq!(h.handle.status.to_json()["sinks"][0]["state"], "ok");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_failure_that_retrying_cannot_fix_stops_the_connector_unstored() {
    let store = open_store();
    let sink = MemorySink::new(&store, false);
    sink.log().fail.push_back(ErrorClass::Operator);
    let h = Harness::start(&store, steps([300]), &[&sink], vec![], limits(4), false);
    let error = failure(&h).await;
    assert_eq!(h.stored(), None);
    assert!(error.contains("sink memory-0"), "{error}");
    assert_eq!(h.handle.status.to_json()["sinks"][0]["state"], "failed");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_applies_what_was_handed_over_and_stores_the_last_position() {
    let store = open_store();
    let sink = MemorySink::new(&store, true);
    let h = Harness::start(&store, steps([1, 2, 3, 4, 5]), &[&sink], vec![], limits(8), false);
    until("the source handed every batch over", || h.handed.load(Ordering::SeqCst) == 5).await;
    // Stop while every batch is still in flight, then let the sink take them.
    h.stop.cancel();
    sink.open();
    let (store, task) = (h.store.clone(), h.task);
    task.await.unwrap();
    assert_eq!(store.position::<Position>(NAME).unwrap(), Some(pos(5)));
    assert_eq!(sink.batches().concat().len(), 10);
    assert_eq!(h.handle.status.state(), ConnectorState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_state_error_stops_the_connector_before_any_checkpoint() {
    let store = open_store();
    let window = || {
        transform(
            "kind = \"window\"\nname = \"w\"\ntype = \"tumbling\"\nsize = \"1m\"\naggregates = { n = \"count(*)\" }",
        )
    };
    // A first run opens a window and checkpoints it with its position.
    let sink = MemorySink::new(&store, false);
    let h = Harness::start(&store, steps([100]), &[&sink], vec![window()], limits(4), false);
    until("the first position is stored", || h.stored() == Some(pos(100))).await;
    h.stop().await;
    let windows = store.entries(NAME, "window:w/windows", b"").unwrap();
    assert_eq!(windows.len(), 1, "one open window");

    // Its stored state becomes unreadable.
    let garbage = vec![(windows[0].0.clone(), Some(b"not a window".to_vec()))];
    store.commit(NAME, &pos(100), &[StateDelta::new("window:w/windows".into(), garbage)]).unwrap();

    // A heartbeat far past the window closes it, which reads the state: the connector stops,
    // and the heartbeat's position is not stored.
    let heartbeat = Step { lsn: 200, events: 0, commit_ms: 10 * 60_000, heartbeat: true, boundary: true };
    let sink = MemorySink::new(&store, false);
    let h = Harness::start(&store, vec![heartbeat], &[&sink], vec![window()], limits(4), false);
    let error = failure(&h).await;
    assert!(error.contains("transform[0]") && error.contains("state store"), "{error}");
    assert_eq!(h.stored(), Some(pos(100)));
    assert!(sink.batches().is_empty(), "nothing reached the sink: {:?}", sink.batches());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_dedup_drops_are_counted_in_metrics() {
    let store = open_store();
    let sink = MemorySink::new(&store, false);
    // The same transaction read twice (as a source replays after a reconnect).
    let h = Harness::start(&store, steps([100, 100]), &[&sink], vec![transform("kind = \"dedup\"")], limits(4), false);
    until("both batches went through", || h.handed.load(Ordering::SeqCst) == 2 && h.stored() == Some(pos(100))).await;
    until("the replay was dropped", || {
        h.metrics.render().contains("tidemark_dedup_dropped_total{connector=\"mem\",transform=\"dedup:0\"} 2")
    })
    .await;
    assert_eq!(sink.batches().concat(), vec![Version::new(100, 1), Version::new(100, 2)]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_operations_never_reach_a_sink_and_the_position_still_moves() {
    let store = open_store();
    let sink = MemorySink::new(&store, false);
    let skip_creates = Encoding { skipped: SkippedOps::parse("c").unwrap(), ..Encoding::default() };
    let h = Harness::start_with(&store, steps([100, 200]), &[&sink], vec![], limits(4), false, false, skip_creates);
    until("both positions are stored", || h.stored() == Some(pos(200))).await;
    assert!(sink.batches().concat().is_empty(), "creates were skipped: {:?}", sink.batches());
    h.stop().await;
    assert!(SkippedOps::parse("c,x").unwrap_err().contains("`x` is not an operation"));
    assert!(SkippedOps::parse("none").unwrap().is_empty());
    let set = SkippedOps::parse("t, d").unwrap();
    assert!(set.contains(Op::Truncate) && set.contains(Op::Delete) && !set.contains(Op::Update));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_state_is_stored_only_with_the_position_it_belongs_to() {
    let store = open_store();
    let sink = MemorySink::new(&store, true);
    // The third batch is the first part of a transaction: no boundary after it.
    let mut script = steps([100, 200]);
    script.push(Step { lsn: 300, events: 2, commit_ms: 1_000, heartbeat: false, boundary: false });
    let dedup = vec![transform("kind = \"dedup\"")];
    let h = Harness::start_with(&store, script, &[&sink], dedup, limits(4), false, true, Encoding::default());
    until("the first batch is at the sink", || sink.entered.load(Ordering::SeqCst) == 1).await;
    h.release();
    // The other two queue behind it and go to the sink as one group.
    until("the source handed every batch over", || h.handed.load(Ordering::SeqCst) == 3).await;
    sink.open();
    until("every event is written", || sink.batches().concat().len() == 6).await;
    let (store, handle) = (h.store.clone(), h.stop().await);
    assert_eq!(handle.status.state(), ConnectorState::Stopped);
    // The dedup remembers two ids per batch: whatever position is stored, its state is the
    // state at that position, never one that includes the unfinished transaction's events.
    let ids = store.entries(NAME, "dedup:0", b"").unwrap().len();
    let stored = store.position::<Position>(NAME).unwrap();
    let expected = match &stored {
        None => 0,
        Some(p) if *p == pos(100) => 2,
        Some(p) if *p == pos(200) => 4,
        Some(p) => panic!("stored {p:?}"),
    };
    assert_eq!(ids, expected, "{ids} ids stored with position {stored:?}");
}

#[test]
fn a_sources_own_figures_are_in_health_before_their_first_sample() {
    let dir = tmp_dir();
    let config = ConnectorConfig {
        file: dir.join("f.toml"),
        name: "f".into(),
        source: Arc::new(MemorySource {
            steps: vec![],
            handed: Arc::default(),
            hold: None,
            figures: &[metrics::RETAINED_WAL_BYTES_FIGURE],
            encoding: Encoding::default(),
        }),
        transforms: vec![],
        sinks: vec![],
        pipeline: PipelineConfig::default(),
    };
    let handle = ConnectorHandle::new(config, &daemon(&dir));
    let json = handle.status.to_json();
    assert!(
        json.as_object().unwrap().contains_key("retained_wal_bytes") && json["retained_wal_bytes"].is_null(),
        "{json}"
    );
    assert!(!json.as_object().unwrap().contains_key("binlog_purge_margin_files"), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_stored_position_stops_the_connector_with_the_way_out() {
    let store = open_store();
    // A GTID that is neither MariaDB's nor MySQL's (as a hand-edited `offsets set` could store).
    let bad = serde_json::json!({ "kind": "mysql", "file": "b.000001", "pos": 4, "gtid": "nonsense" });
    store.set_position(NAME, &bad).unwrap();
    let sink = MemorySink::new(&store, false);
    let h = Harness::start(&store, steps([100]), &[&sink], vec![], limits(4), false);
    let error = failure(&h).await;
    assert!(error.contains("unreadable") && error.contains("nonsense"), "{error}");
    assert!(error.contains(&format!("tidemark offsets reset {NAME}")), "{error}");
    assert!(sink.batches().is_empty());
    assert_eq!(store.position::<serde_json::Value>(NAME).unwrap(), Some(bad), "the stored position is left as it was");
    h.stop().await;
}
