//! The transform chain alone, on 1M synthetic order events (one core: the chain runs on the
//! pipeline task).
//!
//! - `passthrough`: an empty chain — the cost of moving the events, the ceiling.
//! - `stateless`: filter (CEL) + project.
//! - `stateful`: filter + project + aggregate + tumbling window, with their state in a real state
//!   store (a redb file): every 64 batches of 4,096 events (about the 250 ms checkpoint interval at
//!   1M events/s) the changed state is handed to a checkpoint with a position, which a second
//!   thread commits while the chain goes on, as the pipeline does (one checkpoint in flight at a
//!   time; the next is taken after it is durable).
//! - `stateful_all_cached`: the same with every state entry in memory (no paging).
//! - `stateful_before_images`: the same with `before_images = true` on the aggregate.
//!
//!   cargo bench --bench transforms

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tidemark::connector::position::{Lsn, PgPosition};
use tidemark::connector::Position;
use tidemark::event::{ChangeEvent, Encoding, Op, Row, SnapshotFlag, SourceMeta, TableRef, Value, Version};
use tidemark::settings::{Diag, Section};
use tidemark::state::StateStore;
use tidemark::transforms::{Chain, Specs, TransformConfig};

/// The daemon's allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 1_000_000;
const BATCH: usize = 4096;
const BATCHES_PER_CHECKPOINT: usize = 64;

fn events() -> Vec<ChangeEvent> {
    let table = Arc::new(TableRef { db: "shop".into(), schema: "public".into(), name: "orders".into() });
    let statuses = ["new", "paid", "shipped", "test"];
    let names: [Arc<str>; 6] = ["id", "customer", "status", "total", "note", "created"].map(Arc::from);
    let mut rng = fastrand::Rng::with_seed(1);
    (0..EVENTS)
        .map(|i| {
            let id = rng.i64(0..200_000);
            let row = Row(vec![
                (names[0].clone(), Value::Int(id)),
                (names[1].clone(), Value::Int(rng.i64(0..10_000))),
                (names[2].clone(), Value::Text(statuses[rng.usize(0..4)].into())),
                (
                    names[3].clone(),
                    Value::Numeric {
                        text: format!("{}.{:02}", rng.u32(1..1000), rng.u8(0..100)).into(),
                        scale: Some(2),
                    },
                ),
                (names[4].clone(), Value::Text("internal".into())),
                (names[5].clone(), Value::Int(i as i64)),
            ]);
            ChangeEvent {
                op: if i % 5 == 0 { Op::Update } else { Op::Create },
                table: table.clone(),
                key: Row(vec![(names[0].clone(), Value::Int(id))]),
                before: None,
                after: Some(row),
                partial: false,
                version: Version::new(i as u64 / 4 + 1, i as u64 % 4 + 1),
                commit_us: (1_700_000_000_000 + i as i64) * 1000,
                snapshot: SnapshotFlag::No,
                source: SourceMeta::Postgres { lsn: i as u64, last_commit_lsn: None, tx_id: None },
            }
        })
        .collect()
}

fn specs(toml: &str) -> Specs {
    let table: toml::Table = toml.parse().expect("bench config");
    let mut d = Diag::new(Path::new("bench.toml"));
    let mut s = Section::new("", table);
    let transforms = s
        .tables(&mut d, "transform")
        .into_iter()
        .filter_map(|t| TransformConfig::read(Path::new("bench.toml"), "bench", t, &mut d))
        .collect();
    assert!(d.is_empty(), "{:?}", d.into_errors());
    Specs(Arc::new(transforms))
}

const STATELESS: &str = r#"
[[transform]]
kind = "filter"
expr = "after.status != 'test'"
[[transform]]
kind = "project"
drop = ["note"]
"#;

const STATEFUL: &str = r#"
[[transform]]
kind = "filter"
expr = "after.status != 'test'"
[[transform]]
kind = "project"
drop = ["note"]
[[transform]]
kind = "aggregate"
name = "revenue"
group_by = ["customer"]
aggregates = { orders = "count(*)", revenue = "sum(total)", biggest = "max(total)" }
[[transform]]
kind = "window"
name = "per_status"
size = "1s"
group_by = ["status"]
aggregates = { n = "count(*)", revenue = "sum(total)" }
"#;

/// Run all events through the chain in batches, storing state like the pipeline does: a checkpoint
/// is committed on another thread, and the next one is taken once it is durable.
fn run(chain: &mut Chain, events: Vec<ChangeEvent>, store: Option<(&StateStore, &str)>) -> usize {
    let mut out = 0;
    let mut batch_no = 0u64;
    let mut it = events.into_iter();
    std::thread::scope(|scope| {
        let mut storing: Option<std::thread::ScopedJoinHandle<'_, ()>> = None;
        loop {
            let batch: Vec<ChangeEvent> = it.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                break;
            }
            out += chain.apply(batch, None).expect("chain").len();
            batch_no += 1;
            let Some((store, connector)) = store else { continue };
            if batch_no % BATCHES_PER_CHECKPOINT as u64 == 0 {
                if storing.as_ref().is_some_and(|s| s.is_finished()) {
                    storing.take().expect("checked").join().expect("commit");
                    chain.stored().expect("stored");
                }
                if storing.is_none() {
                    let deltas = chain.checkpoint().expect("checkpoint");
                    let pos = Position::Postgres(PgPosition::streaming(Lsn(batch_no)));
                    storing = Some(scope.spawn(move || store.commit(connector, &pos, &deltas).expect("commit")));
                }
            }
        }
        if let Some(s) = storing {
            s.join().expect("commit");
            chain.stored().expect("stored");
        }
    });
    out
}

fn bench(c: &mut Criterion) {
    let input = events();
    let dir = std::env::temp_dir().join(format!("tidemark-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = StateStore::open(&dir).expect("state store");
    let mut group = c.benchmark_group("chain");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    let mut fresh = 0u32;
    // The same chain with the state cache raised above the working set: no paging.
    let cached = STATEFUL.replace("kind = \"aggregate\"", "kind = \"aggregate\"\nmax_cached_entries = 1000000");
    // The same chain with the aggregate's before images on.
    let before = STATEFUL.replace("kind = \"aggregate\"", "kind = \"aggregate\"\nbefore_images = true");
    for (name, toml, stateful) in [
        ("passthrough", "", false),
        ("stateless", STATELESS, false),
        ("stateful", STATEFUL, true),
        ("stateful_all_cached", cached.as_str(), true),
        ("stateful_before_images", before.as_str(), true),
    ] {
        let specs = if toml.is_empty() { Specs::default() } else { specs(toml) };
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    // A fresh connector (so fresh operator state) for every run.
                    fresh += 1;
                    let state = stateful.then(|| store.clone());
                    let connector = format!("bench{fresh}");
                    let metrics = tidemark::metrics::Metrics::new();
                    let chain =
                        Chain::build(&specs, Encoding::default(), state, connector.as_str().into(), &metrics).unwrap();
                    (chain, input.clone(), connector)
                },
                |(mut chain, ev, connector)| run(&mut chain, ev, stateful.then_some((&store, connector.as_str()))),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
