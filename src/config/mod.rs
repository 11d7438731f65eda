//! Configuration: the daemon file and one TOML file per connector.
//!
//! Loading reads every file and collects every mistake before giving up, so a user fixing a
//! configuration sees the whole list at once, each with its file and key.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::settings::{interp, Secret};
pub use crate::settings::{ConfigError, ConfigErrors, Diag, Section};

pub use crate::connector::PipelineConfig;
use crate::sinks::SinkConfig;
use crate::sources::{self, SourceConfig};
use crate::transforms::TransformConfig;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/tidemark";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_CONNECTORS_DIR: &str = "connectors";
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(10);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The daemon file (`tidemark.toml`).
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub file: PathBuf,
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub connectors_dir: PathBuf,
    pub log_format: LogFormat,
    /// `/health` reports a connector unhealthy once its lag exceeds this.
    pub max_lag: Duration,
    /// How long a SIGTERM drain may take before in-flight work is abandoned (it is replayed on
    /// the next start, never lost).
    pub shutdown_timeout: Duration,
    /// The API's bearer token (`http_token` or `http_token_file`), and what it guards.
    pub http_token: Option<Secret>,
    pub http_auth: HttpAuth,
}

impl DaemonConfig {
    /// A warning when the API is reachable from other machines without a token.
    pub fn api_warning(&self) -> Option<String> {
        (!self.http_addr.ip().is_loopback() && self.http_token.is_none()).then(|| {
            format!(
                "http_addr {} is reachable from other machines and no http_token is set: anyone who reaches it can pause and resume connectors; set http_token_file (or bind 127.0.0.1)",
                self.http_addr
            )
        })
    }
}

/// `http_auth`: which endpoints need the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpAuth {
    /// The mutating ones (pause, resume); `/health`, `/metrics` and the reads stay open for probes.
    Mutating,
    /// Every endpoint.
    All,
}

/// One connector file.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub file: PathBuf,
    pub name: String,
    pub source: SourceConfig,
    pub transforms: Vec<TransformConfig>,
    pub sinks: Vec<SinkConfig>,
    pub pipeline: PipelineConfig,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub connectors: Vec<ConnectorConfig>,
}

/// Read a file, interpolate `${ENV}` and parse it as a TOML table; problems go to `d`.
fn read_toml(path: &Path, d: &mut Diag) -> Option<toml::Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            d.error("", format!("cannot read: {e}"));
            return None;
        }
    };
    let text = interp::interpolate(&text, d, |k| std::env::var(k).ok());
    match text.parse::<toml::Table>() {
        Ok(t) => Some(t),
        Err(e) => {
            let msg = e.to_string().replace('\n', " ").split_whitespace().collect::<Vec<_>>().join(" ");
            d.error("", format!("invalid TOML: {msg}"));
            None
        }
    }
}

/// Load only the daemon file (for commands that need just `data_dir` or `http_addr`).
pub fn load_daemon(path: &Path) -> Result<DaemonConfig, ConfigErrors> {
    let mut d = Diag::new(path);
    match read_toml(path, &mut d).map(|t| read_daemon(path, Section::new("", t), &mut d)) {
        Some((Some(c), _)) if d.is_empty() => Ok(c),
        _ => Err(ConfigErrors(d.into_errors())),
    }
}

/// Load the daemon file and every connector file, returning every mistake found. Connector files
/// are read even when the daemon file has mistakes, as long as it parses.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut d = Diag::new(path);
    let parsed = read_toml(path, &mut d).map(|t| read_daemon(path, Section::new("", t), &mut d));
    errors.extend(d.into_errors());
    let Some((daemon, connectors_dir)) = parsed else {
        return Err(ConfigErrors(errors));
    };

    let mut connectors = Vec::new();
    match connector_files(&connectors_dir) {
        Ok(files) if files.is_empty() => errors.push(ConfigError {
            file: path.to_path_buf(),
            key: "connectors_dir".into(),
            message: format!("no connector files (*.toml) in {}", connectors_dir.display()),
        }),
        Ok(files) => {
            for file in files {
                let mut d = Diag::new(&file);
                if let Some(t) = read_toml(&file, &mut d) {
                    if let Some(c) = read_connector(&file, Section::new("", t), &mut d) {
                        connectors.push(c);
                    }
                }
                errors.extend(d.into_errors());
            }
        }
        Err(e) => errors.push(ConfigError {
            file: path.to_path_buf(),
            key: "connectors_dir".into(),
            message: format!("cannot list {}: {e}", connectors_dir.display()),
        }),
    }

    check_unique(&connectors, &mut errors);
    match daemon {
        Some(daemon) if errors.is_empty() => Ok(Config { daemon, connectors }),
        _ => Err(ConfigErrors(errors)),
    }
}

