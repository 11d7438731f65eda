//! The connector contract: what sources, sinks and the pipeline between them agree on.
//!
//! - [`Source`] and [`Sink`] (built from a [`SinkSpec`]) state, in their docs, what each side
//!   must do: order, boundaries, durability, fencing, probes, error classes.
//! - [`Position`] is where a source resumes, typed per kind; [`Batch`] carries events and the
//!   position that becomes durable with them; the [`Batcher`] is how a source fills batches.
//! - [`ConnectorStatus`] is what a running connector reports to `/health` and `/metrics`.
//!
//! Everything here depends only on the leaves (settings, events, metrics, the state store,
//! retry classes), never on a particular source, sink or the pipeline, so each kind depends on
//! the contract and the pipeline drives kinds only through it.

pub mod batch;
pub mod dead_letter;
pub mod position;
pub mod sink;
pub mod source;
pub mod status;

pub use batch::{Batch, Batcher, PipelineClosed, PipelineConfig};
pub use position::{Position, SnapshotProgress};
pub use sink::{DeadLetterTarget, Delivery, ErrorPolicy, Sink, SinkContext, SinkError, SinkSpec, WriteReport};
pub use source::{
    run_sessions, snapshot_again, table_included, CapturedTable, Exclusive, SessionError, SnapshotMode, Source,
    SourceContext, SourceError, TableCheck,
};
pub use status::{ConnectorState, ConnectorStatus, SinkState, SourceHealth};
