//! Values that must never reach a log line, an error message or `/connectors` output.

use std::fmt;

/// A connection URL that may carry a password. `Display` and `Debug` show it with the password
/// replaced by `***`; only [`SecretUrl::expose`] gives the real text, for the driver that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password (and `password=` query parameter) masked.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

impl serde::Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// A password or API key: shown as `***` everywhere; only [`Secret::expose`] gives the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Mask the password of `scheme://user:password@host/...` and any `password=` query value.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let auth_end = out[auth_start..].find(['/', '?', '#']).map_or(out.len(), |i| auth_start + i);
        if let Some(at) = out[auth_start..auth_end].rfind('@') {
            let userinfo = &out[auth_start..auth_start + at];
            if let Some(colon) = userinfo.find(':') {
                let from = auth_start + colon + 1;
                let to = auth_start + at;
                out.replace_range(from..to, "***");
            }
        }
    }
    // libpq-style query parameters (`?password=...`).
    let mut search_from = 0;
    while let Some(i) = out[search_from..].find("password=") {
        let start = search_from + i + "password=".len();
        let end = out[start..].find(['&', ' ']).map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "***");
        search_from = start + 3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("redis://:s3cr3t@h/0"), "redis://:***@h/0");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=x&sslmode=disable"),
            "postgres://h/db?user=u&password=***&sslmode=disable"
        );
        assert_eq!(format!("{:?}", SecretUrl::new("redis://a:b@c")), "SecretUrl(redis://a:***@c)");
    }
}

/// Values read from secret files (`${file:…}`, `${credential:…}`): whatever setting they land in,
/// the log, `check` and `/connectors` show `***` instead (see [`redact_known`]).
static KNOWN: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Remember a secret value, to be redacted wherever it appears.
pub fn register(value: &str) {
    if value.is_empty() {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    if !known.iter().any(|k| k == value) {
        known.push(value.to_string());
        // Longest first, so a secret that contains another is hidden whole.
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn redact_known(text: &str) -> std::borrow::Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    if !known.iter().any(|k| text.contains(k.as_str())) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for k in known.iter() {
        out = out.replace(k.as_str(), "***");
    }
    std::borrow::Cow::Owned(out)
}

/// Every string of a JSON value with registered secrets replaced.
pub fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(r) = redact_known(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(m) => m.values_mut().for_each(redact_json),
        _ => {}
    }
}

/// A writer (for the log) that redacts registered secrets from what passes through it.
pub struct RedactingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => {
                self.0.write_all(redact_known(text).as_bytes())?;
                Ok(buf.len())
            }
            Err(_) => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod known_tests {
    use super::*;

    #[test]
    fn registered_values_are_redacted_everywhere() {
        register("s3cr3t-token-value");
        register("s3cr3t");
        assert_eq!(redact_known("a s3cr3t-token-value and s3cr3t"), "a *** and ***");
        let mut j = serde_json::json!({"a": ["x s3cr3t y"], "b": {"c": "s3cr3t-token-value"}, "n": 1});
        redact_json(&mut j);
        assert_eq!(j, serde_json::json!({"a": ["x *** y"], "b": {"c": "***"}, "n": 1}));
        let mut out = Vec::new();
        std::io::Write::write_all(&mut RedactingWriter(&mut out), b"log: s3cr3t\n").unwrap();
        assert_eq!(out, b"log: ***\n");
    }
}
