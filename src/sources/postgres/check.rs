//! Prerequisites of the PostgreSQL source, checked against the live server.

use tokio_postgres::Client;

use super::catalog::{self, ident};
use super::{format_lsn, PostgresConfig};
use crate::check::Finding;

/// pgoutput's `messages` option (heartbeats) needs PostgreSQL 14.
const MIN_VERSION_NUM: i32 = 140_000;

pub async fn check(cfg: &PostgresConfig) -> Vec<Finding> {
    let client = match catalog::connect(cfg).await {
        Ok(c) => c,
        Err(e) => {
            return vec![Finding::error(format!(
                "cannot connect to {}: {e}; check source.url, that the server is running, and that pg_hba.conf admits this host and user",
                cfg.url
            ))]
        }
    };
    let mut out = Vec::new();
    if let Err(e) = check_connected(&client, cfg, &mut out).await {
        out.push(Finding::error(format!("checking failed: {e}")));
    }
    out
}

/// What the server says of itself and of the connecting role.
struct Server {
    user: String,
    superuser: bool,
    can_create: bool,
    max_slots: i32,
    used_slots: i32,
}

async fn check_connected(client: &Client, cfg: &PostgresConfig, out: &mut Vec<Finding>) -> Result<(), super::PgError> {
    let server = check_server(client, out).await?;
    check_slot(client, cfg, &server, out).await?;
    let tables = check_tables(client, cfg, &server, out).await?;
    check_publication(client, cfg, &server, &tables, out).await?;
    check_heartbeats(client, &server, out).await
}

/// Version, wal_level, replication rights, WAL senders.
async fn check_server(client: &Client, out: &mut Vec<Finding>) -> Result<Server, super::PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version'),
                    current_setting('wal_level'), current_setting('max_replication_slots')::int,
                    (SELECT count(*)::int FROM pg_replication_slots), current_setting('max_wal_senders')::int,
                    r.rolsuper, r.rolreplication, current_user::text,
                    has_database_privilege(current_database(), 'CREATE')
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    let (version_num, version, wal_level): (i32, String, String) = (row.get(0), row.get(1), row.get(2));
    let (max_slots, used_slots, max_senders): (i32, i32, i32) = (row.get(3), row.get(4), row.get(5));
    let (superuser, replication, user, can_create): (bool, bool, String, bool) =
        (row.get(6), row.get(7), row.get(8), row.get(9));

    out.push(Finding::ok(format!("connected to PostgreSQL {version} as {user}")));
    if version_num < MIN_VERSION_NUM {
        out.push(Finding::error(format!(
            "PostgreSQL {version} is too old; tidemark needs 14 or newer (pgoutput logical messages)"
        )));
    }
    if wal_level == "logical" {
        out.push(Finding::ok("wal_level is logical"));
    } else {
        out.push(Finding::error(format!(
            "wal_level is {wal_level}; run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL"
        )));
    }
    if superuser || replication {
        out.push(Finding::ok(format!("role {user} may open replication connections")));
    } else {
        out.push(Finding::error(format!(
            "role {user} lacks REPLICATION; run ALTER ROLE {} WITH REPLICATION",
            ident(&user)
        )));
    }
    if max_senders < 1 {
        out.push(Finding::error(
            "max_wal_senders is 0; set it to at least 1 (ALTER SYSTEM SET max_wal_senders = 10) and restart PostgreSQL",
        ));
    }
    Ok(Server { user, superuser, can_create, max_slots, used_slots })
}

/// The replication slot: there with the right plugin, or room to create it.
async fn check_slot(
    client: &Client,
    cfg: &PostgresConfig,
    server: &Server,
    out: &mut Vec<Finding>,
) -> Result<(), super::PgError> {
    let (max_slots, used_slots) = (server.max_slots, server.used_slots);
    let slot = catalog::slot(client, &cfg.slot).await?;
    match &slot {
        Some(s) if s.plugin != "pgoutput" => out.push(Finding::error(format!(
            "replication slot {} uses plugin {}; drop it with SELECT pg_drop_replication_slot('{}') or set source.slot to another name",
            cfg.slot, s.plugin, cfg.slot
        ))),
        Some(s) => out.push(Finding::ok(format!(
            "replication slot {} exists (confirmed up to {})",
            cfg.slot,
            s.confirmed_flush.map_or("nothing yet".to_string(), format_lsn)
        ))),
        None if used_slots >= max_slots => out.push(Finding::error(format!(
            "all {max_slots} replication slots are in use, so slot {} cannot be created; raise max_replication_slots (ALTER SYSTEM SET max_replication_slots = {}) and restart PostgreSQL, or drop an unused slot",
            cfg.slot,
            max_slots + 4
        ))),
        None => out.push(Finding::ok(format!("replication slot {} will be created on first start", cfg.slot))),
    }
    Ok(())
}

