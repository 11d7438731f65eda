//! `${VAR}` interpolation of configuration text, before it is parsed as TOML.
//!
//! `${VAR}` is replaced by the environment variable's value, `${VAR:-default}` falls back to
//! `default` when the variable is unset or empty, and `$${` writes a literal `${`. An unset variable
//! without a default is an error naming the line, so a typo never silently becomes an empty
//! password.
//!
//! Secrets from files: `${file:/run/secrets/pg_password}` is replaced by the file's contents (one
//! trailing newline trimmed; Docker secrets are such files), `${credential:NAME}` by the systemd
//! credential `$CREDENTIALS_DIRECTORY/NAME` (`LoadCredential=`). Their contents are escaped for a
//! TOML string (write them inside `"…"`) and registered as secrets, so the log, `check` and
//! `/connectors` show `***` wherever they land. A missing or unreadable file is an error naming
//! the key and the file, never the contents.

use std::path::{Path, PathBuf};

use super::reader::Diag;
use super::secret;

/// The table a TOML line opens (`[source]`, `[[sink]]` counted: `sink[1]`), if it opens one.
fn table_header(line: &str, arrays: &mut std::collections::HashMap<String, usize>) -> Option<String> {
    let t = line.trim();
    if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split_once("]]")).map(|(n, _)| n.trim()) {
        let n = arrays.entry(name.to_string()).or_insert(0);
        *n += 1;
        return Some(format!("{name}[{}]", *n - 1));
    }
    let name = t.strip_prefix('[').and_then(|r| r.split_once(']')).map(|(n, _)| n.trim())?;
    // `[sink.opts]` after `[[sink]]`s belongs to the last sink.
    let (first, rest) = name.split_once('.').unwrap_or((name, ""));
    Some(match arrays.get(first) {
        Some(n) if rest.is_empty() => format!("{first}[{}]", n - 1),
        Some(n) => format!("{first}[{}].{rest}", n - 1),
        None => name.to_string(),
    })
}

/// Where an error on line `lineno` (0-based) of table `table` is: the key the line sets, when it
/// sets one, and the line.
fn line_key(line: &str, table: &str, lineno: usize) -> String {
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"".contains(c)));
    match key {
        Some(k) if table.is_empty() => format!("{k} (line {})", lineno + 1),
        Some(k) => format!("{table}.{k} (line {})", lineno + 1),
        None => format!("line {}", lineno + 1),
    }
}

/// A secret file's contents, for a TOML basic string.
fn read_secret(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    secret::register(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    Ok(out)
}

pub fn interpolate(text: &str, d: &mut Diag, env: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut table, mut arrays) = (String::new(), std::collections::HashMap::new());
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        if let Some(t) = table_header(line, &mut arrays) {
            table = t;
        }
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(body) = tail.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    d.error(format!("line {}", lineno + 1), "unterminated `${`");
                    out.push_str(tail);
                    rest = "";
                    break;
                };
                let expr = &body[..end];
                let file = match (expr.strip_prefix("file:"), expr.strip_prefix("credential:")) {
                    (Some(path), _) => Some(Ok(PathBuf::from(path))),
                    (_, Some(name)) => Some(match env("CREDENTIALS_DIRECTORY") {
                        Some(dir) if !name.is_empty() && !name.contains('/') => Ok(Path::new(&dir).join(name)),
                        Some(_) => Err(format!("`{name}` is not a credential name")),
                        None => Err(format!(
                            "credential {name}: CREDENTIALS_DIRECTORY is not set (run under systemd with \
                             LoadCredential={name}:/path, or use ${{file:/path}})"
                        )),
                    }),
                    _ => None,
                };
                if let Some(file) = file {
                    match file.and_then(|p| read_secret(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))) {
                        Ok(value) => out.push_str(&value),
                        Err(e) => d.error(line_key(line, &table, lineno), e),
                    }
                    rest = &body[end + 1..];
                    continue;
                }
                let (name, default) = match expr.split_once(":-") {
                    Some((n, def)) => (n, Some(def)),
                    None => (expr, None),
                };
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    d.error(line_key(line, &table, lineno), format!("`${{{expr}}}` is not a valid variable reference"));
                } else {
                    match (env(name).filter(|v| !v.is_empty()), default) {
                        (Some(v), _) => out.push_str(&v),
                        (None, Some(def)) => out.push_str(def),
                        (None, None) => d.error(
                            line_key(line, &table, lineno),
                            format!(
                                "environment variable {name} is not set (write ${{{name}:-default}} for a default)"
                            ),
                        ),
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER_NAME" => Some("alice".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        let mut d = Diag::new(Path::new("x.toml"));
        let out = interpolate("a = \"${USER_NAME}\"\nb = \"${EMPTY:-dflt}\"\nc = \"$${HOME} $5\"\n", &mut d, env);
        assert!(d.is_empty());
        assert_eq!(out, "a = \"alice\"\nb = \"dflt\"\nc = \"${HOME} $5\"\n");
    }

    #[test]
    fn unset_variable_names_the_line() {
        let mut d = Diag::new(Path::new("x.toml"));
        interpolate("a = 1\nb = \"${NOPE}\"\nc = \"${bad-name}\"\n", &mut d, env);
        let errs = d.into_errors();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].key, "b (line 2)");
        assert!(errs[0].message.contains("NOPE is not set"));
        assert_eq!(errs[1].key, "c (line 3)");
    }

    #[test]
    fn secrets_from_files_and_credentials() {
        let dir = std::env::temp_dir().join(format!("tidemark-interp-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("creds")).unwrap();
        std::fs::write(dir.join("pw"), "Fil3\"S3c\\ret\n").unwrap();
        std::fs::write(dir.join("creds/token"), "Cr3dT0ken").unwrap();
        let creds = dir.join("creds").display().to_string();
        let env = |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| creds.clone());
        let text =
            format!("password = \"${{file:{}}}\"\n[x]\ntoken = \"${{credential:token}}\"\n", dir.join("pw").display());
        let mut d = Diag::new(Path::new("x.toml"));
        let out = interpolate(&text, &mut d, env);
        assert!(d.is_empty());
        let t: toml::Table = out.parse().unwrap();
        assert_eq!(t["password"].as_str(), Some("Fil3\"S3c\\ret"));
        assert_eq!(t["x"]["token"].as_str(), Some("Cr3dT0ken"));
        assert_eq!(secret::redact_known("url with Fil3\"S3c\\ret and Cr3dT0ken"), "url with *** and ***");
        // A missing file names the key and the file; without systemd, a credential says so.
        let mut d = Diag::new(Path::new("x.toml"));
        interpolate(
            "url = \"${file:/nonexistent/pw}\"\n[[sink]]\n[[sink]]\n[sink.opts]\nt = \"${credential:x}\"\n",
            &mut d,
            |_| None,
        );
        let errs = d.into_errors();
        assert_eq!(errs[0].key, "url (line 1)");
        assert_eq!(errs[1].key, "sink[1].opts.t (line 5)");
        assert!(errs[0].message.contains("cannot read /nonexistent/pw"), "{}", errs[0].message);
        assert!(errs[1].message.contains("CREDENTIALS_DIRECTORY is not set"), "{}", errs[1].message);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
