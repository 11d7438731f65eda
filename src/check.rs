//! `tidemark check`: findings about live sources and sinks, each saying how to fix it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// What holds or does not, and for a problem the exact fix.
    pub message: String,
}

impl Finding {
    pub fn ok(message: impl Into<String>) -> Self {
        Finding { level: Level::Ok, message: message.into() }
    }
    pub fn warn(message: impl Into<String>) -> Self {
        Finding { level: Level::Warn, message: message.into() }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Finding { level: Level::Error, message: message.into() }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok   ",
            Level::Warn => "WARN ",
            Level::Error => "ERROR",
        };
        write!(f, "{tag} {}", self.message)
    }
}

/// The findings about one source or sink.
#[derive(Debug, Clone)]
pub struct Section {
    pub title: String,
    pub findings: Vec<Finding>,
}

impl Section {
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Error)
    }
}
