//! Catalog queries on an ordinary connection: tables, keys, types, publication and slot.

use std::collections::HashMap;

use tokio_postgres::Client;

use super::config::{table_included, PostgresConfig};
use super::types::{PgType, SESSION_SETTINGS};
use super::PgError;

/// Quote an identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote a string literal (standard_conforming_strings is on in every supported version).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Connect an ordinary session with the text settings the decoder expects.
pub async fn connect(cfg: &PostgresConfig) -> Result<Client, PgError> {
    let mut pg = cfg.pg.clone();
    pg.application_name("tidemark");
    let tls = cfg.tls.make().map_err(|e| PgError::Operator(format!("postgres {}: {e}", cfg.url.redacted())))?;
    let (client, connection) = pg.connect(tls).await.map_err(|source| connect_error(cfg, source))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    let settings: String = SESSION_SETTINGS.iter().map(|(k, v)| format!("SET {k} = {};", literal(v))).collect();
    client.batch_execute(&settings).await?;
    Ok(client)
}

/// A failed connection; a TLS failure (or a server that admits the user only over TLS) says which
/// it was and what to set, and is the operator's to fix.
fn connect_error(cfg: &PostgresConfig, source: tokio_postgres::Error) -> PgError {
    match cfg.tls.explain(&cfg.host(), &super::error_chain(&source)) {
        Some(why) => PgError::Operator(format!("postgres {}: {why}", cfg.url.redacted())),
        None => PgError::Connect { url: cfg.url.redacted(), source },
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub typmod: i32,
}

/// A table the connector captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    /// Primary-key columns in key order; empty when the table has none.
    pub primary_key: Vec<String>,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: char,
    pub partitioned: bool,
}

impl TableInfo {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub fn quoted(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }

    /// The columns that key a row: the primary key, or every column under REPLICA IDENTITY FULL.
    /// `None` when the table cannot be keyed.
    pub fn key_columns(&self) -> Option<Vec<String>> {
        if !self.primary_key.is_empty() {
            Some(self.primary_key.clone())
        } else if self.replica_identity == 'f' {
            Some(self.columns.iter().map(|c| c.name.clone()).collect())
        } else {
            None
        }
    }

    pub fn unkeyed_note(&self) -> String {
        format!(
            "table {} has no primary key and REPLICA IDENTITY is not FULL, so its rows cannot be keyed: it is skipped; add a primary key or run ALTER TABLE {} REPLICA IDENTITY FULL",
            self.qualified(),
            self.quoted()
        )
    }
}

/// Every ordinary or partitioned table matching the include patterns (partitions themselves are
/// left out: their changes are published through the partitioned root).
pub async fn matching_tables(client: &Client, cfg: &PostgresConfig) -> Result<Vec<TableInfo>, PgError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relreplident::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
                AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
              ORDER BY 2, 3",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let (schema, name): (String, String) = (row.get(1), row.get(2));
        if !table_included(&cfg.tables, &schema, &name) {
            continue;
        }
        let oid: u32 = row.get(0);
        let kind: String = row.get(3);
        let ident_kind: String = row.get(4);
        out.push(TableInfo {
            oid,
            schema,
            name,
            columns: columns(client, oid).await?,
            primary_key: primary_key(client, oid).await?,
            replica_identity: ident_kind.chars().next().unwrap_or('d'),
            partitioned: kind == "p",
        });
    }
    Ok(out)
}

/// Columns as pgoutput sends them: not dropped, not generated.
pub async fn columns(client: &Client, oid: u32) -> Result<Vec<Column>, PgError> {
    let rows = client
        .query(
            "SELECT attname::text, atttypid, atttypmod FROM pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
              ORDER BY attnum",
            &[&oid],
        )
        .await?;
    Ok(rows.into_iter().map(|r| Column { name: r.get(0), type_oid: r.get(1), typmod: r.get(2) }).collect())
}

/// The key columns: those of the REPLICA IDENTITY USING INDEX index when there is one (the old
/// row of a delete carries only those), else of the primary key.
pub async fn primary_key(client: &Client, oid: u32) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "SELECT a.attname::text
               FROM (SELECT indrelid, indkey::int2[] AS cols FROM pg_index
                      WHERE indrelid = $1 AND (indisprimary OR indisreplident)
                      ORDER BY indisreplident DESC, indisprimary DESC LIMIT 1) i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.cols)
              ORDER BY array_position(i.cols, a.attnum)",
            &[&oid],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Resolves type OIDs that are not built in (enums, domains, arrays of those, extension types),
