//! The front door's fast lane: a connection's plain GETs to a user's server, answered
//! without hyper (the proxy side is `labhub_proxy::Lane`).
//!
//! A new connection starts here. Each request head is read and parsed with `httparse`; if it
//! is a GET without a body, upgrade or credentials other than the session cookie (and the
//! server's own token, which JupyterLab sends back and the proxy replaces), on a hub whose
//! users share its host, for a running Jupyter server, and the one gate admits the cookie's
//! session (its owner, an admin, a visitor it was shared with), the proxy relays it. Anything
//! else (another method, a page, an API token, a session the gate refuses, a request the
//! proxy will not take) ends the lane: the connection, with every byte read and not yet
//! answered, goes to the general path (hyper and the router), which answers exactly as it
//! would have, and keeps the connection from then on. So the lane decides nothing the general path would decide
//! differently: it only answers, faster, what is certainly allowed.
//!
//! A connection that sends nothing, or a head that never ends, must not hold a socket for
//! ever: the first head must be complete within the head timeout of the connection's start,
//! and after each answer the next request must begin within the keep-alive timeout and its
//! head be complete within the head timeout of its first byte. Past a deadline the lane
//! closes the connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use bytes::{Buf, BytesMut};
use labhub_core::{Contract, ImageKind};
use labhub_proxy::{ClientInfo, Lane, LaneError, PlainGet, Scheme, parse_user_path};
use labhub_service::ServerRef;
use labhub_service::sessions::SessionHost;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::edge::{PROXY_ROUTE, is_proxied};
use crate::{AppState, HubService, cookies, middleware};

/// The first read buffer of a connection; request heads are usually well under 2 KiB.
const READ_BUFFER: usize = 8 * 1024;
/// A head not complete within this many bytes goes to the general path (which applies the
/// configured limit).
const MAX_HEAD: usize = 16 * 1024;
/// The most request headers the lane reads; a request with more goes to the general path.
const MAX_HEADERS: usize = 48;

/// Request headers that send a request to the general path: a body, an upgrade, an
/// expectation, credentials other than the session cookie.
const GENERAL_PATH_HEADERS: [&str; 7] =
    ["content-length", "transfer-encoding", "upgrade", "expect", "te", "trailer", "keep-alive"];

/// How long a connection may take and how many may be open: the front door's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontDoor {
    /// A request head must be complete within this of the connection's start (the first
    /// request) or of its first byte (later ones).
    pub request_head_timeout: Duration,
    /// A kept-alive connection closes when its next request does not begin within this of the
    /// previous answer. On connections the general path has taken over, hyper counts the
    /// next head's arrival into this time too.
    pub keep_alive_timeout: Duration,
    /// Open connections at most; past it, new connections are answered 503 and closed at
    /// once. `None`: derived from the process's open-file limit.
    pub max_connections: Option<usize>,
    /// HTTP threads (each serving its own connections). `None`: one per core the process
    /// may use.
    pub threads: Option<std::num::NonZeroUsize>,
}

impl Default for FrontDoor {
    fn default() -> Self {
        Self {
            request_head_timeout: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(30),
            max_connections: None,
            threads: None,
        }
    }
}

/// How a connection left the lane.
#[derive(Debug)]
pub enum LaneEnd {
    /// It is finished (closed by either side, or the hub is stopping).
    Closed,
    /// The general path takes it over, starting with these bytes read and not yet answered.
    HandOff(BytesMut),
}

/// What became of one request head.
enum Turn {
    /// Answered; the connection can carry the next request.
    Next,
    /// Answered; the connection must close.
    Close,
    /// Not the lane's: the general path answers it.
    HandOff,
}

/// What the lane needs to relay a request it admitted.
struct Admitted<'a> {
    /// The request target: the path and the query.
    target: &'a str,
    route: std::sync::Arc<labhub_proxy::RouteEntry>,
    client: ClientInfo,
    request_id: Option<&'a [u8]>,
    /// The client asked to close the connection after this request.
    close: bool,
}

