//! Running the transforms: each `[[transform]]` becomes a stage, the stages a [`Chain`] applied
//! to every batch in order.
//!
//! Every hook returns a `Result`: a stage that cannot go on (an expression that fails on an
//! event, operator state that cannot be read) stops the connector before the batch reaches a
//! sink, and before any checkpoint of state the failed batch may have touched.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use super::aggregate::Aggregate;
use super::config::{Spec, Specs, TransformConfig};
use super::dedup::Dedup;
use super::window::Window;
use crate::connector::DeadLetterTarget;
use crate::event::{ChangeEvent, Encoding, Op};
use crate::metrics::{self, Metrics};
use crate::retry::{Classify, ErrorClass};
use crate::state::{StateDelta, StateError, StateStore};

/// Why a transform stopped the connector. The event is not lost: it is read again after the
/// operator fixes the cause.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// The transform cannot process this event (a filter expression that fails on its values, a
    /// route to a column it lacks): the configuration or the data needs an operator.
    #[error("{origin}: {message}")]
    Event { origin: String, message: String },
    /// The operator state cannot be read or written.
    #[error("{origin}: {error}")]
    State { origin: String, error: StateError },
}

impl TransformError {
    fn state(cfg: &TransformConfig) -> impl FnOnce(StateError) -> TransformError + '_ {
        move |error| TransformError::State { origin: cfg.origin.clone(), error }
    }
}

impl Classify for TransformError {
    fn class(&self) -> ErrorClass {
        match self {
            TransformError::Event { .. } => ErrorClass::Operator,
            // Unreadable stored state is corruption; anything else of the store (a full disk) an
            // operator can fix.
            TransformError::State { error: StateError::Corrupt { .. }, .. } => ErrorClass::Fatal,
            TransformError::State { .. } => ErrorClass::Operator,
        }
    }
}

/// A stage of the processing chain. Hooks default to doing nothing.
pub trait Transform: Send {
    /// Turn one event into zero or more.
    fn process(&mut self, event: ChangeEvent, out: &mut Vec<ChangeEvent>) -> Result<(), TransformError>;

    /// Event time advanced without events (source heartbeat), e.g. to close windows.
    fn on_heartbeat(&mut self, _commit_ms: i64, _out: &mut Vec<ChangeEvent>) -> Result<(), TransformError> {
        Ok(())
    }

    /// What changed in this stage's state since the last checkpoint, to store with it.
    fn checkpoint(&mut self, _out: &mut Vec<StateDelta>) -> Result<(), TransformError> {
        Ok(())
    }

    /// The last checkpoint is durable: what it carried may now be evicted from memory.
    fn stored(&mut self) -> Result<(), TransformError> {
        Ok(())
    }

    /// Whether this stage keeps state across events.
    fn is_stateful(&self) -> bool {
        false
    }

    /// Hand over the events found late since the last call.
    fn take_late(&mut self, _out: &mut Vec<Late>) {}
}

/// A late event: the window's name, its dead-letter target, the event and why.
pub type Late = (String, Option<DeadLetterTarget>, ChangeEvent, String);

struct DedupStage {
    cfg: TransformConfig,
    dedup: Dedup,
    /// `tidemark_dedup_dropped_total` of this transform.
    dropped: Counter,
}

impl Transform for DedupStage {
    fn process(&mut self, ev: ChangeEvent, out: &mut Vec<ChangeEvent>) -> Result<(), TransformError> {
        if !self.cfg.applies_to(&ev.table) || self.dedup.keep(&ev).map_err(TransformError::state(&self.cfg))? {
            out.push(ev);
        } else {
            self.dropped.inc();
        }
        Ok(())
    }

    fn checkpoint(&mut self, out: &mut Vec<StateDelta>) -> Result<(), TransformError> {
        self.dedup.checkpoint(out);
        Ok(())
    }

    fn stored(&mut self) -> Result<(), TransformError> {
        self.dedup.stored();
        Ok(())
    }

    fn is_stateful(&self) -> bool {
        true
    }
}

struct WindowStage {
    cfg: TransformConfig,
    window: Window,
    pass_through: bool,
}