fn connector_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Names and replication resources must not be shared between connectors.
fn check_unique(connectors: &[ConnectorConfig], errors: &mut Vec<ConfigError>) {
    for (i, c) in connectors.iter().enumerate() {
        for earlier in &connectors[..i] {
            if earlier.name == c.name {
                errors.push(ConfigError {
                    file: c.file.clone(),
                    key: "name".into(),
                    message: format!("connector name `{}` is also used by {}", c.name, earlier.file.display()),
                });
            }
            if let (Some(mine), Some(theirs)) = (c.source.exclusive(), earlier.source.exclusive()) {
                if mine == theirs {
                    errors.push(ConfigError {
                        file: c.file.clone(),
                        key: format!("source.{}", mine.key),
                        message: format!("{} is also used by {}", mine.description, earlier.file.display()),
                    });
                }
            }
        }
    }
}

/// The daemon settings (`None` when some are invalid) and the connectors directory (always known).
fn read_daemon(path: &Path, mut s: Section, d: &mut Diag) -> (Option<DaemonConfig>, PathBuf) {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let resolve = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    let data_dir = resolve(s.opt_str(d, "data_dir").unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
    let http_addr = s.opt_str(d, "http_addr").unwrap_or_else(|| DEFAULT_HTTP_ADDR.into());
    let http_addr = match http_addr.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            d.error("http_addr", format!("`{http_addr}` is not an address such as 127.0.0.1:8080"));
            None
        }
    };
    let connectors_dir = resolve(s.opt_str(d, "connectors_dir").unwrap_or_else(|| DEFAULT_CONNECTORS_DIR.into()));
    let log_format = match s.opt_choice(d, "log_format", &["text", "json"]).as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let max_lag = s.opt_duration(d, "max_lag").unwrap_or(DEFAULT_MAX_LAG);
    let shutdown_timeout = s.opt_duration(d, "shutdown_timeout").unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let token = s.opt_str(d, "http_token");
    let token_file = s.opt_str(d, "http_token_file").map(resolve);
    let http_token = match (token, token_file) {
        (Some(_), Some(_)) => {
            d.error("http_token_file", "set either http_token or http_token_file");
            None
        }
        (Some(t), None) => Some(t),
        (None, Some(f)) => match std::fs::read_to_string(&f) {
            Ok(t) => Some(t.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                d.error("http_token_file", format!("cannot read {}: {e}", f.display()));
                None
            }
        },
        (None, None) => None,
    };
    if http_token.as_deref().is_some_and(|t| t.len() < 16) {
        d.error("http_token", "is shorter than 16 characters; use a long random token (e.g. `openssl rand -hex 32`)");
    }
    let http_auth = match s.opt_choice(d, "http_auth", &["mutating", "all"]).as_deref() {
        Some("all") => HttpAuth::All,
        _ => HttpAuth::Mutating,
    };
    if http_auth == HttpAuth::All && http_token.is_none() {
        d.error("http_auth", "\"all\" needs http_token or http_token_file");
    }
    if let Some(t) = &http_token {
        crate::settings::secret::register(t);
    }
    s.finish(
        d,
        &[
            "data_dir",
            "http_addr",
            "connectors_dir",
            "log_format",
            "max_lag",
            "shutdown_timeout",
            "http_token",
            "http_token_file",
            "http_auth",
        ],
    );
    let daemon = http_addr.filter(|_| d.is_empty()).map(|http_addr| DaemonConfig {
        file: path.to_path_buf(),
        data_dir,
        http_addr,
        connectors_dir: connectors_dir.clone(),
        log_format,
        max_lag,
        shutdown_timeout,
        http_token: http_token.map(Secret::new),
        http_auth,
    });
    (daemon, connectors_dir)
}

