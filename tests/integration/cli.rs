//! The command line: configuration errors, `check`, `offsets`, `status`, pause/resume.

use std::process::Output;

use crate::support::*;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_config_with_several_mistakes_lists_them_all() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it").join(unique("badcfg"));
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::write(
        dir.join("tidemark.toml"),
        "data_dir = \"data\"\nhttp_addr = \"not-an-address\"\nconnectors_dir = \"conf.d\"\ncolour = \"blue\"\nmax_lag = \"soon\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("conf.d/a.toml"),
        r#"name = "a"
[source]
kind = "postgres"
tables = ["public.t", "no_schema"]
snapshot = "sometimes"
password = "${TIDEMARK_TEST_SURELY_UNSET}"
[[sink]]
kind = "redis"
url = "redis://:hunter2@127.0.0.1:6379/0"
format = "xml"
key = "{table}"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("conf.d/b.toml"),
        "name = \"a\"\n[source]\nkind = \"oracle\"\n[[sink]]\nkind = \"carrier-pigeon\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("conf.d/c.toml"), "name = \"c\"\n[source\nkind = \"postgres\"\n").unwrap();

    for cmd in ["check", "run"] {
        let out = tidemark(&dir, &[cmd, "-c", "tidemark.toml"]);
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {msg}");
        for want in [
            "tidemark.toml: http_addr: `not-an-address` is not an address",
            "tidemark.toml: colour: unknown key",
            "tidemark.toml: max_lag: `soon` is not a duration",
            "a.toml: source.password (line 6): environment variable TIDEMARK_TEST_SURELY_UNSET is not set",
            "a.toml: source.url: is required",
            "a.toml: source.tables[1]: `no_schema` is not of the form \"schema.table\"",
            "a.toml: source.snapshot: `sometimes` is not one of initial | never",
            "a.toml: source.password: unknown key",
            "a.toml: sink[0].format: `xml` is not one of hash | json",
            "a.toml: sink[0].key: `{table}` has no {key}",
            "b.toml: source.kind: unknown source kind `oracle`",
            "b.toml: sink[0].kind: unknown sink kind `carrier-pigeon`",
            "c.toml: invalid TOML",
        ] {
            assert!(msg.contains(want), "{cmd}: missing `{want}` in:\n{msg}");
        }
        assert!(!msg.contains("hunter2"), "a secret leaked:\n{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_fix_for_wal_level_replica() {
    let admin = pg_connect(&format!("{}/postgres", pg_replica_url())).await;
    let db = unique("walrep");
    admin.batch_execute(&format!("CREATE DATABASE \"{db}\"")).await.unwrap();
    let pg = pg_connect(&format!("{}/{db}", pg_replica_url())).await;
    pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE nokey (v int);").await.unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it").join(&db);
    std::fs::create_dir_all(dir.join("connectors")).unwrap();
    std::fs::write(dir.join("tidemark.toml"), "data_dir = \"data\"\n").unwrap();
    std::fs::write(
        dir.join("connectors/r.toml"),
        format!(
            "name = \"r\"\n[source]\nkind = \"postgres\"\nurl = \"{}/{db}\"\ntables = [\"public.*\"]\n[[sink]]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n",
            pg_replica_url()
        ),
    )
    .unwrap();
    let out = tidemark(&dir, &["check", "-c", "tidemark.toml"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("wal_level is replica; run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL"),
        "{msg}"
    );
    assert!(
        msg.contains("table public.nokey has no primary key")
            && msg.contains("ALTER TABLE \"public\".\"nokey\" REPLICA IDENTITY FULL"),
        "{msg}"
    );
    assert!(msg.contains("sink redis (redis redis://127.0.0.1:1/)") || msg.contains("127.0.0.1:1"), "{msg}");
    assert!(msg.contains("ERROR redis"), "the unreachable sink is an error: {msg}");
    drop(pg);
    admin.batch_execute(&format!("DROP DATABASE \"{db}\" WITH (FORCE)")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_offsets_and_pause_work_on_a_good_setup() {
    let env = Env::new("cli").await;
    env.pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');").await.unwrap();
    env.write_config(&env.postgres_source(
        r#""public.t""#,
        &format!("[[sink]]\nkind = \"redis\"\nurl = \"{}\"\n[[sink]]\nkind = \"stdout\"\n", redis_url()),
    ));
    let out = tidemark(&env.dir, &["check", "-c", "tidemark.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 error(s)"));

    let mut d = env.start();
    d.wait_streaming().await;
    let sql = "SELECT id, v FROM t";
    let prefix = format!("{}:t", env.name);
    wait_equal(&env.pg, sql, &prefix, Some(&d)).await;

    // While the daemon runs, the state store is locked.
    let out = tidemark(&env.dir, &["offsets", "show", "-c", "tidemark.toml"]);
    assert!(!out.status.success() && text(&out).contains("already open"), "{}", text(&out));

    // status prints a table.
    let out = tidemark(&env.dir, &["status", "-c", "tidemark.toml"]);
    let msg = text(&out);
    assert!(msg.contains("CONNECTOR") && msg.contains(&env.name) && msg.contains("streaming"), "{msg}");

    // Pause: the connector stops applying (and health says so); resume catches up.
    let (code, _) = tidemark::http::request(&d.http, "POST", &format!("/connectors/{}/pause", env.name)).await.unwrap();
    assert_eq!(code, 202);
    env.pg.batch_execute("INSERT INTO t VALUES (2, 'while paused')").await.unwrap();
    let (code, h) = d.health().await.unwrap();
    assert_eq!(code, 503);
    assert_eq!(h["connectors"][0]["state"], "paused");
    let (code, _) =
        tidemark::http::request(&d.http, "POST", &format!("/connectors/{}/resume", env.name)).await.unwrap();
    assert_eq!(code, 202);
    wait_equal(&env.pg, sql, &prefix, Some(&d)).await;
    let (code, body) = tidemark::http::request(&d.http, "GET", "/connectors").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"slot\"") && body.contains("\"tables\""), "{body}");
    assert!(d.terminate().success());

    let out = tidemark(&env.dir, &["offsets", "show", "-c", "tidemark.toml"]);
    let msg = text(&out);
    assert!(out.status.success() && msg.contains(&env.name) && msg.contains("\"lsn\""), "{msg}");

    // Reset: the next start reads the snapshot again.
    let out = tidemark(&env.dir, &["offsets", "reset", &env.name, "-c", "tidemark.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut d = env.start();
    d.wait_streaming().await;
    let snapshot_rows = wait_for("the re-snapshot", DEADLINE, || async {
        let out = std::fs::read_to_string(&d.stdout).ok()?;
        let n = out.lines().filter(|l| l.contains("\"op\":\"r\"")).count();
        (n == 2).then_some(n)
    })
    .await;
    assert_eq!(snapshot_rows, 2);
    assert!(d.terminate().success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_api_guards_what_changes_state_and_status_sends_the_token() {
    let env = Env::new("auth").await;
    env.pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);").await.unwrap();
    let daemon_file = env.write_config(
        &env.postgres_source(r#""public.t""#, &format!("[[sink]]\nkind = \"redis\"\nurl = \"{}\"\n", redis_url())),
    );
    let base = std::fs::read_to_string(&daemon_file).unwrap();
    let token = "0123456789abcdef-t0ken-value";
    std::fs::write(env.dir.join("token"), format!("{token}\n")).unwrap();
    std::fs::write(&daemon_file, format!("{base}http_token_file = \"token\"\n")).unwrap();
    let mut d = env.start();
    d.wait_streaming().await;
    let pause = format!("/connectors/{}/pause", env.name);
    let (code, body) = tidemark::http::request(&d.http, "POST", &pause).await.unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let (code, _) =
        tidemark::http::request_with(&d.http, "POST", &pause, Some("wrong-token-of-some-length")).await.unwrap();
    assert_eq!(code, 401);
    let (code, _) = tidemark::http::request_with(&d.http, "POST", &pause, Some(token)).await.unwrap();
    assert_eq!(code, 202);
    // Probes stay open by default.
    let (code, _) = tidemark::http::request(&d.http, "GET", "/health").await.unwrap();
    assert_ne!(code, 401);
    let (code, _) = tidemark::http::request(&d.http, "GET", "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let (_, connectors) = tidemark::http::request_with(&d.http, "GET", "/connectors", Some(token)).await.unwrap();
    assert!(d.terminate().success());
    assert!(!d.log().contains(token) && !connectors.contains(token), "the token leaked");

    // http_auth = "all": every endpoint, and `tidemark status` sends the daemon file's token.
    std::fs::write(&daemon_file, format!("{base}http_token = \"{token}\"\nhttp_auth = \"all\"\n")).unwrap();
    let mut d = env.start();
    wait_for("the daemon up", DEADLINE, || async {
        let (code, _) = tidemark::http::request(&d.http, "GET", "/health").await.ok()?;
        (code == 401).then_some(())
    })
    .await;
    let (code, _) = tidemark::http::request_with(&d.http, "GET", "/health", Some(token)).await.unwrap();
    assert_ne!(code, 401);
    let out = tidemark(&env.dir, &["status", "-c", "tidemark.toml"]);
    assert!(text(&out).contains("CONNECTOR"), "{}", text(&out));
    assert!(d.terminate().success());

    // A short token, or "all" without one, is refused with the key.
    std::fs::write(&daemon_file, format!("{base}http_token = \"short\"\n")).unwrap();
    let out = tidemark(&env.dir, &["check", "--config-only", "-c", "tidemark.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("http_token") && !text(&out).contains("\"short\""), "{}", text(&out));
    std::fs::write(&daemon_file, format!("{base}http_auth = \"all\"\n")).unwrap();
    let out = tidemark(&env.dir, &["check", "--config-only", "-c", "tidemark.toml"]);
    assert!(text(&out).contains("http_auth"), "{}", text(&out));

    // An API reachable from other machines without a token is warned about, in check and at start.
    let open = base.replace("http_addr = \"127.0.0.1:", "http_addr = \"0.0.0.0:");
    assert_ne!(open, base);
    std::fs::write(&daemon_file, &open).unwrap();
    let out = tidemark(&env.dir, &["check", "-c", "tidemark.toml"]);
    let warning = "is reachable from other machines and no http_token is set";
    assert!(out.status.success() && text(&out).contains(warning), "{}", text(&out));
    assert!(text(&out).contains("1 warning(s)"), "{}", text(&out));
    let mut d = env.start();
    d.wait_streaming().await;
    assert!(d.terminate().success());
    assert!(d.log().contains(warning), "{}", d.log());
    std::fs::write(&daemon_file, format!("{open}http_token_file = \"token\"\n")).unwrap();
    let out = tidemark(&env.dir, &["check", "-c", "tidemark.toml"]);
    assert!(out.status.success() && !text(&out).contains(warning), "{}", text(&out));
    env.cleanup().await;
}
