//! PostgreSQL and MariaDB → Elasticsearch, on the real servers: the OpenSearch-API server
//! `scripts/services.sh` starts, or a real cluster at `TIDEMARK_TEST_ES_URL` (credentials in the
//! URL, `TIDEMARK_TEST_ES_CA` for a private CA).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, Url};
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};
use tidemark::connector::SinkContext;
use tidemark::event::{ChangeEvent, Encoding, Op, Row, SnapshotFlag, SourceMeta, TableRef, Value as V, Version};

use crate::mysql_redis::{MyEnv, BINLOGS};
use crate::support::*;

pub fn es_url() -> String {
    std::env::var("TIDEMARK_TEST_ES_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// A `[[sink]]` of kind elasticsearch at the test cluster, then `extra`.
pub fn es_sink_at(url: &str, extra: &str) -> String {
    let ca = std::env::var("TIDEMARK_TEST_ES_CA").map(|c| format!("ca_file = \"{c}\"\n")).unwrap_or_default();
    format!("[[sink]]\nkind = \"elasticsearch\"\nurl = \"{url}\"\n{ca}{extra}")
}

pub fn es_sink(extra: &str) -> String {
    es_sink_at(&es_url(), extra)
}

/// The test's own view of the cluster (the official client, not tidemark's sink code).
pub struct Es {
    client: Elasticsearch,
}

type Docs = BTreeMap<String, Value>;

impl Es {
    pub fn new() -> Es {
        let url = es_url();
        let (bare, creds) = tidemark::sinks::elasticsearch::config::url_parts(&url).unwrap();
        let mut b = TransportBuilder::new(SingleNodeConnectionPool::new(Url::parse(&bare).unwrap()));
        if let Some((user, pass)) = creds {
            b = b.auth(Credentials::Basic(user, pass));
        }
        if let Ok(ca) = std::env::var("TIDEMARK_TEST_ES_CA") {
            let pem = std::fs::read(&ca).unwrap();
            b = b.cert_validation(CertificateValidation::Full(Certificate::from_pem(&pem).unwrap()));
        }
        Es { client: Elasticsearch::new(b.build().unwrap()) }
    }

    pub async fn req(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let resp = self
            .client
            .send(method, path, Default::default(), Option::<&()>::None, body.map(|b| b.to_string()), None)
            .await
            .unwrap_or_else(|e| panic!("cannot reach Elasticsearch at {}: {e} (run scripts/services.sh)", es_url()));
        let code = resp.status_code().as_u16();
        let text = resp.text().await.unwrap();
        (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The documents with these ids that exist, by `_id`, with their `_source`.
    pub async fn docs(&self, index: &str, ids: &[String]) -> Docs {
        let mut out = Docs::new();
        for chunk in ids.chunks(1000) {
            let docs: Vec<Value> = chunk.iter().map(|id| json!({ "_index": index, "_id": id })).collect();
            let (code, reply) = self.req(Method::Post, "/_mget", Some(json!({ "docs": docs }))).await;
            assert_eq!(code, 200, "{reply}");
            for d in reply["docs"].as_array().unwrap() {
                if d["found"] == true {
                    out.insert(d["_id"].as_str().unwrap().to_string(), d["_source"].clone());
                }
            }
        }
        out
    }

    /// A document's `_version`, if it exists.
    pub async fn version(&self, index: &str, id: &str) -> Option<i64> {
        let (code, reply) = self.req(Method::Get, &format!("/{index}/_doc/{id}"), None).await;
        (code == 200 && reply["found"] == true).then(|| reply["_version"].as_i64().unwrap())
    }

    /// How many documents the index holds (after a refresh).
    pub async fn count(&self, index: &str) -> u64 {
        self.req(Method::Post, &format!("/{index}/_refresh"), None).await;
        let (code, reply) = self.req(Method::Get, &format!("/{index}/_count"), None).await;
        if code == 404 && reply["error"]["type"] == "index_not_found_exception" {
            return 0;
        }
        assert_eq!(code, 200, "{reply}");
        reply["count"].as_u64().unwrap()
    }

    /// Delete the indices of a test connector (by name: clusters may refuse wildcard deletes).
    pub async fn cleanup(&self, connector: &str) {
        let (_, reply) = self.req(Method::Get, &format!("/_cat/indices/{connector}*?format=json"), None).await;
        for i in reply.as_array().into_iter().flatten() {
            if let Some(name) = i["index"].as_str() {
                self.req(Method::Delete, &format!("/{name}"), None).await;
            }
        }
    }

    /// Wait until the index holds exactly `expected()` (every document by `_id`, then the
    /// count), and none of `gone`.
    pub async fn wait_equal<F, Fut>(&self, index: &str, mut expected: F, gone: &[String], daemon: Option<&Daemon>)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Docs>,
    {
        let start = Instant::now();
        loop {
            let want = expected().await;
            // The count first: reading every document while the sink catches up would load the
            // cluster the sink is writing to.
            let n = self.count(index).await;
            let problem = if n != want.len() as u64 {
                Some(format!("the index holds {n} documents, the table {} rows", want.len()))
            } else {
                let mut ids: Vec<String> = want.keys().cloned().collect();
                ids.extend(gone.iter().cloned());
                let got = self.docs(index, &ids).await;
                (got != want).then(|| docs_diff(&want, &got))
            };
            let Some(problem) = problem else { return };
            if start.elapsed() > DEADLINE {
                panic!(
                    "index {index} never matched the table: {problem}\n{}",
                    daemon.map(|d| d.log()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn docs_diff(want: &Docs, got: &Docs) -> String {
    let mut out = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => out.push(format!("missing _id {k}: {v}")),
            Some(g) if g != v => out.push(format!("_id {k}: expected {v}, found {g}")),
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            out.push(format!("unexpected _id {k}: {v}"));
        }
    }
    let n = out.len();
    out.truncate(8);
    format!("{n} difference(s): {}", out.join("; "))
}

/// `(id text, document json text)` rows of `sql`, as documents by id.
async fn pg_docs(pg: &tokio_postgres::Client, sql: &str) -> Docs {
    pg.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), serde_json::from_str(&r.get::<_, String>(1)).unwrap()))
        .collect()
}

const ITEMS_DOC: &str =
    "SELECT id::text, jsonb_build_object('id', id, 'name', name, 'qty', qty, 'price', price::text, \
                         'tags', tags, 'flag', flag)::text FROM items";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_snapshot_and_stream_leave_every_document_equal_to_its_row() {
    let env = Env::new("esflow").await;
    let es = Es::new();
    env.pg
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text, qty int, price numeric(10,2), tags text[], flag bool);
             INSERT INTO items SELECT i, 'item ' || i, i, i * 1.25, ARRAY['t' || (i % 3)], i % 2 = 0
               FROM generate_series(1, 300) i;
             CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
             INSERT INTO pairs VALUES (1, 'x:y', 1), (1, 'x', 2), (2, 'y\\z', 3);",
        )
        .await
        .unwrap();
    env.write_config(&env.postgres_source(r#""public.items", "public.pairs""#, &es_sink("")));
    let mut d = env.start();
    d.wait_streaming().await;
    let items = format!("{}.public.items", env.name);
    let pairs = format!("{}.public.pairs", env.name);
    // A composite key's values are joined by `:`, each escaping `\` and `:`.
    let pairs_doc = "SELECT a::text || ':' || replace(replace(b, '\\', '\\\\'), ':', '\\:'), \
                     jsonb_build_object('a', a, 'b', b, 'v', v)::text FROM pairs";
    es.wait_equal(&items, || pg_docs(&env.pg, ITEMS_DOC), &[], Some(&d)).await;
    es.wait_equal(&pairs, || pg_docs(&env.pg, pairs_doc), &[], Some(&d)).await;
    let snapshot_version = es.version(&items, "1").await.unwrap();

    env.pg
        .batch_execute(
            "INSERT INTO items VALUES (301, 'new', 1, 0.5, '{}', NULL), (302, NULL, NULL, NULL, NULL, true);
             UPDATE items SET qty = qty + 100, name = 'renamed' WHERE id % 10 = 0;
             DELETE FROM items WHERE id % 7 = 0;
             BEGIN; UPDATE items SET qty = -1 WHERE id = 1; UPDATE items SET qty = -2 WHERE id = 1;
                    DELETE FROM items WHERE id = 2; INSERT INTO items VALUES (2, 'again', 2, 2, '{a}', false); COMMIT;
             UPDATE pairs SET v = 10 WHERE b = 'x:y';
             DELETE FROM pairs WHERE a = 2;
             UPDATE pairs SET b = 'moved' WHERE b = 'x';",
        )
        .await
        .unwrap();
    let gone: Vec<String> = (1..=300).filter(|i| i % 7 == 0).map(|i| i.to_string()).collect();
    es.wait_equal(&items, || pg_docs(&env.pg, ITEMS_DOC), &gone, Some(&d)).await;
    es.wait_equal(&pairs, || pg_docs(&env.pg, pairs_doc), &["2:y\\\\z".into(), "1:x".into()], Some(&d)).await;
    // Streamed writes carry newer versions than the snapshot's.
    assert!(es.version(&items, "1").await.unwrap() > snapshot_version);
    // The index was created with the cache settings.
    let (_, settings) = es.req(Method::Get, &format!("/{items}/_settings"), None).await;
    let index = &settings[&items]["settings"]["index"];
    assert_eq!(index["refresh_interval"], "1s", "{settings}");
    assert_eq!(index["gc_deletes"], "3600s", "{settings}");
    assert!(d.terminate().success());
    es.cleanup(&env.name).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_snapshot_and_stream_leave_every_document_equal_to_its_row() {
    let _shared = BINLOGS.read().await;
    let mut env = MyEnv::new("esmy").await;
    let es = Es::new();
    env.exec(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50), qty INT, price DECIMAL(10,2), note TEXT);
         INSERT INTO items SELECT seq, CONCAT('item ', seq), seq, seq * 1.25, REPEAT('n', seq)
           FROM seq_1_to_200;",
    )
    .await;
    env.write_config_with_sinks(&format!("\"{}.items\"", env.name), &es_sink(""));
    let mut d = env.start();
    d.wait_streaming().await;
    let index = format!("{0}.{0}.items", env.name);
    let sql = "SELECT CAST(id AS CHAR), JSON_OBJECT('id', id, 'name', name, 'qty', qty, 'price', CAST(price AS CHAR), \
               'note', note) FROM items";
    let url = format!("{}/{}", env.url, env.name);
    let expected = || {
        let url = url.clone();
        async move {
            let mut my = crate::mysql_redis::my_connect(&url).await;
            let rows: Vec<(String, String)> = mysql_async::prelude::Queryable::query(&mut my, sql).await.unwrap();
            rows.into_iter().map(|(id, doc)| (id, serde_json::from_str(&doc).unwrap())).collect::<Docs>()
        }
    };
    es.wait_equal(&index, expected, &[], Some(&d)).await;

    env.exec(
        "INSERT INTO items VALUES (201, 'new', 1, 0.5, NULL), (202, NULL, NULL, NULL, 'x');
         UPDATE items SET qty = qty + 100, name = 'renamed' WHERE id % 10 = 0;
         DELETE FROM items WHERE id % 7 = 0;
         START TRANSACTION; UPDATE items SET qty = -1 WHERE id = 1; DELETE FROM items WHERE id = 2;
           INSERT INTO items VALUES (2, 'again', 2, 2, 'y'); COMMIT;",
    )
    .await;
    let gone: Vec<String> = (1..=200).filter(|i| i % 7 == 0).map(|i| i.to_string()).collect();
    es.wait_equal(&index, expected, &gone, Some(&d)).await;
    assert!(d.terminate().success());
    es.cleanup(&env.name).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_replay_leaves_the_index_equal_to_the_table_and_never_goes_back() {
    let env = Env::new("eskill").await;
    let es = Arc::new(Es::new());
    env.create_accounts().await;
    // Small bulks and two lanes, so a kill lands between requests of one batch too.
    env.write_config(&env.postgres_source(r#""public.accounts""#, &es_sink("bulk_max_docs = 50\n")));
    let index = format!("{}.public.accounts", env.name);
    let sql = "SELECT id::text, jsonb_build_object('id', id, 'v', v, 'pad', pad)::text FROM accounts";
    let mut d = env.start();
    d.wait_streaming().await;
    es.wait_equal(&index, || pg_docs(&env.pg, sql), &[], Some(&d)).await;

    // Watch the index while the workload runs: a document's `v` only grows, and a document
    // deleted for good (ids are never reused) never comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, es, index) = (stop.clone(), es.clone(), index.clone());
        tokio::spawn(async move {
            let ids: Vec<String> = (1..=300).step_by(3).map(|i| i.to_string()).collect();
            let mut seen: HashMap<String, i64> = HashMap::new();
            let mut gone: HashSet<String> = HashSet::new();
            let mut violations = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let docs = es.docs(&index, &ids).await;
                for id in &ids {
                    match docs.get(id) {
                        Some(doc) => {
                            let v = doc["v"].as_i64().unwrap();
                            if gone.contains(id) {
                                violations.push(format!("{id} resurrected with v={v}"));
                            }
                            let prev = seen.entry(id.clone()).or_insert(v);
                            if v < *prev {
                                violations.push(format!("{id} went back from {prev} to {v}"));
                            }
                            *prev = (*prev).max(v);
                        }
                        None => {
                            gone.insert(id.clone());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            violations
        })
    };
    let workload = tokio::spawn(accounts_workload(env.db_url(), 2500, 11));
    wait_for("part of the workload applied", DEADLINE, || async {
        let applied = d.connector().await?["events_applied"].as_u64()?;
        (applied > 700).then_some(())
    })
    .await;
    d.kill9();
    let mut d = env.start();
    workload.await.unwrap();
    d.wait_streaming().await;
    es.wait_equal(&index, || pg_docs(&env.pg, sql), &[], Some(&d)).await;
    stop.store(true, Ordering::Relaxed);
    let violations = watcher.await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    assert!(d.terminate().success());
    es.cleanup(&env.name).await;
    env.cleanup().await;
}

fn event(op: Op, id: i64, hi: u64, name: Option<&str>, partial: bool) -> ChangeEvent {
    let key = Row(vec![(Arc::from("id"), V::Int(id))]);
    let mut after = vec![(Arc::from("id"), V::Int(id))];
    if let Some(n) = name {
        after.push((Arc::from("name"), V::Text(n.into())));
    }
    if !partial {
        after.push((Arc::from("n"), V::Int(hi as i64)));
    }
    ChangeEvent {
        op,
        table: Arc::new(TableRef { db: "db".into(), schema: "public".into(), name: "t".into() }),
        key,
        before: None,
        after: (op != Op::Delete).then_some(Row(after)),
        partial,
        version: Version::new(hi, 1),
        commit_us: 0,
        snapshot: SnapshotFlag::No,
        source: SourceMeta::Postgres { lsn: hi, last_commit_lsn: None, tx_id: None },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_writes_keep_the_newer_version_and_deletes_stay_deleted() {
    let name = unique("esorder");
    let es = Es::new();
    let text = format!(
        "name = \"{name}\"\n[source]\nkind = \"postgres\"\nurl = \"postgres://x@h/db\"\ntables = [\"public.t\"]\n{}",
        es_sink("")
    );
    let cfg = tidemark::config::parse_connector(std::path::Path::new("t.toml"), &text).unwrap();
    assert_eq!(cfg.sinks[0].kind_name(), "elasticsearch");
    let mut sink =
        cfg.sinks[0].spec.build(SinkContext { connector: name.as_str().into(), encoding: Encoding::default() });
    let index = format!("{name}.public.t");

    // The newer version first, then the older: the older is refused (409: already superseded).
    let r = sink.write(&[event(Op::Update, 1, 200, Some("new"), false)]).await.unwrap();
    assert_eq!((r.applied, r.stale), (1, 0));
    let r = sink.write(&[event(Op::Update, 1, 100, Some("old"), false)]).await.unwrap();
    assert_eq!((r.applied, r.stale), (0, 1));
    let doc = es.docs(&index, &["1".into()]).await;
    assert_eq!(doc["1"]["name"], "new");
    assert_eq!(es.version(&index, "1").await, Some(200));

    // A partial row older than the stored document changes nothing either.
    let r = sink.write(&[event(Op::Update, 1, 150, Some("partial-old"), true)]).await.unwrap();
    assert_eq!((r.applied, r.stale), (0, 1));
    assert_eq!(es.docs(&index, &["1".into()]).await["1"]["name"], "new");

    // Two versions in one batch, out of order, spread over lanes with other documents.
    let mut batch: Vec<ChangeEvent> = (10..60).map(|id| event(Op::Create, id, 300, Some("x"), false)).collect();
    batch.push(event(Op::Update, 2, 500, Some("b"), false));
    batch.push(event(Op::Update, 2, 400, Some("a"), false));
    let r = sink.write(&batch).await.unwrap();
    assert_eq!((r.applied, r.stale), (51, 1));
    assert_eq!(es.docs(&index, &["2".into()]).await["2"]["name"], "b");

    // A delete leaves a tombstone: a replayed older insert does not resurrect the document.
    let r = sink.write(&[event(Op::Delete, 1, 600, None, false)]).await.unwrap();
    assert_eq!(r.applied, 1);
    let r = sink.write(&[event(Op::Create, 1, 550, Some("zombie"), false)]).await.unwrap();
    assert_eq!((r.applied, r.stale), (0, 1));
    let r = sink.write(&[event(Op::Update, 1, 580, Some("zombie"), true)]).await.unwrap();
    assert_eq!((r.applied, r.stale), (0, 1));
    assert!(es.docs(&index, &["1".into()]).await.is_empty());
    // A newer insert after the delete does come back.
    sink.write(&[event(Op::Create, 1, 700, Some("reborn"), false)]).await.unwrap();
    assert_eq!(es.docs(&index, &["1".into()]).await["1"]["name"], "reborn");
    es.cleanup(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_the_mapping_rejects_is_dead_lettered_with_the_reason_and_later_rows_arrive() {
    let env = Env::new("esdead").await;
    let es = Es::new();
    env.pg
        .batch_execute(
            "CREATE TABLE readings (id int PRIMARY KEY, val text, note text);
             INSERT INTO readings VALUES (1, '10', 'a');",
        )
        .await
        .unwrap();
    let stream = format!("{}:dead", env.name);
    let sink = es_sink(&format!(
        "on_error = \"dead_letter\"\ndead_letter_url = \"{}\"\ndead_letter_stream = \"{stream}\"\n\
         [sink.mappings.\"public.readings\"]\nproperties = {{ val = {{ type = \"long\" }} }}\n",
        redis_url()
    ));
    env.write_config(&env.postgres_source(r#""public.readings""#, &sink));
    let mut d = env.start();
    d.wait_streaming().await;
    env.pg
        .batch_execute(
            "INSERT INTO readings VALUES (2, 'not a number', 'b');
             INSERT INTO readings VALUES (3, '30', 'c');
             UPDATE readings SET note = 'changed' WHERE id = 1;
             INSERT INTO readings VALUES (4, '40', 'd');",
        )
        .await
        .unwrap();
    let index = format!("{}.public.readings", env.name);
    // Every row but the rejected one, the stored `val` as the row had it.
    let sql =
        "SELECT id::text, jsonb_build_object('id', id, 'val', val, 'note', note)::text FROM readings WHERE id <> 2";
    es.wait_equal(&index, || pg_docs(&env.pg, sql), &["2".into()], Some(&d)).await;

    let mut r = redis_conn().await;
    let entries: Vec<(String, Vec<(String, String)>)> = wait_for("a dead letter", DEADLINE, || async {
        let raw: Vec<(String, Vec<String>)> =
            redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut redis_conn().await).await.ok()?;
        let entries: Vec<(String, Vec<(String, String)>)> = raw
            .into_iter()
            .map(|(id, flat)| (id, flat.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect()))
            .collect();
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let fields: HashMap<_, _> = entries[0].1.iter().cloned().collect();
    // Elasticsearch 8.8+ names it document_parsing_exception; earlier versions and OpenSearch
    // mapper_parsing_exception. Either way the reason names the field.
    let error = &fields["error"];
    assert!(error.contains("mapper_parsing_exception") || error.contains("document_parsing_exception"), "{fields:?}");
    assert!(error.contains("[val]"), "{fields:?}");
    assert!(fields["error"].contains("public.readings key 2"), "{fields:?}");
    assert_eq!(serde_json::from_str::<Value>(&fields["key"]).unwrap(), json!({ "id": 2 }));
    let value: Value = serde_json::from_str(&fields["value"]).unwrap();
    assert_eq!(value["after"]["val"], "not a number");
    assert_eq!(value["op"], "c");
    let metrics = d.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("tidemark_sink_events_total{")
            && l.contains("outcome=\"dead_lettered\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(d.terminate().success());
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut r).await.unwrap();
    es.cleanup(&env.name).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_leaving_a_toasted_column_unchanged_keeps_the_field() {
    let env = Env::new("estoast").await;
    let es = Es::new();
    env.pg
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, n int, body text);
             ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
             INSERT INTO docs VALUES (1, 1, repeat('x', 20000)), (2, 1, 'short');",
        )
        .await
        .unwrap();
    env.write_config(
        &env.postgres_source(r#""public.docs""#, &format!("{}[[sink]]\nkind = \"stdout\"\n", es_sink(""))),
    );
    let mut d = env.start();
    d.wait_streaming().await;
    let index = format!("{}.public.docs", env.name);
    let sql = "SELECT id::text, jsonb_build_object('id', id, 'n', n, 'body', body)::text FROM docs";
    es.wait_equal(&index, || pg_docs(&env.pg, sql), &[], Some(&d)).await;
    env.pg
        .batch_execute(
            "UPDATE docs SET n = 2 WHERE id = 1;
             BEGIN; UPDATE docs SET n = 3 WHERE id = 1; UPDATE docs SET n = 3, body = repeat('y', 20000) WHERE id = 2; COMMIT;",
        )
        .await
        .unwrap();
    es.wait_equal(&index, || pg_docs(&env.pg, sql), &[], Some(&d)).await;
    // The stream really sent the updates without the TOASTed value.
    let out = std::fs::read_to_string(&d.stdout).unwrap();
    let partial = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["op"] == "u" && e["after"]["id"] == 1)
        .collect::<Vec<_>>();
    assert_eq!(partial.len(), 2);
    assert!(
        partial.iter().all(|e| e["after"]["body"] == "__debezium_unavailable_value"),
        "expected the placeholder for the unchanged TOAST value: {partial:?}"
    );
    assert!(d.terminate().success());
    es.cleanup(&env.name).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elasticsearch_outage_pauses_the_source_reports_the_sink_and_loses_nothing() {
    let env = Env::new("esout").await;
    let es = Es::new();
    // The proxy forwards to the cluster's host:port (TLS passes through untouched).
    let (bare, creds) = tidemark::sinks::elasticsearch::config::url_parts(&es_url()).unwrap();
    let target = bare.split("://").nth(1).unwrap().split('/').next().unwrap().to_string();
    let proxy = Proxy::start(target).await;
    env.pg
        .batch_execute(
            "CREATE TABLE events (id int PRIMARY KEY, payload text NOT NULL);
             INSERT INTO events SELECT i, md5(i::text) FROM generate_series(1, 500) i;",
        )
        .await
        .unwrap();
    let scheme = es_url().split("://").next().unwrap().to_string();
    let url = match creds {
        Some((u, p)) => format!("{scheme}://{u}:{p}@127.0.0.1:{}", proxy.port),
        None => format!("{scheme}://127.0.0.1:{}", proxy.port),
    };
    env.write_config(&env.postgres_source(r#""public.events""#, &es_sink_at(&url, "request_timeout = \"2s\"\n")));
    let mut d = env.start();
    d.wait_streaming().await;
    let index = format!("{}.public.events", env.name);
    let sql = "SELECT id::text, jsonb_build_object('id', id, 'payload', payload)::text FROM events";
    es.wait_equal(&index, || pg_docs(&env.pg, sql), &[], Some(&d)).await;
    let baseline = d.rss_kib();

    proxy.cut();
    env.pg
        .batch_execute("INSERT INTO events SELECT i, repeat(md5(i::text), 20) FROM generate_series(501, 20500) i;")
        .await
        .unwrap();
    // Health turns 503, and the sink says it is retrying, with its backlog and last error.
    let sink = wait_for("503 naming the elasticsearch sink", DEADLINE, || async {
        let (code, h) = d.health().await?;
        let sink = h["connectors"][0]["sinks"][0].clone();
        (code == 503 && sink["state"] == "retrying" && sink["backlog"].as_u64()? > 0).then_some(sink)
    })
    .await;
    assert!(sink["last_error"].as_str().unwrap().starts_with("elasticsearch"), "{sink}");
    let mut peak = baseline;
    let sample_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < sample_until {
        peak = peak.max(d.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth_mib = (peak - baseline) / 1024;
    assert!(growth_mib < 80, "memory grew by {growth_mib} MiB while the sink was down");

    proxy.restore();
    es.wait_equal(&index, || pg_docs(&env.pg, sql), &[], Some(&d)).await;
    wait_for("healthy again", DEADLINE, || async {
        let (code, _) = d.health().await?;
        (code == 200).then_some(())
    })
    .await;
    assert!(d.terminate().success());
    es.cleanup(&env.name).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_cluster_version_and_an_unreachable_cluster_with_the_fix() {
    let env = Env::new("escheck").await;
    env.pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let sinks = format!("{}{}", es_sink("name = \"live\"\n"), es_sink_at(&dead, "name = \"dead\"\n"));
    env.write_config(&env.postgres_source(r#""public.t""#, &sinks));
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["check", "-c"])
        .arg(env.dir.join("tidemark.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let live = text.split("sink live").nth(1).unwrap().split("sink dead").next().unwrap();
    assert!(live.contains("ok    connected to "), "{text}");
    assert!(!live.contains("ERROR"), "{text}");
    let dead_part = text.split("sink dead").nth(1).unwrap();
    assert!(dead_part.contains("ERROR") && dead_part.contains("check sink.url"), "{text}");
    env.cleanup().await;
}

/// Run `cmd`, failing the test with its output if it fails.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/services.sh)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, and a certificate it signed for 127.0.0.1; returns (CA file, server cert+key file).
fn make_certs(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let p = |f: &str| dir.join(f);
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=tidemark test CA"])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")));
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(p("srv.key"))
        .arg("-out")
        .arg(p("srv.csr")));
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
        .arg("-in")
        .arg(p("srv.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("srv.pem")));
    let bundle = std::fs::read_to_string(p("srv.pem")).unwrap() + &std::fs::read_to_string(p("srv.key")).unwrap();
    std::fs::write(p("srv-bundle.pem"), bundle).unwrap();
    (p("ca.pem"), p("srv-bundle.pem"))
}

/// A socat child, killed on drop.
struct Socat(std::process::Child);

impl Socat {
    fn start(args: &[String]) -> Socat {
        let child = Command::new("socat")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat (scripts/services.sh installs it)");
        Socat(child)
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file_sends_the_credentials_and_never_shows_them() {
    let env = Env::new("estls").await;
    let es = Es::new();
    env.pg
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');")
        .await
        .unwrap();
    let (ca, bundle) = make_certs(&env.dir.join("tls"));

    // tidemark —TLS→ socat —plain→ sniffing relay —→ the cluster (through a second socat when the
    // cluster itself speaks https).
    let (bare, creds) = tidemark::sinks::elasticsearch::config::url_parts(&es_url()).unwrap();
    let host_port = bare.split("://").nth(1).unwrap().split('/').next().unwrap().to_string();
    let mut _socats = Vec::new();
    let upstream = if bare.starts_with("https://") {
        let port = free_port();
        let ca_opt = std::env::var("TIDEMARK_TEST_ES_CA").map(|c| format!(",cafile={c}")).unwrap_or(",verify=0".into());
        _socats.push(Socat::start(&[
            format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
            format!("OPENSSL:{host_port}{ca_opt}"),
        ]));
        format!("127.0.0.1:{port}")
    } else {
        host_port
    };
    let relay = Proxy::start(upstream).await;
    let tls_port = free_port();
    _socats.push(Socat::start(&[
        format!("OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},verify=0", bundle.display()),
        format!("TCP:127.0.0.1:{}", relay.port),
    ]));
    let url = format!("https://127.0.0.1:{tls_port}");
    wait_for("socat listening", DEADLINE, || async {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok().map(|_| ())
    })
    .await;

    // The cluster's credentials if it has some; otherwise made-up ones (the local server does not
    // check them) — both kinds.
    let (user, password) = creds.unwrap_or_else(|| ("tidemark".into(), format!("pw-{}", env.name)));
    let api_key = format!("a2V5LWZvci1{}", env.name.replace('_', ""));
    let basic = format!("username = \"{user}\"\npassword = \"{password}\"\nca_file = \"{}\"\n", ca.display());
    let with_key = format!("name = \"keyed\"\napi_key = \"{api_key}\"\nca_file = \"{}\"\n", ca.display());
    let sink = |body: &str| format!("[[sink]]\nkind = \"elasticsearch\"\nurl = \"{url}\"\n{body}");
    let mut sinks = sink(&basic);
    if std::env::var("TIDEMARK_TEST_ES_URL").is_err() {
        sinks += &sink(&format!("{with_key}index = \"{{connector}}.keyed.{{table}}\"\n"));
    }
    env.write_config(&env.postgres_source(r#""public.t""#, &sinks));

    // check: the CA file makes the certificate trusted.
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["check", "-c"])
        .arg(env.dir.join("tidemark.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("connected to"), "{text}");
    assert!(!text.contains(&password) && !text.contains(&api_key), "a secret in check output: {text}");

    let mut d = env.start();
    d.wait_streaming().await;
    let sql = "SELECT id::text, jsonb_build_object('id', id, 'v', v)::text FROM t";
    es.wait_equal(&format!("{}.public.t", env.name), || pg_docs(&env.pg, sql), &[], Some(&d)).await;
    let sent = relay.sent_text().to_lowercase();
    let basic_header = format!("authorization: basic {}", base64_encode(&format!("{user}:{password}"))).to_lowercase();
    assert!(sent.contains(&basic_header), "no basic credentials in what tidemark sent");
    if std::env::var("TIDEMARK_TEST_ES_URL").is_err() {
        es.wait_equal(&format!("{}.keyed.t", env.name), || pg_docs(&env.pg, sql), &[], Some(&d)).await;
        assert!(sent.contains(&format!("authorization: apikey {}", api_key.to_lowercase())), "no API key sent");
    }
    let (_, connectors) = d.get("/connectors").await.unwrap();
    assert!(connectors.contains("***"), "{connectors}");
    assert!(!connectors.contains(&password) && !connectors.contains(&api_key), "{connectors}");
    assert!(d.terminate().success());
    assert!(!d.log().contains(&password) && !d.log().contains(&api_key));

    // Without the CA file the certificate is not trusted: check says so.
    let plain = env.dir.join("connectors").join(format!("{}.toml", env.name));
    let text = std::fs::read_to_string(&plain).unwrap().replace(&format!("ca_file = \"{}\"\n", ca.display()), "");
    std::fs::write(&plain, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["check", "-c"])
        .arg(env.dir.join("tidemark.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ERROR") && text.contains("ca_file"), "{text}");
    es.cleanup(&env.name).await;
    env.cleanup().await;
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
