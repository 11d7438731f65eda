#!/usr/bin/env bash
# A five-minute tour: PostgreSQL changes showing up in Redis, and /health following along.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

bash scripts/services.sh
cargo build --quiet --bin tidemark

PG="psql -X -q -h 127.0.0.1 -U postgres"
HTTP=127.0.0.1:18080
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
health() { curl -s "http://$HTTP/health" | python3 -c 'import json,sys; h=json.load(sys.stdin); c=h["connectors"][0]; print(json.dumps({k: c[k] for k in ("state","healthy","lag_ms","lag_bytes","position","backlog")}))'; }
show() { for k in $(redis-cli --scan --pattern 'demo:*' | sort -t: -k2,2 -k3n); do printf '%-18s %s\n' "$k" "$(redis-cli --no-raw hgetall "$k" | paste -sd' ')"; done; }

say "A demo database: customers and orders"
$PG -d postgres -c "DROP DATABASE IF EXISTS tidemark_demo WITH (FORCE)" 2>/dev/null
$PG -d postgres -c "SELECT pg_drop_replication_slot('tidemark_demo') FROM pg_replication_slots WHERE slot_name = 'tidemark_demo'" >/dev/null
$PG -d postgres -c "CREATE DATABASE tidemark_demo"
$PG -d tidemark_demo <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, balance numeric(12,2) DEFAULT 0);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(12,2), status text, placed_at timestamptz DEFAULT now());
INSERT INTO customers (name, email, balance) VALUES ('Ada', 'ada@example.com', 120.50), ('Grace', 'grace@example.com', 80);
INSERT INTO orders (customer_id, total, status) VALUES (1, 19.99, 'paid'), (2, 5.00, 'new');
SQL
redis-cli --scan --pattern 'demo:*' | xargs -r redis-cli del >/dev/null
redis-cli --scan --pattern 'tidemark:v:{demo:*' | xargs -r redis-cli del >/dev/null

work=$(mktemp -d)
mkdir -p "$work/connectors"
cp connectors/demo-postgres.toml "$work/connectors/"
printf 'data_dir = "%s/data"\nhttp_addr = "%s"\nconnectors_dir = "connectors"\n' "$work" "$HTTP" > "$work/tidemark.toml"

say "tidemark check"
target/debug/tidemark check -c "$work/tidemark.toml"

say "Starting tidemark (log: $work/tidemark.log)"
target/debug/tidemark run -c "$work/tidemark.toml" 2>"$work/tidemark.log" &
pid=$!
# On exit: stop tidemark and drop the demo's replication slot (an abandoned slot makes PostgreSQL
# keep WAL forever); the demo database and Redis keys stay for you to look at.
trap 'kill $pid 2>/dev/null || true; sleep 0.5; $PG -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"'"'tidemark_demo'"'"'" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -s "http://$HTTP/health" | grep -q '"state":"streaming"' && break
  sleep 0.1
done

say "Snapshot: the existing rows are in Redis"
show
health

say "Insert, update, delete"
$PG -d tidemark_demo <<'SQL'
INSERT INTO customers (name, email) VALUES ('Linus', 'linus@example.com');
UPDATE customers SET balance = balance + 10 WHERE name = 'Ada';
UPDATE orders SET status = 'shipped' WHERE id = 1;
DELETE FROM orders WHERE id = 2;
SQL
sleep 1
show
health

say "tidemark status"
target/debug/tidemark status --addr "$HTTP" || true

say "A few metrics"
curl -s "http://$HTTP/metrics" | grep -E '^tidemark_(events_total|lag_seconds|sink_events_total)' | head -12

say "Stopping (SIGTERM drains and checkpoints)"
kill -TERM $pid
wait $pid
target/debug/tidemark offsets show -c "$work/tidemark.toml"
