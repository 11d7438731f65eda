//! `kind = "stdout"`: Debezium envelopes as JSON lines, for debugging and piping.
//!
//! Not fenced: a replay after a crash prints the replayed events again (at-least-once).

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::io::AsyncWriteExt;

use crate::check::Finding;
use crate::connector::{Delivery, Sink, SinkContext, SinkError, SinkSpec, WriteReport};
use crate::event::envelope::Envelope;
use crate::event::json;
use crate::event::time::now_ns;
use crate::event::ChangeEvent;
use crate::retry::{Classify, ErrorClass};

/// `[[sink]] kind = "stdout"` has no settings of its own.
#[derive(Debug, Clone, Copy)]
pub struct StdoutConfig;

impl SinkSpec for StdoutConfig {
    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    fn title(&self) -> String {
        "stdout".into()
    }

    fn check<'a>(&'a self, _connector: &'a str, _tables: &'a [String]) -> BoxFuture<'a, Vec<Finding>> {
        async { vec![Finding::ok("writes JSON lines to standard output")] }.boxed()
    }

    fn build(&self, ctx: SinkContext) -> Box<dyn Sink> {
        Box::new(StdoutSink::new(ctx))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("stdout: {0}")]
pub struct StdoutError(#[from] std::io::Error);

impl Classify for StdoutError {
    fn class(&self) -> ErrorClass {
        // A closed pipe will not reopen.
        if self.0.kind() == std::io::ErrorKind::BrokenPipe {
            ErrorClass::Operator
        } else {
            ErrorClass::Retry
        }
    }
}

pub struct StdoutSink {
    ctx: SinkContext,
    out: tokio::io::Stdout,
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new(ctx: SinkContext) -> Self {
        StdoutSink { ctx, out: tokio::io::stdout(), buf: Vec::with_capacity(64 * 1024) }
    }

    async fn write_all(&mut self, events: &[ChangeEvent]) -> Result<WriteReport, StdoutError> {
        self.buf.clear();
        let now_ns = now_ns();
        for ev in events {
            let envelope = Envelope { ev, connector: &self.ctx.connector, enc: &self.ctx.encoding, now_ns };
            json::write(&mut self.buf, &envelope).map_err(std::io::Error::from)?;
            self.buf.push(b'\n');
        }
        self.out.write_all(&self.buf).await?;
        self.out.flush().await?;
        Ok(WriteReport { applied: events.len() as u64, ..WriteReport::default() })
    }
}

impl Sink for StdoutSink {
    fn write<'a>(&'a mut self, events: &'a [ChangeEvent]) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        async move { self.write_all(events).await.map_err(SinkError::new) }.boxed()
    }
}
