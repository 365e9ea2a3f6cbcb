//! The test hub (a tiny axum app calling `Proxy::forward`, as the web layer will) and the
//! upstream servers it forwards to, all on 127.0.0.1 port 0.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use labhub_core::{ImageKind, ManualClock, Secret, ServerName, UserName};
use labhub_proxy::{
    ClientInfo, Proxy, ProxyError, ProxySettings, Route, RouteKey, RouteTable, Scheme, parse_user_path,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// The secret every test route injects.
pub const SERVER_TOKEN: &str = "server-secret-0123";
/// The hub's session cookie name in tests.
pub const HUB_COOKIE: &str = "labhub-session";

pub fn settings() -> ProxySettings {
    let mut s = ProxySettings::new([HUB_COOKIE]);
    s.read_timeout = Duration::from_secs(5);
    s.connect_timeout = Duration::from_secs(2);
    s
}

pub struct Hub {
    pub addr: SocketAddr,
    pub proxy: Proxy,
    pub table: RouteTable,
    pub clock: ManualClock,
}

impl Hub {
    pub async fn start(settings: ProxySettings) -> Self {
        let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
        let table = RouteTable::new(Arc::new(clock.clone()));
        let proxy = Proxy::new(settings, table.clone());
        let app = Router::new().route("/user/{*rest}", any(hub_handler)).with_state(proxy.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        });
        Self { addr, proxy, table, clock }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn add(&self, user: &str, server: Option<&str>, upstream: SocketAddr, kind: ImageKind) -> RouteKey {
        let key = key(user, server);
        self.table
            .insert(Route::new(
                key.clone(),
                labhub_core::UserId::new(1),
                upstream,
                Secret::new(SERVER_TOKEN.into()),
                kind,
            ))
            .unwrap();
        key
    }
}

pub fn key(user: &str, server: Option<&str>) -> RouteKey {
    RouteKey::new(UserName::parse(user).unwrap(), server.map(|s| ServerName::parse(s).unwrap()))
}

/// The web layer's part, reduced to what the proxy needs: route, forward, map errors.
async fn hub_handler(State(proxy): State<Proxy>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let route = match parse_user_path(req.uri().path()) {
        Ok(path) => proxy.table().resolve(&path),
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let Some(route) = route else {
        return (StatusCode::NOT_FOUND, [("x-proxy-error", "no-route")], "no such server").into_response();
    };
    match proxy.forward(route, req, ClientInfo { addr: peer.ip(), scheme: Scheme::Http, host }).await {
        Ok(response) => response,
        Err(e) => {
            let name = match &e {
                ProxyError::Busy { .. } => "busy",
                ProxyError::Unreachable => "unreachable",
                ProxyError::Timeout => "timeout",
                ProxyError::HeadersTooLarge => "headers-too-large",
                ProxyError::BadRequest(_) => "bad-request",
                ProxyError::Upstream(_) => "upstream",
            };
            let mut response = (e.status(), [("x-proxy-error", name)], e.to_string()).into_response();
            if let Some(secs) = e.retry_after_secs() {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
    }
}

/// An upstream server that counts its connections and can be killed (every connection
/// dropped at once, as when a container dies).
pub struct Upstream {
    pub addr: SocketAddr,
    /// Connections currently open.
    pub open: Arc<AtomicUsize>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    pub kill: CancellationToken,
    /// Each notification lets `sse` send its next event: a test reads one event before it
    /// allows the next, so a proxy that held events back would hang it.
    pub events: Arc<Notify>,
    /// Each permit answers one request waiting in `hold`.
    pub release: Arc<Semaphore>,
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A socket that keeps its upstream's open-connection count while it lives.
struct Counted {
    stream: tokio::net::TcpStream,
    _guard: OpenGuard,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let kill = CancellationToken::new();
        let (events, release) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
        let app = upstream_app(addr, events.clone(), release.clone());
        let (o, a, k) = (open.clone(), accepted.clone(), kill.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                    () = k.cancelled() => return,
                };
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                // The guard lives with the socket, which an upgrade moves out of hyper's
                // connection future: counting the future would miss open tunnels.
                let stream = Counted { stream, _guard: OpenGuard(o.clone()) };
                let app = app.clone();
                let k = k.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(tower::ServiceExt::oneshot(app, req).await.into_response()) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    tokio::select! {
                        _ = conn => {}
                        () = k.cancelled() => {}
                    }
                });
            }
        });
        Self { addr, open, accepted, kill, events, release }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Routes are matched on the path's last segment, so one app serves both Jupyter-style
/// (prefix kept) and RStudio-style (prefix stripped) routes.
fn upstream_app(own: SocketAddr, events: Arc<Notify>, release: Arc<Semaphore>) -> Router {
    Router::new().fallback(any(move |ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>, req: Request| {
        upstream(own, ws.ok(), req, events.clone(), release.clone())
    }))
}

fn query_param<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
}

