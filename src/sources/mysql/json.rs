//! MySQL's binary JSON as compact text, as Debezium writes it for rows from the binlog: MySQL's
//! own printer (`SELECT json_column`) without its whitespace, so a row read from the binlog and
//! the same row read by the snapshot's query (whose text [`compact`] strips) carry the same text.
//!
//! MySQL's printer: objects in stored key order (by key length, then bytes), `", "` and `": "`
//! between items (here `,` and `:`), doubles with `.0` when integral and in exponent form outside
//! 1e-15..1e15, decimals with their scale, dates and times as quoted strings with microseconds,
//! other opaque values as `"base64:type<N>:<data>"`.

use std::fmt::Write;

use mysql_common::binlog::jsonb::{JsonContainer, JsonDom, JsonNumber, JsonScalar};

/// MySQL's limit on JSON nesting (`max depth 100` in json_binary).
const MAX_DEPTH: usize = 100;

/// Check MySQL binary JSON before mysql_common parses it: every offset and length within its
/// container, counts that fit the bytes they describe, nesting no deeper than MySQL allows, no
/// value reached twice (shared offsets would make the walk exponential), and decimals whose
/// precision and scale are valid — mysql_common trusts these and would reserve memory (or
/// recurse) as a malformed value says.
pub fn check_binary(data: &[u8]) -> Result<(), String> {
    let (&t, rest) = data.split_first().ok_or("empty binary JSON")?;
    let mut budget = data.len();
    check_value(t, rest, 0, &mut budget)
}

fn check_value(t: u8, data: &[u8], depth: usize, budget: &mut usize) -> Result<(), String> {
    *budget = budget.checked_sub(1).ok_or("binary JSON values share storage")?;
    let need =
        |n: usize| if data.len() >= n { Ok(()) } else { Err(format!("binary JSON value of type {t} cut short")) };
    match t {
        0x00..=0x03 => check_container(data, t & 1 == 1, t < 2, depth + 1, budget),
        0x04 => {
            need(1)?;
            literal(data[0])
        }
        0x05 | 0x06 => need(2),
        0x07 | 0x08 => need(4),
        0x09..=0x0b => need(8),
        0x0c => {
            let (len, at) = varlen(data)?;
            need(at + len)
        }
        0x0f => {
            need(1)?;
            let (len, at) = varlen(&data[1..])?;
            need(1 + at + len)?;
            let body = &data[1 + at..1 + at + len];
            // DECIMAL: precision, scale, then the packed digits.
            if data[0] == 246 {
                match body {
                    [p, s, ..] if (1..=65).contains(p) && s <= p => {}
                    _ => return Err("a binary JSON decimal with a bad precision or scale".into()),
                }
            }
            Ok(())
        }
        other => Err(format!("binary JSON type {other} is unknown")),
    }
}

fn literal(b: u8) -> Result<(), String> {
    if b <= 2 {
        Ok(())
    } else {
        Err(format!("binary JSON literal {b} is unknown"))
    }
}

fn check_container(data: &[u8], large: bool, object: bool, depth: usize, budget: &mut usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("binary JSON nested deeper than {MAX_DEPTH}"));
    }
    let w = if large { 4 } else { 2 };
    let int = |at: usize| -> Result<usize, String> {
        let b = data.get(at..at + w).ok_or("binary JSON container cut short")?;
        Ok(b.iter().rev().fold(0usize, |acc, x| (acc << 8) | usize::from(*x)))
    };
    let (count, size) = (int(0)?, int(w)?);
    if size > data.len() || size < 2 * w {
        return Err("binary JSON container size out of bounds".into());
    }
    let body = &data[..size];
    let key_entries = if object { count.checked_mul(w + 2) } else { Some(0) };
    let header = key_entries
        .zip(count.checked_mul(1 + w))
        .and_then(|(k, v)| (2 * w).checked_add(k)?.checked_add(v))
        .filter(|h| *h <= size)
        .ok_or("binary JSON element count larger than its container")?;
    if object {
        for i in 0..count {
            let at = 2 * w + i * (w + 2);
            let offset = int(at)?;
            let len = usize::from(u16::from_le_bytes([body[at + w], body[at + w + 1]]));
            if offset < header || offset.checked_add(len).is_none_or(|end| end > size) {
                return Err("binary JSON key out of bounds".into());
            }
        }
    }
    let values = 2 * w + key_entries.unwrap_or(0);
    for i in 0..count {
        let at = values + i * (1 + w);
        let t = body[at];
        let inline = matches!(t, 0x04..=0x06) || (large && matches!(t, 0x07 | 0x08));
        if inline {
            if t == 0x04 {
                literal(body[at + 1])?;
            }
            continue;
        }
        let offset = int(at + 1)?;
        if offset < header || offset >= size {
            return Err("binary JSON value out of bounds".into());
        }
        check_value(t, &body[offset..], depth, budget)?;
    }
    Ok(())
}