impl Transform for WindowStage {
    fn process(&mut self, ev: ChangeEvent, out: &mut Vec<ChangeEvent>) -> Result<(), TransformError> {
        let window = &mut self.window;
        derive(&self.cfg, ev, self.pass_through, out, |ev, out| window.process(ev, out))
    }

    fn on_heartbeat(&mut self, commit_ms: i64, out: &mut Vec<ChangeEvent>) -> Result<(), TransformError> {
        self.window.heartbeat(commit_ms, out).map_err(TransformError::state(&self.cfg))
    }

    fn checkpoint(&mut self, out: &mut Vec<StateDelta>) -> Result<(), TransformError> {
        self.window.checkpoint(out);
        Ok(())
    }

    fn stored(&mut self) -> Result<(), TransformError> {
        self.window.stored();
        Ok(())
    }

    fn is_stateful(&self) -> bool {
        true
    }

    fn take_late(&mut self, out: &mut Vec<Late>) {
        let name = self.cfg.derived_table().unwrap_or_default().to_string();
        let target = self.window.dead_letter().cloned();
        for (ev, why) in self.window.take_late() {
            out.push((name.clone(), target.clone(), ev, why));
        }
    }
}

/// A stateless transform from its configuration, scoped to its tables.
struct Stateless {
    cfg: TransformConfig,
    enc: Encoding,
}

impl Transform for Stateless {
    fn process(&mut self, mut ev: ChangeEvent, out: &mut Vec<ChangeEvent>) -> Result<(), TransformError> {
        if !self.cfg.applies_to(&ev.table) {
            out.push(ev);
            return Ok(());
        }
        let fail = |message: String, ev: &ChangeEvent| TransformError::Event {
            origin: self.cfg.origin.clone(),
            message: format!("{message} (event of {} key {:?})", ev.table, ev.key),
        };
        match &self.cfg.spec {
            Spec::Filter(f) => {
                // A truncate has no row: filters on columns cannot judge it, so it passes.
                if ev.op == Op::Truncate || f.matches(&ev, &self.enc).map_err(|e| fail(e, &ev))? {
                    out.push(ev);
                }
                return Ok(());
            }
            Spec::Project(p) => p.apply(&mut ev),
            Spec::Mask(m) => m.apply(&mut ev),
            Spec::Route(r) => {
                if let Err(e) = r.apply(&mut ev) {
                    return Err(fail(e, &ev));
                }
            }
            Spec::Aggregate(_) | Spec::Window(_) | Spec::Dedup(_) => unreachable!("a stateful stage"),
        }
        out.push(ev);
        Ok(())
    }
}

/// Run a stateful operator on `ev` when `cfg` applies to its table, appending what it derives;
/// `ev` itself goes first when it passes through (or the operator does not apply).
fn derive(
    cfg: &TransformConfig,
    ev: ChangeEvent,
    pass_through: bool,
    out: &mut Vec<ChangeEvent>,
    operator: impl FnOnce(&ChangeEvent, &mut Vec<ChangeEvent>) -> Result<(), StateError>,
) -> Result<(), TransformError> {
    if !cfg.applies_to(&ev.table) {
        out.push(ev);
        return Ok(());
    }
    let at = out.len();
    operator(&ev, out).map_err(TransformError::state(cfg))?;
    if pass_through {
        out.insert(at, ev);
    }
    Ok(())
}

struct AggregateStage {
    cfg: TransformConfig,
    agg: Aggregate,
    pass_through: bool,
}

impl Transform for AggregateStage {
    fn process(&mut self, ev: ChangeEvent, out: &mut Vec<ChangeEvent>) -> Result<(), TransformError> {
        let agg = &mut self.agg;
        derive(&self.cfg, ev, self.pass_through, out, |ev, out| agg.process(ev, out))
    }

    fn checkpoint(&mut self, out: &mut Vec<StateDelta>) -> Result<(), TransformError> {
        self.agg.checkpoint(out);
        Ok(())
    }

    fn stored(&mut self) -> Result<(), TransformError> {
        self.agg.stored();
        Ok(())
    }

