//! The processing stage between a source and its sinks.
//!
//! A connector's `[[transform]]` entries become a [`Chain`] applied to every batch in order. Each
//! entry may be scoped to some tables (`tables`, globs over `schema.table`); events of other
//! tables pass it untouched. Stateful transforms hand their state to [`Chain::checkpoint`], which
//! the pipeline stores in the same transaction as the source position, so a crash never applies
//! an event to state twice.
//!
//! Column references are checked against every captured table when the source starts
//! ([`Specs::check_table`]): a transform naming a column a table lacks stops the connector at
//! startup, naming the file, the key and the column.

pub mod columns;
pub mod filter;

use std::path::Path;
use std::sync::Arc;

use self::columns::{Mask, MaskMethod, Project, Route};
use self::filter::FilterExpr;
use crate::config::{Diag, Secret, Section};
use crate::event::{ChangeEvent, Encoding, TableRef};

/// The transform kinds of the configuration format.
pub const KINDS: [&str; 7] = ["filter", "project", "mask", "route", "dedup", "aggregate", "window"];
const AVAILABLE: [&str; 4] = ["filter", "project", "mask", "route"];

#[derive(Debug, Clone)]
pub enum Spec {
    Filter(FilterExpr),
    Project(Project),
    Mask(Mask),
    Route(Route),
}

/// One `[[transform]]` entry.
#[derive(Debug, Clone)]
pub struct TransformConfig {
    /// `file: transform[i]`, for messages.
    pub origin: String,
    /// Only events of these tables (`schema.table`, globs); empty: every table.
    pub tables: Vec<String>,
    pub spec: Spec,
}

impl TransformConfig {
    pub fn read(file: &Path, mut s: Section, d: &mut Diag) -> Option<TransformConfig> {
        let kind = s.str(d, "kind")?;
        let tables = s.opt_str_list(d, "tables").unwrap_or_default();
        let origin = format!("{}: {}", file.display(), s.path());
        let mut allowed = vec!["kind", "tables"];
        let spec = match kind.as_str() {
            "filter" => {
                allowed.push("expr");
                let expr = s.str(d, "expr")?;
                match FilterExpr::compile(&expr) {
                    Ok(f) => Some(Spec::Filter(f)),
                    Err(e) => {
                        d.error(s.key("expr"), e);
                        None
                    }
                }
            }
            "project" => {
                allowed.extend(["keep", "drop", "rename"]);
                let keep = s.opt_str_list(d, "keep");
                let drop = s.opt_str_list(d, "drop").unwrap_or_default();
                let mut rename = Vec::new();
                if let Some(r) = s.opt_table(d, "rename") {
                    for (from, to) in r.into_json() {
                        match to {
                            serde_json::Value::String(to) => rename.push((from, to)),
                            _ => d.error(s.key(&format!("rename.{from}")), "expected the new column name"),
                        }
                    }
                }
                if keep.is_some() && !drop.is_empty() {
                    d.error(s.key("drop"), "use either keep or drop");
                }
                if keep.is_none() && drop.is_empty() && rename.is_empty() {
                    d.error(s.key("kind"), "a project needs keep, drop or rename");
                }
                Some(Spec::Project(Project { keep, drop, rename }))
            }
            "mask" => {
                allowed.extend(["columns", "method", "key", "marker"]);
                let columns = s.opt_str_list(d, "columns").unwrap_or_default();
                if columns.is_empty() {
                    d.error(s.key("columns"), "is required: the columns to mask");
                }
                let method = match s.opt_choice(d, "method", &["hash", "redact"]).as_deref() {
                    Some("redact") => {
                        Some(MaskMethod::Redact(s.opt_str(d, "marker").unwrap_or_else(|| "[redacted]".into())))
                    }
                    _ => match s.opt_str(d, "key") {
                        Some(k) if k.len() >= 16 => Some(MaskMethod::Hash(Secret::new(k))),
                        Some(_) => {
                            d.error(s.key("key"), "must be at least 16 characters (it is what keeps the hash from being reversed by guessing)");
                            None
                        }
                        None => {
                            d.error(
                                s.key("key"),
                                "is required for method = \"hash\": a secret, e.g. key = \"${MASK_KEY}\"",
                            );
                            None
                        }
                    },
                };
                method.map(|method| Spec::Mask(Mask { columns, method }))
            }
            "route" => {
                allowed.extend(["table", "key"]);
                let table = s.opt_str(d, "table");
                let key = s.opt_str_list(d, "key");
                if key.as_ref().is_some_and(Vec::is_empty) {
                    d.error(s.key("key"), "needs at least one column");
                }
                if table.is_none() && key.is_none() {
                    d.error(s.key("kind"), "a route needs table, key or both");
                }
                Some(Spec::Route(Route { table, key }))
            }
            k if KINDS.contains(&k) => {
                d.error(
                    s.key("kind"),
                    format!(
                        "transform kind `{k}` is not available in this version yet (available: {})",
                        AVAILABLE.join(", ")
                    ),
                );
                return None;
            }
            other => {
                d.error(
                    s.key("kind"),
                    format!("unknown transform kind `{other}` (expected one of: {})", KINDS.join(", ")),
                );
                return None;
            }
        };
        s.finish(d, &allowed);
        Some(TransformConfig { origin, tables, spec: spec? })
    }

