//! `kind = "kafka"`: Debezium topics (tidemark's Kafka sink's, or Debezium's own) read in a
//! consumer group and applied to the sinks with the same fencing as a database source, so
//! appliers scale out: N daemons in one group share the partitions of the topics.
//!
//! - **Order.** A key lives in one partition, and a partition is read in order by one member.
//! - **Offsets** are stored (`enable.auto.offset.store=false`) only up to what every sink has
//!   made durable — positions received on `acked` — and committed by librdkafka's auto-commit
//!   and when partitions are revoked. A crash or a rebalance hands the uncommitted records to a
//!   member again: they are applied again, as no-ops, since every write is fenced by the
//!   event's version (see [`decode`]).
//! - **Records that are not change events** (bad JSON, an unknown op) follow `on_error`: `fail`
//!   stops the connector naming topic, partition and offset; `skip` logs them with those and
//!   counts them (`tidemark_events_skipped_total{reason="not_a_change"}`), and reading goes on;
//!   `dead_letter` writes them (topic, partition, offset, key, value, reason) to the dead-letter
//!   file or stream, durably, before reading on (`reason="dead_letter"`).

pub mod decode;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tracing::{info, warn};

use self::decode::Decoded;
use crate::check::Finding;
use crate::connector::dead_letter::DeadLetters;
use crate::connector::position::PartitionOffsets;
use crate::connector::{
    batch, run_sessions, CapturedTable, DeadLetterTarget, Exclusive, PipelineClosed, Position, SessionError,
    SinkContext, Source, SourceContext, SourceError,
};
use crate::event::time::now_ms;
use crate::event::{Encoding, TableRef};
use crate::kafka::ClientOption;
use crate::metrics;
use crate::retry::{Backoff, Classify, ErrorClass};
use crate::settings::{Diag, Section};
use crate::sinks::kafka::VERSION_HEADER;

const KEYS: [&str; 10] = [
    "kind",
    "brokers",
    "topics",
    "group",
    "on_error",
    "heartbeat_interval",
    "librdkafka_options",
    "dead_letter_path",
    "dead_letter_url",
    "dead_letter_stream",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadRecord {
    Fail,
    Skip,
    /// Written to the dead-letter target (with topic, partition and offset) before reading on.
    DeadLetter,
}

#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    pub brokers: String,
    /// Names, or patterns as librdkafka takes them (`^shop\..*`).
    pub topics: Vec<String>,
    pub group: String,
    pub on_error: OnBadRecord,
    /// `dead_letter_path` or `dead_letter_url`; `None`: the connector's default file.
    pub dead_letter: Option<DeadLetterTarget>,
    pub heartbeat_interval: Duration,
    pub options: Vec<ClientOption>,
}

pub fn read(mut s: Section, d: &mut Diag, connector: &str) -> Option<KafkaSourceConfig> {
    let brokers = s.str(d, "brokers");
    let topics = s.opt_str_list(d, "topics").unwrap_or_default();
    if topics.is_empty() {
        d.error(s.key("topics"), "is required: the topics to read (names, or patterns like \"^shop\\\\..*\")");
    }
    let group = s.str(d, "group");
    let on_error = match s.opt_choice(d, "on_error", &["fail", "skip", "dead_letter"]).as_deref() {
        Some("skip") => OnBadRecord::Skip,
        Some("dead_letter") => OnBadRecord::DeadLetter,
        _ => OnBadRecord::Fail,
    };
    let dead_letter = DeadLetterTarget::read(&mut s, d, connector);
    if dead_letter.is_some() && on_error != OnBadRecord::DeadLetter {
        d.error(s.key("on_error"), "must be \"dead_letter\" for a dead-letter target to be used");
    }
    let heartbeat_interval = s.opt_duration(d, "heartbeat_interval").unwrap_or(Duration::from_secs(1));
    let options = crate::kafka::read_options(
        &mut s,
        d,
        &["bootstrap.servers", "group.id", "enable.auto.offset.store", "enable.partition.eof"],
        "brokers, group; offsets are stored only after the sinks acknowledge",
    );
    s.finish(d, &KEYS);
    Some(KafkaSourceConfig {
        brokers: brokers?,
        topics,
        group: group?,
        on_error,
        dead_letter,
        heartbeat_interval,
        options,
    })
}

