//! The processing stage between a source and its sinks.
//!
//! A connector's `[[transform]]` entries become a [`Chain`] applied to every batch in order. Each
//! entry may be scoped to some tables (`tables`, globs over `schema.table`); events of other
//! tables pass it untouched. Stateful transforms hand their state to [`Chain::checkpoint`], which
//! the pipeline stores in the same transaction as the source position, so a crash never applies
//! an event to state twice.
//!
//! Column references are checked against every table the source captures ([`Specs::check_table`],
//! run by the pipeline when the source reports its tables): a transform naming a column a table
//! lacks stops the connector at startup, naming the file, the key and the column.
//!
//! [`config`] reads the entries; [`chain`] runs them; the operators live one per file.

pub mod agg;
pub mod aggregate;
pub mod chain;
pub mod columns;
pub mod config;
pub mod dedup;
pub mod filter;
pub mod state;
pub mod window;

pub use chain::{Chain, Late, Transform, TransformError};
pub use config::{Spec, Specs, TransformConfig, DEFAULT_MAX_CACHED, KINDS};
