//! The proxy through the whole hub to real containers of the test image: HTTP bodies and
//! queries, a gibibyte each way, WebSockets, server-sent events, redirects, the RStudio kind,
//! upstream failures, shutdown with open tunnels, and the limits.
//!
//! Where a test is about time (events arriving one by one, a long poll held open, a request
//! refused rather than queued), the test server holds its answer at a [`Gate`] that the test
//! opens step by step: what the test sees follows from the order of events, never from a clock.
//! The tests that move tens of MiB at once take [`heavy`] so that they never overlap each other.
//! (How fast and in how much memory the proxy does all this is measured in `bench/`.)

use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use labhub_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::{docker_hub, start_ready};
use crate::proxied::{
    Gate, HANG, WsEnd, echo, eventually, hang_guard, refused_status, server_secret, session_cookie, ws_connect, ws_end,
    ws_url,
};
use labhub_testkit::app::script;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Panics seen on tokio worker threads (where the hub's tasks run) since the process started,
/// with their messages; the hook is installed on first use and keeps the default output.
fn hub_panics() -> Vec<String> {
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
async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

const GIB: u64 = 1 << 30;

async fn json(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// HTTP.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_and_queries_pass_and_the_hub_token_stays_behind() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let secret = server_secret(&app, "alice");
    let (auth, token) = (alice.authorization(), alice.token());
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
    let r = c.get(app.at("/user/alice/whoami?x=%20y&&z=")).header("Authorization", auth).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains(token), "{text}");
    let who: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(who["query"], "x=%20y&&z=");
    assert_eq!(who["headers"]["authorization"], json!([format!("token {secret}")]));

    // Request bodies reach the server whole; so do methods.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let r = c.post(app.at("/user/alice/upload")).header("Authorization", auth).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let got = json(r).await;
    assert_eq!(got["bytes"], body.len());
    assert_eq!(got["sha256"], hex::encode(Sha256::digest(&body)));
    let r = c
        .post(app.at("/user/alice/whoami"))
        .header("Authorization", auth)
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
        .header("Authorization", auth)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(app.at("/user/alice/files/data.bin")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], body.len().to_string().as_str());
    assert!(r.bytes().await.unwrap() == body, "the file came back changed");

    // The bare prefix gets its slash; the server's own 404 is passed through as it is.
    let r = c.get(app.at("/user/alice?x=1")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "/user/alice/?x=1");
    let r = c.get(app.at("/user/alice/no/such/thing")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(r).await["message"], "not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_down_and_up_through_the_hub_intact() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let c = script();
    let auth = alice.authorization();
    let _heavy = heavy().await;

    // Down: counted chunk by chunk, never collected; every chunk starts and ends where the
    // server's pattern (byte i is i % 251) says it must.
    let r = c.get(app.at(&format!("/user/alice/download?bytes={GIB}"))).header("Authorization", auth).send().await;
    let r = r.unwrap();
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

    // Up: 1024 chunks of one shared MiB, streamed as the hub reads them.
    let expected = tokio::task::spawn_blocking(|| {
        let mut h = Sha256::new();
        for _ in 0..1024 {
            h.update(&BLOCK[..]);
        }
        hex::encode(h.finalize())
    });
    let r = c
        .post(app.at("/user/alice/upload"))
        .header("Authorization", auth)
        .header("Content-Length", GIB.to_string())
        .body(reqwest::Body::wrap_stream(blocks(1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = json(r).await;
    assert_eq!(got["bytes"], GIB);
    assert_eq!(got["sha256"], expected.await.unwrap(), "the upload arrived changed");
    let proxy_idle = eventually(|| app.hub.routes().get("alice", None).unwrap().in_flight() == 0).await;
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
    let auth = alice.authorization();
    let url = ws_url(&app.url, "/user/alice/ws/echo");

    // Token-authenticated upgrades need no Origin.
    let mut ws = ws_connect(&url, &[("Authorization", auth)]).await.expect("the upgrade");
    assert_eq!(app.hub.routes().open_tunnels(), 1);
    {
        let _heavy = heavy().await;
        let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
        let start = Instant::now();
        ws.send(Message::binary(big.clone())).await.unwrap();
        match hang_guard("the 16 MiB echo", ws.next()).await {
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
        match hang_guard("the next echo", rx.next()).await {
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
    match ws_end(&mut ws, HANG).await {
        WsEnd::Closed(code) => assert_eq!(code, Some(4002)),
        other => panic!("expected the close echoed, got {other:?}"),
    }

    // A close from the server reaches the client with its code.
    let mut ws =
        ws_connect(&ws_url(&app.url, "/user/alice/ws/echo?close_after=2"), &[("Authorization", auth)]).await.unwrap();
    assert_eq!(echo(&mut ws, "one").await, "one");
    assert_eq!(echo(&mut ws, "two").await, "two");
    match ws_end(&mut ws, HANG).await {
        WsEnd::Closed(code) => assert_eq!(code, Some(4001)),
        other => panic!("expected the server's close, got {other:?}"),
    }
    drop(ws);
    assert!(eventually(|| app.hub.routes().open_tunnels() == 0).await, "tunnels left open");

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
    // A script through the general path; a browser through the fast lane.
    let cookie = session_cookie(&app, "alice").await;
    for (name, value) in [("Authorization", alice.authorization()), ("Cookie", cookie.as_str())] {
        let gate = Gate::new(&app, "alice", None, &format!("events-{name}"));
        events_arrive_one_by_one(&app, name, value, &gate).await;
    }
}

/// The server writes each event only after the test has read the one before and opened the
/// gate: an event the proxy held back (until more came, or until the end) would never reach the
/// test, and the hang guard would name it.
async fn events_arrive_one_by_one(app: &TestApp, credential: &str, value: &str, gate: &Gate) {
    let n = 6;
    let r = script()
        .get(app.at(&format!("/user/alice/sse?n={n}&gate={}", gate.name())))
        .header(credential, value)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = r.bytes_stream();
    let mut buffer = String::new();
    let mut events: Vec<String> = Vec::new();
    for i in 0..n {
        let event = loop {
            if let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                break event.trim().to_string();
            }
            let what =
                format!("{credential}: event {i}, written once the test has read the ones before (so far {events:?})");
            let chunk = hang_guard(&what, body.next()).await.expect("the stream goes on");
            buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        };
        events.push(event);
        if i + 1 < n {
            gate.open(1).await;
        }
    }
    // Nothing after the last event, and the stream ends.
    while let Some(chunk) = hang_guard("the end of the stream", body.next()).await {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(buffer.trim().is_empty(), "{credential}: more after the last event: {buffer:?}");
    let want: Vec<String> = (0..n).map(|i| format!("data: {{\"i\": {i}}}")).collect();
    assert_eq!(events, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_the_servers_internal_address_come_back_as_hub_paths() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let cookie = session_cookie(&app, "alice").await;
    // A script through the general path; a browser through the fast lane.
    for (name, value) in [("Authorization", alice.authorization()), ("Cookie", cookie.as_str())] {
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
    let (app, root, alice) = docker_hub(|_| {}).await;
    let reference = app.docker.as_ref().unwrap().test_image.to_string();
    let c = script();
    let auth = alice.authorization();
    let rstudio = json!({"name": "rs", "display_name": "RStudio (stand-in)", "reference": reference, "kind": "rstudio",
                         "cpu": 0.5, "memory": "256M"});
    root.add_image(rstudio).await.unwrap();
    let (status, _) = alice.start("alice", Some("stats"), json!({"image": "rs"})).await.unwrap();
    assert!(matches!(status.as_u16(), 201 | 202), "{status}");
    alice.wait_ready("alice", Some("stats")).await;

    // rserver serves at its root: the prefix is gone, and the root path header says it.
    let who =
        json(c.get(app.at("/user/alice/stats/whoami?x=1")).header("Authorization", auth).send().await.unwrap()).await;
    assert_eq!(who["path"], "/whoami");
    assert_eq!(who["query"], "x=1");
    assert_eq!(who["headers"]["x-rstudio-root-path"], json!(["/user/alice/stats"]));
    assert_eq!(who["rstudio_root_path"], "/user/alice/stats");

    // The first visit goes to sign-in, under the prefix; auth-none signs in and comes back.
    let b = labhub_testkit::app::browser();
    let r = b.get(app.at("/user/alice/stats/")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to, "/user/alice/stats/auth-sign-in?appUri=%2F");
    let r = b.get(app.at(&to)).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "/user/alice/stats/");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Path=/user/alice/stats"), "rserver's cookie is scoped to the prefix: {cookie}");
    let r = b.get(app.at("/user/alice/stats/")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("<code id=\"root-path\">/user/alice/stats</code>"), "{page}");

    // A long poll passes whole: rserver holds it until the test opens the gate, which the test
    // does only once the poll waits there, so the answer can only be rserver's own, released.
    let gate = Gate::new(&app, "alice", Some("stats"), "poll");
    let poll = c
        .get(app.at(&format!("/user/alice/stats/events/get_events?gate={}", gate.name())))
        .header("Authorization", auth)
        .send();
    let (r, ()) = hang_guard(
        "the long poll",
        futures::future::join(poll, async {
            gate.until_waiting(1).await;
            gate.open(1).await;
        }),
    )
    .await;
    let r = r.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await, json!({"result": [], "released_by": "poll"}));

    // WebSockets too, at rserver's root.
    let mut ws = ws_connect(&ws_url(&app.url, "/user/alice/stats/ws/echo"), &[("Authorization", auth)]).await.unwrap();
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
    let c = script();
    let auth = alice.authorization();
    let r = c.get(app.at("/user/alice/abort-mid-body?bytes=1048576")).header("Authorization", auth).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 200);
    let promised: u64 = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let mut body = r.bytes_stream();
    let mut got: u64 = 0;
    let mut error = None;
    while let Some(chunk) = hang_guard("the truncated body", body.next()).await {
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
    assert!(eventually(|| app.hub.routes().get("alice", None).is_none_or(|r| r.in_flight() == 0)).await);
    assert_eq!(alice.get("/hub/api/users/alice").await.status, StatusCode::OK);
    // The server is gone: the proxy says so cleanly (never a hang).
    let status = c.get(app.at("/user/alice/api/status")).header("Authorization", auth).send();
    let r = hang_guard("an answer about the gone server", status).await.unwrap();
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
    let auth = alice.authorization();
    let mut ws = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", auth)]).await.unwrap();
    assert_eq!(echo(&mut ws, "before").await, "before");
    // Another request makes the server exit while the tunnel is open.
    let crash = script().get(app.at("/user/alice/crash")).header("Authorization", auth).send().await;
    match crash {
        Ok(r) => assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "the crash had no answer"),
        Err(e) => panic!("the hub must answer even when the server dies: {e}"),
    }
    let end = ws_end(&mut ws, HANG).await;
    eprintln!("the tunnel ended after the server died: {end:?}");
    assert!(eventually(|| app.hub.routes().open_tunnels() == 0).await, "the tunnel leaked");
    assert_eq!(hub_panics().len(), panics_before, "the hub panicked: {:?}", &hub_panics()[panics_before..]);
}

/// The process of `user`'s default server, as the host sees it (the engine runs on this host).
async fn server_pid(app: &TestApp) -> i64 {
    let state: Value = labhub_db::sqlx::query_scalar("select spawner_state from servers where name = ''")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let id = state["container_id"].as_str().expect("a container id");
    let options = None::<bollard::query_parameters::InspectContainerOptions>;
    let inspected = app.docker.as_ref().unwrap().docker().inspect_container(id, options).await.unwrap();
    inspected.state.and_then(|s| s.pid).expect("a running container's process")
}

/// The state letter of each thread of a process (`T`: stopped by a signal); none once it is gone.
fn thread_states(pid: i64) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        // `tid (comm) S …`: the state follows the command's closing parenthesis.
        .filter_map(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()))
        .collect()
}

/// Whether every thread of the process is stopped by a signal (and it still exists).
fn is_frozen(pid: i64) -> bool {
    let states = thread_states(pid);
    !states.is_empty() && states.iter().all(|s| *s == 'T')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_server_closes_its_open_tunnels_at_once() {
    // The stop is answered at once (202) while the container stops in the background.
    let (app, _, alice) = docker_hub(|c| c.servers.slow_stop_timeout = Duration::ZERO).await;
    start_ready(&alice, "alice").await;
    let auth = alice.authorization();
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", auth)]).await.unwrap();
        assert_eq!(echo(&mut ws, "hi").await, "hi");
        sockets.push(ws);
    }
    assert_eq!(app.hub.routes().open_tunnels(), 3);
    // Frozen (SIGSTOP), the server can neither close its end of a tunnel nor exit on the
    // engine's SIGTERM; only the engine's SIGKILL, a grace period after the stop, ends it. So
    // tunnels that end while it is still frozen were ended by the hub, at the stop.
    let pid = server_pid(&app).await;
    let frozen = std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap();
    assert!(frozen.success());
    // A signal stops each thread when it next runs in the kernel: not necessarily at once.
    assert!(eventually(|| is_frozen(pid)).await, "the server never froze: {:?}", thread_states(pid));
    assert_eq!(alice.stop("alice", None).await, Ok(StatusCode::ACCEPTED));
    for ws in &mut sockets {
        ws_end(ws, HANG).await;
    }
    assert!(
        is_frozen(pid),
        "the server was no longer frozen when its tunnels ended ({:?}): they may have ended with it, not at the stop",
        thread_states(pid)
    );
    assert_eq!(app.hub.routes().open_tunnels(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_shutting_down_with_open_tunnels_ends_them_cleanly() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    let panics_before = hub_panics().len();
    start_ready(&alice, "alice").await;
    // Kept apart from the hub, so that its containers outlive it: the tunnels must end because
    // the hub went, not because the server did.
    let scope = app.docker.clone().unwrap();
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let mut ws = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", alice.authorization())])
            .await
            .unwrap();
        assert_eq!(echo(&mut ws, "hi").await, "hi");
        sockets.push(ws);
    }
    let url = app.url.clone();
    let routes = app.hub.routes().clone();
    assert_eq!(routes.open_tunnels(), 2);
    drop(app);
    for ws in &mut sockets {
        let end = ws_end(ws, HANG).await;
        eprintln!("the tunnel ended after the hub stopped: {end:?}");
    }
    assert!(eventually(|| routes.open_tunnels() == 0).await, "the tunnels' tasks ended");
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
    let c = script();
    let auth = alice.authorization();
    // Two requests take both slots and keep them: the server holds them until the test opens
    // the gate, which it does only after the third request was answered. A third request that
    // waited for a slot rather than being refused would never be answered (the guard fails).
    let gate = Gate::new(&app, "alice", None, "slots");
    let hold = || c.get(app.at(&format!("/user/alice/hold?gate={}", gate.name()))).header("Authorization", auth).send();
    let third = async {
        gate.until_waiting(2).await;
        let route = app.hub.routes().get("alice", None).unwrap();
        assert_eq!(route.in_flight(), 2, "both slots are taken");
        let r = c.get(app.at("/user/alice/whoami")).header("Authorization", auth).send().await.unwrap();
        assert_eq!(gate.waiting().await, 2, "the refusal came while both holders were still held");
        gate.open(2).await;
        r
    };
    let (a, b, third) =
        hang_guard("a third request past the limit", async { tokio::join!(hold(), hold(), third) }).await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = third.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert!(json(third).await["message"].as_str().unwrap().contains("busy"));
    for held in [a, b] {
        let held = held.unwrap();
        assert_eq!(held.status(), 200);
        assert_eq!(json(held).await["released_by"], "slots");
    }
    // The slots come back.
    let r = c.get(app.at("/user/alice/whoami")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A WebSocket holds a slot as long as it is open.
    let mut w1 = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", auth)]).await.unwrap();
    let mut w2 = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", auth)]).await.unwrap();
    let r = c.get(app.at("/user/alice/whoami")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let refused = ws_connect(&ws_url(&app.url, "/user/alice/ws/echo"), &[("Authorization", auth)]).await;
    assert_eq!(refused_status(&refused.expect_err("a third tunnel is refused")), 503);
    w1.close(None).await.unwrap();
    w2.close(None).await.unwrap();
    drop((w1, w2));
    let route = app.hub.routes().get("alice", None).unwrap();
    assert!(eventually(|| route.in_flight() == 0).await);

    // Request headers past the limit (64 KiB by default).
    let r = c
        .get(app.at("/user/alice/whoami"))
        .header("Authorization", auth)
        .header("X-Padding", "x".repeat(80 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let r = c.get(app.at("/user/alice/whoami")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
