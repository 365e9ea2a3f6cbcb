//! Forwarding one request (plain, streamed, long poll or WebSocket upgrade) to its server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Extensions, Method, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use labhub_core::ImageKind;
use tokio::time::Instant;

use crate::body::{ProgressBody, ProxiedBody};
use crate::closer::Closer;
use crate::error::ProxyError;
use crate::headers::{self, OwnRequestHeader};
use crate::limits::Lease;
use crate::pool::{Lent, SendError};
use crate::route::{RouteEntry, RouteTable};
use crate::settings::{ClientInfo, ProxySettings};
use crate::tunnel;
use crate::values::{self, LocationRewrite};

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_RSTUDIO_ROOT_PATH: HeaderName = HeaderName::from_static("x-rstudio-root-path");

struct ProxyInner {
    settings: ProxySettings,
    table: RouteTable,
    in_flight: Arc<AtomicUsize>,
    /// Tripped when the last clone goes (the hub's router was dropped after shutdown): the
    /// tunnels it opened are not left running without it.
    tunnels_closer: Arc<Closer>,
}

impl Drop for ProxyInner {
    fn drop(&mut self) {
        self.tunnels_closer.close();
    }
}

/// Forwards requests to the servers in a route table. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<ProxyInner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("settings", &self.inner.settings).field("in_flight", &self.in_flight()).finish()
    }
}

impl Proxy {
    /// A proxy for the routes in `table`.
    pub fn new(settings: ProxySettings, table: RouteTable) -> Self {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let tunnels_closer = Arc::new(Closer::default());
        Self { inner: Arc::new(ProxyInner { settings, table, in_flight, tunnels_closer }) }
    }

    /// The route table this proxy serves.
    pub fn table(&self) -> &RouteTable {
        &self.inner.table
    }

    /// Requests and tunnels in progress over all servers.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// A watch that trips when the proxy goes: its tunnels end with it.
    pub(crate) fn tunnels_shutdown(&self) -> Arc<crate::closer::Watch> {
        self.inner.tunnels_closer.watch()
    }

    /// How this proxy talks to servers, and its limits.
    pub fn settings(&self) -> &ProxySettings {
        &self.inner.settings
    }

    /// A connection slot on `route` and in total, if one is free.
    pub(crate) fn lease(&self, route: &Arc<RouteEntry>) -> Option<Lease> {
        let s = &self.inner.settings;
        Lease::try_acquire(route, &self.inner.in_flight, s.max_connections_per_server, s.max_connections_total)
    }

    /// A connection slot of a service's (its count `service`, capped like a server's) and in
    /// total, if both are free.
    pub(crate) fn lease_service(&self, service: &Arc<AtomicUsize>) -> Option<Lease> {
        let s = &self.inner.settings;
        Lease::try_acquire_service(
            service,
            &self.inner.in_flight,
            s.max_connections_per_server,
            s.max_connections_total,
        )
    }

    /// Forwards one request (plain HTTP, SSE, long poll, or a WebSocket upgrade) to the
    /// route's server. The caller has authenticated and authorised it (and checked `Origin`
    /// for upgrades); `req`'s path must be under the route's prefix.
    pub async fn forward(
        &self,
        route: Arc<RouteEntry>,
        req: Request,
        client: ClientInfo,
    ) -> Result<Response, ProxyError> {
        self.forward_for(route, req, client, None).await
    }

    /// [`Proxy::forward`] with the holder's watch: a WebSocket it opens closes when `holder`
    /// trips (taken from the route before the gate let them in, see
    /// [`RouteEntry::watch_holder`]), or else only when the route goes.
    pub async fn forward_for(
        &self,
        route: Arc<RouteEntry>,
        req: Request,
        client: ClientInfo,
        holder: Option<crate::TunnelWatch>,
    ) -> Result<Response, ProxyError> {
        let settings = &self.inner.settings;
        if route.is_removed() {
            return Err(ProxyError::Unreachable);
        }
        if let Some(answer) = check_head(&req, route.prefix(), "server", settings)? {
            return Ok(answer);
        }
        let rstudio = route.route().kind == ImageKind::Rstudio;
        let uri = upstream_uri(rstudio.then(|| route.prefix()), req.uri())?;

        let lease = self.lease(&route).ok_or(ProxyError::Busy { retry_after: settings.busy_retry_after })?;
        route.touch();

        let mut req = req;
        let client_upgrade = take_upgrade(&mut req);
        let upgrade = client_upgrade.is_some();

        let (mut parts, body) = req.into_parts();
        let own = OwnValues { authorization: route.authorization.as_ref(), root_path: route.root_path.as_ref() };
        prepare_headers(&mut parts.headers, own, settings, &client, upgrade)?;
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        parts.extensions = Extensions::new();

        let (body, progress) = if upgrade || body.is_end_stream() {
            (if upgrade { Body::empty() } else { body }, None)
        } else {
            let progress = Arc::new(crate::body::Progress::new());
            (Body::new(ProgressBody::new(body, progress.clone())), Some(progress))
        };
        let pool = route.pool(settings).clone();
        let sent = std::pin::pin!(pool.send(http::Request::from_parts(parts, body)));
        let response = match progress {
            None => tokio::time::timeout(settings.read_timeout, sent).await.map_err(|_| ProxyError::Timeout)?,
            Some(progress) => {
                let mut sent = sent;
                loop {
                    let deadline = progress.last() + settings.read_timeout;
                    match tokio::time::timeout_at(deadline, &mut sent).await {
                        Ok(done) => break done,
                        // The body moved since the timer was set: the server is reading.
                        Err(_) if progress.last() + settings.read_timeout > Instant::now() => continue,
                        Err(_) => return Err(ProxyError::Timeout),
                    }
                }
            }
        };
        let (response, lent) = response.map_err(|e| upstream_error(e, &route))?;

        if let Some(client_upgrade) = client_upgrade
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let closed = holder.map_or_else(|| route.closer.watch(), |h| h.0);
            let ends = tunnel::Ends { shutdown: self.inner.tunnels_closer.watch(), closed };
            let location = location_rewrite(&route, &client);
            let through = tunnel::Through::Server(route.clone());
            return Ok(switch_protocols(through, &location, lease, client_upgrade, response, ends, settings));
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Err(ProxyError::Upstream("it switched protocols without being asked to".into()));
        }
        Ok(pass_response(&route, &client, lease, lent, response, &self.inner.settings))
    }
}

