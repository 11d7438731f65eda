//! `[[transform]]` entries: reading and checking them. Running them is [`super::chain`]'s.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::agg::AggSpec;
use super::aggregate::AggregateConfig;
use super::columns::{Mask, MaskMethod, Project, Route};
use super::dedup::DedupConfig;
use super::filter::FilterExpr;
use super::window::{TimeSource, WindowConfig, WindowKind};
use crate::connector::CapturedTable;
use crate::event::TableRef;
use crate::settings::{Diag, Secret, Section};

/// The transform kinds of the configuration format.
pub const KINDS: [&str; 7] = ["filter", "project", "mask", "route", "dedup", "aggregate", "window"];
const AVAILABLE: [&str; 7] = ["filter", "project", "mask", "route", "dedup", "aggregate", "window"];
/// Default number of state entries an operator keeps in memory per state table.
pub const DEFAULT_MAX_CACHED: usize = 100_000;
/// How long a dedup remembers an id by default.
pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);
/// How many ids a dedup keeps by default.
pub const DEFAULT_DEDUP_MAX_ENTRIES: usize = 1_000_000;
/// A hashed mask's key must be at least this long to resist guessing.
const MIN_MASK_KEY_LEN: usize = 16;

#[derive(Debug, Clone)]
pub enum Spec {
    Filter(FilterExpr),
    Project(Project),
    Mask(Mask),
    Route(Route),
    Aggregate(AggregateConfig),
    Window(WindowConfig),
    Dedup(DedupConfig),
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
    pub fn read(file: &Path, connector: &str, mut s: Section, d: &mut Diag) -> Option<TransformConfig> {
        let kind = s.str(d, "kind")?;
        let tables = s.opt_str_list(d, "tables").unwrap_or_default();
        let origin = format!("{}: {}", file.display(), s.path());
        let (keys, spec): (&[&str], Option<Spec>) = match kind.as_str() {
            "filter" => (&["expr"], read_filter(&mut s, d)),
            "project" => (&["keep", "drop", "rename"], read_project(&mut s, d)),
            "mask" => (&["columns", "method", "key", "marker"], read_mask(&mut s, d)),
            "route" => (&["table", "key"], read_route(&mut s, d)),
            "aggregate" => (
                &["name", "group_by", "aggregates", "pass_through", "max_cached_entries", "before_images"],
                read_aggregate(&mut s, d),
            ),
            "dedup" => (&["name", "columns", "ttl", "max_entries"], read_dedup(&mut s, d)),
            "window" => (&WINDOW_KEYS, read_window(&mut s, d, connector).map(Spec::Window)),
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
        let mut allowed = vec!["kind", "tables"];
        allowed.extend_from_slice(keys);
        s.finish(d, &allowed);
        Some(TransformConfig { origin, tables, spec: spec? })
    }

    /// The derived table's name, for stateful transforms.
    /// Whether the transform keeps state across events (checkpointed with the position).
    pub fn is_stateful(&self) -> bool {
        matches!(self.spec, Spec::Aggregate(_) | Spec::Window(_) | Spec::Dedup(_))
    }

    pub fn derived_table(&self) -> Option<&str> {
        match &self.spec {
            Spec::Aggregate(a) => Some(&a.name),
            Spec::Window(w) => Some(&w.name),
            _ => None,
        }
    }

    pub(super) fn applies_to(&self, table: &TableRef) -> bool {
        self.tables.is_empty() || crate::connector::table_included(&self.tables, &table.schema, &table.name)
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
            Spec::Aggregate(a) => a
                .group_by
                .iter()
                .map(|c| ("group_by", c.clone()))
                .chain(a.aggregates.iter().filter_map(|x| x.column.clone()).map(|c| ("aggregates", c)))
                .collect(),
            Spec::Dedup(x) => x.columns.iter().flatten().map(|c| ("columns", c.clone())).collect(),
            Spec::Window(w) => w
                .group_by
                .iter()
                .map(|c| ("group_by", c.clone()))
                .chain(w.aggregates.iter().filter_map(|x| x.column.clone()).map(|c| ("aggregates", c)))
                .chain(match &w.time {
                    TimeSource::Column(c) => Some(("time_column", c.clone())),
                    TimeSource::Commit => None,
                })
                .collect(),
        }
    }
}

fn read_filter(s: &mut Section, d: &mut Diag) -> Option<Spec> {
    let expr = s.str(d, "expr")?;
    match FilterExpr::compile(&expr) {
        Ok(f) => Some(Spec::Filter(f)),
        Err(e) => {
            d.error(s.key("expr"), e);
            None
        }
    }
}

