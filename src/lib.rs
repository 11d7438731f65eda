//! tidemark: a change-data-capture daemon that keeps Redis (and, later, Elasticsearch and Kafka)
//! in step with PostgreSQL, never wrong after a crash.
//!
//! Layout: [`config`] reads the TOML files; [`sources`] read committed changes; [`event`] is the
//! change model and its Debezium encoding; [`pipeline`] runs a connector (batches, sinks,
//! checkpoints); [`sinks`] apply changes; [`state`] stores positions; [`http`] serves health and
//! metrics; [`daemon`] ties them together.

pub mod check;
pub mod config;
pub mod connector;
pub mod daemon;
pub mod event;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod retry;
pub mod settings;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod transforms;