/// A report of what the upstream received: request line then `name: value` lines.
fn dump(req: &Request) -> String {
    let mut out = format!("{} {}\n", req.method(), req.uri());
    for (k, v) in req.headers() {
        out.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    out
}

static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

async fn upstream(
    own: SocketAddr,
    ws: Option<WebSocketUpgrade>,
    req: Request,
    events: Arc<Notify>,
    release: Arc<Semaphore>,
) -> Response {
    let last = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
    match last.as_str() {
        "echo" => dump(&req).into_response(),
        // A service worker script asking for a scope above its own path.
        "sw.js" => (
            [(header::CONTENT_TYPE, "text/javascript"), (HeaderName::from_static("service-worker-allowed"), "/")],
            "self.skipWaiting();",
        )
            .into_response(),
        "body" => Response::new(req.into_body()),
        "redirect" => {
            let to = query_param(&req, "to").unwrap_or("/");
            let to = percent_encoding::percent_decode_str(to).decode_utf8_lossy().replace("INTERNAL", &own.to_string());
            (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
        }
        "sleep" => {
            let ms = query_param(&req, "ms").and_then(|m| m.parse().ok()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            "slept".into_response()
        }
        "silent" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never".into_response()
        }
        "sse" => {
            let events = futures::stream::unfold(0u32, move |i| {
                let events = events.clone();
                async move {
                    if i == 5 {
                        return None;
                    }
                    events.notified().await;
                    Some((Ok::<_, Infallible>(Bytes::from(format!("data: event {i}\n\n"))), i + 1))
                }
            });
            ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(events)).into_response()
        }
        "hold" => match release.acquire().await {
            Ok(permit) => {
                permit.forget();
                "released".into_response()
            }
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "closed").into_response(),
        },
        "download" => {
            let bytes: u64 = query_param(&req, "bytes").and_then(|b| b.parse().ok()).unwrap_or(0);
            let chunks = bytes.div_ceil(ZEROS.len() as u64);
            let stream = futures::stream::iter(0..chunks).map(move |i| {
                let left = bytes - i * ZEROS.len() as u64;
                let n = left.min(ZEROS.len() as u64) as usize;
                Ok::<_, Infallible>(Bytes::from_static(&ZEROS[..n]))
            });
            ([(header::CONTENT_LENGTH, bytes.to_string())], Body::from_stream(stream)).into_response()
        }
        "upload" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                }
            }
            n.to_string().into_response()
        }
        "ws" | "ws-headers" | "ws-crash" => {
            let Some(ws) = ws else { return (StatusCode::BAD_REQUEST, "not a websocket").into_response() };
            let report = dump(&req);
            ws.protocols(["v1.kernel.websocket.jupyter.org"])
                .max_message_size(64 << 20)
                .on_upgrade(move |socket| ws_session(socket, last, report))
        }
        "ws-forbidden" => (StatusCode::FORBIDDEN, "no websockets for you").into_response(),
        _ => (StatusCode::NOT_FOUND, format!("upstream has no {last}")).into_response(),
    }
}

async fn ws_session(mut socket: WebSocket, kind: String, report: String) {
    match kind.as_str() {
        "ws-headers" => {
            let _ = socket.send(Message::Text(report.into())).await;
        }
        "ws-crash" => {
            // Wait for one message, then vanish without a close frame.
            let _ = socket.recv().await;
        }
        _ => {
            while let Some(Ok(msg)) = socket.recv().await {
                let reply = match msg {
                    Message::Text(t) if t.as_str() == "close-me" => {
                        Message::Close(Some(CloseFrame { code: 4002, reason: "server says bye".into() }))
                    }
                    // tungstenite queued the close reply; reading on sends it.
                    Message::Close(_) => continue,
                    other => other,
                };
                let closing = matches!(reply, Message::Close(_));
                if socket.send(reply).await.is_err() || closing {
                    break;
                }
            }
        }
    }
}

/// Reads a request's head (up to the blank line); false if the client went away first.
pub async fn read_request_head(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A raw TCP upstream that answers every request with `head` + `body_prefix`, then hangs up:
/// a server that dies mid-response.
pub async fn dying_upstream(head: &'static str, body_prefix: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_request_head(&mut stream).await {
                    return;
                }
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&vec![b'x'; body_prefix]).await;
                let _ = stream.flush().await;
            });
        }
    });
    addr
}

/// A raw TCP upstream that runs `serve` on each connection; counts connections.
pub async fn counting_raw_upstream<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (addr, accepted)
}

/// A raw TCP upstream that answers one request per connection (keep-alive, `ok`), then hangs
/// up 50 ms later, as servers with a short keep-alive timeout do; counts connections.
pub async fn closes_when_idle_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    counting_raw_upstream(|mut stream| async move {
        if !read_request_head(&mut stream).await {
            return;
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    })
    .await
}

/// A raw TCP upstream that answers the first request on each connection (keep-alive, `ok`)
/// and hangs up on the second without answering, as a server does when a request arrives
/// just as it closes an idle connection; counts connections.
pub async fn hangs_up_on_the_second_request_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    counting_raw_upstream(|mut stream| async move {
        if !read_request_head(&mut stream).await {
            return;
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        read_request_head(&mut stream).await;
    })
    .await
}

/// Reads the five events of the upstream's `sse` in lock-step: each is let go only after the
/// one before reached the client, so a proxy that held events back would never see the next
/// (the timeout only guards against that hang). Returns the whole text.
pub async fn read_events_in_turn(response: reqwest::Response, events: &Notify) -> String {
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    for i in 0..5 {
        events.notify_one();
        let want = format!("data: event {i}\n\n");
        let arrived = tokio::time::timeout(Duration::from_secs(10), async {
            while !text.contains(&want) {
                let chunk = stream.next().await.expect("the stream ended early").expect("the stream broke");
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(arrived.is_ok(), "event {i} was held back: {text:?}");
    }
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("the stream broke")));
    }
    text
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Waits until `cond` holds, up to `within`.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// Splits an upstream `dump` into its request line and headers.
pub fn parse_dump(dump: &str) -> (String, Vec<(String, String)>) {
    let mut lines = dump.lines();
    let first = lines.next().unwrap_or_default().to_string();
    let headers = lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    (first, headers)
}

pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
}

/// Percent-encodes a query parameter value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Sends `GET {path}` exactly as written (HTTP clients normalise `%2e%2e` and friends
/// away before sending) and returns the status and body.
pub async fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