/// Connector names become parts of slot names, Redis keys and metric labels.
pub fn valid_connector_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

pub fn read_connector(path: &Path, mut s: Section, d: &mut Diag) -> Option<ConnectorConfig> {
    let name = s.str(d, "name");
    if let Some(n) = &name {
        if !valid_connector_name(n) {
            d.error("name", format!("`{n}` must start with a-z and use only a-z, 0-9, _ and - (at most 48)"));
        }
    }
    let conn_name = name.clone().unwrap_or_default();

    let mut source_kind = None;
    let source = match s.opt_table(d, "source") {
        Some(sec) => {
            source_kind = sec.peek_str("kind").map(str::to_string);
            sources::read(sec, d, &conn_name)
        }
        None => {
            d.error("source", "is required");
            None
        }
    };
    let transforms: Vec<TransformConfig> =
        s.tables(d, "transform").into_iter().filter_map(|t| TransformConfig::read(path, &conn_name, t, d)).collect();
    for (i, t) in transforms.iter().enumerate() {
        if let Some(name) = t.derived_table() {
            if transforms[..i].iter().any(|o| o.derived_table() == Some(name)) {
                d.error(format!("transform[{i}].name"), format!("`{name}` names another derived table already"));
            }
        }
    }
    if source_kind.as_deref() == Some("kafka") {
        for (i, _) in transforms.iter().enumerate().filter(|(_, t)| t.is_stateful()) {
            d.error(
                format!("transform[{i}].kind"),
                "this transform keeps state, which a Kafka source cannot checkpoint: each member of the group \
                 holds some of the partitions, so the state would have to be partitioned like the topic; run it \
                 in the connector that reads the database",
            );
        }
    }
    let sink_sections = s.tables(d, "sink");
    if sink_sections.is_empty() && !s.has("sink") {
        d.error("sink", "at least one [[sink]] is required");
    }
    let sinks: Vec<SinkConfig> =
        sink_sections.into_iter().enumerate().filter_map(|(i, t)| SinkConfig::read(t, i, &conn_name, d)).collect();
    for (i, sink) in sinks.iter().enumerate() {
        if sinks[..i].iter().any(|other| other.name == sink.name) {
            d.error(
                format!("sink[{i}].name"),
                format!("sink name `{}` is used twice; give each sink a distinct name", sink.name),
            );
        }
    }
    let pipeline = s.opt_table(d, "pipeline").map(|p| read_pipeline(p, d)).unwrap_or_default();
    s.finish(d, &["name", "source", "transform", "sink", "pipeline"]);

    if !d.is_empty() {
        return None;
    }
    Some(ConnectorConfig { file: path.to_path_buf(), name: name?, source: source?, transforms, sinks, pipeline })
}

fn read_pipeline(mut s: Section, d: &mut Diag) -> PipelineConfig {
    let dflt = PipelineConfig::default();
    let p = PipelineConfig {
        max_batch_rows: s.opt_nonzero(d, "max_batch_rows").unwrap_or(dflt.max_batch_rows),
        max_batch_bytes: s.opt_bytes(d, "max_batch_bytes").and_then(NonZeroUsize::new).unwrap_or(dflt.max_batch_bytes),
        max_batch_wait: s.opt_duration(d, "max_batch_wait").unwrap_or(dflt.max_batch_wait),
        buffer_batches: s.opt_nonzero(d, "buffer_batches").unwrap_or(dflt.buffer_batches),
        max_lag: s.opt_duration(d, "max_lag"),
    };
    s.finish(d, &["max_batch_rows", "max_batch_bytes", "max_batch_wait", "buffer_batches", "max_lag"]);
    p
}

