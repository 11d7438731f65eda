//! What an operator installs beside the binary: the systemd unit, the alerting rules and the
//! dashboard. Each is checked with its own tool (systemd-analyze, promtool), and every metric they
//! name against a live daemon's `/metrics`, so a renamed metric fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// The highest `systemd-analyze security` exposure the unit may have ("OK" is below 3).
const MAX_EXPOSURE: f64 = 2.5;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?} cannot run ({e}); scripts/services.sh installs it"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    // The unit as installed, with the binary where this build put it.
    let unit = std::fs::read_to_string(repo("deploy/systemd/tidemark.service")).unwrap();
    let unit = unit.replace("/usr/local/bin/tidemark", env!("CARGO_BIN_EXE_tidemark"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it").join(unique("unit"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tidemark.service");
    std::fs::write(&path, unit).unwrap();

    let (ok, text) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    // The `tidemark` user exists only where the unit is installed.
    let problems: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.contains("User=")).collect();
    assert!(ok && problems.is_empty(), "systemd-analyze verify:\n{text}");

    let (_, text) = run(Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&path));
    let overall = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for tidemark.service: ").nth(1))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let exposure: f64 = overall.split_whitespace().next().unwrap().parse().unwrap();
    assert!(exposure <= MAX_EXPOSURE, "exposure {overall} (at most {MAX_EXPOSURE}):\n{text}");
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    let (ok, text) =
        run(Command::new("promtool").args(["check", "rules"]).arg(repo("deploy/prometheus/tidemark.rules.yml")));
    assert!(ok, "promtool check rules:\n{text}");
    let (ok, text) =
        run(Command::new("promtool").args(["test", "rules"]).arg(repo("deploy/prometheus/tidemark.rules.test.yml")));
    assert!(ok, "promtool test rules:\n{text}");
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(repo("deploy/prometheus/tidemark.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(repo("deploy/prometheus/tidemark.rules.test.yml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {alert}")), "no promtool test of {alert}");
    }
}

/// Series names (`tidemark_x_total`, `tidemark_y_bucket`, ...) a `/metrics` text exports, each with
/// the label names seen on its samples.
fn exported(metrics: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            let series: Vec<String> = match kind {
                "counter" => vec![format!("{name}_total")],
                "histogram" => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{name}{s}")).collect(),
                _ => vec![name.to_string()],
            };
            for s in series {
                out.entry(s).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let labels = line.split_once('{').and_then(|(_, r)| r.split_once('}')).map(|(l, _)| l).unwrap_or("");
            let keys = labels.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.to_string());
            out.entry(name.to_string()).or_default().extend(keys);
        }
    }
    out
}

/// Every `tidemark_…` name in `text`.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tidemark_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        // Alert names and file names are not metrics.
        let before = start.checked_sub(1).map(|b| bytes[b]);
        if !matches!(before, Some(b'.' | b'/' | b'-')) {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_name_only_metrics_a_daemon_exports() {
    let env = Env::new("opsmetrics").await;
    env.pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');").await.unwrap();
    env.write_config(&env.postgres_source(
        "\"public.t\"",
        &format!("heartbeat_interval = \"1s\"\n[[sink]]\nkind = \"redis\"\nurl = \"{}/0\"\n", redis_url()),
    ));
    let mut d = env.start();
    d.wait_streaming().await;
    // Past the first heartbeat sample, so the source's own figures are there too.
    let metrics = wait_for("the slot's retained WAL in /metrics", DEADLINE, || async {
        let m = d.metrics().await;
        m.contains("tidemark_retained_wal_bytes{").then_some(m)
    })
    .await;
    let exported = exported(&metrics);

    let rules = std::fs::read_to_string(repo("deploy/prometheus/tidemark.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(repo("deploy/prometheus/tidemark.rules.test.yml")).unwrap();
    let dashboard = std::fs::read_to_string(repo("deploy/grafana/tidemark.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is valid JSON");
    let queries: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    assert!(!queries.is_empty());
    let alert_exprs: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).collect();

    for (what, text) in
        [("rules", alert_exprs.join("\n")), ("dashboard", queries.join("\n")), ("rule tests", tests.clone())]
    {
        let names = named(&text);
        assert!(!names.is_empty(), "{what} name no metric");
        for name in names {
            assert!(exported.contains_key(&name), "{what} name `{name}`, which tidemark does not export:\n{metrics}");
        }
    }
    // The rule tests' series carry the labels the real series carry.
    for line in tests.lines().filter_map(|l| l.trim().strip_prefix("- series: ")) {
        let series = line.trim_matches('\'');
        let (name, labels) = series.split_once('{').unwrap();
        let seen = &exported[name];
        if seen.is_empty() {
            continue; // no sample in this run (e.g. retries): the name is checked above
        }
        let keys: BTreeSet<String> = labels
            .trim_end_matches('}')
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(&keys, seen, "labels of {series} against the daemon's {name}");
    }
    d.terminate();
    env.cleanup().await;
}

/// `docker build -f deploy/docker/Dockerfile .` without a Docker engine: the build stage's context
/// made exactly as its `COPY` lines say, and its `RUN cargo …` command run in it, so a file the
/// build needs but the Dockerfile leaves out fails here. A release build from scratch: it runs
/// alone, after the other tests (scripts/test.sh runs it with `--ignored`), so its compile jobs
/// never compete with the tests that wait on servers.
#[test]
#[ignore = "run by scripts/test.sh on its own, after the rest of the suite"]
fn the_docker_build_stage_builds_from_what_the_dockerfile_copies() {
    let dockerfile = std::fs::read_to_string(repo("deploy/docker/Dockerfile")).unwrap();
    let stage: Vec<&str> = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("FROM ") || !l.contains(" AS build"))
        .skip(1)
        .take_while(|l| !l.starts_with("FROM "))
        .collect();
    let ctx = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it").join(unique("docker"));
    let workdir = stage.iter().find_map(|l| l.strip_prefix("WORKDIR ")).expect("WORKDIR in the build stage");
    let root = ctx.join(workdir.trim_start_matches('/'));
    std::fs::create_dir_all(&root).unwrap();
    let mut command = None;
    for line in &stage {
        if let Some(args) = line.strip_prefix("COPY ") {
            let parts: Vec<&str> = args.split_whitespace().collect();
            let (sources, dest) = parts.split_at(parts.len() - 1);
            let dest = root.join(dest[0].trim_start_matches("./"));
            for src in sources {
                let from = repo(src);
                let to = if sources.len() > 1 || dest.to_string_lossy().ends_with('/') {
                    dest.join(src)
                } else {
                    dest.clone()
                };
                let (ok, text) = run(Command::new("cp").arg("-r").arg(&from).arg(&to));
                assert!(ok, "COPY {src}: {text}");
            }
        } else if let Some(cmd) = line.strip_prefix("RUN ") {
            command = Some(cmd.to_string());
        }
    }
    let command = command.expect("a RUN cargo command in the build stage");
    assert!(command.starts_with("cargo "), "{command}");
    // The image builds into its own target/; sharing this build's keeps the dependencies built
    // once.
    let (ok, text) = run(Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", repo("target"))
        .env_remove("RUSTFLAGS"));
    assert!(ok, "`{command}` in the Dockerfile's context failed:\n{text}");
    std::fs::remove_dir_all(&ctx).ok();
}
