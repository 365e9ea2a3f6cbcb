//! Who may reach a user's server through the hub, by what path, and what the server sees.
//!
//! The matrix sends raw requests (a few lines of HTTP/1.1 over TCP), so every path trick
//! reaches the hub exactly as written: HTTP clients would normalise `..`, `%2e%2e` and
//! non-ASCII before sending.

use std::time::Duration;

use labhub_core::spawner::Spawner;
use labhub_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{docker_hub, start_ready};
use crate::proxied::{echo, refused_status, server_secret, session_cookie, ws_connect, ws_url};
use labhub_testkit::app::script;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_cookie_and_token_never_reach_the_server() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let secret = server_secret(&app, "alice");
    let token = alice.token().to_string();
    let session = session_cookie(&app, "alice").await;
    let session_value = session.split_once('=').unwrap().1.to_string();
    let cookie_name = app.config.session.cookie_name.clone();
    let c = script();
    let leaks = |text: &str| -> Vec<&str> {
        [
            ("the hub token", token.as_str()),
            ("the session", session_value.as_str()),
            ("the cookie name", cookie_name.as_str()),
        ]
        .into_iter()
        .filter(|(_, s)| text.contains(s))
        .map(|(what, _)| what)
        .collect()
    };

    // A browser: its session cookie among Jupyter's own cookies (through the fast lane; the
    // second time with the session's answer cached).
    for _ in 0..2 {
        let r = c
            .get(app.at("/user/alice/whoami"))
            .header("Cookie", format!("_xsrf=2|abc; {session}; theme=dark"))
            .header("Connection", "keep-alive")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(leaks(&text).is_empty(), "leaked {:?}: {text}", leaks(&text));
        let who: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(who["headers"]["cookie"], json!(["_xsrf=2|abc; theme=dark"]));
        assert_eq!(who["headers"]["authorization"], json!([format!("token {secret}")]));
        assert!(who["headers"]["connection"].is_null(), "{who}");
    }

    // A script: the token in the header, then in the query, then both (Bearer).
    for (target, auth) in [
        ("/user/alice/whoami".to_string(), Some(alice.authorization().to_string())),
        (format!("/user/alice/whoami?token={token}"), None),
        (format!("/user/alice/whoami?x=1&token={token}"), Some(format!("Bearer {token}"))),
    ] {
        let mut req = c.get(app.at(&target));
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let text = req.send().await.unwrap().text().await.unwrap();
        assert!(leaks(&text).is_empty(), "{target}: leaked {:?}: {text}", leaks(&text));
        let who: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(who["headers"]["authorization"], json!([format!("token {secret}")]), "{target}");
        assert!(who["headers"]["cookie"].is_null(), "{target}: {who}");
    }

    // WebSockets: the upgrade request the server saw, by cookie (same origin) and by token.
    for headers in [
        vec![("Cookie", format!("{session}; _xsrf=2|abc")), ("Origin", app.url.clone())],
        vec![("Authorization", alice.authorization().to_string())],
    ] {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut ws = ws_connect(&ws_url(&app.url, &format!("/user/alice/ws/headers?token={token}&y=2")), &hs)
            .await
            .expect("the upgrade");
        let greeting = match ws_next_text(&mut ws).await {
            Some(t) => t,
            None => panic!("no greeting"),
        };
        assert!(leaks(&greeting).is_empty(), "leaked {:?}: {greeting}", leaks(&greeting));
        let who: Value = serde_json::from_str(&greeting).unwrap();
        assert_eq!(who["headers"]["authorization"], json!([format!("token {secret}")]));
        assert_eq!(who["query"], "y=2");
        assert_eq!(echo(&mut ws, "still a tunnel").await, "still a tunnel");
    }
}

