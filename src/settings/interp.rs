//! `${VAR}` interpolation of configuration text, before it is parsed as TOML.
//!
//! `${VAR}` is replaced by the environment variable's value, `${VAR:-default}` falls back to
//! `default` when the variable is unset or empty, and `$${` writes a literal `${`. An unset variable
//! without a default is an error naming the line, so a typo never silently becomes an empty
//! password.

use super::reader::Diag;

pub fn interpolate(text: &str, d: &mut Diag, env: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
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
                let (name, default) = match expr.split_once(":-") {
                    Some((n, def)) => (n, Some(def)),
                    None => (expr, None),
                };
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    d.error(format!("line {}", lineno + 1), format!("`${{{expr}}}` is not a valid variable reference"));
                } else {
                    match (env(name).filter(|v| !v.is_empty()), default) {
                        (Some(v), _) => out.push_str(&v),
                        (None, Some(def)) => out.push_str(def),
                        (None, None) => d.error(
                            format!("line {}", lineno + 1),
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
        assert_eq!(errs[0].key, "line 2");
        assert!(errs[0].message.contains("NOPE is not set"));
        assert_eq!(errs[1].key, "line 3");
    }
}
