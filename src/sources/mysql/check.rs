//! Prerequisites of the MySQL/MariaDB source, checked against the live server.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::server::{binary_logs, connect, info_columns, matching_tables, server_info, ServerInfo};
use super::{MyError, MysqlConfig};
use crate::check::Finding;
use crate::connector::SnapshotMode;

/// What to do when the snapshot's FLUSH TABLES WITH READ LOCK is refused.
pub const NO_RELOAD: &str = "the initial snapshot on MySQL runs FLUSH TABLES WITH READ LOCK for a moment, which needs it; run GRANT RELOAD ON *.* TO {user}, or set snapshot = \"never\"";

pub async fn check(cfg: &MysqlConfig) -> Vec<Finding> {
    let mut conn = match connect(cfg).await {
        Ok(c) => c,
        Err(e) => {
            return vec![Finding::error(format!(
                "cannot connect to {}: {e}; check source.url, that the server is running and that the user may connect from this host",
                cfg.url
            ))]
        }
    };
    let mut out = Vec::new();
    if let Err(e) = check_connected(&mut conn, cfg, &mut out).await {
        out.push(Finding::error(format!("checking failed: {e}")));
    }
    out
}

async fn check_connected(conn: &mut Conn, cfg: &MysqlConfig, out: &mut Vec<Finding>) -> Result<(), MyError> {
    let s = server_info(conn).await?;
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await?;
    let user = user.unwrap_or_default();
    out.push(Finding::ok(format!(
        "connected to {} {} as {user}",
        if s.mariadb { "MariaDB" } else { "MySQL" },
        s.version
    )));
    check_binlog_settings(&s, out);
    if !s.mariadb {
        check_mysql_settings(conn, out).await;
    }
    check_grants(conn, cfg, &s, &user, out).await;
    check_replica_id(conn, cfg, &s, out).await;
    check_tables(conn, cfg, out).await
}

/// How to set a server variable for good.
fn set(name: &str, value: &str) -> String {
    format!("SET GLOBAL {name} = '{value}' and put {name}={value} in the server's configuration (my.cnf) so it survives a restart")
}

/// The binlog settings tidemark needs on every server kind.
fn check_binlog_settings(s: &ServerInfo, out: &mut Vec<Finding>) {
    if s.log_bin {
        out.push(Finding::ok("the binary log is on"));
    } else {
        out.push(Finding::error(
            "the binary log is off; add log_bin (and server_id) to the server's configuration and restart it",
        ));
    }
    if s.binlog_format.eq_ignore_ascii_case("ROW") {
        out.push(Finding::ok("binlog_format is ROW"));
    } else {
        out.push(Finding::error(format!("binlog_format is {}; {}", s.binlog_format, set("binlog_format", "ROW"))));
    }
    if s.binlog_row_image.eq_ignore_ascii_case("FULL") {
        out.push(Finding::ok("binlog_row_image is FULL"));
    } else {
        out.push(Finding::error(format!(
            "binlog_row_image is {}; {}",
            s.binlog_row_image,
            set("binlog_row_image", "FULL")
        )));
    }
    match s.binlog_row_metadata.as_deref() {
        Some(m) if m.eq_ignore_ascii_case("FULL") => out.push(Finding::ok("binlog_row_metadata is FULL")),
        Some(m) => out.push(Finding::warn(format!(
            "binlog_row_metadata is {m}: column names would come from information_schema, which is wrong for events written before a schema change; {}",
            set("binlog_row_metadata", "FULL")
        ))),
        None => out.push(Finding::warn(
            "this server has no binlog_row_metadata (MySQL before 8.0.1, MariaDB before 10.5): column names come from information_schema; upgrade for schema changes to be handled",
        )),
    }
    if s.compressed {
        out.push(Finding::error(format!(
            "log_bin_compress is ON and compressed events cannot be read; {}",
            set("log_bin_compress", "OFF")
        )));
    }
}