impl HubService {
    /// The front door's limits.
    pub fn front_door(&self) -> FrontDoor {
        self.state().settings().front_door
    }

    /// Serves the connection's plain GETs to users' servers until it closes, misses a
    /// deadline (see [the module](self)), `stop` is cancelled (between requests), or a request
    /// needs the general path.
    pub async fn serve_plain_gets<IO>(&self, io: &mut IO, peer: SocketAddr, stop: &CancellationToken) -> LaneEnd
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = self.front_door();
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let mut lane = Lane::new();
        // One timer for the connection, moved at most twice per request.
        let deadline = tokio::time::sleep(limits.request_head_timeout);
        tokio::pin!(deadline);
        // Between an answer and the next request's first byte.
        let mut idle = false;
        loop {
            let step = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(len)) => Some((self.answer(&req, io, &mut lane, peer).await, len)),
                    Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
                    _ => Some((Turn::HandOff, 0)),
                }
            };
            match step {
                Some((Turn::HandOff, _)) => return LaneEnd::HandOff(buf),
                Some((Turn::Close, _)) => return LaneEnd::Closed,
                Some((Turn::Next, len)) => {
                    buf.advance(len);
                    let now = tokio::time::Instant::now();
                    if !buf.is_empty() {
                        // The next request has begun (pipelined).
                        deadline.as_mut().reset(now + limits.request_head_timeout);
                        continue;
                    }
                    idle = true;
                    deadline.as_mut().reset(now + limits.keep_alive_timeout);
                }
                None => {}
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_BUFFER);
            }
            tokio::select! {
                biased;
                () = stop.cancelled(), if buf.is_empty() => return LaneEnd::Closed,
                () = lane.upstream_retired() => lane.close_upstream(),
                () = &mut deadline => return LaneEnd::Closed,
                read = io.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return LaneEnd::Closed,
                    Ok(_) if idle => {
                        idle = false;
                        deadline.as_mut().reset(tokio::time::Instant::now() + limits.request_head_timeout);
                    }
                    Ok(_) => {}
                },
            }
        }
    }

    /// Answers one request in the lane, or declines it.
    async fn answer<IO>(&self, req: &httparse::Request<'_, '_>, io: &mut IO, lane: &mut Lane, peer: SocketAddr) -> Turn
    where
        IO: AsyncWrite + Unpin,
    {
        let Some(admitted) = admit(self.state(), req, peer).await else { return Turn::HandOff };
        let target = admitted.target;
        let started = Instant::now();
        let request_id = middleware::request_id(admitted.request_id);
        let close = admitted.close;
        let get = PlainGet {
            route: admitted.route,
            target,
            headers: req.headers,
            client: &admitted.client,
            request_id: &request_id,
        };
        // Durations run to the response head, as the general path counts them.
        let (status, turn, head_at) = match self.state().proxy().forward_plain_get(lane, get, io).await {
            Ok(r) => (r.status, if r.keep_alive && !close { Turn::Next } else { Turn::Close }, r.head_at),
            Err(LaneError::NotForwarded) => return Turn::HandOff,
            Err(LaneError::Broken { status, head_at }) => (status, Turn::Close, head_at),
            Err(LaneError::Failed(e)) => {
                let (status, head_at) = (e.status(), tokio::time::Instant::now());
                let written = write_error(io, status, &e.to_string(), e.retry_after_secs(), &request_id).await;
                (status.as_u16(), if written && !close { Turn::Next } else { Turn::Close }, head_at)
            }
        };
        let elapsed = head_at.into_std().saturating_duration_since(started);
        if status >= 500 && status != 503 {
            let path = target.split('?').next().unwrap_or_default();
            tracing::warn!(id = %request_id, method = "GET", path = %path, status, ms = elapsed.as_millis() as u64, "served");
        }
        middleware::count(&Method::GET, PROXY_ROUTE.into(), status, elapsed);
        turn
    }
}

