//! The server side of a MySQL/MariaDB connector: connecting, the replication settings, the
//! catalog (captured tables and their columns), binlog positions, and the poller that samples
//! how far behind the connector is.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use tracing::warn;

use super::schema::InfoColumn;
use super::{MyError, MysqlConfig};
use crate::connector::position::{file_seq, GtidPosition, GtidSet, GtidState, MyPosition};
use crate::connector::{table_included, ConnectorStatus, Position, SourceHealth};
use crate::metrics;

/// Connection options for tidemark's sessions: 1 GiB packets (a binlog event can be that
/// large), UTC, and no `NO_BACKSLASH_ESCAPES` (snapshot keys are written as escaped literals).
pub fn opts(cfg: &MysqlConfig) -> Opts {
    OptsBuilder::from_opts(cfg.opts.clone())
        .max_allowed_packet(Some(1 << 30))
        .prefer_socket(false)
        .init(vec![
            "SET SESSION time_zone = '+00:00'".to_string(),
            "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '')".to_string(),
        ])
        .into()
}

pub async fn connect(cfg: &MysqlConfig) -> Result<Conn, MyError> {
    Conn::new(opts(cfg)).await.map_err(|source| MyError::Connect { url: cfg.url.redacted(), source })
}

/// The server's replication settings that decide whether tidemark can read its binlog.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub mariadb: bool,
    pub server_id: u32,
    pub log_bin: bool,
    pub binlog_format: String,
    pub binlog_row_image: String,
    pub binlog_row_metadata: Option<String>,
    /// MariaDB `log_bin_compress`.
    pub compressed: bool,
    pub checksum: String,
    /// What identifies the server: MySQL's `server_uuid`, MariaDB's `server_id` (it has no UUID).
    pub identity: String,
    /// MySQL `gtid_mode=ON` (MariaDB always has GTIDs).
    pub gtid_mode_on: bool,
}

pub async fn server_info(conn: &mut Conn) -> Result<ServerInfo, MyError> {
    let row: Option<(String, u32, String, String, String, String)> = conn
        .query_first(
            "SELECT @@version, @@server_id, CAST(@@log_bin AS CHAR), @@binlog_format, @@binlog_row_image, @@global.binlog_checksum",
        )
        .await?;
    let (version, server_id, log_bin, binlog_format, binlog_row_image, checksum) =
        row.ok_or_else(|| MyError::Decode("no answer to SELECT @@version".into()))?;
    let mariadb = version.to_lowercase().contains("mariadb");
    let metadata: Option<String> = conn.query_first("SELECT @@binlog_row_metadata").await.ok().flatten();
    let compressed: Option<String> =
        if mariadb { conn.query_first("SELECT CAST(@@log_bin_compress AS CHAR)").await.ok().flatten() } else { None };
    let (identity, gtid_mode_on) = if mariadb {
        (server_id.to_string(), true)
    } else {
        let row: Option<(String, String)> = conn.query_first("SELECT @@server_uuid, @@gtid_mode").await?;
        let (uuid, mode) = row.unwrap_or_default();
        (uuid, mode.eq_ignore_ascii_case("ON"))
    };
    Ok(ServerInfo {
        version,
        mariadb,
        server_id,
        log_bin: matches!(log_bin.as_str(), "1" | "ON"),
        binlog_format,
        binlog_row_image,
        binlog_row_metadata: metadata,
        compressed: matches!(compressed.as_deref(), Some("1" | "ON")),
        checksum,
        identity,
        gtid_mode_on,
    })
}

/// Every captured base table (`(db, table)`), sorted.
pub async fn matching_tables(conn: &mut Conn, cfg: &MysqlConfig) -> Result<Vec<(String, String)>, MyError> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
              WHERE TABLE_TYPE = 'BASE TABLE'
                AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
              ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await?;
    Ok(rows.into_iter().filter(|(db, t)| table_included(&cfg.tables, db, t)).collect())
}

/// information_schema's columns of a table, in order.
pub async fn info_columns(conn: &mut Conn, db: &str, table: &str) -> Result<Vec<InfoColumn>, MyError> {
    let rows: Vec<(String, String, String, Option<String>, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), CHARACTER_SET_NAME, COLUMN_KEY
               FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?
              ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, data_type, column_type, charset, key)| InfoColumn {
            name,
            data_type,
            column_type,
            charset,
            primary: key == "PRI",
        })
        .collect())
}

/// Quote an identifier.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

pub fn prerequisites(server: &ServerInfo, cfg: &MysqlConfig) -> Result<(), MyError> {
    let fix = |what: String| Err(MyError::Operator(what));
    if !server.log_bin {
        return fix("the binary log is off; add log_bin to the server configuration and restart it".into());
    }
    if !server.binlog_format.eq_ignore_ascii_case("ROW") {
        return fix(format!(
            "binlog_format is {}; set binlog_format=ROW (SET GLOBAL binlog_format = 'ROW', and in the configuration)",
            server.binlog_format
        ));
    }
    if !server.binlog_row_image.eq_ignore_ascii_case("FULL") {
        return fix(format!("binlog_row_image is {}; set binlog_row_image=FULL", server.binlog_row_image));
    }
    if server.compressed {
        return fix(
            "log_bin_compress is ON, and compressed binlog events cannot be read; set log_bin_compress=OFF".into()
        );
    }
    if server.server_id == cfg.server_id {
        return fix(format!("source.server_id {} is the server's own server_id; choose another", cfg.server_id));
    }
    Ok(())
}

