//! What a connector is doing, shared between its tasks and the HTTP server.
//!
//! Updated once per batch (not per event) under a short mutex; read by `/health`, `/connectors`
//! and `/metrics`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::event::time::now_ms;

/// A connector counts as caught up (lag 0) while its last heartbeat went through every sink
/// within this many heartbeat intervals...
const FRESH_HEARTBEATS: u32 = 3;
/// ...plus this (a heartbeat's own trip through the pipeline).
const FRESH_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorState {
    Starting,
    Snapshotting,
    Streaming,
    Paused,
    Failed,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkState {
    Ok,
    Retrying,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct SinkStatus {
    pub name: String,
    pub kind: &'static str,
    pub state: SinkState,
    pub last_error: Option<String>,
    /// Events this sink has made durable (including replays it recognised as stale).
    pub events_done: u64,
}

/// Figures and warnings only one kind of source has (the slot's retained WAL, the binlog purge
/// margin), as the source last sampled them: shown in `/health` beside the generic ones, under
/// their own names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceHealth {
    /// `(name, value)`: e.g. `("retained_wal_bytes", Some(4096))`.
    pub figures: Vec<(&'static str, Option<u64>)>,
    /// Warnings that hold while this sample does (gone with the next sample that lacks them).
    pub notes: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Option<ConnectorState>,
    paused: bool,
    source_error: Option<String>,
    failure: Option<String>,
    /// Display form of the last checkpointed position, and when it was stored.
    checkpoint: Option<(Json, Instant)>,
    events_received: u64,
    events_done: u64,
    batches_received: u64,
    batches_done: u64,
    /// Commit time of the newest change every sink has applied.
    applied_commit_ms: i64,
    /// When the last heartbeat went through every sink.
    heartbeat_applied_at: Option<Instant>,
    /// Source log offset (e.g. LSN) of the newest batch every sink applied.
    applied_offset: Option<u64>,
    /// The server's current log offset, as last sampled.
    server_offset: Option<u64>,
    /// Lag in bytes as the source computes it itself (MySQL: across binlog files).
    source_lag_bytes: Option<u64>,
    /// What only this kind of source can tell, as last sampled.
    source_health: SourceHealth,
    sinks: Vec<SinkStatus>,
    notes: Vec<String>,
}

pub struct ConnectorStatus {
    pub name: String,
    pub source_kind: &'static str,
    pub max_lag: Duration,
    pub heartbeat_interval: Duration,
    inner: Mutex<Inner>,
}

/// A snapshot of the health-relevant figures.
#[derive(Debug, Clone)]
pub struct Health {
    pub state: ConnectorState,
    pub healthy: bool,
    pub reasons: Vec<String>,
    pub lag_ms: u64,
    pub lag_bytes: Option<u64>,
    pub checkpoint_age: Option<Duration>,
    /// The source's own figures, as last sampled.
    pub source_figures: Vec<(&'static str, Option<u64>)>,
}

impl ConnectorStatus {
    pub fn new(name: &str, source_kind: &'static str, max_lag: Duration, heartbeat_interval: Duration) -> Self {
        ConnectorStatus { name: name.to_string(), source_kind, max_lag, heartbeat_interval, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_sink(&self, name: &str, kind: &'static str) {
        self.lock().sinks.push(SinkStatus {
            name: name.into(),
            kind,
            state: SinkState::Ok,
            last_error: None,
            events_done: 0,
        });
    }

    pub fn set_state(&self, state: ConnectorState) {
        self.lock().state = Some(state);
    }

    pub fn state(&self) -> ConnectorState {
        let inner = self.lock();
        if inner.paused && inner.failure.is_none() {
            return ConnectorState::Paused;
        }
        inner.state.unwrap_or(ConnectorState::Starting)
    }

    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
    }

    pub fn fail(&self, error: String) {
        let mut inner = self.lock();
        inner.state = Some(ConnectorState::Failed);
        inner.failure = Some(error);
    }

    /// A transient source problem (e.g. reconnecting); `None` once it is resolved.
    pub fn set_source_error(&self, error: Option<String>) {
        self.lock().source_error = error;
    }

    pub fn note(&self, note: String) {
        let mut inner = self.lock();
        if !inner.notes.contains(&note) {
            inner.notes.push(note);
        }
    }

    pub fn set_sink_state(&self, sink: usize, state: SinkState, error: Option<String>) {
        let mut inner = self.lock();
        if let Some(s) = inner.sinks.get_mut(sink) {
            s.state = state;
            if error.is_some() || state == SinkState::Ok {
                s.last_error = error.or(s.last_error.take().filter(|_| state != SinkState::Ok));
            }
        }
    }

    pub fn sink_done(&self, sink: usize, events: u64) {
        let mut inner = self.lock();
        if let Some(s) = inner.sinks.get_mut(sink) {
            s.events_done += events;
        }
    }

    pub fn batch_received(&self, events: usize) {
        let mut inner = self.lock();
        inner.batches_received += 1;
        inner.events_received += events as u64;
    }

    /// Every sink has applied a batch.
    pub fn batch_done(&self, events: usize, newest_commit_ms: Option<i64>, heartbeat: bool, offset: Option<u64>) {
        let mut inner = self.lock();
        inner.batches_done += 1;
        inner.events_done += events as u64;
        if let Some(ts) = newest_commit_ms {
            inner.applied_commit_ms = inner.applied_commit_ms.max(ts);
        }
        if heartbeat {
            inner.heartbeat_applied_at = Some(Instant::now());
        }
        if let Some(o) = offset {
            inner.applied_offset = Some(inner.applied_offset.map_or(o, |p| p.max(o)));
        }
    }

    pub fn checkpointed(&self, position: Json) {
        self.lock().checkpoint = Some((position, Instant::now()));
    }

    /// The server's current log offset (comparable with [`Batch::offset`](super::batch::Batch)),
    /// for `lag_bytes`.
    pub fn set_server_offset(&self, server_offset: u64) {
        self.lock().server_offset = Some(server_offset);
    }

    /// Lag in bytes as the source measured it itself (when offsets do not subtract, e.g. across
    /// binlog files).
    pub fn set_source_lag_bytes(&self, bytes: Option<u64>) {
        self.lock().source_lag_bytes = bytes;
    }

    pub fn set_source_health(&self, health: SourceHealth) {
        self.lock().source_health = health;
    }

    pub fn health(&self) -> Health {
        let inner = self.lock();
        let state = if inner.paused && inner.failure.is_none() {
            ConnectorState::Paused
        } else {
            inner.state.unwrap_or(ConnectorState::Starting)
        };
        let in_flight = inner.batches_received > inner.batches_done;
        let heartbeat_fresh = inner
            .heartbeat_applied_at
            .is_some_and(|at| at.elapsed() < self.heartbeat_interval * FRESH_HEARTBEATS + FRESH_GRACE);
        let caught_up = !in_flight && heartbeat_fresh;
        let lag_ms = if caught_up {
            0
        } else if inner.applied_commit_ms > 0 {
            (now_ms() - inner.applied_commit_ms).max(0) as u64
        } else {
            0
        };
        let lag_bytes = match (inner.source_lag_bytes, inner.server_offset, inner.applied_offset) {
            _ if caught_up => Some(0),
            (Some(bytes), _, _) => Some(bytes),
            (None, Some(server), Some(applied)) => Some(server.saturating_sub(applied)),
            _ => None,
        };

        let mut reasons = Vec::new();
        match state {
            ConnectorState::Streaming | ConnectorState::Snapshotting => {}
            ConnectorState::Failed => {
                reasons.push(format!("failed: {}", inner.failure.as_deref().unwrap_or("unknown error")))
            }
            other => reasons.push(format!("connector is {}", json!(other).as_str().unwrap_or("not running"))),
        }
        if let Some(e) = &inner.source_error {
            reasons.push(format!("source: {e}"));
        }
        for s in &inner.sinks {
            if s.state != SinkState::Ok {
                let state = json!(s.state);
                reasons.push(format!(
                    "sink {} ({}) is {}: {}",
                    s.name,
                    s.kind,
                    state.as_str().unwrap_or("unhealthy"),
                    s.last_error.as_deref().unwrap_or("no detail")
                ));
            }
        }
        if lag_ms > self.max_lag.as_millis() as u64 {
            reasons.push(format!("lag {lag_ms} ms exceeds max_lag {} ms", self.max_lag.as_millis()));
        }
        Health {
            state,
            healthy: reasons.is_empty(),
            reasons,
            lag_ms,
            lag_bytes,
            checkpoint_age: inner.checkpoint.as_ref().map(|(_, at)| at.elapsed()),
            source_figures: inner.source_health.figures.clone(),
        }
    }

    /// The `/health` (and `/connectors/{name}`) JSON of this connector.
    pub fn to_json(&self) -> Json {
        let h = self.health();
        let inner = self.lock();
        let backlog = inner.events_received.saturating_sub(inner.events_done);
        let mut notes = inner.notes.clone();
        notes.extend(inner.source_health.notes.iter().cloned());
        let sinks: Vec<Json> = inner
            .sinks
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "kind": s.kind,
                    "state": s.state,
                    "backlog": inner.events_received.saturating_sub(s.events_done),
                    "last_error": s.last_error,
                })
            })
            .collect();
        let mut out = json!({
            "name": self.name,
            "source": self.source_kind,
            "state": h.state,
            "healthy": h.healthy,
            "reasons": h.reasons,
            "position": inner.checkpoint.as_ref().map(|(p, _)| p.clone()),
            "lag_ms": h.lag_ms,
            "lag_bytes": h.lag_bytes,
            "checkpoint_age_ms": h.checkpoint_age.map(|d| d.as_millis() as u64),
            "backlog": backlog,
            "events_applied": inner.events_done,
            "sinks": sinks,
            "notes": notes,
            "last_error": inner.failure.clone().or_else(|| inner.source_error.clone()),
        });
        for (name, value) in &inner.source_health.figures {
            out[*name] = json!(value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_when_caught_up_and_grows_when_stuck() {
        let s = ConnectorStatus::new("c", "postgres", Duration::from_secs(10), Duration::from_secs(1));
        s.add_sink("r", "redis");
        s.set_state(ConnectorState::Streaming);
        s.batch_received(1);
        s.batch_done(1, Some(now_ms() - 500), true, Some(100));
        let h = s.health();
        assert_eq!(h.lag_ms, 0);
        assert!(h.healthy);

        s.batch_received(1); // in flight, not applied
        s.set_sink_state(0, SinkState::Retrying, Some("connection refused".into()));
        let h = s.health();
        assert!(h.lag_ms >= 500, "{h:?}");
        assert!(!h.healthy);
        assert!(
            h.reasons.iter().any(|r| r.contains("sink r (redis) is retrying: connection refused")),
            "{:?}",
            h.reasons
        );
    }
}