fn read_project(s: &mut Section, d: &mut Diag) -> Option<Spec> {
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

fn read_mask(s: &mut Section, d: &mut Diag) -> Option<Spec> {
    let columns = s.opt_str_list(d, "columns").unwrap_or_default();
    if columns.is_empty() {
        d.error(s.key("columns"), "is required: the columns to mask");
    }
    let method = match s.opt_choice(d, "method", &["hash", "redact"]).as_deref() {
        Some("redact") => Some(MaskMethod::Redact(s.opt_str(d, "marker").unwrap_or_else(|| "[redacted]".into()))),
        _ => match s.opt_str(d, "key") {
            Some(k) if k.len() >= MIN_MASK_KEY_LEN => Some(MaskMethod::Hash(Secret::new(k))),
            Some(_) => {
                d.error(
                    s.key("key"),
                    "must be at least 16 characters (it is what keeps the hash from being reversed by guessing)",
                );
                None
            }
            None => {
                d.error(s.key("key"), "is required for method = \"hash\": a secret, e.g. key = \"${MASK_KEY}\"");
                None
            }
        },
    };
    method.map(|method| Spec::Mask(Mask { columns, method }))
}

fn read_route(s: &mut Section, d: &mut Diag) -> Option<Spec> {
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

fn read_aggregate(s: &mut Section, d: &mut Diag) -> Option<Spec> {
    let name = derived_name(s, d);
    let group_by = s.opt_str_list(d, "group_by").unwrap_or_default();
    if group_by.is_empty() {
        d.error(s.key("group_by"), "is required: the columns that form a group");
    }
    let aggregates = aggregate_specs(s, d);
    let pass_through = s.opt_bool(d, "pass_through").unwrap_or(true);
    let max_cached = s.opt_nonzero(d, "max_cached_entries").map_or(DEFAULT_MAX_CACHED, |n| n.get());
    let before_images = s.opt_bool(d, "before_images").unwrap_or(false);
    name.map(|name| {
        Spec::Aggregate(AggregateConfig { name, group_by, aggregates, pass_through, max_cached, before_images })
    })
}

fn read_dedup(s: &mut Section, d: &mut Diag) -> Option<Spec> {
    let columns = s.opt_str_list(d, "columns");
    if columns.as_ref().is_some_and(Vec::is_empty) {
        d.error(s.key("columns"), "needs at least one column (leave it out to use the change itself as the id)");
    }
    let ttl = s.opt_duration(d, "ttl").unwrap_or(DEFAULT_DEDUP_TTL);
    let max_entries = s.opt_nonzero(d, "max_entries").map_or(DEFAULT_DEDUP_MAX_ENTRIES, |n| n.get());
    Some(Spec::Dedup(DedupConfig { columns, ttl: ttl.as_millis() as i64, max_entries }))
}

const WINDOW_KEYS: [&str; 18] = [
    "name",
    "type",
    "size",
    "slide",
    "gap",
    "time_column",
    "group_by",
    "aggregates",
    "ops",
    "out_of_orderness",
    "allowed_lateness",
    "emit",
    "retention",
    "pass_through",
    "max_cached_entries",
    "dead_letter_path",
    "dead_letter_url",
    "dead_letter_stream",
];

/// `name`: a derived table's name.
fn derived_name(s: &mut Section, d: &mut Diag) -> Option<String> {
    let name = s.str(d, "name");
    if let Some(n) = &name {
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            d.error(s.key("name"), "the derived table's name: letters, digits and _");
        }
    }
    name
}

/// `aggregates = { out = "fn(column)", ... }`.
fn aggregate_specs(s: &mut Section, d: &mut Diag) -> Vec<AggSpec> {
    let mut aggregates = Vec::new();
    match s.opt_table(d, "aggregates") {
        Some(t) => {
            for (out, text) in t.into_json() {
                match text.as_str().map(|t| AggSpec::parse(&out, t)) {
                    Some(Ok(a)) => aggregates.push(a),
                    Some(Err(e)) => d.error(s.key(&format!("aggregates.{out}")), e),
                    None => {
                        d.error(s.key(&format!("aggregates.{out}")), "expected \"fn(column)\", e.g. \"sum(total)\"")
                    }
                }
            }
        }
        None => d.error(
            s.key("aggregates"),
            "is required, e.g. aggregates = { orders = \"count(*)\", revenue = \"sum(total)\" }",
        ),
    }
    aggregates
}

fn read_window(s: &mut Section, d: &mut Diag, connector: &str) -> Option<WindowConfig> {
    let name = derived_name(s, d);
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as i64);
    let kind = s.opt_choice(d, "type", &["tumbling", "hopping", "session"]);
    let size = ms(s.opt_duration(d, "size")).filter(|v| *v > 0);
    let slide = ms(s.opt_duration(d, "slide")).filter(|v| *v > 0);
    let gap = ms(s.opt_duration(d, "gap")).filter(|v| *v > 0);
    let kind = match (kind.as_deref().unwrap_or("tumbling"), size, slide, gap) {
        ("tumbling", Some(size), None, None) => Some(WindowKind::Tumbling { size }),
        ("hopping", Some(size), Some(slide), None) if slide <= size => Some(WindowKind::Hopping { size, slide }),
        ("hopping", Some(_), Some(_), None) => {
            d.error(s.key("slide"), "must not be longer than size");
            None
        }
        ("hopping", ..) => {
            d.error(
                s.key("size"),
                "a hopping window needs size and slide (and no gap), e.g. size = \"1h\", slide = \"5m\"",
            );
            None
        }
        ("session", None, None, Some(gap)) => Some(WindowKind::Session { gap }),
        ("session", ..) => {
            d.error(s.key("gap"), "a session window needs gap (and no size or slide), e.g. gap = \"30m\"");
            None
        }
        _ => {
            d.error(s.key("size"), "a tumbling window needs size (and no slide or gap), e.g. size = \"1m\"");
            None
        }
    };
    let time = s.opt_str(d, "time_column").map_or(TimeSource::Commit, TimeSource::Column);
    let group_by = s.opt_str_list(d, "group_by").unwrap_or_default();
    let aggregates = aggregate_specs(s, d);
    let mut ops = Vec::new();
    for o in s.opt_str_list(d, "ops").unwrap_or_else(|| vec!["c".into()]) {
        match o.as_str() {
            "c" => ops.push(crate::event::Op::Create),
            "u" => ops.push(crate::event::Op::Update),
            "d" => ops.push(crate::event::Op::Delete),
            "r" => ops.push(crate::event::Op::Read),
            other => d.error(s.key("ops"), format!("`{other}` is not one of c, u, d, r")),
        }
    }
    let out_of_orderness = ms(s.opt_duration(d, "out_of_orderness")).unwrap_or(0);
    let allowed_lateness = ms(s.opt_duration(d, "allowed_lateness")).unwrap_or(0);
    let emit_updates = s.opt_choice(d, "emit", &["final", "update"]).as_deref() == Some("update");
    let retention = ms(s.opt_duration(d, "retention"));
    let pass_through = s.opt_bool(d, "pass_through").unwrap_or(true);
    let max_cached = s.opt_nonzero(d, "max_cached_entries").map_or(DEFAULT_MAX_CACHED, |n| n.get());
    let dead_letter = crate::connector::DeadLetterTarget::read(s, d, connector);
    Some(WindowConfig {
        name: name?,
        kind: kind?,
        time,
        group_by,
        aggregates,
        ops,
        out_of_orderness,
        allowed_lateness,
        retention,
        emit_updates,
        pass_through,
        max_cached,
        dead_letter,
    })
}

