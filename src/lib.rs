//! tidemark: a change-data-capture daemon. It reads committed changes from PostgreSQL (logical
//! replication) and MySQL/MariaDB (the binlog), turns them into Debezium-format events, runs them
//! through a processing stage (filters, projections, masks, routes, dedup, aggregates, windows),
//! and applies them to Redis and Elasticsearch caches fenced by source version, so a cache is
//! never wrong after a crash.
//!
//! Layers, each importing only those listed before it:
//! - leaves: [`settings`] (config-reading primitives), [`retry`] (error classes, backoff),
//!   [`check`] (findings), [`notify`] (systemd), [`state`] (the embedded store), [`kafka`] (the
//!   librdkafka options the Kafka sink and source share);
//! - [`event`]: the change model and its Debezium encoding; [`metrics`]: every metric's name;
//! - [`connector`]: the contract between sources, sinks and the pipeline — the [`connector::Source`]
//!   and [`connector::Sink`] traits, typed positions, batches, connector status;
//! - the kinds: [`sources`] (postgres, mysql, kafka), [`sinks`] (redis, elasticsearch, kafka, stdout), and
//!   [`transforms`];
//! - [`config`] assembles the daemon file and connector files from the kinds' readers;
//! - [`pipeline`] runs one connector (source task, transform chain, sinks, checkpoints);
//! - [`http`] serves health, metrics and the API; [`daemon`] ties everything together.

pub mod check;
pub mod config;
pub mod connector;
pub mod daemon;
pub mod event;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod redis_client;
pub mod retry;
pub mod settings;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod transforms;