/// The captured tables: matched, keyed, readable.
async fn check_tables(
    client: &Client,
    cfg: &PostgresConfig,
    server: &Server,
    out: &mut Vec<Finding>,
) -> Result<Vec<catalog::TableInfo>, super::PgError> {
    let user = &server.user;
    let tables = catalog::matching_tables(client, cfg).await?;
    if tables.is_empty() {
        out.push(Finding::error(format!(
            "no table matches source.tables ({}); check the names and the schema",
            cfg.tables.join(", ")
        )));
    }
    for pattern in &cfg.tables {
        let hit =
            tables.iter().any(|t| super::config::table_included(std::slice::from_ref(pattern), &t.schema, &t.name));
        if !hit && !tables.is_empty() {
            out.push(Finding::warn(format!("source.tables entry `{pattern}` matches no table")));
        }
    }
    let mut keyed = 0;
    for t in &tables {
        if t.key_columns().is_none() {
            out.push(Finding::warn(t.unkeyed_note()));
            continue;
        }
        keyed += 1;
        let can_select: bool =
            client.query_one("SELECT has_table_privilege($1::oid, 'SELECT')", &[&t.oid]).await?.get(0);
        if !can_select {
            out.push(Finding::error(format!(
                "role {user} cannot read {}; run GRANT SELECT ON {} TO {}",
                t.qualified(),
                t.quoted(),
                ident(user)
            )));
        }
        if t.primary_key.is_empty() {
            out.push(Finding::ok(format!(
                "{} has no primary key; rows are keyed by all columns (REPLICA IDENTITY FULL)",
                t.qualified()
            )));
        }
    }
    if keyed > 0 {
        out.push(Finding::ok(format!("{keyed} table(s) will be captured")));
    }
    Ok(tables)
}

/// The publication: covering the captured tables, or creatable by this role.
async fn check_publication(
    client: &Client,
    cfg: &PostgresConfig,
    server: &Server,
    tables: &[catalog::TableInfo],
    out: &mut Vec<Finding>,
) -> Result<(), super::PgError> {
    let (user, superuser, can_create) = (&server.user, server.superuser, server.can_create);
    match catalog::publication_tables(client, &cfg.publication).await? {
        Some((true, _)) => out.push(Finding::ok(format!("publication {} exists (FOR ALL TABLES)", cfg.publication))),
        Some((false, present)) => {
            let missing: Vec<String> = tables
                .iter()
                .filter(|t| t.key_columns().is_some() && !present.contains(&t.qualified()))
                .map(|t| t.qualified())
                .collect();
            if missing.is_empty() {
                out.push(Finding::ok(format!("publication {} covers every captured table", cfg.publication)));
            } else {
                out.push(Finding::warn(format!(
                    "publication {} lacks {}; tidemark adds them on start (needs ownership of the tables), or run ALTER PUBLICATION {} ADD TABLE {}",
                    cfg.publication,
                    missing.join(", "),
                    ident(&cfg.publication),
                    missing.join(", ")
                )));
            }
        }
        None if superuser || can_create => {
            out.push(Finding::ok(format!("publication {} will be created on first start", cfg.publication)))
        }
        None => out.push(Finding::error(format!(
            "publication {} does not exist and role {user} may not create it; as a superuser run CREATE PUBLICATION {} FOR TABLE {}",
            cfg.publication,
            ident(&cfg.publication),
            tables.iter().map(|t| t.quoted()).collect::<Vec<_>>().join(", ")
        ))),
    }
    Ok(())
}

/// Heartbeats (`pg_logical_emit_message`), which keep lag honest on a quiet database.
async fn check_heartbeats(client: &Client, server: &Server, out: &mut Vec<Finding>) -> Result<(), super::PgError> {
    let user = &server.user;
    let can_emit: bool = client
        .query_one("SELECT has_function_privilege('pg_logical_emit_message(boolean, text, text)', 'EXECUTE')", &[])
        .await?
        .get(0);
    if can_emit {
        out.push(Finding::ok("heartbeats can be written (pg_logical_emit_message)"));
    } else {
        out.push(Finding::warn(format!(
            "role {user} cannot write heartbeats, so lag on a quiet database is not shown as caught up; run GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO {}",
            ident(user)
        )));
    }
    Ok(())
}