/// caching the answers.
#[derive(Default)]
pub struct TypeCache {
    known: HashMap<u32, PgType>,
}

impl TypeCache {
    pub async fn resolve(&mut self, client: &Client, oid: u32) -> Result<PgType, PgError> {
        if let Some(t) = PgType::builtin(oid) {
            return Ok(t);
        }
        if let Some(t) = self.known.get(&oid) {
            return Ok(t.clone());
        }
        let mut oid_now = oid;
        // Follow domains to their base type and arrays to their element type (a few hops).
        let mut wrappers = 0usize;
        let t = loop {
            if let Some(t) = PgType::builtin(oid_now) {
                break t;
            }
            let row = client
                .query_opt(
                    "SELECT typtype::text, typcategory::text, typelem, typbasetype, format_type(oid, NULL)
                       FROM pg_type WHERE oid = $1",
                    &[&oid_now],
                )
                .await?;
            let Some(row) = row else { break PgType::Other(format!("oid {oid_now}")) };
            let (typtype, category, elem, base, name): (String, String, u32, u32, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            match (typtype.as_str(), category.as_str()) {
                ("e", _) => break PgType::Enum,
                ("d", _) if base != 0 && wrappers < 8 => oid_now = base,
                (_, "A") if elem != 0 && wrappers < 8 => {
                    let inner = Box::pin(self.resolve(client, elem)).await?;
                    break PgType::Array(Box::new(inner));
                }
                _ => break PgType::Other(name),
            }
            wrappers += 1;
        };
        self.known.insert(oid, t.clone());
        Ok(t)
    }
}

pub struct SlotInfo {
    pub plugin: String,
    pub confirmed_flush: Option<u64>,
    pub active_pid: Option<i32>,
}

pub async fn slot(client: &Client, name: &str) -> Result<Option<SlotInfo>, PgError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, confirmed_flush_lsn::text, active_pid FROM pg_replication_slots
              WHERE slot_name = $1 AND database = current_database()",
            &[&name],
        )
        .await?;
    Ok(row.map(|r| SlotInfo {
        plugin: r.get(0),
        confirmed_flush: r.get::<_, Option<String>>(1).and_then(|s| super::parse_lsn(&s)),
        active_pid: r.get(2),
    }))
}

/// Tables already in a publication, as `schema.table`; `None` when it does not exist.
pub async fn publication_tables(client: &Client, name: &str) -> Result<Option<(bool, Vec<String>)>, PgError> {
    let Some(row) = client.query_opt("SELECT puballtables FROM pg_publication WHERE pubname = $1", &[&name]).await?
    else {
        return Ok(None);
    };
    let all: bool = row.get(0);
    let rows = client
        .query(
            "SELECT schemaname::text || '.' || tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&name],
        )
        .await?;
    Ok(Some((all, rows.into_iter().map(|r| r.get(0)).collect())))
}

/// Create the publication for `tables`, or add the ones it lacks.
pub async fn ensure_publication(client: &Client, name: &str, tables: &[&TableInfo]) -> Result<(), PgError> {
    let list = |ts: &[&TableInfo]| ts.iter().map(|t| t.quoted()).collect::<Vec<_>>().join(", ");
    match publication_tables(client, name).await? {
        None => {
            if tables.is_empty() {
                return Err(PgError::Operator("no table to publish: every matching table was skipped".into()));
            }
            let sql = format!(
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
                ident(name),
                list(tables)
            );
            client.batch_execute(&sql).await?;
            tracing::info!(publication = name, tables = tables.len(), "created publication");
        }
        Some((true, _)) => {}
        Some((false, present)) => {
            let missing: Vec<&TableInfo> =
                tables.iter().copied().filter(|t| !present.contains(&t.qualified())).collect();
            if !missing.is_empty() {
                client
                    .batch_execute(&format!("ALTER PUBLICATION {} ADD TABLE {}", ident(name), list(&missing)))
                    .await?;
                tracing::info!(publication = name, added = %list(&missing), "added tables to publication");
            }
        }
    }
    Ok(())
}
