//! A typed reader over a parsed TOML table that collects *every* problem instead of stopping at
//! the first, so `tidemark check` can list all mistakes of all files at once, each with its file
//! and key.
//!
//! Each getter removes the key it reads; [`Section::finish`] then reports whatever is left as an
//! unknown key. That gives serde's `deny_unknown_fields` without its one-error-and-stop behaviour.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::{Table, Value};

/// One configuration mistake: the file, the dotted key (`sink[0].url`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// Every mistake found while loading the configuration.
#[derive(Debug, Clone, Default, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} configuration error{}:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Collects errors for one file.
#[derive(Debug)]
pub struct Diag {
    file: Arc<Path>,
    errors: Vec<ConfigError>,
}

impl Diag {
    pub fn new(file: &Path) -> Self {
        Diag { file: file.into(), errors: Vec::new() }
    }

    pub fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { file: self.file.to_path_buf(), key: key.into(), message: message.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }
}

/// A TOML table being read, with the dotted path that names it in error messages.
pub struct Section {
    path: String,
    table: Table,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

impl Section {
    pub fn new(path: impl Into<String>, table: Table) -> Self {
        Section { path: path.into(), table }
    }

    /// The dotted name of `key` inside this section.
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The keys still unread, in file order.
    pub fn keys(&self) -> Vec<String> {
        self.table.keys().cloned().collect()
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// A string value without reading it (what kind a section is, before its reader runs).
    pub fn peek_str(&self, key: &str) -> Option<&str> {
        self.table.get(key).and_then(Value::as_str)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.table.remove(key)
    }

    fn wrong_type(&self, d: &mut Diag, key: &str, want: &str, got: &Value) {
        d.error(self.key(key), format!("expected {want}, found {}", type_name(got)));
    }

    pub fn opt_str(&mut self, d: &mut Diag, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(d, key, "a string", &other);
                None
            }
        }
    }

    pub fn str(&mut self, d: &mut Diag, key: &str) -> Option<String> {
        if !self.has(key) {
            d.error(self.key(key), "is required");
            return None;
        }
        self.opt_str(d, key)
    }

    /// A string that must be one of `allowed`; `None` when absent or invalid.
    pub fn opt_choice(&mut self, d: &mut Diag, key: &str, allowed: &[&str]) -> Option<String> {
        let s = self.opt_str(d, key)?;
        if allowed.contains(&s.as_str()) {
            Some(s)
        } else {
            d.error(self.key(key), format!("`{s}` is not one of {}", allowed.join(" | ")));
            None
        }
    }

    pub fn opt_bool(&mut self, d: &mut Diag, key: &str) -> Option<bool> {
        match self.take(key)? {
            Value::Boolean(b) => Some(b),
            other => {
                self.wrong_type(d, key, "true or false", &other);
                None
            }
        }
    }

    pub fn opt_u64(&mut self, d: &mut Diag, key: &str) -> Option<u64> {
        match self.take(key)? {
            Value::Integer(i) if i >= 0 => Some(i as u64),
            Value::Integer(i) => {
                d.error(self.key(key), format!("must not be negative, found {i}"));
                None
            }
            other => {
                self.wrong_type(d, key, "an integer", &other);
                None
            }
        }
    }

    pub fn opt_nonzero(&mut self, d: &mut Diag, key: &str) -> Option<NonZeroUsize> {
        let v = self.opt_u64(d, key)?;
        match NonZeroUsize::new(v as usize) {
            Some(n) => Some(n),
            None => {
                d.error(self.key(key), "must be at least 1");
                None
            }
        }
    }

    /// A duration written with a unit: `"250ms"`, `"10s"`, `"5m"`, `"24h"`, `"7d"`.
    pub fn opt_duration(&mut self, d: &mut Diag, key: &str) -> Option<Duration> {
        let s = self.opt_str(d, key)?;
        match parse_duration(&s) {
            Ok(v) => Some(v),
            Err(e) => {
                d.error(self.key(key), e);
                None
            }
        }
    }

