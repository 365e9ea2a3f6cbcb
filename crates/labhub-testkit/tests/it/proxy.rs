//! The proxy through the whole hub to real containers of the test image: HTTP bodies and
//! queries, a gibibyte each way in bounded memory, WebSockets, server-sent events, redirects,
//! the RStudio kind, upstream failures, shutdown with open tunnels, and the limits.
//!
//! The hub runs in this test process, so its memory is this process's memory; the tests that
//! measure it (or move tens of MiB through a WebSocket) take [`heavy`] so that they never
//! overlap each other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use labhub_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{docker_hub, start_ready};
use labhub_testkit::app::script;

// ---------------------------------------------------------------------------------------------
// Helpers shared with `proxy_auth` and `restart`.

/// A WebSocket client connection.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `ws://127.0.0.1:<port><path>` for an `http://` base URL.
pub(crate) fn ws_url(base: &str, path: &str) -> String {
    format!("ws{}{path}", base.strip_prefix("http").expect("an http:// URL"))
}

/// Opens a WebSocket with extra handshake headers (credentials, `Origin`); messages up to
/// 64 MiB, like the test server.
pub(crate) async fn ws_connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            http::HeaderValue::from_str(value).expect("a header value"),
        );
    }
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20)).max_frame_size(Some(64 << 20));
    tokio_tungstenite::connect_async_with_config(request, Some(config), true).await.map(|(ws, _)| ws)
}

/// The status a refused WebSocket handshake got.
pub(crate) fn refused_status(e: &WsError) -> u16 {
    match e {
        WsError::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Sends `text` and returns the echo.
pub(crate) async fn echo(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.expect("sending on the WebSocket");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an echo within 10 s") {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text echo, got {other:?}"),
        }
    }
}

/// How a client's WebSocket ended.
#[derive(Debug)]
pub(crate) enum WsEnd {
    /// A close frame (with its code), then the end.
    Closed(Option<u16>),
    /// The connection ended without a close frame (reset or EOF), and how.
    Dropped(#[expect(dead_code, reason = "read through Debug, in test output")] String),
}

/// Reads until the WebSocket ends, within `within`; panics if it is still open then.
pub(crate) async fn ws_end(ws: &mut Ws, within: Duration) -> WsEnd {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the WebSocket was still open after {within:?}"),
            Ok(None) => return WsEnd::Dropped("end of stream".into()),
            Ok(Some(Err(e))) => return WsEnd::Dropped(e.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => return WsEnd::Closed(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The secret the hub sends upstream for `user`'s default server (what the server must see
/// instead of any hub credential).
pub(crate) fn server_secret(app: &TestApp, user: &str) -> String {
    let route = app.hub.routes().get(user, None).expect("the server has a route");
    route.route().token.expose().clone()
}

/// Polls `check` every 20 ms until it holds or `within` passes.
pub(crate) async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Signs `user` in through the login form and returns the `Cookie` header value of the hub's
/// session (for raw requests that must carry it explicitly).
pub(crate) async fn session_cookie(app: &TestApp, user: &str) -> String {
    let c = script();
    let login = c.get(app.at("/hub/login")).send().await.unwrap();
    let pre: Vec<String> = set_cookies(login.headers());
    let csrf = labhub_testkit::app::csrf_of(&login.text().await.unwrap());
    let r = c
        .post(app.at("/hub/login"))
        .header("Cookie", pre.join("; "))
        .form(&[("_csrf", csrf.as_str()), ("username", user), ("password", "correct horse"), ("next", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "signing {user} in");
    let name = &app.config.session.cookie_name;
    set_cookies(r.headers()).into_iter().find(|c| c.starts_with(&format!("{name}="))).expect("a session cookie")
}

/// The `name=value` part of every `Set-Cookie`.
fn set_cookies(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_string)
        .collect()
}

/// Panics seen on tokio worker threads (where the hub's tasks run) since the process started,
/// with their messages; the hook is installed on first use and keeps the default output.
pub(crate) fn hub_panics() -> Vec<String> {
    static SEEN: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("tokio-runtime-worker") {
                record.lock().unwrap_or_else(|e| e.into_inner()).push(info.to_string());
            }
            previous(info);
        }));
        seen
    });
    seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Taken by tests that measure this process's memory or move tens of MiB at once.
pub(crate) async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

// ---------------------------------------------------------------------------------------------
// Memory.

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets `VmHWM` to the current resident size (Linux `clear_refs` 5).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1 << 20)
}

