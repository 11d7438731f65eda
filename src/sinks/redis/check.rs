//! Prerequisites of the Redis sink, checked against the live server.

use super::{Conn, RedisConfig, RedisSink};
use crate::check::Finding;
use crate::connector::SinkContext;
use crate::event::Encoding;

pub async fn check(cfg: &RedisConfig) -> Vec<Finding> {
    let mut sink =
        RedisSink::new(cfg.clone(), SinkContext { connector: "check".into(), encoding: Encoding::default() });
    let mut out = Vec::new();
    if let Some(w) = cfg.tls.warning() {
        out.push(Finding::warn(w));
    }
    if let Err(e) = sink.ready().await {
        let text = format!("{e:?} {e}");
        match crate::redis_client::explain(&text) {
            Some(why) => out.push(Finding::error(format!("{e}: {why}"))),
            None => out.push(Finding::error(format!(
                "{e}; check sink.url, that Redis is running{}, and that the user may run EVALSHA and SCRIPT LOAD",
                if cfg.cluster { " in cluster mode" } else { "" }
            ))),
        }
        return out;
    }
    out.push(Finding::ok("connected; write scripts loaded"));
    let conn = sink.conn.as_mut().expect("ready");
    let mut info = redis::cmd("INFO");
    info.arg("server");
    if let Ok(v) = conn.query(&info).await {
        let text = match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            _ => String::new(),
        };
        if let Some(version) = text.lines().find_map(|l| l.strip_prefix("redis_version:")) {
            let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
            if major < 4 {
                out.push(Finding::error(format!(
                    "Redis {version} is too old; tidemark needs 4.0 or newer (multi-field HSET)"
                )));
            } else {
                out.push(Finding::ok(format!("Redis {version}")));
            }
        }
    }
    if let Conn::Cluster(_) = conn {
        let mut ci = redis::cmd("CLUSTER");
        ci.arg("INFO");
        match conn.query(&ci).await {
            Ok(redis::Value::BulkString(b)) if String::from_utf8_lossy(&b).contains("cluster_state:ok") => {
                out.push(Finding::ok("cluster state is ok"))
            }
            Ok(_) => out.push(Finding::error(
                "cluster state is not ok; run redis-cli --cluster check HOST:PORT and fix the slot coverage",
            )),
            Err(e) => out.push(Finding::error(format!(
                "CLUSTER INFO failed: {e}; is sink.cluster = true right for this server?"
            ))),
        }
    }
    out
}