impl KafkaSourceConfig {
    fn client(&self) -> ClientConfig {
        crate::kafka::client(
            &[
                ("auto.offset.reset", "earliest"),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "1000"),
            ],
            &self.options,
            &[
                ("bootstrap.servers", &self.brokers),
                ("group.id", &self.group),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "false"),
            ],
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("kafka: {0}")]
    Client(#[from] KafkaError),
    #[error("{0}")]
    Operator(String),
    #[error(transparent)]
    Closed(#[from] PipelineClosed),
}

impl SessionError for KafkaSourceError {
    fn pipeline_closed(&self) -> bool {
        matches!(self, KafkaSourceError::Closed(_))
    }
}

impl Classify for KafkaSourceError {
    fn class(&self) -> ErrorClass {
        match self {
            KafkaSourceError::Client(_) | KafkaSourceError::Closed(_) => ErrorClass::Retry,
            KafkaSourceError::Operator(_) => ErrorClass::Operator,
        }
    }
}

impl Source for KafkaSourceConfig {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn tables(&self) -> &[String] {
        &self.topics
    }

    fn encoding(&self) -> Encoding {
        Encoding::default()
    }

    fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    fn health_figures(&self) -> &'static [&'static str] {
        &[metrics::KAFKA_LAG_RECORDS_FIGURE]
    }

    fn exclusive(&self) -> Option<Exclusive> {
        // A consumer group is shared on purpose: that is how appliers scale out.
        None
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "kafka",
            "brokers": self.brokers,
            "topics": self.topics,
            "group": self.group,
            "on_error": match self.on_error {
                OnBadRecord::Fail => "fail",
                OnBadRecord::Skip => "skip",
                OnBadRecord::DeadLetter => "dead_letter",
            },
            "dead_letter": self.dead_letter.as_ref().map(DeadLetterTarget::describe),
            "librdkafka_options": crate::kafka::describe_options(&self.options),
        })
    }

    fn title(&self) -> String {
        format!("kafka {} group {}", self.brokers, self.group)
    }

    fn check(&self) -> BoxFuture<'_, Vec<Finding>> {
        async move { check(self).await }.boxed()
    }

    fn run(&self, ctx: SourceContext) -> BoxFuture<'_, Result<(), SourceError>> {
        async move {
            run_sessions(self, ctx, kafka_position, |cfg, ctx, resume, backoff| {
                session(cfg, ctx, resume, backoff).boxed()
            })
            .await
            .map_err(SourceError::new)
        }
        .boxed()
    }
}

fn kafka_position(p: Position) -> Option<PartitionOffsets> {
    match p {
        Position::Kafka(o) => Some(o),
        _ => None,
    }
}

