//! `[[sink]] kind = "kafka"`.

use std::time::Duration;

pub use crate::kafka::ClientOption;
use crate::settings::{Diag, Section};
use crate::sinks::template::{self, Part};
use crate::sinks::COMMON_KEYS;

/// Debezium's topic naming: `{prefix}.{schema}.{table}` (for MySQL the schema is the database).
pub const DEFAULT_TOPIC: &str = "{connector}.{schema}.{table}";

/// How often heartbeat records are published when `heartbeat_topic` is set.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

const KEYS: [&str; 12] = [
    "brokers",
    "topic",
    "tombstones",
    "schemas",
    "create_topics",
    "partitions",
    "replication_factor",
    "cleanup_policy",
    "exactly_once",
    "heartbeat_topic",
    "heartbeat_interval",
    "librdkafka_options",
];

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic_template: String,
    pub topic: Vec<Part>,
    /// A null-value record after each delete (Debezium's `tombstones.on.delete`).
    pub tombstones: bool,
    pub create_topics: bool,
    pub partitions: i32,
    pub replication_factor: i32,
    pub cleanup_policy: Option<String>,
    /// Debezium's heartbeat records: the topic (`{connector}` its one placeholder) and how often.
    pub heartbeat: Option<(String, Duration)>,
    pub options: Vec<ClientOption>,
}

impl KafkaConfig {
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "brokers": self.brokers,
            "topic": self.topic_template,
            "tombstones": self.tombstones,
            "schemas": false,
            "create_topics": self.create_topics,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "cleanup_policy": self.cleanup_policy,
            "heartbeat_topic": self.heartbeat.as_ref().map(|h| h.0.clone()),
            "heartbeat_interval_ms": self.heartbeat.as_ref().map(|h| h.1.as_millis() as u64),
            "librdkafka_options": crate::kafka::describe_options(&self.options),
        })
    }
}

pub fn read(mut s: Section, d: &mut Diag) -> Option<KafkaConfig> {
    let brokers = s.str(d, "brokers");
    let topic_template = s.opt_str(d, "topic").unwrap_or_else(|| DEFAULT_TOPIC.to_string());
    let topic = match template::parse(&topic_template, false) {
        Ok(parts) => parts,
        Err(e) => {
            d.error(s.key("topic"), e);
            Vec::new()
        }
    };
    let tombstones = s.opt_bool(d, "tombstones").unwrap_or(true);
    if s.opt_bool(d, "schemas") == Some(true) {
        d.error(
            s.key("schemas"),
            "the Kafka Connect schema envelope ({\"schema\",\"payload\"}) is not available in this version yet; \
             use schemas = false (Debezium's JSON converter with schemas.enable=false)",
        );
    }
    if s.opt_bool(d, "exactly_once") == Some(true) {
        d.error(
            s.key("exactly_once"),
            "transactional delivery is not available in this version yet; the sink delivers at least once",
        );
    }
    let heartbeat_topic = s.opt_str(d, "heartbeat_topic");
    let heartbeat_interval = s.opt_duration(d, "heartbeat_interval");
    if let Some(t) = &heartbeat_topic {
        if t.replace("{connector}", "").contains(['{', '}']) {
            d.error(s.key("heartbeat_topic"), format!("`{t}` may hold only the {{connector}} placeholder"));
        }
    } else if heartbeat_interval.is_some() {
        d.error(s.key("heartbeat_interval"), "only applies with heartbeat_topic");
    }
    if heartbeat_interval.is_some_and(|i| i.is_zero()) {
        d.error(s.key("heartbeat_interval"), "must be positive");
    }
    let heartbeat = heartbeat_topic.map(|t| (t, heartbeat_interval.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL)));
    let create_topics = s.opt_bool(d, "create_topics").unwrap_or(true);
    let count = |s: &mut Section, d: &mut Diag, key: &str| -> i32 {
        match s.opt_u64(d, key) {
            None => 1,
            Some(n) if (1..=i32::MAX as u64).contains(&n) => n as i32,
            Some(n) => {
                d.error(s.key(key), format!("{n} is not a count between 1 and {}", i32::MAX));
                1
            }
        }
    };
    let partitions = count(&mut s, d, "partitions");
    let replication_factor = count(&mut s, d, "replication_factor");
    let cleanup_policy = s.opt_choice(d, "cleanup_policy", &["delete", "compact", "compact,delete"]);
    let options = crate::kafka::read_options(
        &mut s,
        d,
        &["bootstrap.servers", "enable.idempotence", "acks", "partitioner", "allow.auto.create.topics"],
        "brokers; idempotent, acks=all, Java's murmur2 partitioner",
    );
    let mut allowed: Vec<&str> = KEYS.to_vec();
    allowed.extend(COMMON_KEYS);
    s.finish(d, &allowed);
    Some(KafkaConfig {
        brokers: brokers?,
        topic_template,
        topic,
        tombstones,
        create_topics,
        partitions,
        replication_factor,
        cleanup_policy,
        heartbeat,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> (Option<KafkaConfig>, Vec<String>) {
        let mut d = Diag::new(std::path::Path::new("c.toml"));
        let cfg = read(Section::new("sink[0]", toml.parse().unwrap()), &mut d);
        (cfg, d.into_errors().into_iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn every_mistake_at_once_and_secrets_hidden() {
        let (_, errors) = parse(
            "topic = \"{nope}\"\npartitions = 0\nschemas = true\n\
             [librdkafka_options]\nacks = \"1\"\nlinger = 5\n",
        );
        let text = errors.join("\n");
        for key in ["sink[0].brokers", "sink[0].topic", "sink[0].partitions", "sink[0].schemas", "acks", "linger"] {
            assert!(text.contains(key), "{key} missing from: {text}");
        }
        let (cfg, errors) = parse(
            "brokers = \"k:9092\"\n[librdkafka_options]\n\"sasl.password\" = \"hunter2\"\n\"linger.ms\" = \"5\"\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let cfg = cfg.unwrap();
        let shown = format!("{cfg:?} {}", cfg.describe());
        assert!(!shown.contains("hunter2") && shown.contains("linger.ms"), "{shown}");
    }
}