/// What every forwarded request passes first: its head within `max_request_header_bytes`,
/// and its path under `prefix` (a `what`'s: server or service). `Some` answers the bare
/// prefix at once with a redirect to it with its slash.
pub(crate) fn check_head(
    req: &Request,
    prefix: &str,
    what: &str,
    settings: &ProxySettings,
) -> Result<Option<Response>, ProxyError> {
    if header_bytes(req) > settings.max_request_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    let path = req.uri().path();
    if path.starts_with(prefix) {
        return Ok(None);
    }
    if path == prefix.trim_end_matches('/') {
        return Ok(Some(add_slash(prefix, req.uri().query())));
    }
    Err(ProxyError::BadRequest(format!("the path is not under the {what}'s prefix")))
}

/// The client's side of a WebSocket upgrade `req` asks for, taken from it; `None` for any
/// other request, and without hyper's upgrade handle (HTTP/2, or a caller that consumed it),
/// where there is nothing to tunnel into and it goes as a plain request.
pub(crate) fn take_upgrade(req: &mut Request) -> Option<hyper::upgrade::OnUpgrade> {
    let upgrade = req.method() == Method::GET
        && headers::is_websocket_upgrade(req.headers())
        && req.extensions().get::<hyper::upgrade::OnUpgrade>().is_some();
    upgrade.then(|| hyper::upgrade::on(req))
}

/// Request line plus header names and values, the size `max_request_header_bytes` limits.
pub(crate) fn header_bytes(req: &Request) -> usize {
    let uri = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    req.headers().iter().fold(uri, |n, (k, v)| n + k.as_str().len() + v.len())
}

/// `/user/alice` → `/user/alice/`: servers only answer under their prefix.
pub(crate) fn add_slash(prefix: &str, query: Option<&str>) -> Response {
    let location = match query {
        Some(q) => format!("{prefix}?{q}"),
        None => prefix.to_string(),
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The upstream request target (origin form: the connection already goes to the server): the
/// path (without the prefix `strip`, RStudio's) and the query without the hub's `token`
/// parameter, otherwise byte for byte.
pub(crate) fn upstream_uri(strip: Option<&str>, original: &Uri) -> Result<Uri, ProxyError> {
    let rstudio = strip.is_some();
    let stripped_query = original.query().and_then(values::strip_token_param);
    let path_and_query = if !rstudio && stripped_query.is_none() {
        original.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"))
    } else {
        let path = original.path();
        // Keep the prefix's final '/' so the path stays absolute.
        let path = match strip {
            Some(prefix) => path.get(prefix.len() - 1..).unwrap_or("/"),
            None => path,
        };
        let query = match &stripped_query {
            Some(q) => Some(q.as_str()),
            None => original.query(),
        };
        let mut pq = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            pq.push('?');
            pq.push_str(q);
        }
        PathAndQuery::try_from(pq).map_err(|e| ProxyError::BadRequest(e.to_string()))?
    };
    Ok(Uri::from(path_and_query))
}

/// The values of the proxy's own request headers that depend on the upstream: its
/// `Authorization` and RStudio's root path (none: the header is removed).
#[derive(Clone, Copy)]
pub(crate) struct OwnValues<'a> {
    pub(crate) authorization: Option<&'a HeaderValue>,
    pub(crate) root_path: Option<&'a HeaderValue>,
}