/// Parse one connector file's text (used by tests and `check` for single files).
pub fn parse_connector(path: &Path, text: &str) -> Result<ConnectorConfig, ConfigErrors> {
    let mut d = Diag::new(path);
    let text = interp::interpolate(text, &mut d, |k| std::env::var(k).ok());
    let table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            d.error("", format!("invalid TOML: {e}"));
            return Err(ConfigErrors(d.into_errors()));
        }
    };
    match read_connector(path, Section::new("", table), &mut d) {
        Some(c) if d.is_empty() => Ok(c),
        _ => Err(ConfigErrors(d.into_errors())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connector_lists_every_mistake() {
        let text = r#"
name = "Bad Name"
colour = "blue"
[source]
kind = "postgres"
tables = "public.t"
snapshot = "sometimes"
[[sink]]
kind = "redis"
url = "redis://127.0.0.1:6379/0"
format = "xml"
[[sink]]
kind = "carrier-pigeon"
[pipeline]
max_batch_rows = 0
"#;
        let errs = parse_connector(Path::new("c/bad.toml"), text).unwrap_err().0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for want in [
            "name",
            "colour",
            "source.url",
            "source.tables",
            "source.snapshot",
            "sink[0].format",
            "sink[1].kind",
            "pipeline.max_batch_rows",
        ] {
            assert!(keys.contains(&want), "missing error for {want}: {errs:#?}");
        }
        assert!(errs.iter().all(|e| e.file == Path::new("c/bad.toml")));
    }

    #[test]
    fn a_kafka_connector_lists_every_mistake_and_refuses_stateful_transforms() {
        let text = r#"
name = "apply"
[source]
kind = "kafka"
group = 5
on_error = "ignore"
[source.librdkafka_options]
"group.id" = "other"
"sasl.password" = "hunter2"
[[transform]]
kind = "dedup"
[[transform]]
kind = "filter"
expr = "true"
[[sink]]
kind = "kafka"
tombstones = "yes"
exactly_once = true
"#;
        let errs = parse_connector(Path::new("c/apply.toml"), text).unwrap_err().0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for want in [
            "source.brokers",
            "source.topics",
            "source.group",
            "source.on_error",
            "source.librdkafka_options.group.id",
            "transform[0].kind",
            "sink[0].brokers",
            "sink[0].tombstones",
            "sink[0].exactly_once",
        ] {
            assert!(keys.contains(&want), "missing error for {want}: {errs:#?}");
        }
        assert!(!keys.contains(&"transform[1].kind"), "a stateless transform is fine: {errs:#?}");
        let text = format!("{errs:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    /// Every secret a connector file can hold stays out of `{:?}` and `/connectors`.
    #[test]
    fn no_secret_appears_in_debug_or_describe() {
        let secrets =
            ["pg-Secret-1", "my-Secret-2", "redis-Secret-3", "es-Secret-4", "dl-Secret-5", "mask-key-Secret-0006"];
        let source = |kind: &str| match kind {
            "postgres" => {
                format!("kind = \"postgres\"\nurl = \"postgres://u:{}@h/db\"\ntables = [\"public.t\"]", secrets[0])
            }
            _ => format!("kind = \"mysql\"\nurl = \"mysql://u:{}@h:3306\"\ntables = [\"db.t\"]", secrets[1]),
        };
        for kind in ["postgres", "mysql"] {
            let text = format!(
                r#"name = "c"
[source]
{}
[[transform]]
kind = "mask"
columns = ["email"]
key = "{}"
[[sink]]
kind = "redis"
url = "redis://user:{}@127.0.0.1:6379/0"
on_error = "dead_letter"
dead_letter_url = "redis://user:{}@127.0.0.1:6379/1"
[[sink]]
kind = "elasticsearch"
url = "http://elastic:{}@127.0.0.1:9200"
"#,
                source(kind),
                secrets[5],
                secrets[2],
                secrets[4],
                secrets[3],
            );
            let c = parse_connector(Path::new("c.toml"), &text).unwrap();
            let debug = format!("{c:?}");
            let described = format!(
                "{} {}",
                c.source.describe(),
                c.sinks.iter().map(|s| s.describe().to_string()).collect::<Vec<_>>().join(" ")
            );
            for secret in secrets {
                assert!(!debug.contains(secret), "{kind}: `{secret}` in {{:?}}: {debug}");
                assert!(!described.contains(secret), "{kind}: `{secret}` in describe: {described}");
            }
        }
    }
}