/// One consumer session: join the group, read, store acknowledged offsets.
async fn session(
    cfg: &KafkaSourceConfig,
    ctx: &mut SourceContext,
    resume: Option<PartitionOffsets>,
    backoff: &mut Backoff,
) -> Result<(), KafkaSourceError> {
    let consumer: StreamConsumer = cfg.client().create()?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    info!(connector = %ctx.connector, group = %cfg.group, topics = ?cfg.topics, "consuming");
    ctx.status.set_state(crate::connector::ConnectorState::Streaming);
    // Every partition ever read keeps its offset here, so positions never go backwards when a
    // rebalance moves partitions to another member.
    let mut position = resume.unwrap_or_default();
    let mut tables: HashSet<TableRef> = HashSet::new();
    let mut dead_letters: Option<DeadLetters> = None;
    let mut acked = ctx.acked.clone();
    let mut sampled = std::time::Instant::now();
    loop {
        if sampled.elapsed() >= Duration::from_secs(1) {
            // librdkafka answers `assignment()` from its group thread, which can keep the caller
            // waiting (during a rebalance): never on a runtime worker's time.
            tokio::task::block_in_place(|| sample_lag(&consumer, ctx));
            sampled = std::time::Instant::now();
        }
        let deadline = ctx.batcher.deadline();
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                let _ = ctx.batcher.try_flush();
                return Ok(());
            }
            changed = acked.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                if let Some(Position::Kafka(p)) = &*acked.borrow_and_update() {
                    store_offsets(&consumer, p);
                }
            }
            _ = batch::until(deadline), if deadline.is_some() => {
                ctx.batcher.flush().await?;
            }
            msg = tokio::time::timeout(cfg.heartbeat_interval, consumer.recv()) => match msg {
                // Idle: everything read so far is all there is; a heartbeat probes the sinks and
                // keeps the lag honest.
                Err(_) => {
                    ctx.batcher.mark(Position::Kafka(position.clone()), Some(now_ms()), None, true);
                    ctx.batcher.after_boundary().await?;
                }
                Ok(Err(e)) => {
                    warn!(connector = %ctx.connector, error = %e, "kafka consumer error");
                    return Err(e.into());
                }
                Ok(Ok(m)) => {
                    backoff.reset();
                    let version = m.headers().and_then(|h| h.iter().find(|h| h.key == VERSION_HEADER).and_then(|h| h.value));
                    match decode::decode(m.key(), m.payload(), version) {
                        Ok(Decoded::Event(ev)) => {
                            if !tables.contains(&*ev.table) {
                                let row = ev.after.as_ref().or(ev.before.as_ref());
                                let captured = CapturedTable {
                                    table: (*ev.table).clone(),
                                    columns: row.map(|r| r.0.iter().map(|(n, _)| n.to_string()).collect()).unwrap_or_default(),
                                    key: ev.key.0.iter().map(|(n, _)| n.to_string()).collect(),
                                };
                                ctx.captured(&[captured]).map_err(KafkaSourceError::Operator)?;
                                tables.insert((*ev.table).clone());
                            }
                            let commit_ms = ev.commit_ts_ms();
                            ctx.batcher.push(*ev);
                            position.set(m.topic(), m.partition(), m.offset() + 1);
                            ctx.batcher.mark(Position::Kafka(position.clone()), Some(commit_ms), None, false);
                        }
                        Ok(Decoded::Skip) => {
                            position.set(m.topic(), m.partition(), m.offset() + 1);
                            ctx.batcher.mark(Position::Kafka(position.clone()), None, None, false);
                        }
                        Err(why) => {
                            let at = format!("{} partition {} offset {}", m.topic(), m.partition(), m.offset());
                            match cfg.on_error {
                                OnBadRecord::Fail => {
                                    return Err(KafkaSourceError::Operator(format!(
                                        "the record at {at} is not a change event ({why}); fix or skip it \
                                         (on_error = \"skip\" in [source])"
                                    )));
                                }
                                OnBadRecord::DeadLetter => {
                                    // Durable before the position moves past it: a crash writes it again, never loses it.
                                    let dl = dead_letters.get_or_insert_with(|| {
                                        let target = cfg.dead_letter.clone().unwrap_or_else(|| ctx.dead_letters.clone());
                                        DeadLetters::new(&target, SinkContext { connector: ctx.connector.clone(), encoding: Encoding::default() })
                                    });
                                    dl.write_unreadable((m.topic(), m.partition(), m.offset()), m.key(), m.payload(), &why)
                                        .await
                                        .map_err(|e| KafkaSourceError::Operator(format!("the record at {at} is not a change event ({why}) and cannot be dead-lettered: {e}")))?;
                                    warn!(connector = %ctx.connector, record = %at, reason = %why, to = %dl.describe(), "dead-lettered a record that is not a change event");
                                    count_unreadable(ctx, m.topic(), "dead_letter");
                                    position.set(m.topic(), m.partition(), m.offset() + 1);
                                    ctx.batcher.mark(Position::Kafka(position.clone()), None, None, false);
                                }
                                OnBadRecord::Skip => {
                                    warn!(connector = %ctx.connector, record = %at, reason = %why, "skipped a record that is not a change event");
                                    count_unreadable(ctx, m.topic(), "not_a_change");
                                    position.set(m.topic(), m.partition(), m.offset() + 1);
                                    ctx.batcher.mark(Position::Kafka(position.clone()), None, None, false);
                                }
                            }
                        }
                    }
                    ctx.batcher.after_boundary().await?;
                }
            }
        }
    }
}

/// A record that is not a change event, skipped or dead-lettered: `tidemark_events_skipped_total`
/// with the topic as the table and `reason`.
fn count_unreadable(ctx: &SourceContext, topic: &str, reason: &str) {
    ctx.metrics
        .events_skipped
        .get_or_create(&vec![
            (metrics::CONNECTOR, ctx.connector.to_string()),
            (metrics::TABLE, topic.to_string()),
            (metrics::REASON, reason.into()),
        ])
        .inc();
}

