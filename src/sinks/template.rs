//! Name templates shared by the sinks: `{connector}`, `{db}`, `{schema}`, `{table}` and (where a
//! sink allows it) `{key}`, rendered per event.

use crate::event::{ChangeEvent, Encoding, Row};

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    Connector,
    Db,
    Schema,
    Table,
    Key,
}

/// Parse a template; `allow_key` says whether `{key}` is a placeholder here.
pub fn parse(t: &str, allow_key: bool) -> Result<Vec<Part>, String> {
    let names =
        if allow_key { "{connector}, {db}, {schema}, {table}, {key}" } else { "{connector}, {db}, {schema}, {table}" };
    let mut parts = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| format!("`{t}`: unclosed `{{`"))?;
        if open > 0 {
            parts.push(Part::Lit(rest[..open].to_string()));
        }
        parts.push(match &rest[open + 1..close] {
            "connector" => Part::Connector,
            "db" => Part::Db,
            "schema" => Part::Schema,
            "table" => Part::Table,
            "key" if allow_key => Part::Key,
            other => return Err(format!("`{{{other}}}` is not a placeholder here (use {names})")),
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_string()));
    }
    Ok(parts)
}

/// Append the text of a key's values, joined by `:`.
fn write_key_values(key: &Row, out: &mut String) {
    // Key columns are rendered with tidemark's default encoding, so the same row always maps to
    // the same name whatever the connector's output options.
    let enc = Encoding::default();
    for (i, (_, v)) in key.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        enc.write_text(v, out);
    }
}

/// Render the template for `ev` into `out`.
pub fn render(parts: &[Part], connector: &str, ev: &ChangeEvent, out: &mut String) {
    out.clear();
    for p in parts {
        match p {
            Part::Lit(s) => out.push_str(s),
            Part::Connector => out.push_str(connector),
            Part::Db => out.push_str(&ev.table.db),
            Part::Schema => out.push_str(&ev.table.schema),
            Part::Table => out.push_str(&ev.table.name),
            Part::Key => write_key_values(&ev.key, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(
            parse("{connector}:{table}:{key}", true).unwrap(),
            vec![Part::Connector, Part::Lit(":".into()), Part::Table, Part::Lit(":".into()), Part::Key]
        );
        assert!(parse("{tabel}:{key}", true).unwrap_err().contains("not a placeholder"));
        assert!(parse("{table}-{key}", false).unwrap_err().contains("not a placeholder"));
        assert!(parse("x{key", true).is_err());
    }
}