/// The request headers as the server must see them ([`headers`]' rules), with the
/// proxy's own written over whatever the client sent; an upgrade keeps its
/// `Connection`/`Upgrade` pair.
pub(crate) fn prepare_headers(
    h: &mut http::HeaderMap,
    route: OwnValues<'_>,
    settings: &ProxySettings,
    client: &ClientInfo,
    upgrade: bool,
) -> Result<(), ProxyError> {
    let upgrade_to = if upgrade { h.get(header::UPGRADE).cloned() } else { None };
    headers::apply_to_request(h, &settings.strip_cookies);
    if let Some(to) = upgrade_to {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, to);
    }
    // jupyter_server compares Origin with Host, so the browser's Host goes through as is;
    // HTTP/2 requests carry it in the URI instead, so it is put back from the client info.
    if !h.contains_key(header::HOST) {
        let host =
            HeaderValue::try_from(client.host.as_str()).map_err(|_| ProxyError::BadRequest("bad Host".into()))?;
        h.insert(header::HOST, host);
    }
    // `insert` replaces every value: no client credential (hub token, basic auth) survives.
    for own in OwnRequestHeader::ALL {
        match own {
            OwnRequestHeader::Authorization => match route.authorization {
                Some(a) => {
                    h.insert(header::AUTHORIZATION, a.clone());
                }
                None => {
                    h.remove(header::AUTHORIZATION);
                }
            },
            OwnRequestHeader::ForwardedFor => values::append_forwarded_for(h, client.addr),
            OwnRequestHeader::ForwardedProto => {
                h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.scheme.as_str()));
            }
            OwnRequestHeader::ForwardedHost => {
                let forwarded_host = match h.get(header::HOST) {
                    Some(host) if host.as_bytes() == client.host.as_bytes() => host.clone(),
                    _ => HeaderValue::try_from(client.host.as_str())
                        .map_err(|_| ProxyError::BadRequest("bad Host".into()))?,
                };
                h.insert(X_FORWARDED_HOST, forwarded_host);
            }
            OwnRequestHeader::RstudioRootPath => match route.root_path {
                Some(root) => {
                    h.insert(X_RSTUDIO_ROOT_PATH, root.clone());
                }
                None => {
                    h.remove(X_RSTUDIO_ROOT_PATH);
                }
            },
        }
    }
    Ok(())
}

/// Puts a failure to get response headers into words.
fn upstream_error(e: SendError, route: &RouteEntry) -> ProxyError {
    let h = match e {
        SendError::Connect(e) => {
            tracing::debug!(route = %route.key(), error = %e, "server unreachable");
            return ProxyError::Unreachable;
        }
        _ if route.is_removed() => return ProxyError::Unreachable,
        SendError::Http(h) => h,
    };
    let why = if h.is_incomplete_message() {
        "it closed the connection before answering".to_string()
    } else if h.is_parse() {
        "its response was malformed".to_string()
    } else if h.is_user() {
        // Reading the client's request body failed: the client went away mid-upload.
        return ProxyError::BadRequest("the request body could not be read".into());
    } else {
        h.to_string()
    };
    ProxyError::Upstream(why)
}

/// The upstream agreed to a WebSocket: answer the client 101 with the upstream's handshake
/// headers (accept key, subprotocol, extensions) and tunnel once both sides switched.
pub(crate) fn switch_protocols(
    through: tunnel::Through,
    location: &LocationRewrite<'_>,
    lease: Lease,
    client_upgrade: hyper::upgrade::OnUpgrade,
    mut response: http::Response<Incoming>,
    ends: tunnel::Ends,
    settings: &ProxySettings,
) -> Response {
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
    headers::apply_to_response(&mut parts.headers, &settings.strip_cookies, location);
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, upgrade_to.unwrap_or_else(|| HeaderValue::from_static("websocket")));
    parts.extensions = Extensions::new();
    tunnel::spawn(through, lease, client_upgrade, upstream_upgrade, ends);
    Response::from_parts(parts, Body::empty())
}

/// How `Location` headers from the route's server are read back into hub paths.
fn location_rewrite<'a>(route: &'a RouteEntry, client: &'a ClientInfo) -> LocationRewrite<'a> {
    LocationRewrite {
        internal_origin: &route.internal_origin,
        browser_host: &client.host,
        rstudio_prefix: (route.route().kind == ImageKind::Rstudio).then(|| route.prefix()),
    }
}

/// An ordinary response: its headers as [`headers`]' rules say, and the body streamed while
/// holding the lease and the connection (parked again once the body is read to its end).
fn pass_response(
    route: &RouteEntry,
    client: &ClientInfo,
    lease: Lease,
    lent: Lent,
    response: http::Response<Incoming>,
    settings: &ProxySettings,
) -> Response {
    let (mut parts, body) = response.into_parts();
    headers::apply_to_response(&mut parts.headers, &settings.strip_cookies, &location_rewrite(route, client));
    parts.extensions = Extensions::new();
    Response::from_parts(parts, Body::new(ProxiedBody::new(body, lease, lent)))
}
