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
    /// As the log names it: a sink's name, or `window <name>`.
    pub name: &'a str,
    /// When a sink is what waits: its index in the connector's status and its metric labels,
    /// so `/health` shows it retrying and `tidemark_sink_retries_total` counts.
    pub sink: Option<(usize, &'a Labels)>,
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
            info!(connector = %self.ctx.name, target = self.target.name, "recovered");
            if let Some((index, _)) = self.target.sink {
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
            warn!(connector = %self.ctx.name, target = self.target.name, error = %e, attempt = attempts, "write failed; retrying");
        }
        if let Some((index, labels)) = self.target.sink {
            self.ctx.status.set_sink_state(index, SinkState::Retrying, Some(e.to_string()));
            self.ctx.metrics.sink_retries.get_or_create(labels).inc();
        }
        tokio::select! {
            _ = self.ctx.abort.cancelled() => Err(Stopped::Aborted),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}