    fn applies_to(&self, table: &TableRef) -> bool {
        self.tables.is_empty() || crate::sources::table_included(&self.tables, &table.schema, &table.name)
    }

    /// The columns this transform reads, each with the key that names it.
    fn column_refs(&self) -> Vec<(&'static str, String)> {
        match &self.spec {
            Spec::Filter(f) => f.refs.columns.iter().map(|c| ("expr", c.clone())).collect(),
            Spec::Project(p) => p
                .keep
                .iter()
                .flatten()
                .map(|c| ("keep", c.clone()))
                .filter(|(_, c)| !p.rename.iter().any(|(_, to)| to == c))
                .chain(p.drop.iter().map(|c| ("drop", c.clone())))
                .chain(p.rename.iter().map(|(from, _)| ("rename", from.clone())))
                .collect(),
            Spec::Mask(m) => m.columns.iter().map(|c| ("columns", c.clone())).collect(),
            Spec::Route(r) => r.key.iter().flatten().map(|c| ("key", c.clone())).collect(),
        }
    }
}

/// A connector's transform configuration, shared with its source for the startup check.
#[derive(Debug, Clone, Default)]
pub struct Specs(pub Arc<Vec<TransformConfig>>);

impl Specs {
    /// Check every transform's column references against a captured table, following the
    /// columns through the chain (a `project` renames or removes them for the transforms after
    /// it). Returns one message per problem, naming the file, the key and the column.
    pub fn check_table(&self, table: &TableRef, columns: &[String], key: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let mut cols = columns.to_vec();
        let mut key = key.to_vec();
        for t in self.0.iter().filter(|t| t.applies_to(table)) {
            for (field, c) in t.column_refs() {
                if !cols.contains(&c) {
                    out.push(format!(
                        "{}.{field}: column `{c}` is not a column of {table} (its columns here: {})",
                        t.origin,
                        cols.join(", ")
                    ));
                }
            }
            match &t.spec {
                Spec::Project(p) => {
                    cols = p.columns(&cols);
                    key = key
                        .iter()
                        .map(|k| {
                            p.rename.iter().find(|(from, _)| from == k).map_or_else(|| k.clone(), |(_, to)| to.clone())
                        })
                        .collect();
                }
                Spec::Mask(m) if matches!(m.method, MaskMethod::Redact(_)) => {
                    if let Some(k) = key.iter().find(|k| m.columns.contains(k)) {
                        out.push(format!(
                            "{}.columns: `{k}` is a key column of {table}: redacting it would give every row the same key; use method = \"hash\"",
                            t.origin
                        ));
                    }
                }
                Spec::Route(r) => {
                    if let Some(k) = &r.key {
                        key = k.clone();
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// A stage of the processing chain.
pub trait Transform: Send {
    /// Turn one event into zero or more; `Err` stops the connector (the event is not lost: it
    /// is read again after the operator fixes the cause).
    fn process(&mut self, event: ChangeEvent, out: &mut Vec<ChangeEvent>) -> Result<(), String>;

    /// Event time advanced without events (source heartbeat), e.g. to close windows.
    fn on_heartbeat(&mut self, _commit_ms: i64, _out: &mut Vec<ChangeEvent>) {}

    /// State to store with the next checkpoint, as `(operator id, bytes)`.
    fn checkpoint(&mut self) -> Option<(String, Vec<u8>)> {
        None
    }

    /// Whether this stage keeps state across events.
    fn is_stateful(&self) -> bool {
        false
    }
}

/// A stateless transform from its configuration, scoped to its tables.
struct Stateless {
    cfg: TransformConfig,
    enc: Encoding,
}

impl Transform for Stateless {
    fn process(&mut self, mut ev: ChangeEvent, out: &mut Vec<ChangeEvent>) -> Result<(), String> {
        if !self.cfg.applies_to(&ev.table) {
            out.push(ev);
            return Ok(());
        }
        let origin = &self.cfg.origin;
        let fail = |e: String, ev: &ChangeEvent| format!("{origin}: {e} (event of {} key {:?})", ev.table, ev.key);
        match &self.cfg.spec {
            Spec::Filter(f) => {
                // A truncate has no row: filters on columns cannot judge it, so it passes.
                if ev.op == crate::event::Op::Truncate || f.matches(&ev, &self.enc).map_err(|e| fail(e, &ev))? {
                    out.push(ev);
                }
                return Ok(());
            }
            Spec::Project(p) => p.apply(&mut ev),
            Spec::Mask(m) => m.apply(&mut ev),
            Spec::Route(r) => {
                if let Err(e) = r.apply(&mut ev) {
                    return Err(fail(e, &ev));
                }
            }
        }
        out.push(ev);
        Ok(())
    }
}

#[derive(Default)]
pub struct Chain {
    stages: Vec<Box<dyn Transform>>,
}

impl Chain {
    pub fn new(stages: Vec<Box<dyn Transform>>) -> Self {
        Chain { stages }
    }

    /// The chain of a connector's transforms.
    pub fn build(specs: &Specs, enc: Encoding) -> Chain {
        let stages = specs
            .0
            .iter()
            .map(|cfg| Box::new(Stateless { cfg: cfg.clone(), enc: enc.clone() }) as Box<dyn Transform>)
            .collect();
        Chain { stages }
    }

    /// Run a batch through every stage in order.
    pub fn apply(
        &mut self,
        mut events: Vec<ChangeEvent>,
        heartbeat_ms: Option<i64>,
    ) -> Result<Vec<ChangeEvent>, String> {
        for stage in &mut self.stages {
            let mut out = Vec::with_capacity(events.len());
            for ev in events {
                stage.process(ev, &mut out)?;
            }
            if let Some(ts) = heartbeat_ms {
                stage.on_heartbeat(ts, &mut out);
            }
            events = out;
        }
        Ok(events)
    }

    /// No stage keeps state (so a checkpoint may be taken between any two batches).
    pub fn is_stateless(&self) -> bool {
        !self.stages.iter().any(|s| s.is_stateful())
    }

    pub fn checkpoint(&mut self) -> Vec<(String, Vec<u8>)> {
        self.stages.iter_mut().filter_map(|s| s.checkpoint()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reader::Section as S;

    fn read(toml: &str) -> Result<TransformConfig, Vec<String>> {
        let mut d = Diag::new(Path::new("c.toml"));
        let table: toml::Table = toml.parse().unwrap();
        let t = TransformConfig::read(Path::new("c.toml"), S::new("transform[0]", table), &mut d);
        if d.is_empty() {
            Ok(t.unwrap())
        } else {
            Err(d.into_errors().into_iter().map(|e| e.to_string()).collect())
        }
    }

    #[test]
    fn bad_transforms_are_refused_with_file_and_key() {
        let e = read("kind = \"filter\"\nexpr = \"after.x ==\"").unwrap_err();
        assert!(
            e[0].contains("c.toml") && e[0].contains("transform[0].expr") && e[0].contains("invalid expression"),
            "{e:?}"
        );
        let e = read("kind = \"mask\"\ncolumns = [\"email\"]").unwrap_err();
        assert!(e[0].contains("transform[0].key"), "{e:?}");
        let e = read("kind = \"project\"\nkeep = [\"a\"]\nextra = 1").unwrap_err();
        assert!(e[0].contains("transform[0].extra") && e[0].contains("unknown key"), "{e:?}");
        let e = read("kind = \"shuffle\"").unwrap_err();
        assert!(e[0].contains("unknown transform kind"), "{e:?}");
    }

    #[test]
    fn column_references_are_checked_through_the_chain() {
        let specs = Specs(Arc::new(vec![
            read("kind = \"project\"\nrename = { status = \"state\" }").unwrap(),
            read("kind = \"filter\"\nexpr = \"after.status == 'paid'\"").unwrap(),
            read("kind = \"mask\"\nmethod = \"redact\"\ncolumns = [\"id\"]").unwrap(),
            read("kind = \"route\"\ntables = [\"public.other\"]\nkey = [\"nope\"]").unwrap(),
        ]));
        let table = TableRef { db: "d".into(), schema: "public".into(), name: "orders".into() };
        let cols = ["id", "status"].map(String::from);
        let errors = specs.check_table(&table, &cols, &["id".into()]);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains(
                "transform[0].expr: column `status` is not a column of public.orders (its columns here: id, state)"
            ),
            "{errors:?}"
        );
        assert!(errors[1].contains("`id` is a key column"), "{errors:?}");
    }
}