async fn ws_next_text(ws: &mut crate::proxied::Ws) -> Option<String> {
    use futures::StreamExt;
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.ok()?? {
        Ok(tokio_tungstenite::tungstenite::Message::Text(t)) => Some(t.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_authenticated_writes_and_websockets_must_come_from_the_hubs_origin() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    let bob = app.api_for("bob").await;
    start_ready(&alice, "alice").await;
    let (auth, bob_auth) = (alice.authorization(), bob.authorization());
    let session = session_cookie(&app, "alice").await;
    let c = script();
    let evil = "http://evil.example";

    // Writes with the session cookie: only from the hub's own pages.
    let post = |origin: Option<&str>, referer: Option<&str>| {
        let mut r = c.post(app.at("/user/alice/upload")).header("Cookie", &session).body("x");
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        if let Some(f) = referer {
            r = r.header("Referer", f);
        }
        r.send()
    };
    assert_eq!(post(Some(evil), None).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(post(Some("null"), None).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(post(None, None).await.unwrap().status(), StatusCode::FORBIDDEN, "no Origin, no Referer");
    assert_eq!(post(None, Some(&format!("{evil}/user/alice/lab"))).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(post(Some(&app.url), None).await.unwrap().status(), StatusCode::OK);
    assert_eq!(post(None, Some(&app.at("/user/alice/lab"))).await.unwrap().status(), StatusCode::OK);
    // Reads are not writes.
    let r = c.get(app.at("/user/alice/whoami")).header("Cookie", &session).header("Origin", evil).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Scripts with a token need no Origin.
    let r = c.post(app.at("/user/alice/upload")).header("Authorization", auth).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // WebSockets with the session cookie: only from the hub's origin, never without one.
    let url = ws_url(&app.url, "/user/alice/ws/echo");
    for origin in [Some(evil), Some("null"), Some("http://127.0.0.1:1"), None] {
        let mut headers = vec![("Cookie", session.as_str())];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        let Err(refused) = ws_connect(&url, &headers).await else { panic!("accepted from {origin:?}") };
        assert_eq!(refused_status(&refused), 403, "{origin:?}");
    }
    // A token upgrade may omit Origin, but a foreign one is refused all the same.
    assert!(ws_connect(&url, &[("Authorization", auth)]).await.is_ok());
    let refused = ws_connect(&url, &[("Authorization", auth), ("Origin", evil)]).await.expect_err("a refused upgrade");
    assert_eq!(refused_status(&refused), 403);
    // Another user's token opens nothing.
    let refused = ws_connect(&url, &[("Authorization", bob_auth)]).await.expect_err("a refused upgrade");
    assert_eq!(refused_status(&refused), 403);
    let refused = ws_connect(&url, &[]).await.expect_err("a refused upgrade");
    assert_eq!(refused_status(&refused), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_running_offers_a_start_page_or_a_json_503() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    let b = app.signed_in("alice", "correct horse").await;
    let c = script();

    let check_stopped = |app: &TestApp| {
        let at = app.at("/user/alice/lab/tree/x.ipynb");
        let api = app.at("/user/alice/api/kernels");
        let b = b.clone();
        let c = c.clone();
        let auth = alice.authorization().to_string();
        async move {
            let page = b.get(&at).header("Accept", "text/html").send().await.unwrap();
            assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
            let html = page.text().await.unwrap();
            assert!(
                html.contains("is not running") && html.contains("Start it") && html.contains("/hub/spawn/alice"),
                "{html}"
            );
            let r = c.get(&api).header("Authorization", &auth).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "a JSON 503, never a 502");
            assert_eq!(r.headers()["content-type"], "application/json");
            assert!(r.headers().contains_key("retry-after"));
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["message"], "alice's server is not running");
            // A page's own fetch (no text/html) is an API call too.
            let r = b.get(&api).header("Accept", "*/*").send().await.unwrap();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()["content-type"], "application/json");
        }
    };
    // Never started.
    check_stopped(&app).await;
    // Started, then stopped: same answers, and nothing left of the route.
    start_ready(&alice, "alice").await;
    let r = c.get(app.at("/user/alice/api/status")).header("Authorization", alice.authorization()).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::OK);
    alice.stop("alice", None).await.unwrap();
    check_stopped(&app).await;
    // A WebSocket to a stopped server is refused the same way.
    let refused = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", alice.authorization())])
        .await
        .expect_err("a refused upgrade");
    assert_eq!(refused_status(&refused), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlabs_echo_of_its_servers_token_is_judged_by_the_session_cookie() {
    // JupyterLab reads the server's token from its page and sends it back on API calls and
    // in WebSocket URLs, next to the hub's cookie. It is no hub credential: the cookie decides.
    let (app, _, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    start_ready(&alice, "alice").await;
    let secret = server_secret(&app, "alice");
    let as_jupyterlab = format!("token {secret}");
    let alice_cookie = session_cookie(&app, "alice").await;
    let bob_cookie = session_cookie(&app, "bob").await;
    let c = script();

    let r = c
        .get(app.at("/user/alice/whoami"))
        .header("Cookie", &alice_cookie)
        .header("Authorization", &as_jupyterlab)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let who: Value = r.json().await.unwrap();
    assert_eq!(who["headers"]["authorization"], json!([as_jupyterlab]), "one credential upstream: the proxy's");
    let r = c
        .get(app.at(&format!("/user/alice/whoami?token={secret}&x=1")))
        .header("Cookie", &alice_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["query"], "x=1");
    let mut ws = ws_connect(
        &ws_url(&app.url, &format!("/user/alice/ws/headers?token={secret}")),
        &[("Cookie", &alice_cookie), ("Origin", &app.url)],
    )
    .await
    .expect("JupyterLab's kernel WebSocket");
    let greeting: Value = serde_json::from_str(&ws_next_text(&mut ws).await.unwrap()).unwrap();
    assert!(greeting["query"].is_null(), "{greeting}");

    // Still a cookie-authenticated request: writes and upgrades from elsewhere are refused.
    let post = |origin: &'static str| {
        c.post(app.at("/user/alice/upload"))
            .header("Cookie", &alice_cookie)
            .header("Authorization", &as_jupyterlab)
            .header("Origin", if origin.is_empty() { app.url.as_str() } else { origin })
            .body("x")
            .send()
    };
    assert_eq!(post("").await.unwrap().status(), StatusCode::OK);
    assert_eq!(post("http://evil.example").await.unwrap().status(), StatusCode::FORBIDDEN);
    let refused = ws_connect(
        &ws_url(&app.url, &format!("/user/alice/ws/echo?token={secret}")),
        &[("Cookie", &alice_cookie), ("Origin", "http://evil.example")],
    )
    .await
    .expect_err("refused");
    assert_eq!(refused_status(&refused), 403);

    // Alone, the server's token opens nothing; with bob's cookie it is bob.
    let r = c.get(app.at("/user/alice/whoami")).header("Authorization", &as_jupyterlab).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c.get(app.at(&format!("/user/alice/whoami?token={secret}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(app.at("/user/alice/whoami"))
        .header("Cookie", &bob_cookie)
        .header("Authorization", &as_jupyterlab)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Any other unknown token is still refused outright, cookie or not.
    let r = c
        .get(app.at("/user/alice/whoami"))
        .header("Cookie", &alice_cookie)
        .header("Authorization", "token not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_traffic_keeps_a_session_alive_and_its_limits_still_hold() {
    // Proxied requests are judged from the credential cache on the HTTP threads; the database
    // (a session's last-seen time, its end) is reached on the hub's runtime. Either way a
    // session lives exactly as long as on the hub's own pages.
    let scope =
        std::sync::Arc::new(labhub_testkit::docker::DockerScope::new(crate::common::test_server_binary()).await);
    let app = TestApp::builder()
        .docker(scope)
        .manual_clock()
        .config(|c| {
            c.culler.enabled = false;
            c.session.idle_timeout = Duration::from_secs(3600);
            c.session.absolute_timeout = Duration::from_secs(3 * 3600);
        })
        .spawn()
        .await;
    app.add_test_image("test").await;
    app.add_user("alice", "correct horse", false).await;
    start_ready(&app.api_for("alice").await, "alice").await;
    let clock = app.clock.clone().unwrap();
    let status = app.at("/user/alice/api/status");

    let b = app.signed_in("alice", "correct horse").await;
    // Only the server is used, every 50 minutes: each request counts as the session's use...
    for _ in 0..3 {
        clock.advance(time::Duration::minutes(50));
        assert_eq!(b.get(&status).send().await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(b.get(app.at("/hub/home")).send().await.unwrap().status(), StatusCode::OK, "the pages agree");
    // ...until the session's absolute limit.
    clock.advance(time::Duration::minutes(50));
    assert_eq!(b.get(&status).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(b.get(app.at("/hub/home")).send().await.unwrap().status(), StatusCode::SEE_OTHER);

    // A use while its answer is cached still counts: signed in at T, used at T+50 s (cached
    // then) and T+70 s (cached, its last-seen time due), it lives until T+70 s plus the limit.
    let b = app.signed_in("alice", "correct horse").await;
    clock.advance(time::Duration::seconds(50));
    assert_eq!(b.get(&status).send().await.unwrap().status(), StatusCode::OK);
    clock.advance(time::Duration::seconds(20));
    assert_eq!(b.get(&status).send().await.unwrap().status(), StatusCode::OK);
    clock.advance(time::Duration::seconds(3590));
    assert_eq!(b.get(&status).send().await.unwrap().status(), StatusCode::OK, "its use at T+70 s was recorded");
    // Left alone for longer than the idle limit, it is over.
    clock.advance(time::Duration::minutes(61));
    assert_eq!(b.get(&status).send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "idle too long");
}

/// What the front door's fast lane did with one request on a fresh connection: answered it
/// (its status), or handed the connection to the general path with every byte of it.
async fn lane_takes(app: &TestApp, request: &str) -> Option<u16> {
    let (mut near, mut far) = tokio::io::duplex(1 << 20);
    near.write_all(request.as_bytes()).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let peer = "127.0.0.1:40000".parse().unwrap();
    let served = app.service.serve_plain_gets(&mut far, peer, &stop);
    let mut answer = Vec::new();
    let read_one = async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match near.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::select! {
        end = served => match end {
            labhub_web::LaneEnd::HandOff(bytes) => {
                assert_eq!(bytes.as_ref(), request.as_bytes(), "a handed-off request keeps every byte");
                None
            }
            labhub_web::LaneEnd::Closed => panic!("closed without an answer: {request}"),
        },
        () = read_one => {
            let head = String::from_utf8_lossy(&answer).into_owned();
            Some(head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_lane_answers_only_what_is_certainly_allowed() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    app.add_user("bob", "correct horse", false).await;
    let host = app.url.trim_start_matches("http://").to_string();
    let owner = session_cookie(&app, "alice").await;
    let admin = session_cookie(&app, "root").await;
    let other = session_cookie(&app, "bob").await;
    let token = alice.token();
    let get = |target: &str, extra: &str| format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
    let with = |cookie: &str| format!("Cookie: _xsrf=1; {cookie}\r\nConnection: keep-alive\r\n");

    assert_eq!(lane_takes(&app, &get("/user/alice/whoami?a=1", &with(&owner))).await, Some(200));
    assert_eq!(lane_takes(&app, &get("/user/alice/whoami", &with(&admin))).await, Some(200));
    assert_eq!(lane_takes(&app, &get("/user/alice/no/such/thing", &with(&owner))).await, Some(404));
    // JupyterLab's API calls carry the server's own token besides the cookie.
    let secret = server_secret(&app, "alice");
    let jupyterlab = format!("{}Authorization: token {secret}\r\n", with(&owner));
    assert_eq!(lane_takes(&app, &get("/user/alice/whoami", &jupyterlab)).await, Some(200));
    let declined = [
        ("another user", get("/user/alice/whoami", &with(&other))),
        ("no credentials", get("/user/alice/whoami", "")),
        ("an unknown session", get("/user/alice/whoami", &with(&format!("{}=nope", app.config.session.cookie_name)))),
        ("a token too", get("/user/alice/whoami", &format!("{}Authorization: token {token}\r\n", with(&owner)))),
        ("a token parameter", get(&format!("/user/alice/whoami?token={token}"), &with(&owner))),
        ("two cookie headers", get("/user/alice/whoami", &format!("{}{}", with(&owner), with(&owner)))),
        ("a body", get("/user/alice/whoami", &format!("{}Content-Length: 0\r\n", with(&owner)))),
        ("an upgrade", get("/user/alice/ws", &format!("{}Upgrade: websocket\r\n", with(&owner)))),
        ("Connection: upgrade", get("/user/alice/whoami", &format!("Cookie: {owner}\r\nConnection: upgrade\r\n"))),
        ("a path trick", get("/user/alice/%2e%2e/bob/whoami", &with(&owner))),
        ("mixed case", get("/user/Alice/whoami", &with(&owner))),
        ("the bare prefix", get("/user/alice", &with(&owner))),
        ("a page", get("/hub/home", &with(&owner))),
        ("POST", get("/user/alice/whoami", &with(&owner)).replacen("GET", "POST", 1)),
        ("HEAD", get("/user/alice/whoami", &with(&owner)).replacen("GET", "HEAD", 1)),
        ("HTTP/1.0", get("/user/alice/whoami", &with(&owner)).replacen("HTTP/1.1", "HTTP/1.0", 1)),
    ];
    for (what, request) in declined {
        assert_eq!(lane_takes(&app, &request).await, None, "{what} must go to the general path");
    }
}
