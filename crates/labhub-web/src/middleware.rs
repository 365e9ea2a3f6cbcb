//! Cross-cutting layers: request ids, tracing, metrics, security headers; and the two
//! unauthenticated endpoints, health and metrics.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::SharedString;
use tracing::Instrument;

use labhub_service::health::IsolationState;

use labhub_core::Scope;
use labhub_service::roles::Resource;

use crate::extract::MaybeCaller;
use crate::{AppError, AppState};

/// The id of one request; in logs, in the `X-Request-Id` response header and on error pages.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// 16 hex digits: a random half chosen when the hub starts (ids of different runs do not
/// meet in the logs) and a counter. Unique is all an id needs to be; not being a secret, it
/// need not cost a call for randomness per request.
fn new_request_id() -> String {
    static RUN: LazyLock<u32> = LazyLock::new(|| uuid::Uuid::new_v4().as_u128() as u32);
    static NEXT: AtomicU32 = AtomicU32::new(0);
    hex16((u64::from(*RUN) << 32) | u64::from(NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// `n` as 16 lower-case hex digits, without the formatting machinery (once per request).
fn hex16(n: u64) -> String {
    (0..16).rev().map(|i| char::from(b"0123456789abcdef"[(n >> (i * 4)) as usize & 0xf])).collect()
}

/// The method as a metrics label, without an allocation for the usual ones.
fn method_label(method: &axum::http::Method) -> std::borrow::Cow<'static, str> {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    match KNOWN.iter().find(|k| **k == method.as_str()) {
        Some(known) => std::borrow::Cow::Borrowed(known),
        None => std::borrow::Cow::Owned(method.to_string()),
    }
}

/// Gives each request an id, a tracing span, and counts it in the metrics by route.
pub async fn observe(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    observed(req, route, |req| next.run(req)).await
}

/// [`observe`] around `inner`, for a request counted under the metrics label `route`.
pub(crate) async fn observed<F, Fut>(mut req: Request, route: impl Into<SharedString>, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let route = route.into();
    let id = request_id(req.headers().get("x-request-id").map(HeaderValue::as_bytes));
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    // For the path only (the query string may carry a token); a clone shares the bytes.
    let uri = req.uri().clone();
    let path = uri.path();
    // Proxied traffic (every click and save in a notebook) gets its span at debug level only:
    // a span's fields are formatted when it opens, whether or not anything is logged in it,
    // and the proxy itself logs only at debug. The warning below carries the fields itself;
    // the rare warning from deeper down (the database away) goes without them.
    let span = if path.starts_with("/user/") {
        tracing::debug_span!("request", id = %id, method = %method, path = %path)
    } else {
        tracing::info_span!("request", id = %id, method = %method, path = %path)
    };
    let started = Instant::now();
    let mut resp = inner(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let ms = elapsed.as_millis() as u64;
    span.in_scope(|| {
        // 503 is the hub working as intended (a server not running, the database away, limits);
        // what deserves attention is an error the hub or a server did not expect.
        if status >= 500 && status != 503 {
            if span.is_disabled() {
                tracing::warn!(id = %id, method = %method, path = %path, status, ms, "served");
            } else {
                tracing::warn!(status, ms, "served");
            }
        } else {
            tracing::debug!(status, ms, "served");
        }
    });
    count(&method, route, status, elapsed);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The id a request goes by: the one the client sent, if it is a plausible id, else a new one.
pub(crate) fn request_id(sent: Option<&[u8]>) -> String {
    sent.filter(|v| v.len() <= 64 && v.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-'))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map_or_else(new_request_id, str::to_string)
}

/// Counts one answered request in the metrics, under the route label `route`.
pub(crate) fn count(method: &axum::http::Method, route: SharedString, status: u16, elapsed: std::time::Duration) {
    metrics::counter!("labhub_http_requests_total", "method" => method_label(method), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    // JupyterHub's name counts the hub's own requests, not proxied ones (its proxy is apart).
    if &*route != crate::edge::PROXY_ROUTE {
        metrics::histogram!("jupyterhub_request_duration_seconds", "method" => method_label(method), "handler" => route.clone(), "code" => status.to_string())
            .record(elapsed.as_secs_f64());
    }
    metrics::histogram!("labhub_http_request_duration_seconds", "route" => route).record(elapsed.as_secs_f64());
}

/// Security headers for the hub's own pages and API (not for proxied user content, which
/// sets its own).
pub async fn security_headers(State(_state): State<AppState>, req: Request, next: Next) -> Response {
    let proxied = req.uri().path().starts_with("/user/");
    let mut resp = next.run(req).await;
    if proxied {
        return resp;
    }
    let h = resp.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; \
         frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    ));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// `GET /hub/health`: no authentication; 200 when the hub and its database answer, 503 otherwise.
/// `isolation` says whether servers can start isolated (`enforced`, `failing`, `unchecked`,
/// or `off` by the site's choice);
/// why not is told to signed-in people only (a refused start, the admins' banner).
pub async fn health(State(state): State<AppState>) -> Response {
    let db_ok = state.hub().database_answers().await;
    let status = if db_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let isolation = match state.hub().isolation_health().state() {
        IsolationState::Unchecked => "unchecked",
        IsolationState::Enforced => "enforced",
        IsolationState::Off => "off",
        IsolationState::Failing { .. } => "failing",
    };
    let body = serde_json::json!({
        "status": if db_ok { "ok" } else { "degraded" },
        "database": if db_ok { "ok" } else { "unavailable" },
        "isolation": isolation,
    });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `GET /hub/metrics`: Prometheus text format, to credentials with `read:metrics` unless the
/// site made them public. Beside labhub's own, the names JupyterHub's Grafana dashboards read.
pub async fn metrics(State(state): State<AppState>, MaybeCaller(who): MaybeCaller) -> Response {
    if !state.settings().metrics_public {
        let Some(who) = who else {
            return AppError::LoginRequired.into_response();
        };
        if let Err(e) = state.hub().roles().require_of(who.actor(), &[Scope::ReadMetrics], &Resource::Hub).await {
            return AppError::from(e).into_response();
        }
    }
    if let Ok(n) = state.hub().sessions().count_live().await {
        metrics::gauge!("labhub_active_sessions").set(n as f64);
    }
    metrics::gauge!("jupyterhub_running_servers").set(state.hub().routes().len() as f64);
    if let Ok(active) = state.hub().usage().active_users().await {
        for (period, n) in active {
            metrics::gauge!("jupyterhub_active_users", "period" => period).set(n as f64);
        }
    }
    match state.metrics() {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are turned off").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::hex16;

    #[test]
    fn request_ids_are_sixteen_hex_digits() {
        for n in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef, 1 << 63] {
            assert_eq!(hex16(n), format!("{n:016x}"));
        }
    }
}
