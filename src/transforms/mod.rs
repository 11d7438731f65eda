//! The processing stage between a source and its sinks.
//!
//! A transform is a small hook trait whose hooks default to no-ops; a connector's `[[transform]]`
//! entries become a [`Chain`] applied to every batch in order. Stateful transforms hand their state
//! to [`Chain::checkpoint`], which the pipeline stores in the same transaction as the source
//! position, so a crash never applies an event to state twice.
//!
//! No transform kind is available in this version yet: every `[[transform]]` entry is rejected at
//! startup with a clear message, rather than silently passing events through.

use crate::config::{Diag, Section};
use crate::event::ChangeEvent;

/// The transform kinds the configuration format reserves.
pub const KINDS: [&str; 7] = ["filter", "project", "mask", "route", "dedup", "aggregate", "window"];

/// One `[[transform]]` entry. No kind is implemented yet, so reading one always reports an error.
#[derive(Debug, Clone)]
pub struct TransformConfig {
    pub kind: String,
}

impl TransformConfig {
    pub fn read(mut s: Section, d: &mut Diag) -> Option<TransformConfig> {
        let kind = s.str(d, "kind")?;
        if KINDS.contains(&kind.as_str()) {
            d.error(s.key("kind"), format!("transform kind `{kind}` is not available in this version yet"));
        } else {
            d.error(s.key("kind"), format!("unknown transform kind `{kind}` (expected one of: {})", KINDS.join(", ")));
        }
        None
    }
}

/// A stage of the processing chain.
pub trait Transform: Send {
    /// Turn one event into zero or more.
    fn process(&mut self, event: ChangeEvent, out: &mut Vec<ChangeEvent>);

    /// Event time advanced without events (source heartbeat), e.g. to close windows.
    fn on_heartbeat(&mut self, _commit_ms: i64, _out: &mut Vec<ChangeEvent>) {}

    /// State to store with the next checkpoint, as `(operator id, bytes)`.
    fn checkpoint(&mut self) -> Option<(String, Vec<u8>)> {
        None
    }
}

#[derive(Default)]
pub struct Chain {
    stages: Vec<Box<dyn Transform>>,
}

impl Chain {
    pub fn new(stages: Vec<Box<dyn Transform>>) -> Self {
        Chain { stages }
    }

    /// Run a batch through every stage in order.
    pub fn apply(&mut self, mut events: Vec<ChangeEvent>, heartbeat_ms: Option<i64>) -> Vec<ChangeEvent> {
        for stage in &mut self.stages {
            let mut out = Vec::with_capacity(events.len());
            for ev in events {
                stage.process(ev, &mut out);
            }
            if let Some(ts) = heartbeat_ms {
                stage.on_heartbeat(ts, &mut out);
            }
            events = out;
        }
        events
    }

    /// No stage keeps state (so a checkpoint may be taken between any two batches).
    pub fn is_stateless(&self) -> bool {
        self.stages.is_empty()
    }

    pub fn checkpoint(&mut self) -> Vec<(String, Vec<u8>)> {
        self.stages.iter_mut().filter_map(|s| s.checkpoint()).collect()
    }
}
