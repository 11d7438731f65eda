//! The dead-letter file: events a sink rejected permanently, one JSON line each — the Debezium
//! envelope and key, the sink and the reason — appended and flushed before the batch is
//! acknowledged, so a rejected event is never lost.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::event::envelope::{envelope_json, key_json};
use crate::event::time::now_ms;
use crate::event::ChangeEvent;
use crate::sinks::SinkContext;

pub struct DeadLetters {
    path: PathBuf,
    ctx: SinkContext,
    file: Option<File>,
}

impl DeadLetters {
    pub fn new(path: PathBuf, ctx: SinkContext) -> Self {
        DeadLetters { path, ctx, file: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, ev: &ChangeEvent, sink: &str, reason: &str) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        let line = serde_json::json!({
            "connector": &*self.ctx.connector,
            "sink": sink,
            "error": reason,
            "ts_ms": now_ms(),
            "key": key_json(ev, &self.ctx.encoding),
            "value": envelope_json(ev, &self.ctx.connector, &self.ctx.encoding),
        });
        let file = self.file.as_mut().expect("opened above");
        let mut buf = serde_json::to_vec(&line)?;
        buf.push(b'\n');
        file.write_all(&buf)?;
        file.sync_data()
    }
}
