//! Every metric tidemark exports, named in one place. Units are in the names.
//!
//! Counters are bumped once per batch (never per event on the hot path); gauges that describe a
//! connector's position are refreshed from its status when `/metrics` is scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub const EVENTS: &str = "tidemark_events";
pub const SINK_EVENTS: &str = "tidemark_sink_events";
pub const SINK_RETRIES: &str = "tidemark_sink_retries";
pub const SINK_WRITE_SECONDS: &str = "tidemark_sink_write_seconds";
pub const COMMIT_TO_ACK_SECONDS: &str = "tidemark_commit_to_ack_seconds";
pub const LATE_EVENTS: &str = "tidemark_late_events";
pub const DEDUP_DROPPED: &str = "tidemark_dedup_dropped";
/// Upper bounds of the commit-to-acknowledged histogram, in seconds: fine where a cache's
/// staleness matters (tens of milliseconds to a few seconds).
pub const COMMIT_TO_ACK_BUCKETS: [f64; 24] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0,
    3.0, 5.0, 10.0, 30.0,
];
pub const TYPE_FALLBACKS: &str = "tidemark_type_fallbacks";
pub const EVENTS_SKIPPED: &str = "tidemark_events_skipped";
pub const LAG_SECONDS: &str = "tidemark_lag_seconds";
pub const LAG_BYTES: &str = "tidemark_lag_bytes";
pub const RETAINED_WAL_BYTES: &str = "tidemark_retained_wal_bytes";
pub const CHECKPOINT_AGE_SECONDS: &str = "tidemark_checkpoint_age_seconds";
pub const CONNECTOR_HEALTHY: &str = "tidemark_connector_healthy";
pub const CONNECTOR_FAILED: &str = "tidemark_connector_failed";
pub const BINLOG_PURGE_RISK: &str = "tidemark_binlog_purge_risk";
pub const RESIDENT_MEMORY_BYTES: &str = "tidemark_resident_memory_bytes";
pub const SNAPSHOT_ROWS: &str = "tidemark_snapshot_rows";
pub const BINLOG_PURGE_MARGIN: &str = "tidemark_binlog_purge_margin_files";
pub const KAFKA_LAG_RECORDS: &str = "tidemark_kafka_lag_records";
pub const KAFKA_CONSUMER_OFFSET: &str = "tidemark_kafka_consumer_offset";
pub const KAFKA_CONSUMER_LAG_RECORDS: &str = "tidemark_kafka_consumer_lag_records";

/// Source-specific figures of `/health` (a source's health section), each exported as the gauge
/// [`Metrics::source_figure`] names.
pub const RETAINED_WAL_BYTES_FIGURE: &str = "retained_wal_bytes";
pub const BINLOG_PURGE_MARGIN_FIGURE: &str = "binlog_purge_margin_files";
pub const BINLOG_PURGE_RISK_FIGURE: &str = "binlog_purge_risk";
pub const KAFKA_LAG_RECORDS_FIGURE: &str = "lag_records";

/// Label keys.
pub const CONNECTOR: &str = "connector";
pub const TABLE: &str = "table";
pub const OP: &str = "op";
pub const SINK: &str = "sink";
pub const OUTCOME: &str = "outcome";
pub const COLUMN: &str = "column";
pub const TYPE: &str = "type";
pub const REASON: &str = "reason";
pub const TRANSFORM: &str = "transform";
pub const TOPIC: &str = "topic";
pub const PARTITION: &str = "partition";

/// Outcomes of a sink write, per event.
pub const OUTCOME_APPLIED: &str = "applied";
/// The sink already held the same or a newer version: a replay, made harmless by fencing.
pub const OUTCOME_STALE: &str = "stale";
pub const OUTCOME_FAILED: &str = "failed";
pub const OUTCOME_SKIPPED: &str = "skipped";
pub const OUTCOME_DEAD_LETTERED: &str = "dead_lettered";

