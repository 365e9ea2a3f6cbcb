//! Who may reach a user's server through the hub by which spelling of its path: every trick
//! to cross from one user's prefix to another's, for pages, scripts and WebSockets, anonymous,
//! the owner, another user and an admin.
//!
//! The matrix sends raw requests (a few lines of HTTP/1.1 over TCP), so every path trick
//! reaches the hub exactly as written: HTTP clients would normalise `..`, `%2e%2e` and
//! non-ASCII before sending.

use std::time::Duration;

use labhub_core::spawner::Spawner;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{docker_hub, start_ready};
use crate::proxied::session_cookie;

/// An answer to a raw request.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the body is the test server's `whoami` report (or its `ws/headers` greeting).
    fn is_from_the_server(&self) -> bool {
        let text = self.text();
        text.contains("\"remote_addr\"") || text.contains("labhub-testserver")
    }
}

/// Sends `method target` with `headers` on a fresh connection and reads the answer: its head,
/// and its body unless it switched protocols.
async fn raw(addr: &str, method: &str, target: &[u8], headers: &[(&str, String)]) -> Raw {
    let go = async {
        let mut s = TcpStream::connect(addr).await.expect("connecting to the hub");
        let mut req: Vec<u8> = Vec::new();
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(target);
        req.extend_from_slice(format!(" HTTP/1.1\r\nHost: {addr}\r\n").as_bytes());
        for (k, v) in headers {
            req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")) {
            req.extend_from_slice(b"Connection: close\r\n");
        }
        req.extend_from_slice(b"\r\n");
        s.write_all(&req).await.expect("sending");

        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("reading the answer");
            assert!(n > 0, "the connection closed before an answer: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut rest = buf[head_end + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut answer = Raw { status, headers, body: Vec::new() };
        if status == 101 || method == "HEAD" || status == 304 || status == 204 {
            return answer;
        }
        if let Some(len) = answer.header("content-length").and_then(|l| l.parse::<usize>().ok()) {
            while rest.len() < len {
                let mut chunk = [0u8; 8192];
                let n = s.read(&mut chunk).await.expect("reading the body");
                assert!(n > 0, "the body ended early");
                rest.extend_from_slice(&chunk[..n]);
            }
            rest.truncate(len);
            answer.body = rest;
        } else if answer.header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            while !rest.windows(5).any(|w| w == b"0\r\n\r\n") {
                let mut chunk = [0u8; 8192];
                let n = s.read(&mut chunk).await.expect("reading the body");
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            answer.body = dechunk(&rest);
        } else {
            s.read_to_end(&mut rest).await.expect("reading the body");
            answer.body = rest;
        }
        answer
    };
    tokio::time::timeout(Duration::from_secs(30), go).await.expect("an answer within 30 s")
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = data.get(start + size + 2..).unwrap_or_default();
    }
}

/// The three ways a request reaches `/user/…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A browser navigating: `GET`, `Accept: text/html`, the session cookie.
    Page,
    /// A script: `Accept: application/json`, an API token.
    Api,
    /// A page's WebSocket: the session cookie and the hub's own `Origin`.
    Ws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Alice,
    Bob,
    Root,
}

impl Who {
    fn name(self) -> Option<&'static str> {
        match self {
            Who::Anonymous => None,
            Who::Alice => Some("alice"),
            Who::Bob => Some("bob"),
            Who::Root => Some("root"),
        }
    }
}