/// A variable-length length (7 bits a byte, at most 5 bytes): (length, bytes it took).
fn varlen(data: &[u8]) -> Result<(usize, usize), String> {
    let mut len = 0usize;
    for (i, b) in data.iter().take(5).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((len, i + 1));
        }
    }
    Err("binary JSON length cut short".into())
}

pub fn to_text(dom: &JsonDom) -> String {
    let mut out = String::new();
    write_dom(&mut out, dom);
    out
}

/// JSON text as MySQL prints it, without the whitespace between tokens.
pub fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

fn write_dom(out: &mut String, dom: &JsonDom) {
    match dom {
        JsonDom::Container(JsonContainer::Array(items)) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_dom(out, item);
            }
            out.push(']');
        }
        JsonDom::Container(JsonContainer::Object(map)) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_dom(out, value);
            }
            out.push('}');
        }
        JsonDom::Scalar(s) => match s {
            JsonScalar::Null => out.push_str("null"),
            JsonScalar::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
            JsonScalar::String(s) => write_string(out, s),
            JsonScalar::Number(JsonNumber::Int(i)) => {
                let _ = write!(out, "{i}");
            }
            JsonScalar::Number(JsonNumber::Uint(u)) => {
                let _ = write!(out, "{u}");
            }
            JsonScalar::Number(JsonNumber::Decimal(d)) => {
                let _ = write!(out, "{d}");
            }
            JsonScalar::Number(JsonNumber::Double(d)) => write_double(out, *d),
            JsonScalar::DateTime(t) => write_string(out, &format!("{t:.6}")),
            JsonScalar::Opaque(o) => write_string(out, &o.to_string()),
        },
    }
}

/// The shortest digits that read back as `d`, placed as MySQL places them.
fn write_double(out: &mut String, d: f64) {
    let sci = format!("{d:e}");
    let exponent: i32 = sci.rsplit('e').next().and_then(|e| e.parse().ok()).unwrap_or(0);
    if (-15..15).contains(&exponent) {
        let fixed = format!("{d}");
        let integral = !fixed.contains('.');
        out.push_str(&fixed);
        if integral {
            out.push_str(".0");
        }
    } else {
        out.push_str(&sci);
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(d: f64) -> String {
        let mut s = String::new();
        write_double(&mut s, d);
        s
    }

    #[test]
    fn doubles_print_as_mysql_prints_them() {
        // Each pair as MySQL 9.7 printed CAST('[...]' AS JSON).
        for (d, want) in [
            (100.0, "100.0"),
            (1e300, "1e300"),
            (1e-7, "0.0000001"),
            (-0.0, "-0.0"),
            (1e14, "100000000000000.0"),
            (1.5e15, "1.5e15"),
            (1e15, "1e15"),
            (1e-15, "0.000000000000001"),
            (1.2345e-15, "0.0000000000000012345"),
            (1e-16, "1e-16"),
            (1.2345678901234567e16, "1.2345678901234568e16"),
            (99999999999999.5, "99999999999999.5"),
            (5e-324, "5e-324"),
            (1.2345678901234567, "1.2345678901234567"),
        ] {
            assert_eq!(double(d), want, "{d:e}");
        }
    }

    #[test]
    fn strings_and_containers() {
        let mut obj = std::collections::BTreeMap::new();
        obj.insert("zz".to_string(), JsonDom::Scalar(JsonScalar::Number(JsonNumber::Int(1))));
        obj.insert("a".to_string(), JsonDom::Container(JsonContainer::Array(vec![])));
        obj.insert("bb".to_string(), JsonDom::Scalar(JsonScalar::String("q\"\\\n\u{1}\u{1f}\u{7f}é🎉/".into())));
        let dom = JsonDom::Container(JsonContainer::Object(obj));
        assert_eq!(to_text(&dom), "{\"a\":[],\"bb\":\"q\\\"\\\\\\n\\u0001\\u001f\u{7f}é🎉/\",\"zz\":1}");
        assert_eq!(compact(r#"{"a": [1, 2], "b \" c": "x y"}"#), r#"{"a":[1,2],"b \" c":"x y"}"#);
    }
}
