//! The HTTP API: `/health`, `/metrics`, `/connectors`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::HttpAuth;
use crate::connector::ConnectorState;
use crate::metrics::{self, Metrics};
use crate::pipeline::ConnectorHandle;
use crate::settings::secret::redact_json;
use crate::settings::Secret;

#[derive(Clone)]
pub struct AppState {
    pub connectors: Arc<Vec<Arc<ConnectorHandle>>>,
    pub metrics: Arc<Metrics>,
    /// The bearer token the API asks for (`http_token`), and for which endpoints.
    pub token: Option<Secret>,
    pub auth: HttpAuth,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/connectors", get(list_connectors))
        .route("/connectors/{name}", get(one_connector))
        .route("/connectors/{name}/pause", post(pause))
        .route("/connectors/{name}/resume", post(resume))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// With `http_token` set, the mutating endpoints (every endpoint under `http_auth = "all"`) need
/// `Authorization: Bearer <token>`, compared in constant time.
async fn authorize(State(st): State<AppState>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(token) = &st.token else { return next.run(req).await };
    let guarded = st.auth == HttpAuth::All || req.method() != axum::http::Method::GET;
    if !guarded {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        return next.run(req).await;
    }
    let body =
        json!({ "error": "this endpoint needs `Authorization: Bearer <http_token>` (the daemon file's http_token)" });
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], Json(body)).into_response()
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, y) in b.iter().enumerate() {
        diff |= (a.get(i).copied().unwrap_or(0) ^ y) as usize;
    }
    diff == 0
}

/// Bind `addr` and serve until `stop` is cancelled. Binding errors are returned at once.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = router(state);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
    }))
}

async fn health(State(st): State<AppState>) -> Response {
    let connectors: Vec<Value> = st
        .connectors
        .iter()
        .map(|c| {
            let mut v = c.status.to_json();
            redact_json(&mut v);
            v
        })
        .collect();
    let healthy = connectors.iter().all(|c| c["healthy"] == true);
    let code = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "status": if healthy { "ok" } else { "unhealthy" }, "connectors": connectors })))
        .into_response()
}

async fn metrics_text(State(st): State<AppState>) -> Response {
    for c in st.connectors.iter() {
        let h = c.status.health();
        let labels = metrics::connector_labels(&c.status.name);
        st.metrics.lag_seconds.get_or_create(&labels).set(h.lag_ms as f64 / 1000.0);
        if let Some(b) = h.lag_bytes {
            st.metrics.lag_bytes.get_or_create(&labels).set(b as i64);
        }
        if let Some(age) = h.checkpoint_age {
            st.metrics.checkpoint_age_seconds.get_or_create(&labels).set(age.as_secs_f64());
        }
        st.metrics.connector_healthy.get_or_create(&labels).set(i64::from(h.healthy));
        st.metrics.connector_failed.get_or_create(&labels).set(i64::from(h.state == ConnectorState::Failed));
        for (figure, value) in &h.source_figures {
            if let (Some(gauge), Some(v)) = (st.metrics.source_figure(figure), value) {
                gauge.get_or_create(&labels).set(*v as i64);
            }
        }
    }
    if let Some(rss) = resident_bytes() {
        st.metrics.resident_memory_bytes.set(rss as i64);
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], st.metrics.render())
        .into_response()
}

/// This process's resident set size (Linux: `VmRSS` of `/proc/self/status`).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim();
    kib.parse::<u64>().ok().map(|k| k * 1024)
}

fn describe(c: &ConnectorHandle) -> Value {
    let mut v = c.status.to_json();
    v["config"] = json!({
        "file": c.config.file.display().to_string(),
        "source": c.config.source.describe(),
        "sinks": c.config.sinks.iter().map(|s| s.describe()).collect::<Vec<_>>(),
    });
    // Values read from secret files stay hidden wherever they landed.
    redact_json(&mut v);
    v
}

async fn list_connectors(State(st): State<AppState>) -> Json<Value> {
    Json(Value::Array(st.connectors.iter().map(|c| describe(c)).collect()))
}

fn find<'a>(st: &'a AppState, name: &str) -> Result<&'a Arc<ConnectorHandle>, NotFound> {
    st.connectors.iter().find(|c| c.config.name == name).ok_or_else(|| NotFound(name.to_string()))
}

/// No connector by that name: 404 with the name.
struct NotFound(String);

impl IntoResponse for NotFound {
    fn into_response(self) -> Response {
        (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no connector named {}", self.0) }))).into_response()
    }
}

async fn one_connector(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    match find(&st, &name) {
        Ok(c) => Json(describe(c)).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn pause(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    match find(&st, &name) {
        Ok(c) => {
            c.pause();
            (StatusCode::ACCEPTED, Json(json!({ "name": name, "state": "paused" }))).into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn resume(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    match find(&st, &name) {
        Ok(c) => {
            c.resume();
            (StatusCode::ACCEPTED, Json(json!({ "name": name, "state": c.status.state() }))).into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// A minimal HTTP/1.1 client for the CLI talking to its own daemon.
pub async fn request(addr: &str, method: &str, path: &str) -> Result<(u16, String), String> {
    request_with(addr, method, path, None).await
}

/// [`request`], with the API's bearer token.
pub async fn request_with(addr: &str, method: &str, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    let stream =
        tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("cannot reach tidemark at {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header(hyper::header::HOST, addr);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}
