//! `kind = "mysql"`: the MySQL/MariaDB binlog (row format), through `mysql_async`.
//!
//! Versions and positions. A row's version is `(coordinate of its rows event, index in the
//! event)`, where the coordinate is the binlog file's sequence number and the event's end offset
//! (see [`crate::connector::position::coordinate`]): it grows across rotations and is the same when a restart replays
//! the event. Snapshot rows carry `(snapshot coordinate, 0)`. The stored position is the binlog
//! file and offset after the last durable transaction (or heartbeat), plus on MariaDB the GTID
//! position (MariaDB) or GTID set (MySQL with `gtid_mode=ON`), from which streaming resumes.
//!
//! The suite runs against MariaDB 10.11 and MySQL 9.7 (the MySQL 8 protocol: GTID sets, binary
//! JSON, `SHOW BINARY LOG STATUS`).

pub mod binlog;
pub mod check;
pub mod config;
pub mod json;
pub mod rows;
pub mod schema;
pub mod server;
mod session;
pub mod snapshot;

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

pub use config::MysqlConfig;

use self::schema::{Origin, TableSchema};
use self::session::Session;
use crate::check::Finding;
use crate::connector::position::MyPosition;
use crate::connector::{
    run_sessions, Exclusive, PipelineClosed, Position, SessionError, SnapshotProgress, Source, SourceContext,
    SourceError,
};
use crate::event::{Encoding, Row};
use crate::metrics;
use crate::retry::{Classify, ErrorClass};

/// A stream that sends neither an event nor a heartbeat for this many heartbeat periods...
const SILENT_HEARTBEATS: u32 = 3;
/// ...plus this (a slow network, a busy server) is treated as a dead connection.
const SILENCE_GRACE: Duration = Duration::from_secs(5);
/// An open transaction is held back (so a ROLLBACK can discard it) until it holds this many
/// batches' worth of bytes; past that it streams on, keeping memory bounded.
const SPILL_BATCHES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum MyError {
    #[error("mysql {url}: {source}")]
    Connect { url: String, source: mysql_async::Error },
    #[error("mysql: {0}")]
    Query(#[from] mysql_async::Error),
    #[error("binlog stream: {0}")]
    Stream(mysql_async::Error),
    #[error("binlog: {0}")]
    Decode(String),
    /// Something an operator must resolve; the message says what to do.
    #[error("{0}")]
    Operator(String),
    #[error(transparent)]
    Closed(#[from] PipelineClosed),
}

fn mysql_class(e: &mysql_async::Error) -> ErrorClass {
    match e {
        mysql_async::Error::Server(s) => match s.code {
            // access denied, unknown database, no privilege, binlog position/GTID purged or not
            // found, binlog format errors
            1044 | 1045 | 1049 | 1142 | 1227 | 1236 | 1613 | 1665 | 1666 => ErrorClass::Operator,
            // another replica registered with this server id
            4052 => ErrorClass::Operator,
            _ => ErrorClass::Retry,
        },
        mysql_async::Error::Url(_) => ErrorClass::Operator,
        _ => ErrorClass::Retry,
    }
}

impl SessionError for MyError {
    fn pipeline_closed(&self) -> bool {
        matches!(self, MyError::Closed(_))
    }
}

impl Classify for MyError {
    fn class(&self) -> ErrorClass {
        match self {
            MyError::Connect { source, .. } | MyError::Query(source) | MyError::Stream(source) => mysql_class(source),
            MyError::Decode(_) => ErrorClass::Fatal,
            MyError::Operator(_) => ErrorClass::Operator,
            MyError::Closed(_) => ErrorClass::Retry,
        }
    }
}

/// Run the source until cancelled; transient failures reconnect with backoff and resume from the
/// last durable position.
pub async fn run(cfg: &MysqlConfig, ctx: SourceContext) -> Result<(), MyError> {
    let position = |p| match p {
        Position::Mysql(p) => Some(p),
        _ => None,
    };
    run_sessions(cfg, ctx, position, |cfg, ctx, resume, backoff| {
        async move { Session::new(cfg, ctx).run(resume, backoff).await }.boxed()
    })
    .await
}

/// A snapshot's resumable progress within `MyPosition`.
pub fn snapshot_position(at: &MyPosition, progress: SnapshotProgress) -> Position {
    Position::Mysql(MyPosition { snapshot: Some(progress), ..at.clone() })
}

/// Convert a snapshot row (binary protocol values, in table column order).
pub fn query_row(schema: &TableSchema, row: mysql_async::Row) -> Row {
    let values: Vec<_> = row
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i, mysql_async::binlog::value::BinlogValue::Value(v)))
        .collect();
    schema.row(values, Origin::Query)
}

impl Source for MysqlConfig {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn tables(&self) -> &[String] {
        &self.tables
    }

    fn encoding(&self) -> Encoding {
        self.encoding.clone()
    }

    fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    fn health_figures(&self) -> &'static [&'static str] {
        &[metrics::BINLOG_PURGE_MARGIN_FIGURE, metrics::BINLOG_PURGE_RISK_FIGURE]
    }

    fn exclusive(&self) -> Option<Exclusive> {
        Some(Exclusive {
            key: "server_id",
            identity: format!("{}:{} server_id {}", self.host(), self.port(), self.server_id),
            description: format!("replica server id {} (set source.server_id)", self.server_id),
        })
    }

    fn describe(&self) -> serde_json::Value {
        MysqlConfig::describe(self)
    }

    fn title(&self) -> String {
        format!("mysql {}", self.url)
    }

    fn check(&self) -> BoxFuture<'_, Vec<Finding>> {
        check::check(self).boxed()
    }

    fn run(&self, ctx: SourceContext) -> BoxFuture<'_, Result<(), SourceError>> {
        async move { run(self, ctx).await.map_err(SourceError::new) }.boxed()
    }
}
