#!/usr/bin/env bash
# End-to-end figures for BENCHMARKS.md, measured in one run on this machine:
#   (a) pg_recvlogical draining a fixed backlog with pgoutput to /dev/null   (the source ceiling)
#   (b) tidemark draining the same backlog into Redis
#   (c) redis-benchmark -P 16 -t hset                                         (the sink ceiling)
#   (d) commit-to-visible-in-Redis latency at a steady 5,000 changes/s (three runs, the median)
#   (e) tidemark's peak RSS
# and the ratios b/a and b/c (BENCH_REDIS=0 skips this part). (a) and (b) run BENCH_RUNS times
# each, alternating, on the same
# backlog (one replication slot per run); the medians are reported.
# Then PostgreSQL → Elasticsearch (BENCH_ES=0 skips it), on a backlog of BENCH_ES_ROWS rows:
#   (g) curl posting the same documents as _bulk requests of 1,000, two at a time  (the sink ceiling)
#   (h) tidemark draining the backlog into Elasticsearch
#   (i) commit-to-acknowledged latency at a steady BENCH_ES_RATE (2,000) changes/s, from tidemark's
#       tidemark_commit_to_ack_seconds histogram
# and the ratio h/g, medians of BENCH_RUNS alternating runs.
# Then the transform chain alone (BENCH_TRANSFORMS=0 skips it), and for MariaDB and MySQL
# (BENCH_MYSQL=0 skips both, BENCH_MYSQL8=0 MySQL):
#   (a') mysqlbinlog --read-from-remote-server --raw reading a fixed backlog  (the source ceiling)
#   (b') tidemark draining the same backlog into Redis
#   (a'') mysqlbinlog decoding the same backlog's rows to /dev/null      (a decoding reader, for context)
#   (f') tidemark draining it into the stdout sink, redirected to /dev/null  (decode + encode alone)
# Then PostgreSQL → Kafka (BENCH_KAFKA=0 skips it): (k0) a plain librdkafka producer with
# pre-encoded records of the same sizes (the ceiling) and (k1) tidemark draining a backlog into
# Kafka, and k1/k0; and (k2) the Kafka source applying a 4-partition topic of the backlog to
# Redis with one applier and with two (BENCH_KAFKA_APPLY=0 skips k2), beside (b).
# BENCH_BIN=PATH measures that tidemark binary instead of this tree's release build (e.g. an
# earlier commit's, to compare two builds on the same backlogs).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${BENCH_ROWS:-1000000}
TXN_ROWS=${BENCH_TXN_ROWS:-10000}
RUNS=${BENCH_RUNS:-3}
RATE=${BENCH_RATE:-5000}
SECONDS_LAT=${BENCH_LATENCY_SECONDS:-20}
DB=tidemark_bench
PGURL="postgres://postgres@127.0.0.1:5432/$DB"
REDIS_DB=1
REDIS_URL="redis://127.0.0.1:6379/$REDIS_DB"
HTTP=127.0.0.1:18099
PG="psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres"

