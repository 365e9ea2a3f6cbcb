//! Asking a Jupyter server what it is doing: a kernel executing code or an open terminal is
//! use even when no request passes through the proxy (a training run left overnight).
//!
//! The hub asks over its own network path to the container (the route's endpoint) with the
//! server's own token, as the proxy does; nothing of this passes through the proxy, so asking
//! is not itself activity.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use labhub_proxy::RouteEntry;
use serde::Deserialize;
use tokio::net::TcpStream;

/// How long one server may take to answer all three questions.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a server with hundreds of kernels stays well under it).
const BODY_LIMIT: usize = 1 << 20;

/// What a Jupyter server said it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Doing {
    /// Kernels executing code.
    pub busy_kernels: usize,
    /// Terminals open.
    pub terminals: usize,
}

impl Doing {
    /// Whether this counts as use.
    pub fn in_use(&self) -> bool {
        self.busy_kernels > 0 || self.terminals > 0
    }
}

/// Why a server could not be asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("connecting failed: {0}")]
    Connect(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("{path} answered {status}")]
    Status { path: String, status: StatusCode },
    #[error("{path} answered what is not Jupyter's JSON: {detail}")]
    Body { path: String, detail: String },
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    kernels: usize,
}

#[derive(Deserialize)]
struct Kernel {
    #[serde(default)]
    execution_state: String,
}

/// Asks the Jupyter server behind `route` for its status, its kernels and its terminals.
pub(crate) async fn ask(route: &RouteEntry) -> Result<Doing, ProbeError> {
    tokio::time::timeout(PROBE_TIMEOUT, ask_all(route)).await.map_err(|_| ProbeError::Timeout(PROBE_TIMEOUT))?
}

async fn ask_all(route: &RouteEntry) -> Result<Doing, ProbeError> {
    let status: Status = json(route, "api/status").await?.ok_or_else(|| ProbeError::Status {
        path: format!("{}api/status", route.prefix()),
        status: StatusCode::NOT_FOUND,
    })?;
    let busy_kernels = if status.kernels == 0 {
        0
    } else {
        let kernels: Vec<Kernel> = json(route, "api/kernels").await?.unwrap_or_default();
        kernels.iter().filter(|k| k.execution_state == "busy").count()
    };
    // A server without terminals (turned off, or not installed) answers 404: none are open.
    let terminals: Vec<serde_json::Value> = json(route, "api/terminals").await?.unwrap_or_default();
    Ok(Doing { busy_kernels, terminals: terminals.len() })
}

/// `GET {prefix}{path}` as JSON; `None` for a 404.
async fn json<T: serde::de::DeserializeOwned>(route: &RouteEntry, path: &str) -> Result<Option<T>, ProbeError> {
    let path = format!("{}{path}", route.prefix());
    let (status, body) = get(route, &path).await?;
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(ProbeError::Status { path, status });
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| ProbeError::Body { path, detail: e.to_string() })
}

/// One GET on a fresh connection to the server's endpoint, with its token.
async fn get(route: &RouteEntry, path: &str) -> Result<(StatusCode, Bytes), ProbeError> {
    let endpoint = route.route().endpoint;
    let stream = TcpStream::connect(endpoint).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends by itself once `sender` is dropped.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "probe connection ended with an error");
        }
    });
    let req = Request::get(path)
        .header(HOST, endpoint.to_string())
        .header(AUTHORIZATION, format!("token {}", route.route().token.expose()))
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| ProbeError::Body { path: path.to_string(), detail: e.to_string() })?;
    Ok((status, body.to_bytes()))
}
