//! How errors are classified, and the one backoff every retry loop uses.
//!
//! Each module's error type says what kind of failure it is ([`ErrorClass`]); the pipeline and the
//! sources act on the class in one place: retry with backoff, or stop the connector and tell the
//! operator what to do.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient (connection lost, server restarting, overloaded): retry with backoff, keep state.
    Retry,
    /// Needs an operator (missing privilege, slot dropped, bad object): stop the connector with a
    /// message saying what to do.
    Operator,
    /// A bug or corrupted data: stop the connector.
    Fatal,
}

/// Anything that can say how it should be handled.
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

/// An error of any kind that keeps its class: what a source or sink kind hands the pipeline (its
/// own error type stays inside the kind; the pipeline needs only the message and the class).
#[derive(Debug)]
pub struct Classified {
    class: ErrorClass,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl Classified {
    pub fn new<E: Classify + std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        Classified { class: error.class(), error: Box::new(error) }
    }
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Classified {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

impl Classify for Classified {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Exponential backoff with full jitter, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_BASE, BACKOFF_MAX)
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { attempt: 0, base, max }
    }

    /// The delay before the next attempt: uniformly random in [cap/2, cap], where the cap doubles
    /// with each attempt up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.base.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        assert!(b.next_delay() >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
