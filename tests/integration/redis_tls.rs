//! The Redis sink and the dead-letter stream over TLS, as managed Redis requires (ElastiCache
//! in-transit encryption, Upstash): the servers services.sh starts with a test CA's certificate.
//! tidemark connects over TLS; the tests read through each server's plaintext port.

use std::collections::HashMap;

use crate::support::*;

const PASSWORD: &str = "tidemark-redis-password";

async fn plain(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Redis on {port}: {e} (run scripts/services.sh)"))
}

/// Delete the test's keys (rows, versions, dead letters) on the servers of `ports`.
async fn cleanup_keys(name: &str, ports: &[u16]) {
    for &port in ports {
        let mut r = plain(port).await;
        for pattern in [format!("{name}:*"), format!("tidemark:v:{{{name}:*")] {
            // One by one: on a cluster node the keys are in different slots.
            for key in scan(&mut r, &pattern).await {
                let _: () = redis::cmd("DEL").arg(&key).query_async(&mut r).await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_over_tls_keeps_the_table_and_dead_letters_reach_a_tls_stream() {
    let env = Env::new("rtls").await;
    env.pg
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, name text, n int);
             INSERT INTO t SELECT i, 'n' || i, i FROM generate_series(1, 200) i;
             CREATE TABLE bad (id int PRIMARY KEY, v text);",
        )
        .await
        .unwrap();
    // A key of another type where a row of `bad` goes: Redis refuses that row.
    let mut r = plain(6389).await;
    let _: () = redis::cmd("SET").arg(format!("{}:bad:1", env.name)).arg("a string").query_async(&mut r).await.unwrap();
    let url = format!("rediss://tidemark:{PASSWORD}@127.0.0.1:6390");
    let ca = tls_file("redis", "ca.pem");
    let stream = format!("{}:dead", env.name);
    env.write_config(&env.postgres_source(
        r#""public.t", "public.bad""#,
        &format!(
            "[[sink]]\nkind = \"redis\"\nurl = \"{url}\"\nca_file = \"{ca}\"\non_error = \"dead_letter\"\n\
             dead_letter_url = \"{url}\"\ndead_letter_ca_file = \"{ca}\"\ndead_letter_stream = \"{stream}\"\n"
        ),
    ));
    let (code, text) = env.check();
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");

    let mut d = env.start();
    d.wait_streaming().await;
    let sql = "SELECT id, name, n FROM t";
    let prefix = format!("{}:t", env.name);
    wait_equal_on("redis://127.0.0.1:6389", &env.pg, sql, &prefix, Some(&d)).await;
    env.pg
        .batch_execute(
            "UPDATE t SET name = 'changed' WHERE id % 7 = 0; DELETE FROM t WHERE id % 11 = 0;
             INSERT INTO bad VALUES (1, 'refused'); INSERT INTO t VALUES (1000, 'late', 0);",
        )
        .await
        .unwrap();
    wait_equal_on("redis://127.0.0.1:6389", &env.pg, sql, &prefix, Some(&d)).await;
    let entries: Vec<(String, HashMap<String, String>)> = wait_for("a dead letter", DEADLINE, || async {
        let raw: Vec<(String, HashMap<String, String>)> =
            redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut plain(6389).await).await.ok()?;
        (!raw.is_empty()).then_some(raw)
    })
    .await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].1["error"].contains(&format!("key {}:bad:1: WRONGTYPE", env.name)), "{entries:?}");
    let connectors = d.get("/connectors").await.unwrap().1;
    assert!(!connectors.contains(PASSWORD) && connectors.contains("rediss://tidemark:***@"), "{connectors}");
    assert!(d.terminate().success(), "{}", d.log());
    assert!(!d.log().contains(PASSWORD), "{}", d.log());
    cleanup_keys(&env.name, &[6389]).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate_and_a_foreign_ca_is_refused() {
    let env = Env::new("rmtls").await;
    env.pg
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, name text); INSERT INTO t SELECT i, 'n' || i FROM generate_series(1, 50) i;")
        .await
        .unwrap();
    let ca = tls_file("redis", "ca.pem");
    let sink = |extra: &str| {
        env.write_config(&env.postgres_source(r#""public.t""#, &format!("[[sink]]\nkind = \"redis\"\n{extra}")));
    };

    // The server asks for a client certificate: without one the handshake fails, and says so.
    sink(&format!("url = \"rediss://127.0.0.1:6391\"\nca_file = \"{ca}\"\n"));
    let (code, text) = env.check();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("set cert_file and key_file"), "{text}");

    // With it, the sink works.
    let certs = format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"\n",
        tls_file("redis", "client.pem"),
        tls_file("redis", "client.key")
    );
    sink(&format!("url = \"rediss://127.0.0.1:6391\"\nca_file = \"{ca}\"\n{certs}"));
    let (code, text) = env.check();
    assert_eq!(code, Some(0), "{text}");
    let mut d = env.start();
    d.wait_streaming().await;
    env.pg.batch_execute("UPDATE t SET name = 'x' WHERE id < 10; DELETE FROM t WHERE id = 20;").await.unwrap();
    wait_equal_on("redis://127.0.0.1:6388", &env.pg, "SELECT id, name FROM t", &format!("{}:t", env.name), Some(&d))
        .await;
    assert!(d.terminate().success(), "{}", d.log());

    // A CA that did not sign the server's certificate is refused, with the setting to change.
    let other = env.other_ca();
    sink(&format!("url = \"rediss://127.0.0.1:6390\"\nca_file = \"{}\"\n", other.display()));
    let (code, text) = env.check();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("set ca_file"), "{text}");

    // tls_insecure skips verification, and says so loudly.
    sink("url = \"rediss://127.0.0.1:6390\"\ntls_insecure = true\n");
    let (code, text) = env.check();
    assert!(text.contains("tls_insecure = true: the server's certificate is not verified"), "{text}");
    assert!(text.contains("connected; write scripts loaded"), "{text}");
    assert_eq!(code, Some(0), "{text}");
    let mut d = env.start();
    d.wait_streaming().await;
    assert!(d.terminate().success(), "{}", d.log());
    assert!(d.log().contains("tls_insecure = true: the server's certificate is not verified"), "{}", d.log());

    // TLS settings with a plaintext URL are a configuration error, not silently ignored.
    sink(&format!("url = \"redis://127.0.0.1:6389\"\nca_file = \"{ca}\"\n"));
    let (code, text) = env.check();
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("use a rediss:// URL"), "{text}");
    cleanup_keys(&env.name, &[6388, 6389]).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_over_tls_keeps_the_table() {
    let env = Env::new("rctls").await;
    env.pg
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, name text, score int);
             INSERT INTO users SELECT i, 'u' || i, i FROM generate_series(1, 300) i;",
        )
        .await
        .unwrap();
    env.write_config(&env.postgres_source(
        r#""public.users""#,
        &format!(
            "[[sink]]\nkind = \"redis\"\nurl = \"rediss://127.0.0.1:7100\"\ncluster = true\nca_file = \"{}\"\n",
            tls_file("redis", "ca.pem")
        ),
    ));
    let mut d = env.start();
    d.wait_streaming().await;
    let sql = "SELECT id, name, score FROM users";
    let prefix = format!("{}:users", env.name);
    // Every primary's keys, read through its plaintext port.
    let check = || async {
        let expected = table_rows(&env.pg, sql).await;
        let mut actual = Rows::new();
        for port in [7200, 7201, 7202] {
            actual.extend(redis_hashes(&mut plain(port).await, &prefix).await);
        }
        (expected == actual).then_some(())
    };
    wait_for("the TLS cluster to hold the snapshot", DEADLINE, check).await;
    env.pg
        .batch_execute("UPDATE users SET score = score * 2 WHERE id % 3 = 0; DELETE FROM users WHERE id > 250;")
        .await
        .unwrap();
    wait_for("the TLS cluster to hold the changes", DEADLINE, check).await;
    assert!(d.terminate().success(), "{}", d.log());
    cleanup_keys(&env.name, &[7200, 7201, 7202]).await;
    env.cleanup().await;
}