/// Whether the lane may answer this request (see [the module](self)), and what it needs to.
async fn admit<'a>(state: &AppState, req: &httparse::Request<'_, 'a>, peer: SocketAddr) -> Option<Admitted<'a>> {
    if req.method != Some("GET") || req.version != Some(1) || state.user_subdomains() {
        return None;
    }
    let target = req.path?;
    let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
    if !is_proxied(path) || query.and_then(crate::extract::token_in_query).is_some() {
        return None;
    }
    let mut host = None;
    let mut cookie = None;
    let mut request_id = None;
    let mut forwarded_for = None;
    let mut authorization = None;
    let mut close = false;
    let mut head_bytes = target.len();
    for h in req.headers.iter() {
        let name = h.name;
        head_bytes += name.len() + h.value.len();
        if GENERAL_PATH_HEADERS.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return None;
        }
        let slot = if name.eq_ignore_ascii_case("host") {
            &mut host
        } else if name.eq_ignore_ascii_case("cookie") {
            &mut cookie
        } else if name.eq_ignore_ascii_case("x-request-id") {
            &mut request_id
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            &mut forwarded_for
        } else if name.eq_ignore_ascii_case("authorization") {
            &mut authorization
        } else if name.eq_ignore_ascii_case("connection") {
            // Browsers say `keep-alive`, which HTTP/1.1 means anyway; scripts may say `close`.
            // Anything else names hop-by-hop headers, for the general path.
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
            continue;
        } else {
            continue;
        };
        // Twice the same header: for the general path to judge.
        if slot.replace(h.value).is_some() {
            return None;
        }
    }
    if head_bytes > state.proxy().settings().max_request_header_bytes {
        return None;
    }
    let host = std::str::from_utf8(host?).ok().filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))?;
    let user_path = parse_user_path(path).ok()?;
    let route = state.hub().routes().resolve(&user_path)?;
    // RStudio needs its prefix stripped, and a server of JupyterHub's contract judges the
    // client's own `Authorization`: both are the general path's.
    let route_kind = (route.route().kind, route.route().contract);
    if route_kind.0 == ImageKind::Rstudio || route_kind.1 != Contract::Labhub || !path.starts_with(route.prefix()) {
        return None;
    }
    // JupyterLab sends its server's own token back on every API call; that is no hub
    // credential (the general path forgets it too), and the proxy replaces it. Any other
    // `Authorization` is for the general path to judge. Compared by digest.
    if let Some(value) = authorization {
        let token = crate::proxy_route::authorization_token(value)?;
        if labhub_auth::sha256(token) != labhub_auth::sha256(route.route().token.expose()) {
            return None;
        }
    }
    let session = cookies::cookie_in(std::iter::once(cookie?), &state.settings().cookies.session)?;
    let session = std::str::from_utf8(session).ok()?.to_string();
    // Asked as the general path asks (memory, else the database on the hub's runtime), so a
    // connection stays in the lane when its session's cached answer runs out.
    // The lane serves only hubs without users' own hosts: every session is the hub host's.
    let me = state.session_principal(session, SessionHost::Hub).await.ok()??;
    let to =
        ServerRef { owner: route.route().owner, owner_name: &route.key().user, server: route.key().server.as_ref() };
    state.hub().access().may_reach(&me, to)?;
    let scheme = if state.settings().secure_cookies() { Scheme::Https } else { Scheme::Http };
    let addr = crate::extract::client_addr_from(forwarded_for, Some(peer), state)?;
    Some(Admitted { target, route, client: ClientInfo { addr, scheme, host: host.to_string() }, request_id, close })
}

/// Answers with an error in the API's shape; whether it was written.
async fn write_error<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    status: StatusCode,
    message: &str,
    retry_after: Option<u64>,
    request_id: &str,
) -> bool {
    let body = crate::error::error_body(status, message);
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\n",
        body.len()
    );
    if let Some(s) = retry_after {
        head.push_str(&format!("retry-after: {s}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    io.write_all(head.as_bytes()).await.is_ok() && io.flush().await.is_ok()
}
