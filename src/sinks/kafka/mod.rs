//! `kind = "kafka"`: every change published as Debezium publishes it — a topic per table, the
//! Debezium key and envelope as Kafka Connect's JSON converter writes them (schemas off), a
//! tombstone after each delete, a key change as a delete of the old key (with the header
//! `__debezium.newkey`) and a create of the new one (`__debezium.oldkey`), partitioned by Java's
//! murmur2 of the key bytes, so records land where Debezium's would.
//!
//! Delivery: an idempotent producer with `acks=all`; a write returns only when every record of
//! the batch has a successful delivery report, so the pipeline checkpoints nothing a broker has
//! not acknowledged. A crash may publish a batch again (at-least-once, as Debezium on Kafka
//! Connect); per-key order holds, since a key always maps to one partition and the idempotent
//! producer keeps each partition's order through retries.

pub mod config;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

pub use self::config::KafkaConfig;
use crate::check::Finding;
use crate::connector::{Delivery, Sink, SinkContext, SinkError, SinkSpec, WriteReport};
use crate::event::envelope::{Envelope, Key};
use crate::event::time::now_ns;
use crate::event::{json, ChangeEvent, Op, SourceMeta};
use crate::retry::{Classify, ErrorClass};
use crate::sinks::template;

/// The record header holding an event's exact [`crate::event::Version`] (32 hex digits).
pub const VERSION_HEADER: &str = "tidemark.version";

/// The `event` of a heartbeat record (it belongs to no event of the batch).
const HEARTBEAT: usize = usize::MAX;

/// How long a metadata request or topic creation may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

impl SinkSpec for KafkaConfig {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn describe(&self) -> serde_json::Value {
        KafkaConfig::describe(self)
    }

    fn title(&self) -> String {
        format!("kafka {}", self.brokers)
    }

    fn check<'a>(&'a self, connector: &'a str, tables: &'a [String]) -> BoxFuture<'a, Vec<Finding>> {
        async move { check(self, connector, tables).await }.boxed()
    }

    fn build(&self, ctx: SinkContext) -> Box<dyn Sink> {
        Box::new(KafkaSink::new(self.clone(), ctx))
    }
}

/// The client configuration: the user's librdkafka options, then what tidemark's guarantees
/// need (which the configuration refuses to override).
fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    crate::kafka::client(
        &[("message.timeout.ms", "30000"), ("linger.ms", "1"), ("queue.buffering.max.messages", "1000000")],
        &cfg.options,
        &[
            ("bootstrap.servers", &cfg.brokers),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("partitioner", "murmur2_random"),
            // Topics are created by `create_topics` with the configured partitions, never as a
            // side effect of a metadata request with the broker's defaults.
            ("allow.auto.create.topics", "false"),
        ],
    )
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error("kafka: {0}")]
    Client(#[from] KafkaError),
    #[error("kafka: topic `{0}` does not exist (set create_topics = true, or create it)")]
    MissingTopic(String),
    #[error("kafka: {0}")]
    Operator(String),
}

impl Classify for KafkaSinkError {
    fn class(&self) -> ErrorClass {
        match self {
            KafkaSinkError::Client(e) => match e.rdkafka_error_code() {
                Some(
                    RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::InvalidConfig,
                ) => ErrorClass::Operator,
                _ => ErrorClass::Retry,
            },
            KafkaSinkError::MissingTopic(_) | KafkaSinkError::Operator(_) => ErrorClass::Operator,
        }
    }
}

/// A record that failed for good: the broker will never take it as it is.
fn permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
    )
}

pub struct KafkaSink {
    cfg: KafkaConfig,
    ctx: SinkContext,
    producer: Option<FutureProducer>,
    /// Topics known to exist.
    topics: HashSet<String>,
    /// When the last heartbeat record was delivered.
    last_heartbeat: Option<std::time::Instant>,
}

impl KafkaSink {
    pub fn new(cfg: KafkaConfig, ctx: SinkContext) -> Self {
        KafkaSink { cfg, ctx, producer: None, topics: HashSet::new(), last_heartbeat: None }
    }

    fn producer(&mut self) -> Result<FutureProducer, KafkaSinkError> {
        if self.producer.is_none() {
            self.producer = Some(client_config(&self.cfg).create()?);
        }
        Ok(self.producer.clone().expect("created above"))
    }

    /// Make sure `topic` exists, creating it when allowed.
    async fn ensure_topic(&mut self, producer: &FutureProducer, topic: &str) -> Result<(), KafkaSinkError> {
        if self.topics.contains(topic) {
            return Ok(());
        }
        if !topic_exists(producer, topic).await? {
            if !self.cfg.create_topics {
                return Err(KafkaSinkError::MissingTopic(topic.to_string()));
            }
            create_topic(&self.cfg, topic).await?;
        }
        self.topics.insert(topic.to_string());
        Ok(())
    }

