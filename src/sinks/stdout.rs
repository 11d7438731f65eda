//! `kind = "stdout"`: Debezium envelopes as JSON lines, for debugging and piping.
//!
//! Not fenced: a replay after a crash prints the replayed events again (at-least-once).

use tokio::io::AsyncWriteExt;

use super::{SinkContext, WriteReport};
use crate::event::envelope::envelope_json;
use crate::event::ChangeEvent;

pub struct StdoutSink {
    ctx: SinkContext,
    out: tokio::io::Stdout,
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new(ctx: SinkContext) -> Self {
        StdoutSink { ctx, out: tokio::io::stdout(), buf: Vec::with_capacity(64 * 1024) }
    }

    pub async fn write(&mut self, events: &[ChangeEvent]) -> std::io::Result<WriteReport> {
        self.buf.clear();
        for ev in events {
            serde_json::to_writer(&mut self.buf, &envelope_json(ev, &self.ctx.connector, &self.ctx.encoding))?;
            self.buf.push(b'\n');
        }
        self.out.write_all(&self.buf).await?;
        self.out.flush().await?;
        Ok(WriteReport { applied: events.len() as u64, ..WriteReport::default() })
    }
}