    /// A size in bytes: an integer, or a string with a unit (`"64KiB"`, `"8MiB"`, `"1GiB"`).
    pub fn opt_bytes(&mut self, d: &mut Diag, key: &str) -> Option<usize> {
        match self.take(key)? {
            Value::Integer(i) if i > 0 => Some(i as usize),
            Value::String(s) => match parse_bytes(&s) {
                Ok(v) => Some(v),
                Err(e) => {
                    d.error(self.key(key), e);
                    None
                }
            },
            other => {
                self.wrong_type(d, key, "a size such as \"8MiB\"", &other);
                None
            }
        }
    }

    pub fn opt_str_list(&mut self, d: &mut Diag, key: &str) -> Option<Vec<String>> {
        let full = self.key(key);
        match self.take(key)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s),
                        other => {
                            d.error(format!("{full}[{i}]"), format!("expected a string, found {}", type_name(&other)))
                        }
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(d, key, "an array of strings", &other);
                None
            }
        }
    }

    pub fn opt_table(&mut self, d: &mut Diag, key: &str) -> Option<Section> {
        let path = self.key(key);
        match self.take(key)? {
            Value::Table(t) => Some(Section::new(path, t)),
            other => {
                self.wrong_type(d, key, "a table", &other);
                None
            }
        }
    }

    /// An array of tables (`[[sink]]`), each as a section named `key[i]`.
    pub fn tables(&mut self, d: &mut Diag, key: &str) -> Vec<Section> {
        let full = self.key(key);
        match self.take(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::Table(t) => Some(Section::new(format!("{full}[{i}]"), t)),
                    other => {
                        d.error(format!("{full}[{i}]"), format!("expected a table, found {}", type_name(&other)));
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.wrong_type(d, key, "an array of tables", &other);
                Vec::new()
            }
        }
    }

    /// The whole section as JSON (for settings passed through to a server, e.g. index mappings).
    pub fn into_json(self) -> serde_json::Map<String, serde_json::Value> {
        self.table.into_iter().map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(serde_json::Value::Null))).collect()
    }

    /// Report every key nobody read as unknown, naming the keys that are allowed.
    pub fn finish(self, d: &mut Diag, allowed: &[&str]) {
        for key in self.table.keys() {
            let hint =
                if allowed.is_empty() { String::new() } else { format!(" (expected one of: {})", allowed.join(", ")) };
            d.error(self.key(key), format!("unknown key{hint}"));
        }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || format!("`{s}` is not a duration; write a number with a unit: 250ms, 10s, 5m, 24h, 7d");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(bad()),
    };
    // Finite, not negative, and within what a Duration holds (about 584 billion years).
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || format!("`{s}` is not a size; write bytes or a number with KiB, MiB or GiB");
    let n: usize = num.parse().map_err(|_| bad())?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "k" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        _ => return Err(bad()),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(bad()),
        Some(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(src: &str) -> Section {
        Section::new("", src.parse::<Table>().unwrap())
    }

    #[test]
    fn collects_every_error_with_its_key() {
        let mut d = Diag::new(Path::new("c.toml"));
        let mut s = section("a = 1\nb = \"x\"\nc = \"10 parsecs\"\nzzz = true\n[t]\nq = 1");
        assert_eq!(s.opt_str(&mut d, "a"), None);
        assert_eq!(s.opt_u64(&mut d, "b"), None);
        assert_eq!(s.opt_duration(&mut d, "c"), None);
        assert_eq!(s.str(&mut d, "missing"), None);
        let mut t = s.opt_table(&mut d, "t").unwrap();
        t.opt_bool(&mut d, "nothing");
        t.finish(&mut d, &["r"]);
        s.finish(&mut d, &[]);
        let keys: Vec<String> = d.into_errors().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["a", "b", "c", "missing", "t.q", "zzz"]);
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_bytes("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("3 furlongs").is_err());
    }
}