/// `SHOW BINARY LOGS`: (file, size), oldest first.
pub async fn binary_logs(conn: &mut Conn) -> Result<Vec<(String, u64)>, MyError> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| {
            let name: String = r.take(0)?;
            let size: u64 = r.take(1)?;
            Some((name, size))
        })
        .collect())
}

/// The server's current binlog position, and with `gtid` its GTID position (MariaDB) or executed
/// GTID set (MySQL with `gtid_mode=ON`).
pub async fn current_position(conn: &mut Conn, mariadb: bool, gtid: bool) -> Result<MyPosition, MyError> {
    // MySQL 8.2 renamed SHOW MASTER STATUS, and 8.4 dropped the old name; MariaDB has only it.
    let status: Option<mysql_async::Row> = if mariadb {
        conn.query_first("SHOW MASTER STATUS").await?
    } else {
        match conn.query_first("SHOW BINARY LOG STATUS").await {
            Err(mysql_async::Error::Server(e)) if e.code == 1064 => conn.query_first("SHOW MASTER STATUS").await?,
            other => other?,
        }
    };
    let mut row =
        status.ok_or_else(|| MyError::Operator("the server reports no binlog position: is log_bin on?".into()))?;
    let file: String = row.take(0).unwrap_or_default();
    let pos: u64 = row.take(1).unwrap_or(4);
    let gtid = match (gtid, mariadb) {
        (false, _) => None,
        (true, true) => conn
            .query_first::<String, _>("SELECT @@gtid_binlog_pos")
            .await?
            .and_then(|g| GtidState::parse(&g))
            .filter(|g| !g.is_empty())
            .map(GtidPosition::MariaDb),
        (true, false) => row
            .take::<String, _>("Executed_Gtid_Set")
            .and_then(|g| GtidSet::parse(&g))
            .filter(|set| !set.is_empty())
            .map(GtidPosition::Mysql),
    };
    Ok(MyPosition { file, pos, gtid, server: None, snapshot: None })
}

/// Bytes of binlog between `(from_file, from_pos)` and `(to_file, to_pos)`.
pub fn binlog_distance(logs: &[(String, u64)], from: (&str, u64), to: (&str, u64)) -> u64 {
    if from.0 == to.0 {
        return to.1.saturating_sub(from.1);
    }
    let (fs, ts) = (file_seq(from.0), file_seq(to.0));
    let mut total = 0;
    for (name, size) in logs {
        let s = file_seq(name);
        if s == fs {
            total += size.saturating_sub(from.1);
        } else if s > fs && s < ts {
            total += size;
        }
    }
    total + to.1
}

/// Every heartbeat interval: the server's current position (for `lag_bytes`) and how close the
/// oldest binlog the server keeps is to the checkpointed position (a purge past it would lose
/// changes).
pub async fn poll_server(
    cfg: MysqlConfig,
    mariadb: bool,
    status: Arc<ConnectorStatus>,
    acked: tokio::sync::watch::Receiver<Option<Position>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut conn: Option<Conn> = None;
    let mut tick = tokio::time::interval(cfg.heartbeat_interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if conn.is_none() {
            conn = connect(&cfg).await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let (logs, server) = match (binary_logs(c).await, current_position(c, mariadb, false).await) {
            (Ok(l), Ok(s)) => (l, s),
            _ => {
                conn = None;
                continue;
            }
        };
        let Some(Position::Mysql(at)) = acked.borrow().clone() else { continue };
        status.set_source_lag_bytes(Some(binlog_distance(&logs, (&at.file, at.pos), (&server.file, server.pos))));
        let oldest = logs.first().map(|(f, _)| file_seq(f)).unwrap_or(0);
        let ahead = file_seq(&at.file).saturating_sub(oldest);
        // The binlog being written cannot be purged: a margin of 0 is a risk only once the
        // server has moved on to a newer one.
        let at_risk = ahead == 0 && logs.len() > 1;
        let notes = if at_risk {
            vec!["the checkpointed binlog is the oldest the server keeps: purging it (PURGE BINARY LOGS, expire_logs_days) would lose changes; keep binlogs longer".into()]
        } else {
            Vec::new()
        };
        let figures = vec![
            (metrics::BINLOG_PURGE_MARGIN_FIGURE, Some(ahead)),
            (metrics::BINLOG_PURGE_RISK_FIGURE, Some(u64::from(at_risk))),
        ];
        status.set_source_health(SourceHealth { figures, notes });
        if at_risk {
            if !warned {
                warn!(connector = %status.name, file = %at.file, "the checkpointed binlog is the oldest the server keeps: purging it would lose changes");
                warned = true;
            }
        } else {
            warned = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_across_files() {
        let logs = vec![("b.000001".to_string(), 1000), ("b.000002".to_string(), 500), ("b.000003".to_string(), 300)];
        assert_eq!(binlog_distance(&logs, ("b.000002", 100), ("b.000002", 400)), 300);
        assert_eq!(binlog_distance(&logs, ("b.000001", 900), ("b.000003", 50)), 100 + 500 + 50);
    }
}
