#!/usr/bin/env bash
# Re-run the Debezium conformance comparison: capture what the real Debezium 3.6.3 emits for the
# schema and changes of tests/conformance/ (PostgreSQL on 5432, MySQL 9.7 on 3309) into
# tests/fixtures/debezium/, then run the integration test that compares tidemark's events with
# them field by field, allowing only tests/conformance/differences.toml. The normal suite runs the
# same test against the checked-in fixtures, without a JVM.
#
#   bash scripts/conformance.sh            # capture both, then compare
#   CAPTURE=0 bash scripts/conformance.sh  # compare with the checked-in fixtures only
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
if [ "${CAPTURE:-1}" = 1 ]; then
  PY=$(bash scripts/debezium.sh)
  root=$PWD
  # The engine writes its own log under ./logs: run it from a scratch directory.
  mkdir -p target/debezium
  for kind in postgres mysql; do
    (cd target/debezium && "$PY" "$root/scripts/conformance/debezium.py" "$kind" "$root/tests/fixtures/debezium/$kind.jsonl") \
      2> "target/debezium/$kind.log" || { tail -n 40 "target/debezium/$kind.log" >&2; exit 1; }
  done
  # The same with Kafka Connect's schema envelope, for the Kafka source's test.
  (cd target/debezium && "$PY" "$root/scripts/conformance/debezium.py" postgres "$root/tests/fixtures/debezium/postgres-schemas.jsonl" schemas) \
    2> "target/debezium/postgres-schemas.log" || { tail -n 40 "target/debezium/postgres-schemas.log" >&2; exit 1; }
fi
cargo test --locked --test integration -- --test-threads=2 conformance kafka::debeziums