/// A connector's transform configuration, shared with the pipeline's check of captured tables.
#[derive(Debug, Clone, Default)]
pub struct Specs(pub Arc<Vec<TransformConfig>>);

impl Specs {
    /// Check every transform's column references against a captured table, following the
    /// columns through the chain (a `project` renames or removes them for the transforms after
    /// it). Returns one message per problem, naming the file, the key and the column.
    pub fn check_table(&self, captured: &CapturedTable) -> Vec<String> {
        let (table, columns, key) = (&captured.table, &captured.columns, &captured.key);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Section as S;

    fn read(toml: &str) -> Result<TransformConfig, Vec<String>> {
        let mut d = Diag::new(Path::new("c.toml"));
        let table: toml::Table = toml.parse().unwrap();
        let t = TransformConfig::read(Path::new("c.toml"), "c", S::new("transform[0]", table), &mut d);
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
        let e = read("kind = \"aggregate\"\nname = \"a\"\ngroup_by = [\"c\"]\naggregates = { n = \"count(*)\" }\nbefore_images = \"yes\"")
            .unwrap_err();
        assert!(e.len() == 1 && e[0].contains("c.toml") && e[0].contains("transform[0].before_images"), "{e:?}");
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
        let errors = specs.check_table(&CapturedTable { table, columns: cols.to_vec(), key: vec!["id".into()] });
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