    fn is_stateful(&self) -> bool {
        true
    }
}

#[derive(Default)]
pub struct Chain {
    stages: Vec<Box<dyn Transform>>,
    /// An emptied batch buffer, reused by the next stage: a batch's buffer is large, and
    /// allocating one per stage and batch costs more than the stateless stages themselves.
    spare: Vec<ChangeEvent>,
}

impl Chain {
    pub fn new(stages: Vec<Box<dyn Transform>>) -> Self {
        Chain { stages, spare: Vec::new() }
    }

    /// The chain of a connector's transforms; stateful ones keep their state in `store`
    /// (`None`: in memory only).
    pub fn build(
        specs: &Specs,
        enc: Encoding,
        store: Option<StateStore>,
        connector: Arc<str>,
        metrics: &Metrics,
    ) -> Result<Chain, TransformError> {
        let mut stages: Vec<Box<dyn Transform>> = Vec::new();
        for (index, cfg) in specs.0.iter().enumerate() {
            stages.push(match &cfg.spec {
                Spec::Aggregate(a) => Box::new(AggregateStage {
                    agg: Aggregate::new(a.clone(), store.clone(), connector.clone(), &format!("aggregate:{}", a.name)),
                    pass_through: a.pass_through,
                    cfg: cfg.clone(),
                }),
                Spec::Window(w) => {
                    let window =
                        Window::new(w.clone(), store.clone(), connector.clone(), &format!("window:{}", w.name))
                            .map_err(|e| TransformError::Event {
                                origin: cfg.origin.clone(),
                                message: format!("cannot load window state: {e}"),
                            })?;
                    Box::new(WindowStage { cfg: cfg.clone(), window, pass_through: w.pass_through })
                }
                Spec::Dedup(x) => {
                    // Its state is named by position in the chain: a dedup has no derived table.
                    let id = format!("dedup:{index}");
                    let dedup = Dedup::new(x.clone(), store.clone(), connector.clone(), &id).map_err(|e| {
                        TransformError::Event {
                            origin: cfg.origin.clone(),
                            message: format!("cannot load dedup state: {e}"),
                        }
                    })?;
                    let labels = vec![(metrics::CONNECTOR, connector.to_string()), (metrics::TRANSFORM, id)];
                    let dropped = metrics.dedup_dropped.get_or_create(&labels).clone();
                    Box::new(DedupStage { cfg: cfg.clone(), dedup, dropped })
                }
                _ => Box::new(Stateless { cfg: cfg.clone(), enc: enc.clone() }),
            });
        }
        Ok(Chain { stages, spare: Vec::new() })
    }

    /// Events the window stages found late since the last call.
    pub fn take_late(&mut self) -> Vec<Late> {
        let mut out = Vec::new();
        for s in &mut self.stages {
            s.take_late(&mut out);
        }
        out
    }

    /// Run a batch through every stage in order.
    pub fn apply(
        &mut self,
        mut events: Vec<ChangeEvent>,
        heartbeat_ms: Option<i64>,
    ) -> Result<Vec<ChangeEvent>, TransformError> {
        for stage in &mut self.stages {
            let mut out = std::mem::take(&mut self.spare);
            out.reserve(events.len());
            for ev in events.drain(..) {
                stage.process(ev, &mut out)?;
            }
            if let Some(ts) = heartbeat_ms {
                stage.on_heartbeat(ts, &mut out)?;
            }
            self.spare = std::mem::replace(&mut events, out);
        }
        Ok(events)
    }

    /// No stage keeps state (so a checkpoint may be taken between any two batches).
    pub fn is_stateless(&self) -> bool {
        !self.stages.iter().any(|s| s.is_stateful())
    }

    pub fn checkpoint(&mut self) -> Result<Vec<StateDelta>, TransformError> {
        let mut out = Vec::new();
        for s in &mut self.stages {
            s.checkpoint(&mut out)?;
        }
        Ok(out)
    }

    pub fn stored(&mut self) -> Result<(), TransformError> {
        for s in &mut self.stages {
            s.stored()?;
        }
        Ok(())
    }
}
