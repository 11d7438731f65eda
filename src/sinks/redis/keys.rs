//! Row keys from templates, version keys beside them, and SCAN patterns.

use crate::event::ChangeEvent;
pub use crate::sinks::template::{render as render_key, Part};

/// The SCAN MATCH pattern of every row key of `ev`'s table.
pub fn scan_pattern(parts: &[Part], connector: &str, ev: &ChangeEvent) -> String {
    let mut out = String::new();
    let lit = |s: &str, out: &mut String| {
        for c in s.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
    };
    for p in parts {
        match p {
            Part::Lit(s) => lit(s, &mut out),
            Part::Connector => lit(connector, &mut out),
            Part::Db => lit(&ev.table.db, &mut out),
            Part::Schema => lit(&ev.table.schema, &mut out),
            Part::Table => lit(&ev.table.name, &mut out),
            Part::Key => out.push('*'),
        }
    }
    out
}

/// Does `key` carry a Redis Cluster hash tag (a non-empty `{...}`)?
fn has_hash_tag(key: &str) -> bool {
    key.find('{').is_some_and(|open| key[open + 1..].find('}').is_some_and(|len| len > 0))
}

/// The key holding `row_key`'s version: same cluster slot as the row, different namespace.
pub fn version_key(prefix: &str, row_key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + row_key.len() + 2);
    write_version_key(&mut out, prefix, row_key);
    out
}

/// Append the version key of `row_key` to `out` (see [`version_key`]):
/// `<prefix><row key>` when the row key has a hash tag (the same tag then decides both slots),
/// `<prefix>{<row key>}` when it has no braces at all, and otherwise (braces that form no tag,
/// e.g. a key value `a}b`) `<prefix>{<tag>}<row key>` with a tag chosen to hash to the row's slot.
pub fn write_version_key(out: &mut String, prefix: &str, row_key: &str) {
    out.push_str(prefix);
    if has_hash_tag(row_key) {
        out.push_str(row_key);
    } else if row_key.contains(['{', '}']) {
        out.push('{');
        out.push_str(super::cluster::slot_tag(super::cluster::key_slot(row_key)));
        out.push('}');
        out.push_str(row_key);
    } else {
        out.push('{');
        out.push_str(row_key);
        out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::cluster::key_slot;
    use super::super::config::parse_template;
    use super::*;
    use crate::event::{Op, Row, SnapshotFlag, SourceMeta, TableRef, Value, Version};

    #[test]
    fn version_key_shares_the_rows_slot() {
        for k in ["shop:customers:42", "shop:{customers}:42", "a", "{tag}rest", "x:{}:y", "t:a}b", "t:a{b", "}{"] {
            let v = version_key("tidemark:v:", k);
            assert_eq!(key_slot(&v), key_slot(k), "{k} -> {v}");
            assert!(v.starts_with("tidemark:v:"));
        }
        assert_eq!(version_key("tidemark:v:", "shop:customers:42"), "tidemark:v:{shop:customers:42}");
    }

    fn event(key: Vec<Value>) -> ChangeEvent {
        ChangeEvent {
            op: Op::Create,
            table: Arc::new(TableRef { db: "d".into(), schema: "public".into(), name: "t*x".into() }),
            key: Row(key.into_iter().enumerate().map(|(i, v)| (Arc::from(format!("k{i}")), v)).collect()),
            before: None,
            after: None,
            partial: false,
            version: Version::default(),
            commit_us: 0,
            snapshot: SnapshotFlag::No,
            source: SourceMeta::Postgres { lsn: 0, last_commit_lsn: None, tx_id: None },
        }
    }

    #[test]
    fn keys_and_patterns() {
        let parts = parse_template("{connector}:{table}:{key}").unwrap();
        let mut out = String::new();
        render_key(&parts, "shop", &event(vec![Value::Int(7), Value::Text("b".into())]), &mut out);
        assert_eq!(out, "shop:t*x:7:b");
        assert_eq!(scan_pattern(&parts, "shop", &event(vec![])), "shop:t\\*x:*");
    }
}