    async fn write_all(&mut self, events: &[ChangeEvent]) -> Result<WriteReport, KafkaSinkError> {
        let producer = self.producer()?;
        let heartbeat = self.heartbeat_due();
        if events.is_empty() && heartbeat.is_none() {
            // A probe: the brokers must answer.
            let p = producer.clone();
            tokio::task::spawn_blocking(move || p.client().fetch_metadata(None, ADMIN_TIMEOUT).map(|_| ()))
                .await
                .map_err(|e| KafkaSinkError::Operator(e.to_string()))??;
            return Ok(WriteReport::default());
        }
        let mut records = self.records(events);
        records.extend(heartbeat);
        let topics: BTreeSet<Arc<str>> = records.iter().map(|r| r.topic.clone()).collect();
        for topic in topics {
            self.ensure_topic(&producer, &topic).await?;
        }
        // Enqueue in order (a full queue waits, it never reorders), then wait for every report.
        // librdkafka copies key and value; the headers are handed over (not copied again).
        let mut pending: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(records.len());
        for r in records {
            let Record { event, topic, key, value, headers } = r;
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
            if let Some(k) = &key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &value {
                record = record.payload(v.as_slice());
            }
            loop {
                match producer.send_result(record) {
                    Ok(f) => {
                        pending.push((event, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => {
                        self.producer = None;
                        return Err(e.into());
                    }
                }
            }
        }
        let mut report = WriteReport::default();
        let mut failed: Option<KafkaError> = None;
        for (event, f) in pending {
            match f.await {
                Ok(Ok(_)) if event == HEARTBEAT => self.last_heartbeat = Some(std::time::Instant::now()),
                Ok(Ok(_)) => {}
                Ok(Err((KafkaError::MessageProduction(code), _))) if permanent(code) && event != HEARTBEAT => {
                    if !report.rejected.iter().any(|(i, _)| *i == event) {
                        report.rejected.push((event, format!("kafka refused the record: {code}")));
                    }
                }
                Ok(Err((e, _))) => failed = failed.or(Some(e)),
                Err(_cancelled) => failed = failed.or(Some(KafkaError::Canceled)),
            }
        }
        if let Some(e) = failed {
            // Retried as a whole, by a new producer: records already delivered are published
            // again (at-least-once), and no state of the failed one (an idempotence epoch the
            // broker may have fenced, a fatal error) carries over.
            self.producer = None;
            return Err(e.into());
        }
        report.applied = (events.len() - report.rejected.len()) as u64;
        Ok(report)
    }

    /// Debezium's heartbeat record, when one is due: key `{"serverName":…}`, value `{"ts_ms":…}`.
    fn heartbeat_due(&self) -> Option<Record> {
        let (topic, every) = self.cfg.heartbeat.as_ref()?;
        if self.last_heartbeat.is_some_and(|t| t.elapsed() < *every) {
            return None;
        }
        let connector = &*self.ctx.connector;
        Some(Record {
            event: HEARTBEAT,
            topic: Arc::from(topic.replace("{connector}", connector)),
            key: Some(json::to_string(&serde_json::json!({ "serverName": connector })).into_bytes()),
            value: Some(format!("{{\"ts_ms\":{}}}", now_ns() / 1_000_000).into_bytes()),
            headers: OwnedHeaders::new(),
        })
    }

    /// The records of a batch, in order.
    fn records(&self, events: &[ChangeEvent]) -> Vec<Record> {
        let now = now_ns();
        let enc = &self.ctx.encoding;
        let mut topic = String::new();
        // The topic of the previous record, shared by the records after it that go there too.
        let mut shared: Arc<str> = Arc::from("");
        let mut out = Vec::with_capacity(events.len() + events.len() / 4);
        let mut value_size = 512;
        for (i, ev) in events.iter().enumerate() {
            template::render(&self.cfg.topic, &self.ctx.connector, ev, &mut topic);
            if *shared != *topic {
                shared = Arc::from(topic.as_str());
            }
            let key = (ev.op != Op::Truncate).then(|| json::to_vec(&Key(ev, enc), 32));
            // Sized from the previous record's value: one allocation, no regrowth, per record.
            let value = json::to_vec(&Envelope { ev, connector: &self.ctx.connector, enc, now_ns: now }, value_size);
            value_size = value.len() + value.len() / 8;
            // The exact version, for tidemark's Kafka source to fence with; a key change is a
            // delete of the old key and a create of the new one, back to back, each naming the
            // other's key, as Debezium's headers do.
            let version = ev.version.to_hex();
            let version_header =
                || OwnedHeaders::new().insert(Header { key: VERSION_HEADER, value: Some(version.as_bytes()) });
            let mut headers = version_header();
            if ev.op == Op::Delete {
                if let Some(next) = events.get(i + 1).filter(|n| key_change(ev, n)) {
                    let new_key = json::to_string(&Key(next, enc));
                    headers = headers.insert(Header { key: "__debezium.newkey", value: Some(new_key.as_bytes()) });
                }
            } else if ev.op == Op::Create {
                if let Some(prev) = i.checked_sub(1).map(|p| &events[p]).filter(|p| key_change(p, ev)) {
                    let old_key = json::to_string(&Key(prev, enc));
                    headers = headers.insert(Header { key: "__debezium.oldkey", value: Some(old_key.as_bytes()) });
                }
            }
            out.push(Record { event: i, topic: shared.clone(), key: key.clone(), value: Some(value), headers });
            if ev.op == Op::Delete && self.cfg.tombstones {
                out.push(Record { event: i, topic: shared.clone(), key, value: None, headers: version_header() });
            }
        }
        out
    }
}

/// Whether `del` and `create` are the two halves of one primary-key change: the same row change
/// at the source (PostgreSQL: the same LSN; MySQL: the same rows event and row), split in two.
fn key_change(del: &ChangeEvent, create: &ChangeEvent) -> bool {
    del.op == Op::Delete
        && create.op == Op::Create
        && del.table == create.table
        && del.version.hi == create.version.hi
        && del.version.lo + 1 == create.version.lo
        && match (&del.source, &create.source) {
            (SourceMeta::Postgres { lsn: a, .. }, SourceMeta::Postgres { lsn: b, .. }) => a == b,
            (
                SourceMeta::Mysql { file: fa, pos: pa, row: ra, .. },
                SourceMeta::Mysql { file: fb, pos: pb, row: rb, .. },
            ) => fa == fb && pa == pb && ra == rb,
            _ => false,
        }
}

struct Record {
    /// The event's index in the batch.
    event: usize,
    topic: Arc<str>,
    key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    value: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

async fn topic_exists(producer: &FutureProducer, topic: &str) -> Result<bool, KafkaSinkError> {
    let p = producer.clone();
    let name = topic.to_string();
    let md = tokio::task::spawn_blocking(move || p.client().fetch_metadata(Some(&name), ADMIN_TIMEOUT))
        .await
        .map_err(|e| KafkaSinkError::Operator(e.to_string()))??;
    Ok(md.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
}

async fn create_topic(cfg: &KafkaConfig, topic: &str) -> Result<(), KafkaSinkError> {
    let admin: AdminClient<DefaultClientContext> = client_config(cfg).create()?;
    let mut new = NewTopic::new(topic, cfg.partitions, TopicReplication::Fixed(cfg.replication_factor));
    if let Some(policy) = &cfg.cleanup_policy {
        new = new.set("cleanup.policy", policy);
    }
    let results = admin.create_topics([&new], &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT))).await?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaSinkError::Operator(format!("cannot create topic `{name}`: {code}")));
            }
        }
    }
    tracing::info!(topic, partitions = cfg.partitions, "created Kafka topic");
    Ok(())
}

