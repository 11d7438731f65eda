//! One sink of a running connector: its writes made durable through the retry policy, its
//! rejected events through its `on_error` policy, its metrics.

use std::time::Instant;

use tracing::warn;

use super::retry::{Retrying, Stopped, Target};
use super::{PipelineError, Shared};
use crate::connector::dead_letter::DeadLetters;
use crate::connector::{ErrorPolicy, Sink, SinkState};
use crate::event::{ChangeEvent, SnapshotFlag};
use crate::metrics::{self, Labels};
use crate::retry::Backoff;

pub struct SinkRunner {
    pub index: usize,
    pub name: String,
    pub policy: ErrorPolicy,
    pub sink: Box<dyn Sink>,
    /// Built for the `dead_letter` policy.
    pub dead_letters: Option<DeadLetters>,
    pub backoff: Backoff,
    pub labels: Labels,
}

impl SinkRunner {
    /// Write until the batch is durable, retrying transient failures with backoff. Returns an
    /// error only when the connector must stop.
    pub async fn write(&mut self, events: &[ChangeEvent], ctx: &Shared) -> Result<(), PipelineError> {
        let target = Target::sink(&self.name, self.index, &self.labels);
        let mut retry = Retrying::new(ctx, target, &mut self.backoff);
        let (report, started) = loop {
            let started = Instant::now();
            match self.sink.write(events).await {
                Ok(report) => break retry.succeeded((report, started)),
                Err(e) => match retry.failed(e).await {
                    Ok(()) => {}
                    Err(Stopped::Aborted) => return Err(PipelineError::Aborted),
                    Err(Stopped::Failed(e)) => {
                        ctx.status.set_sink_state(self.index, SinkState::Failed, Some(e.to_string()));
                        self.count(ctx, metrics::OUTCOME_FAILED, events.len() as u64);
                        return Err(PipelineError::Sink { sink: self.name.clone(), error: e });
                    }
                },
            }
        };
        ctx.metrics.sink_write_seconds.get_or_create(&self.labels).observe(started.elapsed().as_secs_f64());
        self.observe_commit_to_ack(events, ctx);
        self.count(ctx, metrics::OUTCOME_APPLIED, report.applied);
        self.count(ctx, metrics::OUTCOME_STALE, report.stale);
        for (i, reason) in report.rejected {
            self.reject(&events[i], reason, ctx).await?;
        }
        ctx.status.set_sink_state(self.index, SinkState::Ok, None);
        ctx.status.sink_done(self.index, events.len() as u64);
        Ok(())
    }

    /// Per streamed change: now (acknowledged) minus its commit time at the source.
    fn observe_commit_to_ack(&self, events: &[ChangeEvent], ctx: &Shared) {
        let now_ms = crate::event::time::now_ms();
        let to_ack = ctx.metrics.commit_to_ack_seconds.get_or_create(&self.labels);
        for ev in events.iter().filter(|e| e.snapshot == SnapshotFlag::No) {
            to_ack.observe((now_ms - ev.commit_ts_ms()).max(0) as f64 / 1000.0);
        }
    }

    fn count(&self, ctx: &Shared, outcome: &'static str, n: u64) {
        if n > 0 {
            let mut labels = self.labels.clone();
            labels.push((metrics::OUTCOME, outcome.to_string()));
            ctx.metrics.sink_events.get_or_create(&labels).inc_by(n);
        }
    }

    /// Apply the sink's `on_error` policy to one permanently rejected event.
    async fn reject(&mut self, ev: &ChangeEvent, reason: String, ctx: &Shared) -> Result<(), PipelineError> {
        match self.policy {
            ErrorPolicy::Fail => {
                self.count(ctx, metrics::OUTCOME_FAILED, 1);
                ctx.status.set_sink_state(self.index, SinkState::Failed, Some(reason.clone()));
                Err(PipelineError::Rejected { sink: self.name.clone(), reason })
            }
            ErrorPolicy::Skip => {
                warn!(connector = %ctx.name, sink = %self.name, %reason, table = %ev.table, "event rejected by sink; skipped");
                self.count(ctx, metrics::OUTCOME_SKIPPED, 1);
                Ok(())
            }
            ErrorPolicy::DeadLetter => {
                let dl = self.dead_letters.as_mut().expect("built for dead_letter policy");
                // The event is acknowledged only once its dead letter is written: a dead-letter
                // target that is down holds the pipeline, like a sink that is down.
                let target = Target::dead_letter(&self.name, Some(self.index));
                let name = &self.name;
                let mut backoff = Backoff::default();
                let mut retry = Retrying::new(ctx, target, &mut backoff);
                loop {
                    match dl.write(ev, name, &reason).await {
                        Ok(()) => break retry.succeeded(()),
                        Err(e) => match retry.failed(e).await {
                            Ok(()) => {}
                            Err(Stopped::Aborted) => return Err(PipelineError::Aborted),
                            Err(Stopped::Failed(error)) => {
                                ctx.status.set_sink_state(self.index, SinkState::Failed, Some(error.to_string()));
                                return Err(PipelineError::DeadLetter { sink: name.clone(), error: Box::new(error) });
                            }
                        },
                    }
                }
                warn!(connector = %ctx.name, sink = %self.name, %reason, target = %dl.describe(), "event rejected by sink; dead-lettered");
                self.count(ctx, metrics::OUTCOME_DEAD_LETTERED, 1);
                Ok(())
            }
        }
    }
}
