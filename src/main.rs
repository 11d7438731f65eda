//! The `tidemark` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use tidemark::check::Level;
use tidemark::config::{self, LogFormat};
use tidemark::connector::Position;
use tidemark::settings::secret::{redact_known, RedactingWriter};
use tidemark::state::StateStore;

/// mimalloc rather than the system allocator: the stateful transforms allocate and free many small
/// values per event, and glibc's malloc spends more time on them than the transforms themselves.
/// Built without transparent huge pages (feature `no_thp`), which doubled the resident memory.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration errors.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Change-data-capture from PostgreSQL and MySQL/MariaDB into Redis and Elasticsearch caches, never wrong after a crash"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (SIGTERM/SIGINT drain, checkpoint and exit 0).
    Run {
        #[arg(short, long, default_value = "tidemark.toml")]
        config: PathBuf,
    },
    /// Validate every file, connect to every source and sink, and check their prerequisites.
    Check {
        #[arg(short, long, default_value = "tidemark.toml")]
        config: PathBuf,
        /// Only validate the files; do not connect (for CI and systemd's ExecStartPre).
        #[arg(long)]
        config_only: bool,
    },
    /// Show connectors, state, position and lag of a running daemon.
    Status {
        /// The daemon's HTTP address; read from the daemon file when not given.
        #[arg(long)]
        addr: Option<String>,
        #[arg(short, long, default_value = "tidemark.toml")]
        config: PathBuf,
    },
    /// Inspect or reset stored positions (with the daemon stopped).
    Offsets {
        #[command(subcommand)]
        action: OffsetsAction,
    },
}

#[derive(Subcommand)]
enum OffsetsAction {
    /// Print the stored position of a connector (or of every connector).
    Show {
        connector: Option<String>,
        #[arg(short, long, default_value = "tidemark.toml")]
        config: PathBuf,
    },
    /// Forget a connector's position: its next start snapshots again (with `snapshot = "initial"`)
    /// and streams from its replication slot.
    Reset {
        connector: String,
        #[arg(short, long, default_value = "tidemark.toml")]
        config: PathBuf,
    },
    /// Store another position for a connector (as `offsets show` prints it), keeping its
    /// operator state: to replay from an earlier point, or to skip ahead. MySQL/MariaDB replays
    /// from any binlog the server still has; PostgreSQL never goes back past its slot.
    Set {
        connector: String,
        /// The position JSON, e.g. '{"kind":"mysql","file":"mysql-bin.000003","pos":4}'.
        position: String,
        #[arg(short, long, default_value = "tidemark.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    // One TLS implementation for every client (rustls over ring): the process default, so no
    // library has to pick between the providers its dependencies compile in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { config, config_only } => check(&config, config_only),
        Command::Status { addr, config } => status(addr, &config),
        Command::Offsets { action } => offsets(action),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Values read from secret files are redacted from every log line, whatever logged them.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingWriter(std::io::stderr()))
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn load(path: &Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|errors| {
        eprint!("{}", redact_known(&errors.to_string()));
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    init_logging(cfg.daemon.log_format);
    runtime()?.block_on(tidemark::daemon::run(cfg))?;
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path, config_only: bool) -> anyhow::Result<ExitCode> {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    println!("configuration: ok ({} connector(s))", cfg.connectors.len());
    if config_only {
        return Ok(ExitCode::SUCCESS);
    }
    let report = runtime()?.block_on(tidemark::daemon::check(&cfg));
    let mut errors = 0;
    let mut warnings = 0;
    if let Some(w) = cfg.daemon.api_warning() {
        println!("\ndaemon {}\n    {}", cfg.daemon.file.display(), tidemark::check::Finding::warn(w));
        warnings += 1;
    }
    for (connector, sections) in report {
        println!("\nconnector {connector}");
        for s in sections {
            println!("  {}", redact_known(&s.title));
            for f in &s.findings {
                // Values read from secret files never reach the report.
                println!("    {}", redact_known(&f.to_string()));
                match f.level {
                    Level::Error => errors += 1,
                    Level::Warn => warnings += 1,
                    Level::Ok => {}
                }
            }
        }
    }
    println!("\n{errors} error(s), {warnings} warning(s)");
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn status(addr: Option<String>, path: &Path) -> anyhow::Result<ExitCode> {
    let daemon = config::load_daemon(path).ok();
    let addr = match addr {
        Some(a) => a,
        None => daemon.as_ref().map_or_else(|| config::DEFAULT_HTTP_ADDR.into(), |d| d.http_addr.to_string()),
    };
    // The daemon file's token, for a daemon that guards every endpoint (`http_auth = "all"`).
    let token = daemon.as_ref().and_then(|d| d.http_token.as_ref()).map(|t| t.expose().to_string());
    let (code, body) = runtime()?
        .block_on(tidemark::http::request_with(&addr, "GET", "/health", token.as_deref()))
        .map_err(|e| anyhow!(e))?;
    let health: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("unexpected answer from {addr} (HTTP {code})"))?;
    let rows: Vec<[String; 7]> = health["connectors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::Null => "-".to_string(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let position = match &c["position"] {
                serde_json::Value::Object(p) => p.get("lsn").map(text).unwrap_or_else(|| text(&c["position"])),
                other => text(other),
            };
            let sinks = c["sinks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!("{}:{}", text(&s["name"]), text(&s["state"])))
                .collect::<Vec<_>>()
                .join(",");
            [
                text(&c["name"]),
                text(&c["state"]),
                if c["healthy"] == true { "yes".into() } else { "NO".into() },
                position,
                text(&c["lag_ms"]),
                text(&c["lag_bytes"]),
                sinks,
            ]
        })
        .collect();
    let header = ["CONNECTOR", "STATE", "HEALTHY", "POSITION", "LAG_MS", "LAG_BYTES", "SINKS"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    for c in health["connectors"].as_array().into_iter().flatten() {
        for reason in c["reasons"].as_array().into_iter().flatten() {
            println!("{}: {}", c["name"].as_str().unwrap_or("?"), reason.as_str().unwrap_or(""));
        }
    }
    Ok(if code == 200 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn offsets(action: OffsetsAction) -> anyhow::Result<ExitCode> {
    let path = match &action {
        OffsetsAction::Show { config, .. }
        | OffsetsAction::Reset { config, .. }
        | OffsetsAction::Set { config, .. } => config,
    };
    let daemon = match config::load_daemon(path) {
        Ok(d) => d,
        Err(errors) => {
            eprint!("{}", redact_known(&errors.to_string()));
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let store = StateStore::open(&daemon.data_dir)?;
    match action {
        OffsetsAction::Show { connector, .. } => {
            let names = match connector {
                Some(c) => vec![c],
                None => store.connectors()?,
            };
            for name in names {
                match store.position::<Position>(&name)? {
                    Some(p) => println!("{name}\t{}", serde_json::to_string(&p)?),
                    None => println!("{name}\t(no stored position)"),
                }
            }
        }
        OffsetsAction::Set { connector, position, .. } => {
            let pos: Position = match serde_json::from_str(&position) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("not a position ({e}); use the JSON `tidemark offsets show` prints");
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
            };
            store.set_position(&connector, &pos)?;
            println!("{connector}: position set to {}; operator state kept", serde_json::to_string(&pos)?);
        }
        OffsetsAction::Reset { connector, .. } => {
            if store.reset(&connector)? {
                println!("{connector}: position, schema history and operator state removed; the next start snapshots again (snapshot = \"initial\") and streams from the replication slot");
            } else {
                println!("{connector}: nothing stored");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
