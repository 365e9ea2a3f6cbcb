//! The fast lane: plain GETs relayed over a raw upstream socket, without hyper.
//!
//! Most of a notebook's requests are GETs without a body (files, API listings, static
//! assets). Through [`Proxy::forward`] each one costs a hyper server exchange, the typed
//! request and response between, and a hyper client exchange on a connection driven by a
//! task of its own; that machinery, not the forwarding, was half the hub's CPU per proxied
//! request. Here the caller parses the request head itself and, for a GET it authorised,
//! this module writes the rewritten head to an upstream socket the client connection keeps,
//! reads the response head with `httparse`, rewrites it as [`Proxy::forward`] would, and
//! relays the body with its framing checked on the way (`Content-Length`, chunked, or until
//! the server closes). Framing is read as hyper's client reads it on the general path (its
//! `Content-Length` grammar, its chunked grammar and limits in [`ChunkedScan`], 204 and 304
//! bodiless whatever they say, 205 framed like any other status), refusing only more: a
//! transfer coding other than plain chunked, or chunked with a length. A kept socket with
//! anything unread (a late body after a 204, say) is never asked again.
//!
//! The rules are the general path's: the same headers removed and added, the same cookies
//! stripped, `Location` read back into hub paths, the same connection slots, timeouts,
//! activity and closing when the route goes. Whatever this path does not handle it refuses
//! before anything reaches the browser ([`LaneError::NotForwarded`]), and the caller gives
//! the request to the general path: a route being removed, no free slot, a server that
//! cannot be connected to, RStudio servers, a `token` parameter.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use labhub_core::ImageKind;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::ProxyError;
use crate::chunked::{BadChunking, ChunkedScan};
use crate::closer::Watch;
use crate::forward::Proxy;
use crate::headers::{self, OwnRequestHeader, OwnResponseHeader, RequestRule, ResponseRule};
use crate::pool::IDLE_TIMEOUT;
use crate::route::RouteEntry;
use crate::settings::{ClientInfo, ProxySettings};
use crate::values::{self, LocationRewrite};

/// How much of an upstream response is read at once.
const READ_CHUNK: usize = 32 * 1024;
/// The largest response head accepted from a server.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The most response headers accepted from a server.
const MAX_RESPONSE_HEADERS: usize = 100;

/// A plain GET the web layer authenticated and authorised for its route.
pub struct PlainGet<'a> {
    /// The route it goes to; the target must be under its prefix.
    pub route: Arc<RouteEntry>,
    /// The request target as the client sent it: the path and the query.
    pub target: &'a str,
    /// The client's headers; none may be framing (`Content-Length`, `Transfer-Encoding`).
    pub headers: &'a [httparse::Header<'a>],
    /// Who is asking, for the `X-Forwarded-*` headers.
    pub client: &'a ClientInfo,
    /// The request's id, sent to the client as `X-Request-Id`.
    pub request_id: &'a str,
}

/// How a relayed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// The status the server answered with.
    pub status: u16,
    /// Whether the client connection can carry another request (the response's length was
    /// known to the client).
    pub keep_alive: bool,
    /// When the response head was ready for the client (what the general path's metrics
    /// count a request's duration to).
    pub head_at: Instant,
}

/// Why the fast lane did not relay a request.
#[derive(Debug, PartialEq, Eq)]
pub enum LaneError {
    /// Nothing was sent to the client, and the request may be given to the general path
    /// (it was not sent, or only to a server that answered nothing, or to a removed route).
    NotForwarded,
    /// Nothing was sent to the client; the answer is this error.
    Failed(ProxyError),
    /// The response broke off after its head was ready for the client (status given): the
    /// client connection must be closed.
    Broken { status: u16, head_at: Instant },
}

/// The upstream socket a client connection keeps between its requests.
struct Upstream {
    route: Arc<RouteEntry>,
    stream: TcpStream,
    /// Trips when the route is removed.
    watch: Arc<Watch>,
    idle_since: Instant,
}

/// One client connection's fast lane: its upstream socket and buffers.
pub struct Lane {
    upstream: Option<Upstream>,
    /// Response bytes read from the server.
    buf: BytesMut,
    /// The request head as the server gets it.
    request: Vec<u8>,
    /// The response head as the client gets it (and the body's first bytes).
    response: Vec<u8>,
    /// The client's cookies the server may see.
    cookies: Vec<u8>,
}