/// Per partition this member holds: the committed (acknowledged) offset and the records behind
/// the high watermark the broker last reported, in `/metrics`; the total in `/health`, with a
/// note per partition.
fn sample_lag(consumer: &StreamConsumer, ctx: &SourceContext) {
    let Ok(assigned) = consumer.assignment() else { return };
    let acked = match &*ctx.acked.borrow() {
        Some(Position::Kafka(p)) => p.clone(),
        _ => PartitionOffsets::default(),
    };
    let (mut total, mut notes) = (0u64, Vec::new());
    for e in assigned.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let committed = acked.get(topic, partition);
        let high = cached_high_watermark(consumer, topic, partition);
        let lag = match (high, committed) {
            (Some(h), Some(c)) => Some((h - c).max(0) as u64),
            (Some(h), None) => Some(h.max(0) as u64),
            _ => None,
        };
        let labels = vec![
            (metrics::CONNECTOR, ctx.connector.to_string()),
            (metrics::TOPIC, topic.to_string()),
            (metrics::PARTITION, partition.to_string()),
        ];
        if let Some(c) = committed {
            ctx.metrics.kafka_consumer_offset.get_or_create(&labels).set(c);
        }
        if let Some(l) = lag {
            ctx.metrics.kafka_consumer_lag_records.get_or_create(&labels).set(l as i64);
            total += l;
        }
        notes.push(format!(
            "{topic}[{partition}]: committed {}, {} records behind",
            committed.map_or("nothing yet".into(), |c| c.to_string()),
            lag.map_or("?".into(), |l| l.to_string())
        ));
    }
    ctx.status.set_source_health(crate::connector::SourceHealth {
        figures: vec![(metrics::KAFKA_LAG_RECORDS_FIGURE, Some(total))],
        notes,
    });
}

/// The high watermark librdkafka last saw for a partition (from fetch responses; no request).
fn cached_high_watermark(consumer: &StreamConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer lives as long as `consumer`; the out-pointers are valid locals;
    // the call only reads librdkafka's cached partition state.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Store the acknowledged offsets (librdkafka commits them). librdkafka stores only those of
/// partitions this member holds now (a partition given up meanwhile is another member's to
/// commit) and reports the others, which is expected here. A local call: it never waits.
fn store_offsets(consumer: &StreamConsumer, acked: &PartitionOffsets) {
    let mut tpl = TopicPartitionList::new();
    for (topic, parts) in &acked.offsets {
        for (partition, next) in parts {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.store_offsets(&tpl) {
            tracing::debug!(error = %e, "storing offsets");
        }
    }
}

/// `tidemark check`: the brokers answer and each named topic exists.
async fn check(cfg: &KafkaSourceConfig) -> Vec<Finding> {
    let consumer: StreamConsumer = match cfg.client().create() {
        Ok(c) => c,
        Err(e) => return vec![Finding::error(format!("kafka client: {e}; check librdkafka_options"))],
    };
    let group = cfg.group.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
        let groups = group_finding(&group, consumer.fetch_group_list(Some(&group), Duration::from_secs(10)));
        Ok::<_, KafkaError>((md, groups))
    })
    .await;
    let (md, groups) = match answers {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            return vec![Finding::error(format!(
                "cannot reach the brokers {}: {e}; check brokers and the TLS/SASL settings in librdkafka_options",
                cfg.brokers
            ))]
        }
        Err(e) => return vec![Finding::error(format!("kafka: {e}"))],
    };
    let mut out = vec![Finding::ok(format!("brokers {} answer", cfg.brokers))];
    out.push(groups);
    for t in &cfg.topics {
        if t.starts_with('^') {
            let n = md.topics().len();
            out.push(Finding::ok(format!("pattern {t} is matched against the {n} topics at each rebalance")));
        } else if md.topics().iter().any(|m| m.name() == t && !m.partitions().is_empty()) {
            out.push(Finding::ok(format!("topic {t} exists")));
        } else {
            out.push(Finding::warn(format!("topic {t} does not exist yet (the group reads it once it does)")));
        }
    }
    out
}

/// Whether this member can join the group: the coordinator answers for it, and its members (if
/// any) assign partitions the way tidemark does.
fn group_finding(name: &str, groups: Result<rdkafka::groups::GroupList, KafkaError>) -> Finding {
    let list = match groups {
        Ok(l) => l,
        Err(e) => {
            return Finding::error(format!(
                "group {name}: the brokers do not describe it ({e}); check that the user may read and join it (Describe and Read on the group)"
            ))
        }
    };
    let Some(g) = list.groups().iter().find(|g| g.name() == name) else {
        return Finding::ok(format!("group {name} is new: the first member creates it"));
    };
    let members = g.members().len();
    if members == 0 || g.state() == "Empty" || g.state() == "Dead" {
        return Finding::ok(format!("group {name} exists with no members ({}); it can be joined", g.state()));
    }
    if g.protocol_type() == "consumer" && !g.protocol().is_empty() && g.protocol() != "cooperative-sticky" {
        return Finding::error(format!(
            "group {name} has {members} member(s) assigning with {}; tidemark joins with cooperative-sticky, so it cannot join them: use a group of its own",
            g.protocol()
        ));
    }
    Finding::ok(format!("group {name} has {members} member(s) ({}); this one joins them", g.state()))
}
