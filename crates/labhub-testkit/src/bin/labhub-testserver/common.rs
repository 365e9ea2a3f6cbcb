//! Pieces shared by the notebook mode and the fake rserver mode.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    net::SocketAddr,
    sync::{
        Arc, LazyLock, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Json,
    body::Bytes,
    extract::connect_info::Connected,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    serve::{IncomingStream, Listener},
};
use futures::Stream;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Streaming chunk size (downloads, file reads).
pub const CHUNK: usize = 64 * 1024;

/// Per-connection information: the peer and the local address the peer
/// connected to (which is the server's own internal address, even when it
/// listens on 0.0.0.0).
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: Option<SocketAddr>,
}

/// A TCP listener that sets `TCP_NODELAY` on every accepted connection
/// (SSE events and small echoes go out at once).
pub struct NoDelayListener(pub TcpListener);

impl Listener for NoDelayListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        // axum's TcpListener impl logs and retries accept errors.
        let (stream, addr) = Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, NoDelayListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, NoDelayListener>) -> Self {
        ConnInfo { remote: *stream.remote_addr(), local: stream.io().local_addr().ok() }
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// A `{"message": ...}` JSON response.
pub fn message(status: StatusCode, msg: &str) -> Response {
    json_response(status, json!({ "message": msg }))
}

/// The decoded query parameters (last value wins; invalid query → empty).
pub fn query_params(uri: &Uri) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri).map(|q| q.0).unwrap_or_default()
}

/// A 400 response with a `{"message": ...}` body.
pub struct BadRequest(pub String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        message(StatusCode::BAD_REQUEST, &self.0)
    }
}

/// A numeric query parameter, with a default when absent; 400 when malformed.
pub fn param_u64(params: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, BadRequest> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| BadRequest(format!("query parameter {name} must be a non-negative integer"))),
    }
}

/// One log line per request. Never includes the query string (it may hold
/// the token).
pub fn log_request(method: &Method, path: &str, status: StatusCode) {
    println!("{method} {path} {}", status.as_u16());
}

/// The process's real uid, from the `Uid:` line of `/proc/self/status`.
pub fn process_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// The host name, from `/etc/hostname` or `$HOSTNAME`.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
}

/// All request headers, lowercase name → every value, in arrival order.
pub fn header_map_json(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        out.entry(name.as_str().to_ascii_lowercase())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

/// What the server saw of a request (the `whoami` report).
pub fn whoami(method: &Method, uri: &Uri, headers: &HeaderMap, conn: &ConnInfo) -> Value {
    json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": header_map_json(headers),
        "uid": process_uid(),
        "hostname": hostname(),
        "remote_addr": conn.remote.to_string(),
        "local_addr": conn.local.map(|a| a.to_string()),
    })
}

/// A gate the test opens step by step: whatever waits on it (a held request, the next event
/// of a stream, a long poll) goes on only after the test opened it, one step per opening. A
/// test can so keep a response open exactly until it has seen what it needs, with no timing.
pub struct Gate {
    steps: Semaphore,
    waiting: AtomicU64,
}

impl Gate {
    /// Waits for one step.
    pub async fn pass(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if let Ok(step) = self.steps.acquire().await {
            step.forget();
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Lets `steps` more waits through (now or later).
    pub fn open(&self, steps: u32) {
        self.steps.add_permits(steps as usize);
    }

    /// How many wait at the gate now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// The gate of that name (made closed on first use).
pub fn gate(name: &str) -> Arc<Gate> {
    static GATES: LazyLock<Mutex<HashMap<String, Arc<Gate>>>> = LazyLock::new(Default::default);
    let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
    gates
        .entry(name.to_owned())
        .or_insert_with(|| Arc::new(Gate { steps: Semaphore::new(0), waiting: AtomicU64::new(0) }))
        .clone()
}

/// `gate?name=G` (how many wait) and `gate/open?name=G&steps=N` (N steps, default 1; answers
/// how many waited before).
pub fn gate_endpoint(params: &HashMap<String, String>, open: bool) -> Response {
    let Some(name) = params.get("name") else {
        return message(StatusCode::BAD_REQUEST, "missing query parameter name");
    };
    let g = gate(name);
    let waiting = g.waiting();
    if open {
        match param_u64(params, "steps", 1).map(u32::try_from) {
            Ok(Ok(steps)) => g.open(steps),
            _ => return message(StatusCode::BAD_REQUEST, "query parameter steps must be a small integer"),
        }
    }
    json_response(StatusCode::OK, json!({ "name": name, "waiting": waiting }))
}

/// Decode `%XX` escapes (no `+` handling: this is for path segments).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// 251 * 263 bytes of the download pattern: long enough that any 64 KiB
/// window starting at offset 0..251 is a plain slice.
static PATTERN: LazyLock<Bytes> = LazyLock::new(|| {
    let v: Vec<u8> = (0..251usize * 263).map(|i| (i % 251) as u8).collect();
    Bytes::from(v)
});

/// `len` (<= [`CHUNK`]) bytes of the pattern starting at absolute `offset`:
/// byte i of a download is `(i % 251) as u8`.
pub fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    let start = (offset % 251) as usize;
    PATTERN.slice(start..start + len.min(CHUNK))
}

/// A stream of `total` pattern bytes in 64 KiB chunks (never allocates more
/// than the shared pattern buffer).
pub fn pattern_stream(total: u64) -> impl Stream<Item = Result<Bytes, io::Error>> + Send {
    futures::stream::unfold(0u64, move |offset| async move {
        if offset >= total {
            return None;
        }
        let len = (total - offset).min(CHUNK as u64) as usize;
        Some((Ok(pattern_chunk(offset, len)), offset + len as u64))
    })
}

/// Log why, then exit the process with `code`.
pub fn exit_process(code: i32, why: &str) -> ! {
    println!("exiting with code {code}: {why}");
    std::process::exit(code)
}

/// [`exit_process`], typed so it can be the last item of a body stream.
pub fn exit_in_stream(code: i32, why: &str) -> Result<Bytes, io::Error> {
    exit_process(code, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_i_mod_251() {
        for offset in [0u64, 1, 250, 251, 65_536, 1_000_003] {
            let c = pattern_chunk(offset, CHUNK);
            assert_eq!(c.len(), CHUNK);
            for (k, b) in c.iter().enumerate() {
                assert_eq!(u64::from(*b), (offset + k as u64) % 251);
            }
        }
    }

    #[test]
    fn percent_coding() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("%2e%2E").as_deref(), Some(".."));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_encode("/a b?"), "%2Fa%20b%3F");
    }

    #[tokio::test]
    async fn a_gate_lets_one_wait_through_per_step() {
        let g = gate("unit-test");
        let waiter = tokio::spawn({
            let g = g.clone();
            async move { g.pass().await }
        });
        let arrived = async {
            while g.waiting() == 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), arrived).await.expect("the wait reaches the gate");
        assert!(!waiter.is_finished(), "closed: it waits");
        g.open(1);
        tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
            .await
            .expect("one step lets it through")
            .unwrap();
        assert_eq!(g.waiting(), 0);
    }

    #[test]
    fn uid_is_readable() {
        assert!(process_uid().is_some());
    }
}