impl Default for Lane {
    fn default() -> Self {
        Self::new()
    }
}

impl Lane {
    /// A lane with no upstream yet.
    pub fn new() -> Self {
        Self { upstream: None, buf: BytesMut::new(), request: Vec::new(), response: Vec::new(), cookies: Vec::new() }
    }

    /// Resolves when the kept upstream socket should be closed: its route was removed, the
    /// server closed it (or sent something unasked), or it sat idle for the pool's idle
    /// timeout. Never resolves while there is none.
    pub async fn upstream_retired(&self) {
        let Some(up) = &self.upstream else { return std::future::pending().await };
        tokio::select! {
            () = up.watch.closed() => {}
            () = tokio::time::sleep_until(up.idle_since + IDLE_TIMEOUT) => {}
            () = readable_or_closed(&up.stream) => {}
        }
    }

    /// Closes the kept upstream socket.
    pub fn close_upstream(&mut self) {
        self.upstream = None;
    }

    /// The kept socket, if it goes to `route` (this entry of it: a replaced route is a new
    /// server) and has nothing to read; any other is closed.
    fn take_upstream(&mut self, route: &Arc<RouteEntry>) -> Option<Upstream> {
        self.upstream.take().filter(|u| Arc::ptr_eq(&u.route, route) && !route.is_removed() && is_quiet(&u.stream))
    }
}

/// Whether a kept socket has nothing to read. Bytes a server sent after its response (a late
/// body after a 204 or 304, say) would be read as the next request's response; a closed
/// socket cannot carry one either. Costs no system call when the socket was last seen
/// empty (tokio remembers), as it is after the wait between requests.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Resolves once the socket has bytes or an end to read: on an idle keep-alive connection
/// either means it cannot carry another request.
async fn readable_or_closed(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        // Readiness can be left over from the last response's reads; only a read tells.
        match stream.try_read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            _ => return,
        }
    }
}

/// What a response's head says about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked, passed on as it is.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A response head read and rewritten for the client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    status: u16,
    /// Its length in the read buffer.
    len: usize,
    framing: Framing,
    /// Whether the server keeps the connection open after this response.
    server_keeps_alive: bool,
}

/// Why an exchange with the server got no usable response head.
enum Failure {
    /// The server closed the connection (or reset it) before a byte of response.
    Unanswered,
    Failed(ProxyError),
}

impl Proxy {
    /// Forwards a plain GET and relays its response to `client`; see [the module](self).
    pub async fn forward_plain_get<W: AsyncWrite + Unpin>(
        &self,
        lane: &mut Lane,
        req: PlainGet<'_>,
        client: &mut W,
    ) -> Result<Relayed, LaneError> {
        let settings = self.settings();
        let route = &req.route;
        let (path, query) = req.target.split_once('?').map_or((req.target, None), |(p, q)| (p, Some(q)));
        let acceptable = !route.is_removed()
            && route.route().kind != ImageKind::Rstudio
            && path.starts_with(route.prefix())
            && query.is_none_or(|q| values::strip_token_param(q).is_none());
        if !acceptable {
            return Err(LaneError::NotForwarded);
        }
        write_request(lane, &req, settings)?;
        let lease = self.lease(route).ok_or(LaneError::NotForwarded)?;
        route.touch();

        let (mut up, mut reused) = match lane.take_upstream(route) {
            Some(up) => (up, true),
            None => (connect(route, settings.connect_timeout).await.ok_or(LaneError::NotForwarded)?, false),
        };
        let head = loop {
            lane.buf.clear();
            let watch = up.watch.clone();
            let exchange = tokio::time::timeout(settings.read_timeout, exchange(&mut up.stream, lane, &req, settings));
            let outcome = tokio::select! {
                biased;
                () = watch.closed() => return Err(LaneError::NotForwarded),
                outcome = exchange => outcome,
            };
            match outcome {
                Ok(Ok(head)) => break head,
                Err(_) => return Err(LaneError::Failed(ProxyError::Timeout)),
                // A kept connection the server closed while it was idle: a GET may go again.
                Ok(Err(Failure::Unanswered)) if reused => {
                    up = connect(route, settings.connect_timeout).await.ok_or(LaneError::NotForwarded)?;
                    reused = false;
                }
                Ok(Err(Failure::Unanswered)) => {
                    return Err(LaneError::Failed(ProxyError::Upstream(
                        "it closed the connection before answering".into(),
                    )));
                }
                Ok(Err(Failure::Failed(e))) => return Err(LaneError::Failed(e)),
            }
        };

        let head_at = Instant::now();
        let watch = up.watch.clone();
        let relayed = tokio::select! {
            biased;
            () = watch.closed() => Err(LaneError::Broken { status: head.status, head_at }),
            relayed = relay(&mut up.stream, lane, head, head_at, client) => relayed,
        };
        drop(lease);
        let reusable = relayed?;
        if reusable {
            up.idle_since = Instant::now();
            lane.upstream = Some(up);
        }
        Ok(Relayed { status: head.status, keep_alive: head.framing != Framing::UntilClose, head_at })
    }
}

