//! Index names, document ids and external versions.

use crate::event::{Encoding, Row, Value, Version};

/// Elasticsearch's `_id` limit, in bytes.
pub const MAX_ID_BYTES: usize = 512;
const MAX_INDEX_BYTES: usize = 255;

/// Lowercase a rendered index name and check it against Elasticsearch's rules.
pub fn index_name(rendered: &str) -> Result<String, String> {
    let name = rendered.to_lowercase();
    let bad = |why: &str| Err(format!("index name `{name}` {why}"));
    if name.is_empty() {
        return bad("is empty");
    }
    if name == "." || name == ".." {
        return bad("may not be `.` or `..`");
    }
    if name.starts_with(['-', '_', '+']) {
        return bad("may not start with `-`, `_` or `+`");
    }
    if let Some(c) =
        name.chars().find(|c| matches!(c, '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'))
    {
        return bad(&format!("may not contain `{c}`"));
    }
    if name.len() > MAX_INDEX_BYTES {
        return bad(&format!("is longer than {MAX_INDEX_BYTES} bytes"));
    }
    Ok(name)
}

/// The document `_id` of a row: one key column's value as is; several columns' values joined by
/// `:`, each with `\` and `:` escaped by a `\`, and NULL written `\N`. So `(1, "a:b")` is
/// `1:a\:b`, and no two keys of a table share an `_id`.
pub fn doc_id(key: &Row, out: &mut String) -> Result<(), String> {
    out.clear();
    let enc = Encoding::default();
    if key.len() == 1 {
        let (name, v) = key.iter().next().expect("one column");
        if v.is_null() {
            return Err(format!("key column {name} is NULL"));
        }
        enc.write_text(v, out);
    } else {
        let mut text = String::new();
        for (i, (_, v)) in key.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            if matches!(v, Value::Null) {
                out.push_str("\\N");
                continue;
            }
            text.clear();
            enc.write_text(v, &mut text);
            for c in text.chars() {
                if c == '\\' || c == ':' {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    if key.is_empty() {
        return Err("the row has no key".into());
    }
    if out.is_empty() {
        return Err("the key is an empty string, which Elasticsearch does not accept as an _id".into());
    }
    if out.len() > MAX_ID_BYTES {
        return Err(format!("the _id would be {} bytes; Elasticsearch allows {MAX_ID_BYTES}", out.len()));
    }
    Ok(())
}

/// The external version of a change: the source coordinate of its commit (PostgreSQL commit LSN,
/// MySQL binlog coordinate of its rows event). Elasticsearch versions are 63-bit, too small for
/// tidemark's full `(coordinate, index)`, so changes of one transaction share a version and are
/// written with `version_type=external_gte`: a write of an older transaction is refused (409,
/// counted as already applied), and within a transaction the writes of one document arrive in
/// source order (tidemark never reorders a document's writes).
pub fn external_version(v: Version) -> Result<i64, String> {
    i64::try_from(v.hi).map_err(|_| format!("source version {:#x} exceeds Elasticsearch's 63-bit version range", v.hi))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn key(values: Vec<Value>) -> Row {
        Row(values.into_iter().enumerate().map(|(i, v)| (Arc::from(format!("k{i}")), v)).collect())
    }

    #[test]
    fn index_names_follow_the_rules() {
        assert_eq!(index_name("Shop.Public.Customers").unwrap(), "shop.public.customers");
        assert!(index_name("_hidden").unwrap_err().contains("may not start"));
        assert!(index_name("a b").unwrap_err().contains("` `"));
        assert!(index_name("a:b").is_err());
        assert!(index_name(&"x".repeat(256)).is_err());
        assert!(index_name("..").is_err());
    }

    #[test]
    fn ids_are_unambiguous() {
        let mut out = String::new();
        doc_id(&key(vec![Value::Int(42)]), &mut out).unwrap();
        assert_eq!(out, "42");
        doc_id(&key(vec![Value::Text("a:b".into())]), &mut out).unwrap();
        assert_eq!(out, "a:b");
        doc_id(&key(vec![Value::Int(1), Value::Text("a:b".into())]), &mut out).unwrap();
        assert_eq!(out, "1:a\\:b");
        let mut other = String::new();
        doc_id(&key(vec![Value::Text("1:a".into()), Value::Text("b".into())]), &mut other).unwrap();
        assert_eq!(other, "1\\:a:b");
        assert_ne!(out, other);
        doc_id(&key(vec![Value::Null, Value::Text("\\N".into())]), &mut out).unwrap();
        assert_eq!(out, "\\N:\\\\N");
        assert!(doc_id(&key(vec![Value::Text("".into())]), &mut out).is_err());
        assert!(doc_id(&key(vec![Value::Text("x".repeat(600))]), &mut out).unwrap_err().contains("512"));
    }

    #[test]
    fn versions_fit_or_fail() {
        assert_eq!(external_version(Version::new(0x16b3748, 7)).unwrap(), 0x16b3748);
        assert!(external_version(Version::new(u64::MAX, 0)).is_err());
    }
}
