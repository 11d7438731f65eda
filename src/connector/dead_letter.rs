//! Dead letters: events a sink rejected permanently, each as one JSON record — the Debezium
//! envelope and key, the sink and the reason — written (a file line appended and fsynced, or a
//! Redis stream entry) before the batch is acknowledged, so a rejected event is never lost.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use redis::aio::MultiplexedConnection;
use serde_json::Value as Json;

use super::{DeadLetterTarget, SinkContext};
use crate::event::envelope::{envelope_json, key_json};
use crate::event::time::now_ms;
use crate::event::ChangeEvent;
use crate::redis_client::{classify, RedisTls};
use crate::retry::{Classify, ErrorClass};
use crate::settings::SecretUrl;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead-letter file {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("dead-letter stream {stream} at {url}: {source}")]
    Redis { url: String, stream: String, source: redis::RedisError },
}

impl Classify for DeadLetterError {
    fn class(&self) -> ErrorClass {
        match self {
            // A full disk or a missing directory needs an operator.
            DeadLetterError::File { .. } => ErrorClass::Operator,
            DeadLetterError::Redis { source, .. } => classify(source),
        }
    }
}

enum Target {
    File { path: PathBuf, file: Option<File> },
    Stream { url: SecretUrl, stream: String, tls: RedisTls, conn: Option<MultiplexedConnection> },
}

pub struct DeadLetters {
    target: Target,
    ctx: SinkContext,
}

impl DeadLetters {
    pub fn new(target: &DeadLetterTarget, ctx: SinkContext) -> Self {
        let target = match target {
            DeadLetterTarget::File(path) => Target::File { path: path.clone(), file: None },
            DeadLetterTarget::RedisStream { url, stream, tls } => {
                Target::Stream { url: url.clone(), stream: stream.clone(), tls: tls.clone(), conn: None }
            }
        };
        DeadLetters { target, ctx }
    }

    /// Where dead letters go, for log lines.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::File { path, .. } => format!("file {}", path.display()),
            Target::Stream { url, stream, .. } => format!("stream {stream} at {url}"),
        }
    }

    fn record(&self, ev: &ChangeEvent, sink: &str, reason: &str) -> Json {
        serde_json::json!({
            "connector": &*self.ctx.connector,
            "sink": sink,
            "error": reason,
            "ts_ms": now_ms(),
            "key": key_json(ev, &self.ctx.encoding),
            "value": envelope_json(ev, &self.ctx.connector, &self.ctx.encoding),
        })
    }

    pub async fn write(&mut self, ev: &ChangeEvent, sink: &str, reason: &str) -> Result<(), DeadLetterError> {
        let record = self.record(ev, sink, reason);
        self.append(record).await
    }

    /// A record a source could not read (not a change event), with where it came from: the
    /// topic, partition and offset, and its key and value as received (lossy UTF-8).
    pub async fn write_unreadable(
        &mut self,
        at: (&str, i32, i64),
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        reason: &str,
    ) -> Result<(), DeadLetterError> {
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        let record = serde_json::json!({
            "connector": &*self.ctx.connector,
            "source": "kafka",
            "error": reason,
            "ts_ms": now_ms(),
            "topic": at.0,
            "partition": at.1,
            "offset": at.2,
            "key": text(key),
            "value": text(value),
        });
        self.append(record).await
    }

    /// Append one record, durably (the file is fsynced) before this returns.
    async fn append(&mut self, record: Json) -> Result<(), DeadLetterError> {
        match &mut self.target {
            Target::File { path, file } => {
                let io = |source| DeadLetterError::File { path: path.display().to_string(), source };
                if file.is_none() {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).map_err(io)?;
                    }
                    *file = Some(OpenOptions::new().create(true).append(true).open(&*path).map_err(io)?);
                }
                let f = file.as_mut().expect("opened above");
                let mut buf = serde_json::to_vec(&record).expect("JSON to memory");
                buf.push(b'\n');
                f.write_all(&buf).map_err(io)?;
                f.sync_data().map_err(io)
            }
            Target::Stream { url, stream, tls, conn } => {
                let err = |source| DeadLetterError::Redis { url: url.redacted(), stream: stream.clone(), source };
                if conn.is_none() {
                    let client = tls.client(url.expose()).map_err(err)?;
                    *conn = Some(client.get_multiplexed_async_connection().await.map_err(err)?);
                }
                let c = conn.as_mut().expect("connected above");
                // One entry per event: the fields of the record, nested values as JSON text.
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&*stream).arg("*");
                for (k, v) in record.as_object().expect("an object") {
                    cmd.arg(k.as_str());
                    match v {
                        Json::String(s) => cmd.arg(s.as_str()),
                        other => cmd.arg(other.to_string()),
                    };
                }
                let result: Result<String, _> = cmd.query_async(c).await;
                if let Err(e) = result {
                    *conn = None;
                    return Err(err(e));
                }
                Ok(())
            }
        }
    }
}