/// What a path means.
#[derive(Debug, Clone, Copy)]
enum PathIs {
    /// A path under this user's server prefix (alice's runs; the others' do not).
    Of(&'static str),
    /// A path no reading of which is safe: refused before anything else.
    Malformed,
    /// A user name in the wrong case: a permanent redirect to this spelling.
    Canonical(&'static str),
}

/// The expected answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    /// The server's own answer (200, or 101 for a WebSocket).
    Server,
    /// A redirect to the login page with `next=` the path.
    Login,
    Unauthorized,
    Forbidden,
    BadRequest,
    /// 308 to this path.
    Redirect(String),
    /// The server is not running: the hub's page (navigation) or a JSON 503.
    NotRunning,
}

fn want(who: Who, kind: Kind, path: PathIs, tail: &str) -> Want {
    match path {
        PathIs::Malformed => Want::BadRequest,
        PathIs::Canonical(to) => Want::Redirect(to.replace("{tail}", tail)),
        PathIs::Of(owner) => match who.name() {
            None if kind == Kind::Page => Want::Login,
            None => Want::Unauthorized,
            Some(me) if me == owner || me == "root" => {
                if owner == "alice" {
                    Want::Server
                } else {
                    Want::NotRunning
                }
            }
            Some(_) => Want::Forbidden,
        },
    }
}

/// Every spelling of a path under `/user/` that tries to cross from one user to another.
/// `{tail}` becomes `whoami` (pages, API) or `ws/headers` (WebSockets).
const PATHS: &[(&str, PathIs)] = &[
    ("/user/alice/{tail}", PathIs::Of("alice")),
    // Dot segments, plain and percent-encoded in every case mix.
    ("/user/bob/../alice/{tail}", PathIs::Malformed),
    ("/user/alice/x/../../bob/{tail}", PathIs::Malformed),
    ("/user/alice/./{tail}", PathIs::Malformed),
    ("/user/bob/%2e%2e/alice/{tail}", PathIs::Malformed),
    ("/user/bob/%2E%2e/alice/{tail}", PathIs::Malformed),
    ("/user/bob/.%2e/alice/{tail}", PathIs::Malformed),
    // Encoded slashes and backslashes.
    ("/user/bob%2f..%2falice/{tail}", PathIs::Malformed),
    ("/user/bob%2F%2E%2E%2Falice%2F{tail}", PathIs::Malformed),
    ("/user/alice%2f{tail}", PathIs::Malformed),
    ("/user/bob%5c..%5calice/{tail}", PathIs::Malformed),
    ("/user/bob\\..\\alice/{tail}", PathIs::Malformed),
    // Double slashes.
    ("/user//alice/{tail}", PathIs::Malformed),
    ("/user/bob//alice/{tail}", PathIs::Malformed),
    ("/user/alice//{tail}", PathIs::Malformed),
    // Trailing dots.
    ("/user/alice./{tail}", PathIs::Malformed),
    ("/user/alice../{tail}", PathIs::Malformed),
    // Unicode look-alikes: Cyrillic 'а' raw and percent-encoded, fullwidth 'ａ'.
    ("/user/\u{0430}lice/{tail}", PathIs::Malformed),
    ("/user/%D0%B0lice/{tail}", PathIs::Malformed),
    ("/user/\u{ff41}lice/{tail}", PathIs::Malformed),
    // An escape in the user segment is not the same name.
    ("/user/%61lice/{tail}", PathIs::Malformed),
    // Mixed case: one canonical spelling, by redirect.
    ("/user/Alice/{tail}", PathIs::Canonical("/user/alice/{tail}")),
    ("/user/aLiCE/{tail}", PathIs::Canonical("/user/alice/{tail}")),
    // Prefix confusion: alice2 and alic are other users (alic does not even exist).
    ("/user/alice2/{tail}", PathIs::Of("alice2")),
    ("/user/alic/{tail}", PathIs::Of("alic")),
    // `..;` is not a dot segment: it stays inside bob's own prefix.
    ("/user/bob/..;/alice/{tail}", PathIs::Of("bob")),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_holds_for_every_path_trick() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    app.add_user("alice2", "correct horse", false).await;
    let bob = app.api_for("bob").await;
    start_ready(&alice, "alice").await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let origin = app.url.clone();

    let mut cookies = std::collections::HashMap::new();
    for who in ["alice", "bob", "root"] {
        cookies.insert(who, session_cookie(&app, who).await);
    }
    let tokens = [("alice", &alice), ("bob", &bob), ("root", &root)];
    let token_of =
        |name: &str| tokens.iter().find(|(n, _)| *n == name).map(|(_, api)| api.authorization().to_string()).unwrap();

    let mut failures = Vec::new();
    let mut served = 0usize;
    let mut checked = 0usize;
    for (template, path_is) in PATHS {
        for kind in [Kind::Page, Kind::Api, Kind::Ws] {
            let tail = if kind == Kind::Ws { "ws/headers" } else { "whoami" };
            let path = template.replace("{tail}", tail);
            for who in [Who::Anonymous, Who::Alice, Who::Bob, Who::Root] {
                let mut headers: Vec<(&str, String)> = Vec::new();
                match kind {
                    Kind::Page => {
                        headers.push(("Accept", "text/html,application/xhtml+xml,*/*;q=0.8".into()));
                        if let Some(n) = who.name() {
                            headers.push(("Cookie", cookies[n].clone()));
                        }
                    }
                    Kind::Api => {
                        headers.push(("Accept", "application/json".into()));
                        if let Some(n) = who.name() {
                            headers.push(("Authorization", token_of(n)));
                        }
                    }
                    Kind::Ws => {
                        headers.extend([
                            ("Connection", "Upgrade".to_string()),
                            ("Upgrade", "websocket".to_string()),
                            ("Sec-WebSocket-Version", "13".to_string()),
                            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".to_string()),
                            ("Origin", origin.clone()),
                        ]);
                        if let Some(n) = who.name() {
                            headers.push(("Cookie", cookies[n].clone()));
                        }
                    }
                }
                let got = raw(&addr, "GET", path.as_bytes(), &headers).await;
                let expected = want(who, kind, *path_is, tail);
                checked += 1;
                if let Err(why) = check(&got, &expected, kind, &path) {
                    failures.push(format!("{who:?} {kind:?} {path:?}: expected {expected:?}, {why}"));
                }
                if expected == Want::Server {
                    served += 1;
                } else if got.is_from_the_server() {
                    failures.push(format!("{who:?} {kind:?} {path:?}: the server answered: {}", got.text()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} cases failed:\n{}", failures.len(), failures.join("\n"));

    // The server's own log: it answered exactly the owner's and the admin's requests.
    let state: Value = labhub_db::sqlx::query_scalar("select spawner_state from servers where name = ''")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let logs = app.docker.as_ref().unwrap().spawner.logs(&state, 100_000).await.unwrap();
    let answered =
        logs.lines().filter(|l| *l == "GET /user/alice/whoami 200" || *l == "GET /user/alice/ws/headers 101").count();
    assert_eq!(answered, served, "the server answered only what alice and root sent:\n{logs}");
    let stray: Vec<&str> = logs
        .lines()
        .filter(|l| l.starts_with("GET ") || l.starts_with("POST "))
        .filter(|l| ["bob", "alice2", "/alic/", "%", "..", "//", "Alice", "\\"].iter().any(|s| l.contains(s)))
        .collect();
    assert!(stray.is_empty(), "requests the server should never have seen: {stray:?}");
    eprintln!("{checked} cases checked; the server answered {served}");
}

/// Whether `got` is the expected answer; why not, if not.
fn check(got: &Raw, expected: &Want, kind: Kind, path: &str) -> Result<(), String> {
    let fail = |what: &str| Err(format!("got {what}: {} {:?} {}", got.status, got.headers, got.text()));
    let json_body = || serde_json::from_slice::<Value>(&got.body).ok();
    let is_html = got.header("content-type").is_some_and(|c| c.starts_with("text/html"));
    match expected {
        Want::Server if kind == Kind::Ws => {
            if got.status != 101 {
                return fail("no upgrade");
            }
        }
        Want::Server => {
            if got.status != 200 || json_body().is_none_or(|v| v["path"] != path) {
                return fail("not the server's whoami");
            }
        }
        Want::Login => {
            let next = format!("/hub/login?next={}", urlencode(path));
            if !matches!(got.status, 302 | 303 | 307) || got.header("location") != Some(next.as_str()) {
                return fail(&format!("not a redirect to {next}"));
            }
        }
        Want::Unauthorized => {
            if got.status != 401 || json_body().is_none() {
                return fail("not a JSON 401");
            }
        }
        Want::Forbidden => {
            let right_shape = if kind == Kind::Page { is_html } else { json_body().is_some() };
            if got.status != 403 || !right_shape {
                return fail("not a 403 of the right shape");
            }
        }
        Want::BadRequest => {
            if got.status != 400 {
                return fail("not a 400");
            }
        }
        Want::Redirect(to) => {
            if got.status != 308 || got.header("location") != Some(to.as_str()) {
                return fail(&format!("not a 308 to {to}"));
            }
        }
        Want::NotRunning => {
            let right_shape = if kind == Kind::Page {
                is_html && got.text().contains("is not running")
            } else {
                json_body().is_some_and(|v| v["message"].as_str().is_some_and(|m| m.contains("not running")))
            };
            if got.status != 503 || !right_shape {
                return fail("not the not-running answer");
            }
        }
    }
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") }).collect()
}
