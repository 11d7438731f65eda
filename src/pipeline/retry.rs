//! The one retry policy of the pipeline: every write that must become durable before a batch may
//! be acknowledged (a sink write, a dead letter, a late event's dead letter) goes through
//! [`Retrying`], so each retries, reports and gives up the same way.

use std::fmt::Display;

use tracing::{info, warn};

use super::Shared;
use crate::connector::SinkState;
use crate::metrics::Labels;
use crate::retry::{Backoff, Classify, ErrorClass};

/// A failing attempt is logged on the first try and then every this many, not on each.
pub const LOG_EVERY_ATTEMPTS: u32 = 20;

/// What is being retried, for `/health`, the metrics and the log.
pub struct Target<'a> {
    /// As the log names it (its `sink` field): a sink's name, or `window <name>`.
    pub name: &'a str,
    /// When a sink is what waits: its index in the connector's status, so `/health` shows it
    /// retrying.
    pub sink: Option<usize>,
    /// The metric labels of a sink whose own writes are retried (`tidemark_sink_retries_total`);
    /// `None` for a dead-letter target, whose failures are not the sink's.
    pub retries: Option<&'a Labels>,
    /// The log message of a failed attempt, and of the first success after failures.
    pub failed: &'static str,
    pub recovered: &'static str,
}

impl<'a> Target<'a> {
    /// A sink's own writes.
    pub fn sink(name: &'a str, index: usize, labels: &'a Labels) -> Self {
        Target {
            name,
            sink: Some(index),
            retries: Some(labels),
            failed: "sink write failed; retrying",
            recovered: "sink recovered",
        }
    }

    /// A dead letter, which holds the batch (and, of a sink's rejected event, shows the sink
    /// retrying) without counting as the sink's retry.
    pub fn dead_letter(name: &'a str, sink: Option<usize>) -> Self {
        Target {
            name,
            sink,
            retries: None,
            failed: "cannot write dead letter; retrying",
            recovered: "dead letter written",
        }
    }
}

/// Why a [`Retrying`] loop gave up.
pub enum Stopped<E> {
    /// A failure that retrying will not fix (its class is not [`ErrorClass::Retry`]).
    Failed(E),
    /// The shutdown deadline passed while waiting to retry.
    Aborted,
}

/// The retry state of one write that must become durable. Drive it as
///
/// ```ignore
/// let mut retry = Retrying::new(ctx, target, &mut backoff);
/// let done = loop {
///     match attempt().await {
///         Ok(done) => break retry.succeeded(done),
///         Err(e) => retry.failed(e).await?,
///     }
/// };
/// ```
///
/// A failure classed [`ErrorClass::Retry`] is retried after the backoff's next delay,
/// meanwhile the target shows as retrying (with the error) and the retry is counted; any other
/// failure ends the loop at once. On success after failures the target is shown as recovered and
/// the backoff starts over.
pub struct Retrying<'a> {
    ctx: &'a Shared,
    target: Target<'a>,
    backoff: &'a mut Backoff,
}

impl<'a> Retrying<'a> {
    pub fn new(ctx: &'a Shared, target: Target<'a>, backoff: &'a mut Backoff) -> Self {
        Retrying { ctx, target, backoff }
    }

    /// The attempt succeeded: passes its result through.
    pub fn succeeded<T>(&mut self, done: T) -> T {
        if self.backoff.attempts() > 0 {
            info!(connector = %self.ctx.name, sink = self.target.name, "{}", self.target.recovered);
            if let Some(index) = self.target.sink {
                self.ctx.status.set_sink_state(index, SinkState::Ok, None);
            }
        }
        self.backoff.reset();
        done
    }

    /// The attempt failed: `Ok(())` once it is time to try again, or why not to.
    pub async fn failed<E: Classify + Display>(&mut self, e: E) -> Result<(), Stopped<E>> {
        if e.class() != ErrorClass::Retry {
            return Err(Stopped::Failed(e));
        }
        let delay = self.backoff.next_delay();
        let attempts = self.backoff.attempts();
        if attempts == 1 || attempts % LOG_EVERY_ATTEMPTS == 0 {
            warn!(connector = %self.ctx.name, sink = self.target.name, error = %e, attempt = attempts, "{}", self.target.failed);
        }
        if let Some(index) = self.target.sink {
            self.ctx.status.set_sink_state(index, SinkState::Retrying, Some(e.to_string()));
        }
        if let Some(labels) = self.target.retries {
            self.ctx.metrics.sink_retries.get_or_create(labels).inc();
        }
        tokio::select! {
            _ = self.ctx.abort.cancelled() => Err(Stopped::Aborted),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}
