#!/usr/bin/env bash
# The whole test suite: bring the servers up, then unit tests, integration tests against the real
# servers, formatting, and validation of the example connector files.
set -euo pipefail
cd "$(dirname "$0")/.."

# Fresh in-memory Elasticsearch API and Kafka brokers each run (they slow down as they fill).
TIDEMARK_FRESH=1 bash scripts/services.sh

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo fmt --check
cargo build --locked --all-targets
cargo test --locked --lib --bins
# Integration tests share the servers and run one at a time (TIDEMARK_TEST_THREADS to change it):
# each test's timing then depends on no other test's load on the two cores.
cargo test --locked --test integration -- --test-threads="${TIDEMARK_TEST_THREADS:-1}"
# The Docker image's build stage (a release build from scratch), alone: its compile jobs would
# otherwise compete with the tests that wait on servers.
cargo test --locked --test integration -- --ignored --exact operating::the_docker_build_stage_builds_from_what_the_dockerfile_copies

# Every example connector must be a valid configuration.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'data_dir = "%s/data"\nconnectors_dir = "%s/connectors"\n' "$tmp" "$PWD" > "$tmp/tidemark.toml"
target/debug/tidemark check --config-only -c "$tmp/tidemark.toml"
echo "all tests passed"
