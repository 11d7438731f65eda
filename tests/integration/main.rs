//! Integration tests against the real servers `scripts/services.sh` starts. One test binary.

mod cli;
mod cluster;
mod outage;
mod postgres_redis;
mod support;
