//! Integration tests against the real servers `scripts/services.sh` starts. One test binary.

mod cli;
mod cluster;
mod conformance;
mod elasticsearch;
mod kafka;
mod mysql_redis;
mod operating;
mod outage;
mod postgres_redis;
mod postgres_tls;
mod redis_tls;
mod support;
mod transforms;