async fn connect(route: &Arc<RouteEntry>, timeout: Duration) -> Option<Upstream> {
    let watch = route.closer.watch();
    let stream = tokio::time::timeout(timeout, TcpStream::connect(route.route().endpoint)).await.ok()?.ok()?;
    stream.set_nodelay(true).ok()?;
    Some(Upstream { route: route.clone(), stream, watch, idle_since: Instant::now() })
}

/// The request head as the server must see it, by the rules the general path follows
/// ([`headers`]): hop-by-hop headers and client credentials gone, the hub's cookies stripped,
/// the proxy's own headers written, `Host` kept. A request whose `Connection` names headers
/// is left to the general path.
fn write_request(lane: &mut Lane, req: &PlainGet<'_>, settings: &ProxySettings) -> Result<(), LaneError> {
    let out = &mut lane.request;
    out.clear();
    lane.cookies.clear();
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut earlier_forwarded_for: [&[u8]; 4] = [b""; 4];
    let mut n_forwarded = 0;
    for h in req.headers {
        match headers::request_rule(h.name.as_bytes()) {
            RequestRule::Pass => push_header(out, h.name.as_bytes(), h.value),
            RequestRule::Connection if headers::names_headers(h.value) => return Err(LaneError::NotForwarded),
            RequestRule::Connection | RequestRule::Drop | RequestRule::Length | RequestRule::Own(_) => {}
            RequestRule::FilterCookies => values::keep_cookies(h.value, &settings.strip_cookies, &mut lane.cookies),
            RequestRule::DropTokenParams => match values::referer_without_token(h.value) {
                Some(kept) => push_header(out, h.name.as_bytes(), &kept),
                None => push_header(out, h.name.as_bytes(), h.value),
            },
            RequestRule::AppendForwardedFor => {
                // More than a few such headers is no client's: for the general path.
                let slot = earlier_forwarded_for.get_mut(n_forwarded).ok_or(LaneError::NotForwarded)?;
                *slot = h.value;
                n_forwarded += 1;
            }
        }
    }
    if !lane.cookies.is_empty() {
        push_header(out, b"cookie", &lane.cookies);
    }
    for own in OwnRequestHeader::ALL {
        match own {
            OwnRequestHeader::Authorization => {
                if let Some(a) = &req.route.authorization {
                    push_header(out, b"authorization", a.as_bytes());
                }
            }
            OwnRequestHeader::ForwardedFor => {
                out.extend_from_slice(b"x-forwarded-for: ");
                let earlier = earlier_forwarded_for[..n_forwarded].iter().copied();
                values::forwarded_for(earlier, req.client.addr, out);
                out.extend_from_slice(b"\r\n");
            }
            OwnRequestHeader::ForwardedProto => {
                push_header(out, b"x-forwarded-proto", req.client.scheme.as_str().as_bytes());
            }
            OwnRequestHeader::ForwardedHost => push_header(out, b"x-forwarded-host", req.client.host.as_bytes()),
            // The lane takes no RStudio route.
            OwnRequestHeader::RstudioRootPath => {}
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Sends the request and reads the final response head, written for the client into
/// `lane.response`.
async fn exchange(
    stream: &mut TcpStream,
    lane: &mut Lane,
    req: &PlainGet<'_>,
    settings: &ProxySettings,
) -> Result<Head, Failure> {
    if stream.write_all(&lane.request).await.is_err() {
        return Err(Failure::Unanswered);
    }
    let mut answered = false;
    loop {
        if lane.buf.capacity() - lane.buf.len() < READ_CHUNK / 4 {
            lane.buf.reserve(READ_CHUNK);
        }
        match stream.read_buf(&mut lane.buf).await {
            Ok(0) if !answered => return Err(Failure::Unanswered),
            Ok(0) => return Err(Failure::Failed(ProxyError::Upstream("its response was incomplete".into()))),
            Ok(_) => answered = true,
            Err(e) if !answered && matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {
                return Err(Failure::Unanswered);
            }
            Err(e) => return Err(Failure::Failed(ProxyError::Upstream(e.to_string()))),
        }
        loop {
            match rewrite_response_head(&lane.buf, &mut lane.response, req, settings) {
                Ok(Parsed::Final(head)) => return Ok(head),
                Ok(Parsed::Informational(n)) => lane.buf.advance(n),
                Ok(Parsed::Partial) if lane.buf.len() < MAX_RESPONSE_HEAD => break,
                Ok(Parsed::Partial) => {
                    return Err(Failure::Failed(ProxyError::Upstream("its response headers were too large".into())));
                }
                Err(e) => return Err(Failure::Failed(e)),
            }
        }
    }
}

pub(crate) enum Parsed {
    Partial,
    /// A 1xx head of this length, to skip.
    Informational(usize),
    Final(Head),
}

/// Reads a response head and writes it for the client into `out`: hop-by-hop headers (and
/// those `Connection` names) removed, cookies that would reach the hub dropped, `Location`
/// read back into hub paths, the request's id added. The framing headers pass as they are,
/// and the body with them.
pub(crate) fn rewrite_response_head(
    buf: &[u8],
    out: &mut Vec<u8>,
    req: &PlainGet<'_>,
    settings: &ProxySettings,
) -> Result<Parsed, ProxyError> {
    let malformed = || ProxyError::Upstream("its response was malformed".into());
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err(malformed()),
    };
    let status = resp.code.ok_or_else(malformed)?;
    if status == 101 {
        return Err(ProxyError::Upstream("it switched protocols without being asked to".into()));
    }
    if (100..200).contains(&status) {
        return Ok(Parsed::Informational(len));
    }
    // Framing is read as hyper's client reads it on the general path (`Content-Length`
    // values), only stricter where a body could be read two ways: a transfer coding other
    // than plain chunked, or one with a length too, is refused rather than guessed at.
    let mut length: Option<u64> = None;
    let mut bad_length = false;
    let mut lengths = false;
    let mut coding: Option<bool> = None;
    let mut server_keeps_alive = resp.version == Some(1);
    let mut listed = false;
    // Each name is looked up once: the rules say which headers frame the body, too.
    let mut rules = [ResponseRule::Pass; MAX_RESPONSE_HEADERS];
    for (h, rule) in resp.headers.iter().zip(rules.iter_mut()) {
        *rule = headers::response_rule(h.name.as_bytes());
        match rule {
            ResponseRule::Length => {
                lengths = true;
                bad_length |= !content_length(h.value, &mut length);
            }
            ResponseRule::Coding => {
                let plain = coding.is_none() && h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
                coding = Some(plain);
            }
            ResponseRule::Connection => {
                if headers::named(std::iter::once(h.value), b"close") {
                    server_keeps_alive = false;
                }
                listed |= headers::names_headers(h.value);
            }
            _ => {}
        }
    }
    let framing = match (status, coding) {
        // Bodiless whatever their headers say, as hyper reads them.
        (204 | 304, _) => Framing::Empty,
        // HTTP/1.0 has no transfer codings: hyper refuses the response.
        (_, Some(_)) if resp.version == Some(0) => return Err(malformed()),
        (_, Some(false)) => {
            return Err(ProxyError::Upstream("its response's transfer coding is not supported".into()));
        }
        (_, Some(true)) if lengths => return Err(malformed()),
        (_, Some(true)) => Framing::Chunked,
        (_, None) if bad_length => return Err(malformed()),
        (_, None) => length.map_or(Framing::UntilClose, Framing::Length),
    };
    let named = |name: &str| {
        listed
            && headers::named(
                resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")).map(|h| h.value),
                name.as_bytes(),
            )
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    let rewrite = LocationRewrite {
        internal_origin: &req.route.internal_origin,
        browser_host: &req.client.host,
        rstudio_prefix: None,
    };
    for (h, rule) in resp.headers.iter().zip(rules) {
        let name = h.name;
        if !matches!(rule, ResponseRule::Length | ResponseRule::Coding) && named(name) {
            continue;
        }
        match rule {
            // The body passes with its framing as it is, and so do the headers that say it.
            ResponseRule::Pass | ResponseRule::Length | ResponseRule::Coding => {
                push_header(out, name.as_bytes(), h.value);
            }
            ResponseRule::Connection | ResponseRule::Drop | ResponseRule::Own(_) => {}
            ResponseRule::DropSetCookieForHub => {
                if !values::plants_for_the_hub(h.value, &settings.strip_cookies) {
                    push_header(out, name.as_bytes(), h.value);
                }
            }
            ResponseRule::RewriteLocation => match rewrite.apply_bytes(h.value) {
                Some(mapped) => push_header(out, name.as_bytes(), mapped.as_bytes()),
                None => push_header(out, name.as_bytes(), h.value),
            },
        }
    }
    for own in OwnResponseHeader::ALL {
        match own {
            OwnResponseHeader::RequestId => push_header(out, b"x-request-id", req.request_id.as_bytes()),
        }
    }
    if framing == Framing::UntilClose {
        push_header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Parsed::Final(Head { status, len, framing, server_keeps_alive }))
}

/// Reads one `Content-Length` value into `length` as hyper does: visible ASCII, a
/// comma-separated list of decimal numbers (digits only: no sign, no blanks inside), each
/// equal to the ones before. Whether it was such a value.
fn content_length(value: &[u8], length: &mut Option<u64>) -> bool {
    if !value.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)) {
        return false;
    }
    value.split(|b| *b == b',').all(|part| {
        let digits = part.trim_ascii();
        let n = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
            .then(|| digits.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0'))))
            .flatten();
        match n {
            Some(n) if length.is_none_or(|l| l == n) => {
                *length = Some(n);
                true
            }
            _ => false,
        }
    })
}

/// Sends the response head and relays the body; whether the upstream connection can carry
/// another request afterwards.
async fn relay<W: AsyncWrite + Unpin>(
    stream: &mut TcpStream,
    lane: &mut Lane,
    head: Head,
    head_at: Instant,
    client: &mut W,
) -> Result<bool, LaneError> {
    let broken = LaneError::Broken { status: head.status, head_at };
    lane.buf.advance(head.len);
    let mut scan = (head.framing == Framing::Chunked).then(ChunkedScan::new);
    let mut left = match head.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    // What the next bytes from the server are: part of this body, or not (the body ended).
    let mut take = |bytes: &[u8]| -> Result<(usize, bool), BadChunking> {
        match head.framing {
            Framing::Empty => Ok((0, true)),
            Framing::Length(_) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                left -= n as u64;
                Ok((n, left == 0))
            }
            Framing::Chunked => {
                let scan = scan.as_mut().expect("a chunked body has its scan");
                let n = scan.feed(bytes)?;
                Ok((n, scan.is_done()))
            }
            Framing::UntilClose => Ok((bytes.len(), false)),
        }
    };
    // Nothing has gone to the client yet: a body already seen to be malformed is a 502.
    let (n, mut done) = take(&lane.buf).map_err(|e| LaneError::Failed(ProxyError::Upstream(e.to_string())))?;
    let mut surplus = n < lane.buf.len();
    lane.response.extend_from_slice(&lane.buf[..n]);
    if client.write_all(&lane.response).await.is_err() {
        return Err(broken);
    }
    while !done {
        lane.buf.clear();
        lane.buf.reserve(READ_CHUNK);
        let read = stream.read_buf(&mut lane.buf).await;
        match read {
            Ok(0) if head.framing == Framing::UntilClose => break,
            Ok(0) | Err(_) => return Err(broken),
            Ok(_) => {}
        }
        let (n, ended) = take(&lane.buf).map_err(|_| LaneError::Broken { status: head.status, head_at })?;
        done = ended;
        surplus = n < lane.buf.len();
        if client.write_all(&lane.buf[..n]).await.is_err() {
            return Err(broken);
        }
    }
    if client.flush().await.is_err() {
        return Err(broken);
    }
    lane.buf.clear();
    Ok(head.server_keeps_alive && head.framing != Framing::UntilClose && !surplus)
}