/// Watches resident memory during a transfer: the baseline, a sampled peak, and `VmHWM`.
struct MemoryWatch {
    before: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    hwm_reset: bool,
}

impl MemoryWatch {
    fn start() -> Self {
        let hwm_reset = reset_peak();
        let before = memory().0;
        let peak = Arc::new(AtomicU64::new(before));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(memory().0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { before, peak, stop, hwm_reset }
    }

    /// Growth over the baseline: the larger of the sampled peak and `VmHWM` (when it could
    /// be reset); prints the numbers.
    fn finish(self, what: &str, elapsed: Duration) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let (now, hwm) = memory();
        let sampled = self.peak.load(Ordering::Relaxed).max(now);
        let peak = if self.hwm_reset { sampled.max(hwm) } else { sampled };
        let growth = peak.saturating_sub(self.before);
        eprintln!(
            "{what}: 1 GiB in {elapsed:.1?} ({:.0} MiB/s); RSS before {:.1} MiB, sampled peak {:.1} MiB, \
             VmHWM {:.1} MiB{}, after {:.1} MiB: growth {:.1} MiB",
            1024.0 / elapsed.as_secs_f64(),
            mib(self.before),
            mib(sampled),
            mib(hwm),
            if self.hwm_reset { "" } else { " (not resettable)" },
            mib(now),
            mib(growth),
        );
        growth
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const GIB: u64 = 1 << 30;
const MEMORY_LIMIT: u64 = 64 << 20;

async fn json(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// HTTP.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_and_queries_pass_and_the_hub_token_stays_behind() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let alice = alice.authorization().to_string();
    let secret = server_secret(&app, "alice");
    let token = alice.strip_prefix("token ").unwrap();
    let c = script();

    // `?token=` alone authenticates; the server gets the rest of the query byte for byte and
    // its own secret instead of ours.
    let r = c.get(app.at(&format!("/user/alice/whoami?a=1&b=%2F+x&token={token}&c&d=%E2%9C%93"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(token), "the hub token reached the server: {text}");
    let who: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(who["method"], "GET");
    assert_eq!(who["path"], "/user/alice/whoami");
    assert_eq!(who["query"], "a=1&b=%2F+x&c&d=%E2%9C%93");
    assert_eq!(who["headers"]["authorization"], json!([format!("token {secret}")]));
    let host = app.url.trim_start_matches("http://");
    assert_eq!(who["headers"]["host"], json!([host]), "the browser's Host is kept");
    assert_eq!(who["headers"]["x-forwarded-host"], json!([host]));
    assert_eq!(who["headers"]["x-forwarded-proto"], json!(["http"]));
    assert_eq!(who["headers"]["x-forwarded-for"], json!(["127.0.0.1"]));

    // The same with the token in the header, and a query without `token` passes untouched.
    let r = c.get(app.at("/user/alice/whoami?x=%20y&&z=")).header("Authorization", &alice).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains(token), "{text}");
    let who: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(who["query"], "x=%20y&&z=");
    assert_eq!(who["headers"]["authorization"], json!([format!("token {secret}")]));

    // Request bodies reach the server whole; so do methods.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let r =
        c.post(app.at("/user/alice/upload")).header("Authorization", &alice).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let got = json(r).await;
    assert_eq!(got["bytes"], body.len());
    assert_eq!(got["sha256"], hex::encode(Sha256::digest(&body)));
    let r = c
        .post(app.at("/user/alice/whoami"))
        .header("Authorization", &alice)
        .header("Content-Type", "application/json")
        .body("{\"a\": 1}")
        .send()
        .await
        .unwrap();
    let who = json(r).await;
    assert_eq!(who["method"], "POST");
    assert_eq!(who["headers"]["content-length"], json!(["8"]));

    // A file written through the proxy reads back byte for byte.
    let r = c
        .put(app.at("/user/alice/files/data.bin"))
        .header("Authorization", &alice)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(app.at("/user/alice/files/data.bin")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], body.len().to_string().as_str());
    assert!(r.bytes().await.unwrap() == body, "the file came back changed");

    // The bare prefix gets its slash; the server's own 404 is passed through as it is.
    let r = c.get(app.at("/user/alice?x=1")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "/user/alice/?x=1");
    let r = c.get(app.at("/user/alice/no/such/thing")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(r).await["message"], "not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_down_and_up_through_the_hub_in_bounded_memory() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let alice = alice.authorization().to_string();
    let c = script();
    let _heavy = heavy().await;

    // Warm the pools and the allocator so the baseline holds the steady state.
    for _ in 0..2 {
        let r =
            c.get(app.at("/user/alice/download?bytes=33554432")).header("Authorization", &alice).send().await.unwrap();
        let mut s = r.bytes_stream();
        while let Some(chunk) = s.next().await {
            chunk.unwrap();
        }
        let r = c
            .post(app.at("/user/alice/upload"))
            .header("Authorization", &alice)
            .body(reqwest::Body::wrap_stream(blocks(32)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // Down: counted chunk by chunk, never collected; every chunk starts and ends where the
    // server's pattern (byte i is i % 251) says it must.
    let watch = MemoryWatch::start();
    let start = Instant::now();
    let r = c
        .get(app.at(&format!("/user/alice/download?bytes={GIB}")))
        .header("Authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], GIB.to_string().as_str());
    let mut stream = r.bytes_stream();
    let mut offset: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("the download continues");
        if let (Some(first), Some(last)) = (chunk.first(), chunk.last()) {
            assert_eq!(u64::from(*first), offset % 251, "byte {offset}");
            assert_eq!(
                u64::from(*last),
                (offset + chunk.len() as u64 - 1) % 251,
                "byte {}",
                offset + chunk.len() as u64 - 1
            );
        }
        offset += chunk.len() as u64;
    }
    assert_eq!(offset, GIB);
    let growth = watch.finish("download through the hub", start.elapsed());
    assert!(growth < MEMORY_LIMIT, "the download grew the hub's memory by {:.1} MiB", mib(growth));

    // Up: 1024 chunks of one shared MiB, streamed as the hub reads them.
    let expected = tokio::task::spawn_blocking(|| {
        let mut h = Sha256::new();
        for _ in 0..1024 {
            h.update(&BLOCK[..]);
        }
        hex::encode(h.finalize())
    });
    let watch = MemoryWatch::start();
    let start = Instant::now();
    let r = c
        .post(app.at("/user/alice/upload"))
        .header("Authorization", &alice)
        .header("Content-Length", GIB.to_string())
        .body(reqwest::Body::wrap_stream(blocks(1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = json(r).await;
    let growth = watch.finish("upload through the hub", start.elapsed());
    assert_eq!(got["bytes"], GIB);
    assert_eq!(got["sha256"], expected.await.unwrap(), "the upload arrived changed");
    assert!(growth < MEMORY_LIMIT, "the upload grew the hub's memory by {:.1} MiB", mib(growth));
    let proxy_idle =
        eventually(Duration::from_secs(2), || app.hub.routes().get("alice", None).unwrap().in_flight() == 0).await;
    assert!(proxy_idle, "every connection slot was given back");
}

/// One MiB of a pattern, shared by every chunk of an upload.
static BLOCK: LazyLock<Bytes> = LazyLock::new(|| (0..1u32 << 20).map(|i| (i % 253) as u8).collect::<Vec<_>>().into());

fn blocks(n: usize) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::iter(0..n).map(|_| Ok(BLOCK.clone()))
}

// ---------------------------------------------------------------------------------------------
// WebSockets, SSE, redirects.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_echo_large_and_many_messages_and_close_codes_pass_through() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let alice = alice.authorization().to_string();
    let url = ws_url(&app.url, "/user/alice/ws/echo");

    // Token-authenticated upgrades need no Origin.
    let mut ws = ws_connect(&url, &[("Authorization", &alice)]).await.expect("the upgrade");
    assert_eq!(app.hub.routes().open_tunnels(), 1);
    {
        let _heavy = heavy().await;
        let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
        let start = Instant::now();
        ws.send(Message::binary(big.clone())).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => assert!(b.as_ref() == big.as_slice(), "the 16 MiB echo differs"),
            other => panic!("expected the 16 MiB echo, got {:?}", other.map(|m| m.map(|m| m.len()))),
        }
        eprintln!("16 MiB echoed through the hub in {:?}", start.elapsed());
    }

    // 10,000 messages, pipelined: all back, in order.
    let n = 10_000;
    let start = Instant::now();
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            tx.send(Message::text(format!("message {i}"))).await.unwrap();
        }
        tx
    });
    for i in 0..n {
        match tokio::time::timeout(Duration::from_secs(30), rx.next()).await.expect("the next echo") {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), format!("message {i}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut tx = sender.await.unwrap();
    eprintln!("{n} messages echoed through the hub in {:?}", start.elapsed());

    // A close from the client carries its code to the server and back.
    tx.send(Message::Close(Some(CloseFrame { code: CloseCode::from(4002), reason: "client bye".into() })))
        .await
        .unwrap();
    let mut ws = tx.reunite(rx).unwrap();
    match ws_end(&mut ws, Duration::from_secs(10)).await {
        WsEnd::Closed(code) => assert_eq!(code, Some(4002)),
        other => panic!("expected the close echoed, got {other:?}"),
    }

    // A close from the server reaches the client with its code.
    let mut ws =
        ws_connect(&ws_url(&app.url, "/user/alice/ws/echo?close_after=2"), &[("Authorization", &alice)]).await.unwrap();
    assert_eq!(echo(&mut ws, "one").await, "one");
    assert_eq!(echo(&mut ws, "two").await, "two");
    match ws_end(&mut ws, Duration::from_secs(10)).await {
        WsEnd::Closed(code) => assert_eq!(code, Some(4001)),
        other => panic!("expected the server's close, got {other:?}"),
    }
    drop(ws);
    assert!(eventually(Duration::from_secs(5), || app.hub.routes().open_tunnels() == 0).await, "tunnels left open");

    // A browser's upgrade: the session cookie with the hub's own Origin; Jupyter's subprotocol
    // is negotiated end to end.
    let cookie = session_cookie(&app, "alice").await;
    let mut request = url.clone().into_client_request().unwrap();
    let h = request.headers_mut();
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("origin", app.url.parse().unwrap());
    h.insert("sec-websocket-protocol", "v1.kernel.websocket.jupyter.org".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("a same-origin upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "v1.kernel.websocket.jupyter.org");
    assert_eq!(echo(&mut ws, "from a browser").await, "from a browser");
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_one_by_one() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let alice = alice.authorization().to_string();
    // A script through the general path; a browser through the fast lane.
    let cookie = session_cookie(&app, "alice").await;
    for (name, value) in [("Authorization", &alice), ("Cookie", &cookie)] {
        events_arrive_one_by_one(&app, name, value).await;
    }
}

async fn events_arrive_one_by_one(app: &TestApp, credential: &str, value: &str) {
    let interval = Duration::from_millis(400);
    let n = 6;
    let start = Instant::now();
    let r = script()
        .get(app.at(&format!("/user/alice/sse?n={n}&interval_ms={}", interval.as_millis())))
        .header(credential, value)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = r.bytes_stream();
    let mut buffer = String::new();
    let mut arrivals: Vec<(Duration, String)> = Vec::new();
    while let Some(chunk) = body.next().await {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            arrivals.push((start.elapsed(), event.trim().to_string()));
        }
    }
    let events: Vec<&str> = arrivals.iter().map(|(_, e)| e.as_str()).collect();
    let want: Vec<String> = (0..n).map(|i| format!("data: {{\"i\": {i}}}")).collect();
    assert_eq!(events, want);
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1].0 - w[0].0).collect();
    eprintln!("SSE arrivals: {:?}", arrivals.iter().map(|(t, _)| *t).collect::<Vec<_>>());
    // Each event arrived about when the server wrote it, not held back until the end.
    for gap in &gaps {
        assert!(*gap >= interval / 2, "events bunched together: gaps {gaps:?}");
    }
    let last = arrivals.last().unwrap().0;
    assert!(last - arrivals[0].0 >= interval * (n - 1) * 3 / 4, "arrivals {arrivals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_the_servers_internal_address_come_back_as_hub_paths() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let alice = alice.authorization().to_string();
    let cookie = session_cookie(&app, "alice").await;
    // A script through the general path; a browser through the fast lane.
    for (name, value) in [("Authorization", &alice), ("Cookie", &cookie)] {
        let r = script()
            .get(app.at("/user/alice/redirect?to=lab/tree/x.ipynb%3Fa%3D1"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()["location"], "/user/alice/lab/tree/x.ipynb?a=1", "{name}");
        let body = json(r).await;
        let internal = body["location"].as_str().unwrap();
        assert!(
            internal.starts_with("http://") && !internal.contains("127.0.0.1"),
            "the server did say its own address: {internal}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RStudio.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rstudio_servers_get_their_prefix_stripped_and_sign_in_stays_under_it() {
    let (app, root, alice_api) = docker_hub(|_| {}).await;
    let (root, alice) = (root.authorization().to_string(), alice_api.authorization().to_string());
    let reference = app.docker.as_ref().unwrap().test_image.to_string();
    let c = script();
    let r = c
        .post(app.at("/hub/api/images"))
        .header("Authorization", &root)
        .json(&json!({"name": "rs", "display_name": "RStudio (stand-in)", "reference": reference, "kind": "rstudio",
                      "cpu": 0.5, "memory": "256M"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let r = c
        .post(app.at("/hub/api/users/alice/servers/stats"))
        .header("Authorization", &alice)
        .json(&json!({"image": "rs"}))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 201 | 202), "{} {}", r.status(), r.text().await.unwrap());
    alice_api.wait_ready("alice", Some("stats")).await;

    // rserver serves at its root: the prefix is gone, and the root path header says it.
    let who =
        json(c.get(app.at("/user/alice/stats/whoami?x=1")).header("Authorization", &alice).send().await.unwrap()).await;
    assert_eq!(who["path"], "/whoami");
    assert_eq!(who["query"], "x=1");
    assert_eq!(who["headers"]["x-rstudio-root-path"], json!(["/user/alice/stats"]));
    assert_eq!(who["rstudio_root_path"], "/user/alice/stats");

    // The first visit goes to sign-in, under the prefix; auth-none signs in and comes back.
    let b = labhub_testkit::app::browser();
    let r = b.get(app.at("/user/alice/stats/")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to, "/user/alice/stats/auth-sign-in?appUri=%2F");
    let r = b.get(app.at(&to)).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "/user/alice/stats/");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Path=/user/alice/stats"), "rserver's cookie is scoped to the prefix: {cookie}");
    let r = b.get(app.at("/user/alice/stats/")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("<code id=\"root-path\">/user/alice/stats</code>"), "{page}");

    // A long poll of 3 s passes whole.
    let start = Instant::now();
    let r = c
        .get(app.at("/user/alice/stats/events/get_events?ms=3000"))
        .header("Authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["held_ms"], 3000);
    assert!(start.elapsed() >= Duration::from_secs(3));

    // WebSockets too, at rserver's root.
    let mut ws =
        ws_connect(&ws_url(&app.url, "/user/alice/stats/ws/echo"), &[("Authorization", &alice)]).await.unwrap();
    assert_eq!(echo(&mut ws, "rstudio").await, "rstudio");
}

// ---------------------------------------------------------------------------------------------
// Failures.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_dying_mid_response_truncates_the_body_and_the_hub_carries_on() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    hub_panics();
    let panics_before = hub_panics().len();
    start_ready(&alice, "alice").await;
    let alice = alice.authorization().to_string();
    let c = script();
    let r =
        c.get(app.at("/user/alice/abort-mid-body?bytes=1048576")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let promised: u64 = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let mut body = r.bytes_stream();
    let mut got: u64 = 0;
    let mut error = None;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), body.next()).await.expect("no hang") {
        match chunk {
            Ok(b) => got += b.len() as u64,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert!(error.is_some(), "a truncated body must end in an error, not look complete");
    assert!(got >= 1 << 20 && got < promised, "got {got} of {promised} bytes");

    // The hub is fine: it answers, its slots are back, and it is ready to serve again.
    let health = c.get(app.at("/hub/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        eventually(Duration::from_secs(2), || app.hub.routes().get("alice", None).is_none_or(|r| r.in_flight() == 0))
            .await
    );
    let r = c.get(app.at("/hub/api/users/alice")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The server is gone: the proxy says so cleanly (never a hang).
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        c.get(app.at("/user/alice/api/status")).header("Authorization", &alice).send(),
    )
    .await
    .expect("an answer, not a hang")
    .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "the hub's 'not running' answer, not a 502");
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(json(r).await["message"].as_str().unwrap().contains("not running"));
    assert_eq!(hub_panics().len(), panics_before, "the hub panicked: {:?}", &hub_panics()[panics_before..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_dying_mid_websocket_ends_the_tunnel() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    let panics_before = hub_panics().len();
    start_ready(&alice, "alice").await;
    let alice = alice.authorization().to_string();
    let mut ws = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", &alice)]).await.unwrap();
    assert_eq!(echo(&mut ws, "before").await, "before");
    // Another request makes the server exit while the tunnel is open.
    let crash = script().get(app.at("/user/alice/crash")).header("Authorization", &alice).send().await;
    match crash {
        Ok(r) => assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "the crash had no answer"),
        Err(e) => panic!("the hub must answer even when the server dies: {e}"),
    }
    let start = Instant::now();
    let end = ws_end(&mut ws, Duration::from_secs(10)).await;
    eprintln!("tunnel ended {:?} after the server died: {end:?}", start.elapsed());
    assert!(eventually(Duration::from_secs(5), || app.hub.routes().open_tunnels() == 0).await, "the tunnel leaked");
    assert_eq!(hub_panics().len(), panics_before, "the hub panicked: {:?}", &hub_panics()[panics_before..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_server_closes_its_open_tunnels_at_once() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let alice = alice.authorization().to_string();
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", &alice)]).await.unwrap();
        assert_eq!(echo(&mut ws, "hi").await, "hi");
        sockets.push(ws);
    }
    assert_eq!(app.hub.routes().open_tunnels(), 3);
    let start = Instant::now();
    let r =
        script().delete(app.at("/hub/api/users/alice/server")).header("Authorization", &alice).send().await.unwrap();
    assert!(matches!(r.status().as_u16(), 202 | 204), "{}", r.status());
    for ws in &mut sockets {
        ws_end(ws, Duration::from_secs(3)).await;
    }
    eprintln!("3 tunnels closed {:?} after the stop was asked", start.elapsed());
    assert_eq!(app.hub.routes().open_tunnels(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_shutting_down_with_open_tunnels_ends_them_cleanly() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    let panics_before = hub_panics().len();
    start_ready(&alice, "alice").await;
    let alice = alice.authorization().to_string();
    // Kept apart from the hub, so that its containers outlive it: the tunnels must end because
    // the hub went, not because the server did.
    let scope = app.docker.clone().unwrap();
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let mut ws = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", &alice)]).await.unwrap();
        assert_eq!(echo(&mut ws, "hi").await, "hi");
        sockets.push(ws);
    }
    let url = app.url.clone();
    let routes = app.hub.routes().clone();
    assert_eq!(routes.open_tunnels(), 2);
    let start = Instant::now();
    drop(app);
    for ws in &mut sockets {
        let end = ws_end(ws, Duration::from_secs(5)).await;
        eprintln!("tunnel ended {:?} after the hub stopped: {end:?}", start.elapsed());
    }
    assert!(eventually(Duration::from_secs(2), || routes.open_tunnels() == 0).await, "the tunnels' tasks ended");
    let refused = script().get(format!("{url}/hub/health")).send().await;
    assert!(refused.is_err(), "the hub stopped listening");
    assert_eq!(hub_panics().len(), panics_before, "the hub panicked: {:?}", &hub_panics()[panics_before..]);
    drop(scope);
}

// ---------------------------------------------------------------------------------------------
// Limits.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_requests_get_503_at_once_and_big_headers_431() {
    let (app, _, alice) = docker_hub(|c| c.proxy.max_connections_per_server = 2).await;
    start_ready(&alice, "alice").await;
    let alice = alice.authorization().to_string();
    let c = script();
    let slow = |ms: u64| c.get(app.at(&format!("/user/alice/slow?ms={ms}"))).header("Authorization", &alice).send();
    let (a, b, third) = tokio::join!(slow(3000), slow(3000), async {
        // Both slots are taken once the route counts two requests in flight.
        let route = app.hub.routes().get("alice", None).unwrap();
        assert!(eventually(Duration::from_secs(5), || route.in_flight() == 2).await);
        let start = Instant::now();
        let r = c.get(app.at("/user/alice/whoami")).header("Authorization", &alice).send().await.unwrap();
        (r, start.elapsed())
    });
    let (third, waited) = third;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(waited < Duration::from_secs(1), "refused at once, not queued: {waited:?}");
    let retry: u64 = third.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert!(json(third).await["message"].as_str().unwrap().contains("busy"));
    assert_eq!(a.unwrap().status(), 200);
    assert_eq!(b.unwrap().status(), 200);
    // The slots come back.
    let r = c.get(app.at("/user/alice/whoami")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A WebSocket holds a slot as long as it is open.
    let mut w1 = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", &alice)]).await.unwrap();
    let mut w2 = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", &alice)]).await.unwrap();
    let r = c.get(app.at("/user/alice/whoami")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let refused = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", &alice)]).await;
    assert_eq!(refused_status(&refused.expect_err("a third tunnel is refused")), 503);
    w1.close(None).await.unwrap();
    w2.close(None).await.unwrap();
    drop((w1, w2));
    let route = app.hub.routes().get("alice", None).unwrap();
    assert!(eventually(Duration::from_secs(5), || route.in_flight() == 0).await);

    // Request headers past the limit (64 KiB by default).
    let r = c
        .get(app.at("/user/alice/whoami"))
        .header("Authorization", &alice)
        .header("X-Padding", "x".repeat(80 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let r = c.get(app.at("/user/alice/whoami")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