/// `tidemark check`: the brokers answer, and each table's topic exists or will be created.
async fn check(cfg: &KafkaConfig, connector: &str, tables: &[String]) -> Vec<Finding> {
    let producer: FutureProducer = match client_config(cfg).create() {
        Ok(p) => p,
        Err(e) => return vec![Finding::error(format!("kafka client: {e}; check librdkafka_options"))],
    };
    let p = producer.clone();
    let md = match tokio::task::spawn_blocking(move || p.client().fetch_metadata(None, ADMIN_TIMEOUT)).await {
        Ok(Ok(md)) => md,
        Ok(Err(e)) => {
            return vec![Finding::error(format!(
                "cannot reach the brokers {}: {e}; check brokers and the TLS/SASL settings in librdkafka_options",
                cfg.brokers
            ))]
        }
        Err(e) => return vec![Finding::error(format!("kafka: {e}"))],
    };
    let mut out = vec![Finding::ok(format!("brokers {} answer ({} brokers)", cfg.brokers, md.brokers().len()))];
    let existing: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    for table in tables {
        // Patterns (`public.*`) name no single topic.
        if table.contains(['*', '?']) {
            continue;
        }
        let (schema, name) = table.split_once('.').unwrap_or(("", table));
        let topic = cfg
            .topic_template
            .replace("{connector}", connector)
            .replace("{schema}", schema)
            .replace("{db}", schema)
            .replace("{table}", name);
        if existing.contains(&topic.as_str()) {
            out.push(Finding::ok(format!("topic {topic} exists")));
        } else if cfg.create_topics {
            out.push(Finding::ok(format!("topic {topic} will be created ({} partitions)", cfg.partitions)));
        } else {
            out.push(Finding::error(format!("topic {topic} does not exist: create it, or set create_topics = true")));
        }
    }
    out
}

impl Sink for KafkaSink {
    fn write<'a>(&'a mut self, events: &'a [ChangeEvent]) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        async move { self.write_all(events).await.map_err(SinkError::new) }.boxed()
    }
}