pub type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub events: Family<Labels, Counter>,
    pub sink_events: Family<Labels, Counter>,
    pub sink_retries: Family<Labels, Counter>,
    pub sink_write_seconds: Family<Labels, Histogram>,
    pub commit_to_ack_seconds: Family<Labels, Histogram>,
    pub late_events: Family<Labels, Counter>,
    pub dedup_dropped: Family<Labels, Counter>,
    pub type_fallbacks: Family<Labels, Counter>,
    pub events_skipped: Family<Labels, Counter>,
    pub snapshot_rows: Family<Labels, Counter>,
    pub lag_seconds: Family<Labels, FloatGauge>,
    pub lag_bytes: Family<Labels, Gauge>,
    pub retained_wal_bytes: Family<Labels, Gauge>,
    pub checkpoint_age_seconds: Family<Labels, FloatGauge>,
    pub connector_healthy: Family<Labels, Gauge>,
    pub connector_failed: Family<Labels, Gauge>,
    pub binlog_purge_risk: Family<Labels, Gauge>,
    pub resident_memory_bytes: Gauge,
    pub binlog_purge_margin: Family<Labels, Gauge>,
    pub kafka_lag_records: Family<Labels, Gauge>,
    pub kafka_consumer_offset: Family<Labels, Gauge>,
    pub kafka_consumer_lag_records: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let events = Family::<Labels, Counter>::default();
        let sink_events = Family::<Labels, Counter>::default();
        let sink_retries = Family::<Labels, Counter>::default();
        let sink_write_seconds =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 14)));
        let commit_to_ack_seconds =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(COMMIT_TO_ACK_BUCKETS.iter().copied()));
        let late_events = Family::<Labels, Counter>::default();
        let dedup_dropped = Family::<Labels, Counter>::default();
        let type_fallbacks = Family::<Labels, Counter>::default();
        let events_skipped = Family::<Labels, Counter>::default();
        let snapshot_rows = Family::<Labels, Counter>::default();
        let lag_seconds = Family::<Labels, FloatGauge>::default();
        let lag_bytes = Family::<Labels, Gauge>::default();
        let retained_wal_bytes = Family::<Labels, Gauge>::default();
        let checkpoint_age_seconds = Family::<Labels, FloatGauge>::default();
        let connector_healthy = Family::<Labels, Gauge>::default();
        let connector_failed = Family::<Labels, Gauge>::default();
        let binlog_purge_risk = Family::<Labels, Gauge>::default();
        let resident_memory_bytes = Gauge::default();
        let binlog_purge_margin = Family::<Labels, Gauge>::default();
        let kafka_lag_records = Family::<Labels, Gauge>::default();
        let kafka_consumer_offset = Family::<Labels, Gauge>::default();
        let kafka_consumer_lag_records = Family::<Labels, Gauge>::default();

        registry.register(EVENTS, "Change events read from sources, by table and op", events.clone());
        registry.register(SINK_EVENTS, "Events handled by sinks, by outcome", sink_events.clone());
        registry.register(SINK_RETRIES, "Sink writes retried after a transient error", sink_retries.clone());
        registry.register(SINK_WRITE_SECONDS, "Time to make one batch durable in a sink", sink_write_seconds.clone());
        registry.register(
            LATE_EVENTS,
            "Events a window received after their windows had closed (dead-lettered when configured)",
            late_events.clone(),
        );
        registry.register(
            DEDUP_DROPPED,
            "Events a dedup transform dropped as seen before, by transform",
            dedup_dropped.clone(),
        );
        registry.register(
            COMMIT_TO_ACK_SECONDS,
            "Per streamed change, from its commit at the source to the sink acknowledging it",
            commit_to_ack_seconds.clone(),
        );
        registry.register(
            TYPE_FALLBACKS,
            "Column values of an unsupported type, or unparsable text, passed on as text",
            type_fallbacks.clone(),
        );
        registry.register(
            EVENTS_SKIPPED,
            "Source changes not turned into events (e.g. tables without a key)",
            events_skipped.clone(),
        );
        registry.register(SNAPSHOT_ROWS, "Rows read by snapshots", snapshot_rows.clone());
        registry.register(
            LAG_SECONDS,
            "Now minus the commit time of the newest change every sink applied (0 when caught up)",
            lag_seconds.clone(),
        );
        registry.register(LAG_BYTES, "Source log written but not yet applied by every sink", lag_bytes.clone());
        registry.register(
            RETAINED_WAL_BYTES,
            "WAL the PostgreSQL server keeps for the connector's slot",
            retained_wal_bytes.clone(),
        );
        registry.register(
            CHECKPOINT_AGE_SECONDS,
            "Time since the connector's position was last checkpointed",
            checkpoint_age_seconds.clone(),
        );
        registry.register(
            CONNECTOR_HEALTHY,
            "1 when the connector is running within its lag threshold",
            connector_healthy.clone(),
        );
        registry.register(
            BINLOG_PURGE_MARGIN,
            "MySQL/MariaDB: binlog files between the oldest the server keeps and the checkpointed one (0 while the server writes a newer one: a purge could lose changes)",
            binlog_purge_margin.clone(),
        );
        registry.register(
            KAFKA_LAG_RECORDS,
            "Kafka source: records in the partitions this member holds that the sinks have not acknowledged",
            kafka_lag_records.clone(),
        );
        registry.register(
            KAFKA_CONSUMER_OFFSET,
            "Kafka source: the next offset to commit, by topic and partition (the sinks have everything before it)",
            kafka_consumer_offset.clone(),
        );
        registry.register(
            KAFKA_CONSUMER_LAG_RECORDS,
            "Kafka source: the partition's high watermark minus the committed offset, as the broker last reported it",
            kafka_consumer_lag_records.clone(),
        );
        registry.register(
            CONNECTOR_FAILED,
            "1 when the connector has stopped on an error that needs an operator",
            connector_failed.clone(),
        );
        registry.register(
            BINLOG_PURGE_RISK,
            "MySQL/MariaDB: 1 when the checkpointed binlog is the oldest the server keeps and no longer the one it writes (a purge would lose changes)",
            binlog_purge_risk.clone(),
        );
        registry.register(RESIDENT_MEMORY_BYTES, "The daemon's resident set size", resident_memory_bytes.clone());

        Metrics {
            registry,
            events,
            sink_events,
            sink_retries,
            sink_write_seconds,
            commit_to_ack_seconds,
            late_events,
            dedup_dropped,
            type_fallbacks,
            events_skipped,
            snapshot_rows,
            lag_seconds,
            lag_bytes,
            retained_wal_bytes,
            checkpoint_age_seconds,
            connector_healthy,
            connector_failed,
            binlog_purge_risk,
            resident_memory_bytes,
            binlog_purge_margin,
            kafka_lag_records,
            kafka_consumer_offset,
            kafka_consumer_lag_records,
        }
    }

    /// The gauge a source-specific `/health` figure is exported as.
    pub fn source_figure(&self, figure: &str) -> Option<&Family<Labels, Gauge>> {
        match figure {
            RETAINED_WAL_BYTES_FIGURE => Some(&self.retained_wal_bytes),
            BINLOG_PURGE_MARGIN_FIGURE => Some(&self.binlog_purge_margin),
            BINLOG_PURGE_RISK_FIGURE => Some(&self.binlog_purge_risk),
            KAFKA_LAG_RECORDS_FIGURE => Some(&self.kafka_lag_records),
            _ => None,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// A table's `tidemark_events_total` counters, one per op, resolved once (not per event).
pub struct OpCounters {
    create: Counter,
    update: Counter,
    delete: Counter,
    read: Counter,
    truncate: Counter,
}

impl OpCounters {
    pub fn new(m: &Metrics, connector: &str, table: &str) -> Self {
        let c = |op: &str| {
            m.events
                .get_or_create(&vec![
                    (CONNECTOR, connector.to_string()),
                    (TABLE, table.to_string()),
                    (OP, op.to_string()),
                ])
                .clone()
        };
        OpCounters { create: c("c"), update: c("u"), delete: c("d"), read: c("r"), truncate: c("t") }
    }

    pub fn get(&self, op: crate::event::Op) -> &Counter {
        use crate::event::Op;
        match op {
            Op::Create => &self.create,
            Op::Update => &self.update,
            Op::Delete => &self.delete,
            Op::Read => &self.read,
            Op::Truncate => &self.truncate,
        }
    }
}

/// The `tidemark_type_fallbacks_total` counter of one column.
pub fn fallback_counter(m: &Metrics, connector: &str, table: &str, column: &str, type_name: &str) -> Counter {
    m.type_fallbacks
        .get_or_create(&vec![
            (CONNECTOR, connector.to_string()),
            (TABLE, table.to_string()),
            (COLUMN, column.to_string()),
            (TYPE, type_name.to_string()),
        ])
        .clone()
}

pub fn connector_labels(connector: &str) -> Labels {
    vec![(CONNECTOR, connector.to_string())]
}

pub fn sink_labels(connector: &str, sink: &str) -> Labels {
    vec![(CONNECTOR, connector.to_string()), (SINK, sink.to_string())]
}
