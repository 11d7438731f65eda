//! PostgreSQL over TLS, as managed servers require it: the server (services.sh) admits
//! `tidemark_tls` only over TLS with its password and `tidemark_cert` only with its client
//! certificate; its certificate, from a test CA, names `localhost` and not `127.0.0.1`.

use crate::support::*;

const PASSWORD: &str = "tidemark-tls-password";

fn redis_sink() -> String {
    format!("[[sink]]\nkind = \"redis\"\nurl = \"{}\"\n", redis_url())
}

/// A source on the test's database as `user` at `host`, with URL parameters `params`.
fn source(env: &Env, user: &str, host: &str, params: &str, tables: &str) -> String {
    let auth = if user == "tidemark_tls" { format!("{user}:{PASSWORD}") } else { user.to_string() };
    format!(
        "[source]\nkind = \"postgres\"\nurl = \"postgres://{auth}@{host}:5432/{}?{params}\"\ntables = [{tables}]\n",
        env.name
    )
}

/// Whether every connection tidemark holds (SQL and the replication stream) is encrypted.
async fn tidemark_connections_encrypted(env: &Env) -> Option<(i64, i64)> {
    let row = env
        .pg
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.usename IN ('tidemark_tls', 'tidemark_cert') AND a.datname = current_database()",
            &[],
        )
        .await
        .ok()?;
    Some((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_snapshots_and_streams_over_tls_and_resumes_after_kill9() {
    let env = Env::new("pgtls").await;
    env.create_accounts().await;
    let params = format!("sslmode=verify-full&sslrootcert={}", tls_file("pg", "ca.pem"));
    env.write_config(&format!(
        "{}{}",
        source(&env, "tidemark_tls", "localhost", &params, r#""public.accounts""#),
        redis_sink()
    ));
    let prefix = format!("{}:accounts", env.name);
    let mut d = env.start();
    d.wait_streaming().await;
    wait_equal(&env.pg, ACCOUNTS_ROWS, &prefix, Some(&d)).await;
    // The replication stream and the SQL sessions are all encrypted (the server would refuse
    // them otherwise; this says so directly).
    let (all, encrypted) = wait_for("tidemark's sessions", DEADLINE, || async {
        tidemark_connections_encrypted(&env).await.filter(|c| c.0 > 0)
    })
    .await;
    assert_eq!(all, encrypted, "{all} sessions, {encrypted} over TLS\n{}", d.log());

    let mut d = kill9_under_accounts_workload(&env, d, &prefix, 500, 2000, 11).await;
    assert!(!d.log().contains(PASSWORD), "{}", d.log());
    assert!(d.terminate().success(), "{}", d.log());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_admits_the_cert_role() {
    let env = Env::new("pgcert").await;
    env.pg
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, name text); INSERT INTO t SELECT i, 'n' || i FROM generate_series(1, 50) i;")
        .await
        .unwrap();
    let params = format!(
        "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        tls_file("pg", "ca.pem"),
        tls_file("pg", "client.pem"),
        tls_file("pg", "client.key")
    );
    env.write_config(&format!(
        "{}{}",
        source(&env, "tidemark_cert", "localhost", &params, r#""public.t""#),
        redis_sink()
    ));
    let (code, text) = env.check();
    assert_eq!(code, Some(0), "{text}");
    let mut d = env.start();
    d.wait_streaming().await;
    env.pg.batch_execute("UPDATE t SET name = 'changed' WHERE id % 5 = 0; DELETE FROM t WHERE id = 1;").await.unwrap();
    wait_equal(&env.pg, "SELECT id, name FROM t", &format!("{}:t", env.name), Some(&d)).await;
    assert!(d.terminate().success(), "{}", d.log());

    // Without the certificate the role is refused, and the error names what to set.
    let params = format!("sslmode=verify-full&sslrootcert={}", tls_file("pg", "ca.pem"));
    env.write_config(&format!(
        "{}{}",
        source(&env, "tidemark_cert", "localhost", &params, r#""public.t""#),
        redis_sink()
    ));
    let (code, text) = env.check();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("certificate"), "{text}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_a_foreign_ca_and_a_wrong_host_name_are_refused_with_the_fix() {
    let env = Env::new("pgtlsno").await;
    env.pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let tables = r#""public.t""#;
    let write = |user: &str, host: &str, params: &str| {
        env.write_config(&format!("{}{}", source(&env, user, host, params, tables), redis_sink()));
    };
    let ca = tls_file("pg", "ca.pem");

    // Plaintext: the server refuses this role without TLS; check says to set sslmode.
    write("tidemark_tls", "127.0.0.1", "sslmode=disable");
    let (code, text) = env.check();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("only over TLS") && text.contains("set sslmode"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");

    // A CA that did not sign the server's certificate.
    let other = env.other_ca();
    write("tidemark_tls", "localhost", &format!("sslmode=verify-full&sslrootcert={}", other.display()));
    let (code, text) = env.check();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not signed by a CA") && text.contains("set sslrootcert"), "{text}");

    // A host name the certificate does not carry: refused by verify-full, accepted by verify-ca.
    write("tidemark_tls", "127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"));
    let (code, text) = env.check();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("does not carry the host name `127.0.0.1`") && text.contains("verify-ca"), "{text}");
    write("tidemark_tls", "127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    let (code, text) = env.check();
    assert!(!text.contains("cannot connect"), "{text}");
    assert_ne!(code, None, "{text}");

    // The daemon is held to the same: with the foreign CA it stops the
    // connector with the reason, it does not retry forever.
    write("tidemark_tls", "localhost", &format!("sslmode=verify-full&sslrootcert={}", other.display()));
    let d = env.start();
    let c = wait_for("the connector failed", DEADLINE, || async {
        let c = d.connector().await?;
        (c["state"] == "failed").then_some(c)
    })
    .await;
    assert!(c["last_error"].as_str().unwrap_or("").contains("set sslrootcert"), "{c}");
    drop(d);
    env.cleanup().await;
}