/// MySQL's own settings: transaction compression, GTID mode, partial JSON.
async fn check_mysql_settings(conn: &mut Conn, out: &mut Vec<Finding>) {
    let compression: Option<String> =
        conn.query_first("SELECT CAST(@@binlog_transaction_compression AS CHAR)").await.ok().flatten();
    if matches!(compression.as_deref(), Some("1" | "ON")) {
        out.push(Finding::error(format!(
            "binlog_transaction_compression is ON; {}",
            set("binlog_transaction_compression", "OFF")
        )));
    }
    let gtid_mode: Option<String> = conn.query_first("SELECT @@gtid_mode").await.ok().flatten();
    if gtid_mode.as_deref().is_some_and(|m| m.eq_ignore_ascii_case("ON")) {
        out.push(Finding::ok("gtid_mode is ON: the stream resumes from the executed GTID set"));
    } else {
        out.push(Finding::warn(format!(
            "gtid_mode is {}: the stream resumes by binlog file and offset, not by GTID; set gtid_mode=ON and enforce_gtid_consistency=ON (in steps: OFF_PERMISSIVE, ON_PERMISSIVE, ON)",
            gtid_mode.unwrap_or_else(|| "unknown".into())
        )));
    }
    let value_options: Option<String> = conn.query_first("SELECT @@binlog_row_value_options").await.ok().flatten();
    if value_options.as_deref().is_some_and(|v| !v.is_empty()) {
        out.push(Finding::error(format!(
            "binlog_row_value_options is {}; {}",
            value_options.unwrap_or_default(),
            set("binlog_row_value_options", "")
        )));
    }
}

/// Reading the binlog, and (MySQL) the snapshot's global read lock.
async fn check_grants(conn: &mut Conn, cfg: &MysqlConfig, s: &ServerInfo, user: &str, out: &mut Vec<Finding>) {
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap_or_default();
    let all = grants.join(" ").to_uppercase();
    if all.contains("ALL PRIVILEGES") || all.contains("REPLICATION SLAVE") || all.contains("REPLICATION REPLICA") {
        out.push(Finding::ok(format!("{user} may read the binary log")));
    } else {
        out.push(Finding::error(format!(
            "{user} may not read the binary log; run GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO {user}"
        )));
    }
    // MySQL's snapshot takes a short global read lock for its binlog coordinates (MariaDB's
    // consistent snapshot needs none).
    if !s.mariadb && cfg.snapshot == SnapshotMode::Initial {
        if all.contains("ALL PRIVILEGES") || all.contains("RELOAD") {
            out.push(Finding::ok(format!("{user} may take the initial snapshot's global read lock (RELOAD)")));
        } else {
            out.push(Finding::error(format!("{user} lacks RELOAD: {}", NO_RELOAD.replace("{user}", user))));
        }
    }
}

/// This connector's replica server id: not the server's own, not another replica's.
async fn check_replica_id(conn: &mut Conn, cfg: &MysqlConfig, s: &ServerInfo, out: &mut Vec<Finding>) {
    if s.server_id == cfg.server_id {
        out.push(Finding::error(format!(
            "source.server_id {} is the server's own server_id; set another",
            cfg.server_id
        )));
    }
    // MySQL 8.4 dropped SHOW SLAVE HOSTS for SHOW REPLICAS (8.0.22+); MariaDB has only the first.
    let replicas: Vec<mysql_async::Row> = match s.mariadb {
        true => conn.query("SHOW SLAVE HOSTS").await.unwrap_or_default(),
        false => match conn.query("SHOW REPLICAS").await {
            Ok(rows) => rows,
            Err(_) => conn.query("SHOW SLAVE HOSTS").await.unwrap_or_default(),
        },
    };
    for mut r in replicas {
        let id: Option<u32> = r.take(0);
        if id == Some(cfg.server_id) {
            let host: String = r.take(1).unwrap_or_default();
            out.push(Finding::warn(format!(
                "a replica at {host} is registered with server id {}: if it is not this connector, set source.server_id to an unused id (a duplicate disconnects the other stream)",
                cfg.server_id
            )));
        }
    }
    out.push(Finding::ok(format!("this connector's replica server id is {}", cfg.server_id)));
}

/// The binlogs kept, and the captured tables.
async fn check_tables(conn: &mut Conn, cfg: &MysqlConfig, out: &mut Vec<Finding>) -> Result<(), MyError> {
    let logs = binary_logs(conn).await.unwrap_or_default();
    if let (Some(first), Some(last)) = (logs.first(), logs.last()) {
        out.push(Finding::ok(format!("the server keeps binlogs {} to {}", first.0, last.0)));
    }
    let tables = matching_tables(conn, cfg).await?;
    if tables.is_empty() {
        out.push(Finding::error(format!(
            "no table matches source.tables ({}); check the names",
            cfg.tables.join(", ")
        )));
    }
    for (db, t) in &tables {
        let cols = info_columns(conn, db, t).await?;
        if !cols.iter().any(|c| c.primary) {
            out.push(Finding::warn(format!(
                "table {db}.{t} has no primary key: its rows are keyed by all their columns (add a primary key)"
            )));
        }
    }
    if !tables.is_empty() {
        out.push(Finding::ok(format!("{} table(s) will be captured", tables.len())));
    }
    Ok(())
}