log() { printf '[bench] %s\n' "$*" >&2; }
now() { date +%s.%N; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

bash scripts/services.sh
log "building (release)"
cargo build --release --quiet --bin tidemark
TIDEMARK=${BENCH_BIN:-target/release/tidemark}
log "measuring $TIDEMARK"
cargo bench --quiet --no-run --bench latency 2>/dev/null
LATENCY_BIN=$(ls -t target/release/deps/latency-* | grep -v '\.d$' | head -n 1)

work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

log "preparing $DB with a backlog of $ROWS row changes"
$PG -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$DB'" >/dev/null
$PG -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
$PG -d postgres -c "CREATE DATABASE $DB"
$PG -d $DB >/dev/null <<SQL
CREATE TABLE bench (id int PRIMARY KEY, v int NOT NULL, payload text NOT NULL);
CREATE TABLE lat (id int PRIMARY KEY, sent_us bigint NOT NULL);
INSERT INTO lat SELECT g, 0 FROM generate_series(1, 50000) g;
CREATE PUBLICATION bench_pub FOR TABLE bench, lat;
SQL
fmt_list() { printf '%.0f ' "$@"; }
# events_applied of the daemon answering at ADDR (0 until it answers).
applied_at() {
  local n
  n=$(curl -s "http://$1/health" | grep -o '"events_applied":[0-9]*' | head -n 1 | cut -d: -f2 || true)
  echo "${n:-0}"
}
# Wait until the daemons (PID ADDR pairs) have applied ROWS events between them (/health's
# events_applied, updated per batch); a daemon that exits prints LOGS (a glob) and ends the run.
# Polled every 50 ms with curl: a heavier poll would steal CPU from what is measured.
wait_applied() { # ROWS LOGS PID ADDR [PID ADDR ...]
  local rows=$1 logs=$2 sum
  shift 2
  local pairs=("$@")
  while :; do
    sum=0
    set -- "${pairs[@]}"
    while [ $# -gt 0 ]; do
      # shellcheck disable=SC2086
      kill -0 "$1" 2>/dev/null || { cat $logs; exit 1; }
      sum=$((sum + $(applied_at "$2")))
      shift 2
    done
    [ "$sum" -ge "$rows" ] && return
    sleep 0.05
  done
}
if [ "${BENCH_REDIS:-1}" = "1" ]; then
for i in $(seq 1 "$RUNS"); do
  $PG -d $DB -c "SELECT 1 FROM pg_create_logical_replication_slot('bench_ceiling_$i', 'pgoutput')" >/dev/null
  $PG -d $DB -c "SELECT 1 FROM pg_create_logical_replication_slot('bench_tidemark_$i', 'pgoutput')" >/dev/null
done
for ((from = 1; from <= ROWS; from += TXN_ROWS)); do
  to=$((from + TXN_ROWS - 1)); [ $to -gt "$ROWS" ] && to=$ROWS
  echo "INSERT INTO bench SELECT g, g % 1000, md5(g::text) FROM generate_series($from, $to) g;"
done | $PG -d $DB
END_LSN=$($PG -d $DB -Atc "SELECT pg_current_wal_lsn()")
WAL_MB=$($PG -d $DB -Atc "SELECT round(pg_wal_lsn_diff('$END_LSN', confirmed_flush_lsn) / 1048576) FROM pg_replication_slots WHERE slot_name = 'bench_ceiling_1'")
log "backlog ready: $WAL_MB MiB of WAL, ends at $END_LSN"

start_tidemark() { # $1: run number
  rm -rf "$work/data" "$work/connectors"
  mkdir -p "$work/connectors"
  cat > "$work/tidemark.toml" <<TOML
data_dir = "$work/data"
http_addr = "$HTTP"
connectors_dir = "connectors"
TOML
  cat > "$work/connectors/bench.toml" <<TOML
name = "bench"
[source]
kind = "postgres"
url = "$PGURL"
tables = ["public.bench", "public.lat"]
snapshot = "never"
slot = "bench_tidemark_$1"
publication = "bench_pub"
[[sink]]
kind = "redis"
url = "$REDIS_URL"
TOML
  "$TIDEMARK" run -c "$work/tidemark.toml" 2>"$work/tidemark.log" &
  pid=$!
}

A=(); B=(); RSS_B=0
for i in $(seq 1 "$RUNS"); do
  log "run $i/$RUNS: (a) pg_recvlogical draining the backlog"
  t0=$(now)
  pg_recvlogical -h 127.0.0.1 -U postgres -d $DB --slot "bench_ceiling_$i" --start --no-loop --endpos "$END_LSN" \
    -o proto_version=1 -o publication_names=bench_pub -f /dev/null
  t1=$(now)
  A+=("$(echo "$ROWS / ($t1 - $t0)" | bc -l)")

  log "run $i/$RUNS: (b) tidemark draining the same backlog into Redis"
  redis-cli -n $REDIS_DB flushdb >/dev/null
  # Done when every sink has applied every row.
  t0=$(now)
  start_tidemark "$i"
  wait_applied "$ROWS" "$work/tidemark.log" $pid "$HTTP"
  t1=$(now)
  B+=("$(echo "$ROWS / ($t1 - $t0)" | bc -l)")
  KEYS=$(redis-cli -n $REDIS_DB dbsize)
  rss=$(awk '/VmHWM/ {print int($2 / 1024)}' /proc/$pid/status)
  [ "$rss" -gt "$RSS_B" ] && RSS_B=$rss
  if [ "$i" -lt "$RUNS" ]; then kill -TERM $pid; wait $pid || true; pid=""; fi
done
A_RATE=$(printf '%s\n' "${A[@]}" | median)
B_RATE=$(printf '%s\n' "${B[@]}" | median)

log "(c) redis-benchmark -P 16 -t hset"
C_RATE=$(redis-benchmark -q -P 16 -t hset -n 2000000 --dbnum 2 | tr '\r' '\n' | awk '/requests per second/ {print $2}' | tail -n 1)
redis-cli -n 2 flushdb >/dev/null

log "(d) commit-to-visible latency at $RATE changes/s for ${SECONDS_LAT}s (after VACUUM ANALYZE and CHECKPOINT: steady state)"
$PG -d $DB -c "VACUUM ANALYZE" -c "CHECKPOINT"
# Three runs: a run's p99 depends on what PostgreSQL does meanwhile (a checkpoint's full-page
# writes, autovacuum of the hot table), so the median run is reported, with all three.
LATS=()
for _ in 1 2 3; do
  LATS+=("$("$LATENCY_BIN" --pg "$PGURL" --redis "$REDIS_URL" --prefix bench:lat --rate "$RATE" --seconds "$SECONDS_LAT")")
done
p99_of() { grep -o '"p99_ms": [0-9.]*' <<<"$1" | awk '{print $2}'; }
MID_P99=$(for l in "${LATS[@]}"; do p99_of "$l"; done | median)
for l in "${LATS[@]}"; do [ "$(p99_of "$l")" = "$MID_P99" ] && LAT=$l; done
ALL_P99=$(for l in "${LATS[@]}"; do p99_of "$l"; done | paste -sd ' ')
RSS=$(awk '/VmHWM/ {print int($2 / 1024)}' /proc/$pid/status)
kill -TERM $pid; wait $pid || true; pid=""
$PG -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$DB'" >/dev/null

printf '\n'
printf '| measure | result |\n|---|---|\n'
printf '| backlog | %d row changes in %d transactions, %s MiB of WAL |\n' "$ROWS" $(((ROWS + TXN_ROWS - 1) / TXN_ROWS)) "$WAL_MB"
printf '| (a) pg_recvlogical → /dev/null | %.0f rows/s (median of: %s) |\n' "$A_RATE" "$(fmt_list "${A[@]}")"
printf '| (b) tidemark → Redis | %.0f rows/s (median of: %s; %s keys) |\n' "$B_RATE" "$(fmt_list "${B[@]}")" "$KEYS"
printf '| (c) redis-benchmark -P 16 -t hset | %.0f requests/s |\n' "$C_RATE"
printf '| (d) commit → visible in Redis at %s/s | %s (median run; p99 of the runs: %s) |\n' "$RATE" "$LAT" "$ALL_P99"
printf '| (e) tidemark peak RSS | %s MiB (draining: %s MiB) |\n' "$RSS" "$RSS_B"
printf '| b / a | %.2f |\n' "$(echo "$B_RATE / $A_RATE" | bc -l)"
printf '| b / c | %.2f |\n' "$(echo "$B_RATE / $C_RATE" | bc -l)"
fi

# ---------------------------------------------------------------- PostgreSQL → Elasticsearch
if [ "${BENCH_ES:-1}" = "1" ]; then
ES_URL=${BENCH_ES_URL:-http://127.0.0.1:9200}
ES_ROWS=${BENCH_ES_ROWS:-50000}
ES_RATE=${BENCH_ES_RATE:-2000}
log "preparing an Elasticsearch backlog of $ES_ROWS row changes"
$PG -d $DB >/dev/null <<SQL
DROP TABLE IF EXISTS esbench;
CREATE TABLE esbench (id int PRIMARY KEY, v int NOT NULL, payload text NOT NULL);
DROP PUBLICATION IF EXISTS es_pub;
CREATE PUBLICATION es_pub FOR TABLE esbench, lat;
SQL
for i in $(seq 1 "$RUNS"); do
  $PG -d $DB -c "SELECT 1 FROM pg_create_logical_replication_slot('es_tidemark_$i', 'pgoutput')" >/dev/null
done
for ((from = 1; from <= ES_ROWS; from += TXN_ROWS)); do
  to=$((from + TXN_ROWS - 1)); [ $to -gt "$ES_ROWS" ] && to=$ES_ROWS
  echo "INSERT INTO esbench SELECT g, g % 1000, md5(g::text) FROM generate_series($from, $to) g;"
done | $PG -d $DB
# The same documents as _bulk bodies of 1,000 (tidemark's bulk_max_docs), with the same index
# settings tidemark creates indices with.
mkdir -p "$work/bulk"
$PG -d $DB -Atc "SELECT '{\"index\":{\"_index\":\"esraw\",\"_id\":\"' || id || '\"}}' || chr(10) ||
  json_build_object('id', id, 'v', v, 'payload', payload)::text FROM esbench ORDER BY id" > "$work/bulk/all.ndjson"
split -l 2000 "$work/bulk/all.ndjson" "$work/bulk/part-"
rm "$work/bulk/all.ndjson"
ES_INDEX_BODY='{"settings":{"index.refresh_interval":"1s","index.gc_deletes":"3600s"},"mappings":{"date_detection":false}}'
es_delete() { curl -s -o /dev/null -X DELETE "$ES_URL/$1"; }

start_es_tidemark() { # $1: slot number
  rm -rf "$work/data" "$work/connectors"
  mkdir -p "$work/connectors"
  printf 'data_dir = "%s/data"\nhttp_addr = "%s"\nconnectors_dir = "connectors"\n' "$work" "$HTTP" > "$work/tidemark.toml"
  cat > "$work/connectors/esbench.toml" <<TOML
name = "esbench"
[source]
kind = "postgres"
url = "$PGURL"
tables = ["public.esbench", "public.lat"]
snapshot = "never"
slot = "es_tidemark_$1"
publication = "es_pub"
[[sink]]
kind = "elasticsearch"
url = "$ES_URL"
TOML
  "$TIDEMARK" run -c "$work/tidemark.toml" 2>"$work/tidemark.log" &
  pid=$!
}

G=(); H=()
for i in $(seq 1 "$RUNS"); do
  log "run $i/$RUNS: (g) curl posting the documents as _bulk requests, two at a time"
  es_delete esraw
  curl -s -o /dev/null -X PUT "$ES_URL/esraw" -H 'content-type: application/json' -d "$ES_INDEX_BODY"
  t0=$(now)
  ls "$work"/bulk/part-* | xargs -P 2 -I{} curl -s -o /dev/null -X POST "$ES_URL/_bulk" \
    -H 'content-type: application/x-ndjson' --data-binary @{}
  t1=$(now)
  G+=("$(echo "$ES_ROWS / ($t1 - $t0)" | bc -l)")
  RAW_DOCS=$(curl -s -X POST "$ES_URL/esraw/_refresh" >/dev/null; curl -s "$ES_URL/esraw/_count" | grep -o '"count":[0-9]*' | cut -d: -f2)
  es_delete esraw

  log "run $i/$RUNS: (h) tidemark draining the backlog into Elasticsearch"
  es_delete esbench.public.esbench
  t0=$(now)
  start_es_tidemark "$i"
  wait_applied "$ES_ROWS" "$work/tidemark.log" $pid "$HTTP"
  t1=$(now)
  H+=("$(echo "$ES_ROWS / ($t1 - $t0)" | bc -l)")
  ES_DOCS=$(curl -s -X POST "$ES_URL/esbench.public.esbench/_refresh" >/dev/null; curl -s "$ES_URL/esbench.public.esbench/_count" | grep -o '"count":[0-9]*' | cut -d: -f2)
  ES_RSS=$(awk '/VmHWM/ {print int($2 / 1024)}' /proc/$pid/status)
  if [ "$i" -lt "$RUNS" ]; then kill -TERM $pid; wait $pid || true; pid=""; fi
done
G_RATE=$(printf '%s\n' "${G[@]}" | median)
H_RATE=$(printf '%s\n' "${H[@]}" | median)

log "(i) commit-to-acknowledged latency into Elasticsearch at $ES_RATE changes/s for ${SECONDS_LAT}s"
# One write first, so the index exists (its creation is not part of the steady state).
$PG -d $DB -c "UPDATE lat SET sent_us = 0 WHERE id = 1"
until curl -sf "$ES_URL/esbench.public.lat/_doc/1" >/dev/null; do sleep 0.1; done
ES_LAT=$("$LATENCY_BIN" --pg "$PGURL" --metrics "$HTTP" --sink elasticsearch --rate "$ES_RATE" --seconds "$SECONDS_LAT")
kill -TERM $pid; wait $pid || true; pid=""
es_delete esbench.public.esbench; es_delete esbench.public.lat
$PG -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'es_tidemark_%'" >/dev/null

printf '\n| Elasticsearch measure | result |\n|---|---|\n'
printf '| server | %s |\n' "$(curl -s "$ES_URL" | grep -o '"distribution":"[a-z]*"\|"number":"[0-9.]*"' | cut -d'"' -f4 | paste -sd ' ')"
printf '| backlog | %d row changes in %d transactions |\n' "$ES_ROWS" $(((ES_ROWS + TXN_ROWS - 1) / TXN_ROWS))
printf '| (g) curl _bulk, 1,000 docs per request, 2 in flight | %.0f docs/s (median of: %s; %s docs) |\n' "$G_RATE" "$(fmt_list "${G[@]}")" "$RAW_DOCS"
printf '| (h) tidemark → Elasticsearch | %.0f rows/s (median of: %s; %s docs; peak RSS %s MiB) |\n' "$H_RATE" "$(fmt_list "${H[@]}")" "$ES_DOCS" "$ES_RSS"
printf '| (i) commit → acknowledged by Elasticsearch at %s/s | %s |\n' "$ES_RATE" "$ES_LAT"
printf '| h / g | %.2f |\n' "$(echo "$H_RATE / $G_RATE" | bc -l)"
fi

# ---------------------------------------------------------------- PostgreSQL → Kafka
# (k0) a plain librdkafka producer (scripts/bench_kafka.py: confluent-kafka, the sink's settings)
# sending as many pre-encoded records of the same sizes (the client-and-broker ceiling), and (k1)
# tidemark draining a backlog of BENCH_KAFKA_ROWS row changes into Kafka (6 partitions), medians of
# BENCH_RUNS alternating runs (BENCH_KAFKA=0 skips it; BENCH_KAFKA_BATCH_ROWS sets the pipeline's
# max_batch_rows, 4096 by default).
if [ "${BENCH_KAFKA:-1}" = "1" ]; then
K_ROWS=${BENCH_KAFKA_ROWS:-$ROWS}
KAFKA=${BENCH_KAFKA_BROKERS:-127.0.0.1:9092}
KPY=${TIDEMARK_VENV:-/opt/tidemark/venv}/bin/python
log "preparing a Kafka backlog of $K_ROWS row changes"
$PG -d $DB >/dev/null <<SQL
DROP PUBLICATION IF EXISTS kbench_pub;
DROP TABLE IF EXISTS kbench;
CREATE TABLE kbench (id int PRIMARY KEY, v int NOT NULL, payload text NOT NULL);
CREATE PUBLICATION kbench_pub FOR TABLE kbench;
SQL
for i in $(seq 1 "$RUNS"); do
  $PG -d $DB -c "SELECT 1 FROM pg_create_logical_replication_slot('kbench_$i', 'pgoutput')" >/dev/null
done
for ((from = 1; from <= K_ROWS; from += TXN_ROWS)); do
  to=$((from + TXN_ROWS - 1)); [ $to -gt "$K_ROWS" ] && to=$K_ROWS
  echo "INSERT INTO kbench SELECT g, g % 1000, md5(g::text) FROM generate_series($from, $to) g;"
done | $PG -d $DB
stamp=$(date +%s)
K0=(); K1=(); RSS_K=0; VALUE_BYTES=""
for i in $(seq 1 "$RUNS"); do
  log "run $i/$RUNS: (k1) tidemark draining the backlog into Kafka"
  rm -rf "$work/data" "$work/connectors"
  mkdir -p "$work/connectors"
  printf 'data_dir = "%s/data"\nhttp_addr = "%s"\nconnectors_dir = "connectors"\n' "$work" "$HTTP" > "$work/tidemark.toml"
  cat > "$work/connectors/kbench.toml" <<TOML
name = "kbench"
[source]
kind = "postgres"
url = "$PGURL"
tables = ["public.kbench"]
snapshot = "never"
slot = "kbench_$i"
publication = "kbench_pub"
[[sink]]
kind = "kafka"
brokers = "$KAFKA"
topic = "kbench-$stamp-$i.{table}"
partitions = 6
[pipeline]
max_batch_rows = ${BENCH_KAFKA_BATCH_ROWS:-4096}
TOML
  t0=$(now)
  "$TIDEMARK" run -c "$work/tidemark.toml" 2>"$work/tidemark.log" &
  pid=$!
  wait_applied "$K_ROWS" "$work/tidemark.log" $pid "$HTTP"
  t1=$(now)
  K1+=("$(echo "$K_ROWS / ($t1 - $t0)" | bc -l)")
  rss=$(awk '/VmHWM/ {print int($2 / 1024)}' /proc/$pid/status)
  [ "$rss" -gt "$RSS_K" ] && RSS_K=$rss
  kill -TERM $pid; wait $pid || true; pid=""
  if [ -z "$VALUE_BYTES" ]; then
    # The ceiling sends values of the size tidemark's records have.
    VALUE_BYTES=$("$KPY" tests/kafka/read.py "$KAFKA" 1 "kbench-$stamp-$i.kbench" \
      | "$KPY" -c 'import json,sys; print(len(json.loads(sys.stdin.readline())["value"].encode()))')
  fi
  log "run $i/$RUNS: (k0) a plain librdkafka producer, $K_ROWS records of $VALUE_BYTES bytes"
  secs=$("$KPY" scripts/bench_kafka.py "$KAFKA" "kceiling-$stamp-$i" 6 "$K_ROWS" "$VALUE_BYTES")
  K0+=("$(echo "$K_ROWS / $secs" | bc -l)")
done
# (k2) the Kafka source: the same backlog drained once more, untimed, into a 4-partition topic,
# then applied to Redis by one applier daemon, and by two in one group (BENCH_KAFKA_APPLY=0 skips
# it). Done when the appliers' events_applied add up to the backlog.
K2_1=(); K2_2=(); RSS_K2=0
if [ "${BENCH_KAFKA_APPLY:-1}" = "1" ]; then
  log "(k2) filling a 4-partition topic with the backlog"
  $PG -d $DB -c "SELECT 1 FROM pg_create_logical_replication_slot('kbench_fill', 'pgoutput')" >/dev/null
  for ((from = 1; from <= K_ROWS; from += TXN_ROWS)); do
    to=$((from + TXN_ROWS - 1)); [ $to -gt "$K_ROWS" ] && to=$K_ROWS
    echo "UPDATE kbench SET v = v + 1 WHERE id BETWEEN $from AND $to;"
  done | $PG -d $DB
  rm -rf "$work/data" "$work/connectors"; mkdir -p "$work/connectors"
  printf 'data_dir = "%s/data"\nhttp_addr = "%s"\nconnectors_dir = "connectors"\n' "$work" "$HTTP" > "$work/tidemark.toml"
  cat > "$work/connectors/kfill.toml" <<TOML
name = "kfill"
[source]
kind = "postgres"
url = "$PGURL"
tables = ["public.kbench"]
snapshot = "never"
slot = "kbench_fill"
publication = "kbench_pub"
[[sink]]
kind = "kafka"
brokers = "$KAFKA"
topic = "k2-$stamp.{table}"
partitions = 4
TOML
  "$TIDEMARK" run -c "$work/tidemark.toml" 2>"$work/tidemark.log" &
  pid=$!
  wait_applied "$K_ROWS" "$work/tidemark.log" $pid "$HTTP"
  kill -TERM $pid; wait $pid || true; pid=""
  applier() { # $1: run dir, $2: http port, $3: group, $4: Redis db
    mkdir -p "$1/connectors"
    printf 'data_dir = "%s/data"\nhttp_addr = "127.0.0.1:%s"\nconnectors_dir = "connectors"\n' "$1" "$2" > "$1/tidemark.toml"
    cat > "$1/connectors/apply.toml" <<TOML
name = "apply"
[source]
kind = "kafka"
brokers = "$KAFKA"
topics = ["k2-$stamp.kbench"]
group = "$3"
[source.librdkafka_options]
"session.timeout.ms" = "6000"
[[sink]]
kind = "redis"
url = "redis://127.0.0.1:6379/$4"
TOML
    "$TIDEMARK" run -c "$1/tidemark.toml" 2>"$1/tidemark.log" &
  }
  for i in $(seq 1 "$RUNS"); do
    for members in 1 2; do
      log "run $i/$RUNS: (k2) $members applier(s): Kafka → Redis"
      redis-cli -n 3 flushdb >/dev/null
      rm -rf "$work/k2"; pids=(); daemons=()
      t0=$(now)
      for m in $(seq 1 $members); do
        applier "$work/k2/$m" $((18100 + m)) "k2-$stamp-$i-$members" 3
        pids+=($!); daemons+=($! "127.0.0.1:$((18100 + m))")
      done
      wait_applied "$K_ROWS" "$work/k2/*/tidemark.log" "${daemons[@]}"
      t1=$(now)
      rate=$(echo "$K_ROWS / ($t1 - $t0)" | bc -l)
      if [ $members = 1 ]; then K2_1+=("$rate"); else K2_2+=("$rate"); fi
      for p in "${pids[@]}"; do
        rss=$(awk '/VmHWM/ {print int($2 / 1024)}' /proc/$p/status)
        [ "$rss" -gt "$RSS_K2" ] && RSS_K2=$rss
        kill -TERM "$p"; wait "$p" || true
      done
    done
  done
  redis-cli -n 3 flushdb >/dev/null
fi
$PG -d $DB -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'kbench_%'" >/dev/null
K0_RATE=$(printf '%s\n' "${K0[@]}" | median)
K1_RATE=$(printf '%s\n' "${K1[@]}" | median)
printf '\n| PostgreSQL → Kafka measure | result |\n|---|---|\n'
printf '| backlog | %d row changes, records of %s bytes, 6 partitions |\n' "$K_ROWS" "$VALUE_BYTES"
printf '| (k0) librdkafka producer, pre-encoded records | %.0f records/s (median of: %s) |\n' "$K0_RATE" "$(fmt_list "${K0[@]}")"
printf '| (k1) tidemark → Kafka | %.0f rows/s (median of: %s; peak RSS %s MiB) |\n' "$K1_RATE" "$(fmt_list "${K1[@]}")" "$RSS_K"
printf '| k1 / k0 | %.2f |\n' "$(echo "$K1_RATE / $K0_RATE" | bc -l)"
if [ ${#K2_1[@]} -gt 0 ]; then
  K2_1_RATE=$(printf '%s\n' "${K2_1[@]}" | median)
  K2_2_RATE=$(printf '%s\n' "${K2_2[@]}" | median)
  printf '| (k2) Kafka (4 partitions) → Redis, one applier | %.0f rows/s (median of: %s) |\n' "$K2_1_RATE" "$(fmt_list "${K2_1[@]}")"
  printf '| (k2) Kafka (4 partitions) → Redis, two appliers in a group | %.0f rows/s (median of: %s; peak RSS of an applier %s MiB) |\n' "$K2_2_RATE" "$(fmt_list "${K2_2[@]}")" "$RSS_K2"
  if [ -n "${B_RATE:-}" ]; then
    printf '| k2 (one applier) / b | %.2f |\n' "$(echo "$K2_1_RATE / $B_RATE" | bc -l)"
  fi
fi
fi

# The transform chain alone, on one core (criterion, benches/transforms.rs; BENCH_TRANSFORMS=0
# skips it): passthrough (the ceiling: moving the events), stateless (filter + project), stateful
# (+ aggregate + tumbling window, state in the store; with the state cache above the working set;
# with the aggregate's before images on).
if [ "${BENCH_TRANSFORMS:-1}" = "1" ]; then
  log "transform chain (criterion, a few minutes)"
  cargo bench --quiet --bench transforms 2>/dev/null \
    | awk '/^chain\//{name=$1; done=0} /thrpt:/ && !done {print name, $4, $5; done=1}' > "$work/chain.txt"
  printf '\n| transform chain, 1M events | events/s |\n|---|---|\n'
  awk '{printf "| %s | %s %s |\n", $1, $2, $3}' "$work/chain.txt"
fi

[ "${BENCH_MYSQL:-1}" = "1" ] || exit 0

# ---------------------------------------------------------------- MariaDB and MySQL
# The same measures on each binlog server: MariaDB on 3306 with its mysqlbinlog, and MySQL (GTID
# mode) on 3309 with MySQL's own mysqlbinlog (scripts/services.sh; BENCH_MYSQL8=0 skips it).
MYDB=tidemark_bench_my
REDIS_SINK=$(printf '[[sink]]\nkind = "redis"\nurl = "%s"' "$REDIS_URL")

bench_binlog() { # $1: label, $2: port, $3: mysqlbinlog, $4: SQL for the current binlog position,
                 # $5: the session variable that bounds a recursive CTE
  local label=$1 port=$2 binlog_tool=$3 status_sql=$4 recursion=$5
  local MY="mariadb --no-defaults -uroot -h 127.0.0.1 -P $port --protocol=TCP -N -B"
  local MYURL="mysql://root@127.0.0.1:$port"
  log "$label: preparing $MYDB"
  $MY -e "DROP DATABASE IF EXISTS $MYDB; CREATE DATABASE $MYDB; CREATE TABLE $MYDB.bench (id int PRIMARY KEY, v int NOT NULL, payload varchar(32) NOT NULL)"

  # A connector's position is recorded by a short first run, before the backlog is written.
  my_daemon() { # $1: name, $2: sink block, $3: stdout target
    local dir="$work/my-$port-$1"
    mkdir -p "$dir/connectors"
    printf 'data_dir = "%s/data"\nhttp_addr = "%s"\nconnectors_dir = "connectors"\n' "$dir" "$HTTP" > "$dir/tidemark.toml"
    printf 'name = "%s"\n[source]\nkind = "mysql"\nurl = "%s"\ntables = ["%s.bench"]\nsnapshot = "never"\n%s\n' "$1" "$MYURL" "$MYDB" "$2" > "$dir/connectors/c.toml"
    "$TIDEMARK" run -c "$dir/tidemark.toml" >"$3" 2>"$dir/tidemark.log" &
    pid=$!
  }
  wait_checkpoint() {
    until curl -s "http://$HTTP/health" | grep -q '"position":{"kind":"mysql"'; do
      kill -0 $pid 2>/dev/null || { cat "$work"/my-*/tidemark.log; exit 1; }
      sleep 0.1
    done
  }
  for c in myredis mystdout; do
    if [ $c = myredis ]; then my_daemon $c "$REDIS_SINK" /dev/null; else my_daemon $c '[[sink]]
kind = "stdout"' /dev/null; fi
    wait_checkpoint
    kill -TERM $pid; wait $pid || true; pid=""
  done

  local START START_FILE START_POS
  START=$($MY -e "$status_sql" | awk '{print $1" "$2}')
  START_FILE=${START% *}; START_POS=${START#* }
  log "$label: writing a backlog of $ROWS row changes from $START_FILE:$START_POS"
  { echo "SET SESSION $recursion = $((TXN_ROWS + 1));"
  for ((from = 1; from <= ROWS; from += TXN_ROWS)); do
    to=$((from + TXN_ROWS - 1)); [ $to -gt "$ROWS" ] && to=$ROWS
    # A recursive CTE rather than MariaDB's seq_ tables, so both servers run the same statement.
    echo "INSERT INTO $MYDB.bench WITH RECURSIVE s (n) AS (SELECT $from UNION ALL SELECT n + 1 FROM s WHERE n < $to) SELECT n, n % 1000, LEFT(SHA2(n, 256), 32) FROM s;"
  done; } | $MY "$MYDB"
  local MY_MB
  MY_MB=$($MY -e "SHOW BINARY LOGS" | awk -v f="$START_FILE" -v p="$START_POS" '$1 >= f {s += $2} END {print int((s - p) / 1048576)}')

  log "$label (a') mysqlbinlog --read-from-remote-server --raw reading the backlog"
  mkdir -p "$work/raw"
  t0=$(now)
  $binlog_tool --no-defaults --read-from-remote-server --raw --host=127.0.0.1 --port="$port" --user=root --to-last-log \
    --start-position="$START_POS" --result-file="$work/raw/" "$START_FILE"
  t1=$(now)
  MA_RATE=$(echo "$ROWS / ($t1 - $t0)" | bc -l)
  rm -rf "$work/raw"

  log "$label (a'') mysqlbinlog decoding the backlog's rows to /dev/null (for context: a decoding reader)"
  t0=$(now)
  $binlog_tool --no-defaults --read-from-remote-server --host=127.0.0.1 --port="$port" --user=root --to-last-log \
    --base64-output=decode-rows -v --start-position="$START_POS" "$START_FILE" >/dev/null
  t1=$(now)
  MD_RATE=$(echo "$ROWS / ($t1 - $t0)" | bc -l)

  log "$label (b') tidemark draining the backlog into Redis"
  redis-cli -n $REDIS_DB flushdb >/dev/null
  t0=$(now)
  my_daemon myredis "$REDIS_SINK" /dev/null
  wait_applied "$ROWS" "$work/my-*/tidemark.log" $pid "$HTTP"
  t1=$(now)
  MB_RATE=$(echo "$ROWS / ($t1 - $t0)" | bc -l)
  MY_RSS=$(awk '/VmHWM/ {print int($2 / 1024)}' /proc/$pid/status)
  kill -TERM $pid; wait $pid || true; pid=""

  log "$label (f') tidemark draining the backlog into stdout > /dev/null"
  t0=$(now)
  my_daemon mystdout '[[sink]]
kind = "stdout"' /dev/null
  wait_applied "$ROWS" "$work/my-*/tidemark.log" $pid "$HTTP"
  t1=$(now)
  MF_RATE=$(echo "$ROWS / ($t1 - $t0)" | bc -l)
  kill -TERM $pid; wait $pid || true; pid=""
  $MY -e "DROP DATABASE $MYDB"

  printf '\n| %s measure | result |\n|---|---|\n' "$label"
  printf '| backlog | %d row changes in %d transactions, %s MiB of binlog |\n' "$ROWS" $(((ROWS + TXN_ROWS - 1) / TXN_ROWS)) "$MY_MB"
  printf "| (a') mysqlbinlog --read-from-remote-server --raw | %.0f rows/s |\n" "$MA_RATE"
  printf "| (a'') mysqlbinlog decoding rows (-v) to /dev/null | %.0f rows/s |\n" "$MD_RATE"
  printf "| (b') tidemark → Redis | %.0f rows/s (peak RSS %s MiB) |\n" "$MB_RATE" "$MY_RSS"
  printf "| (f') tidemark → stdout > /dev/null | %.0f rows/s |\n" "$MF_RATE"
  printf "| b' / a' | %.3f |\n" "$(echo "$MB_RATE / $MA_RATE" | bc -l)"
  printf "| b' / a'' | %.2f |\n" "$(echo "$MB_RATE / $MD_RATE" | bc -l)"
}

bench_binlog MariaDB 3306 mysqlbinlog "SHOW MASTER STATUS" max_recursive_iterations
if [ "${BENCH_MYSQL8:-1}" = "1" ]; then
  bench_binlog MySQL 3309 "${TIDEMARK_MYSQL_PREFIX:-/opt/tidemark/mysql}/bin/mysqlbinlog" "SHOW BINARY LOG STATUS" cte_max_recursion_depth
fi
