//! Who may reach a user's server through the hub, and what the server sees: the hub's
//! credentials never reach it, cookie-authenticated writes and upgrades come from the hub's
//! origin, a stopped server's answers, JupyterLab's echo of its token, sessions kept alive by
//! proxied traffic, and the fast lane. (Every spelling of a path is in `path_matrix`.)

use std::time::Duration;

use labhub_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{docker_hub, start_ready};
use crate::proxied::{echo, refused_status, server_secret, session_cookie, ws_connect, ws_url};
use labhub_testkit::app::script;

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
pub(crate) async fn lane_takes(app: &TestApp, request: &str) -> Option<u16> {
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

/// A person opening a server with `?token=` lands on the same address without it, so the
/// server's pages never find the token in `location.search` (nor send it on in a `Referer`);
/// the browser keeps it in a cookie for that user's servers only, which is no credential for
/// the hub's pages or API, needs the hub's origin to change things, and ends with the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_a_servers_address_is_taken_out_of_it() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let link = alice.create_token("alice", json!({ "note": "a link" })).await.unwrap();
    let token = link.token.clone().unwrap();
    let b = labhub_testkit::app::browser();

    let r = b
        .get(app.at(&format!("/user/alice/whoami?x=1&token={token}&y=%2F")))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(r.headers()["location"], "/user/alice/whoami?x=1&y=%2F");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let set: Vec<&str> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].starts_with(&format!("labhub-server-token={token};")), "{set:?}");
    assert!(set[0].contains("Path=/user/alice/") && set[0].contains("HttpOnly"), "{set:?}");
    assert!(!set[0].contains("Max-Age") && !set[0].contains("Expires"), "ends with the browser: {set:?}");

    // The page the browser goes on to is the server's, and the token is nowhere in what it sees.
    let r = b.get(app.at("/user/alice/whoami?x=1&y=%2F")).header("Accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&token) && !text.contains("labhub-server-token"), "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["query"], "x=1&y=%2F");

    // The cookie is for alice's servers, never a hub credential (sent there by hand here).
    let cookie = format!("labhub-server-token={token}");
    let c = script();
    let r = c.get(app.at("/hub/api/user")).header("Cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c.get(app.at("/hub/home")).header("Cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Like a session, it changes things only from the hub's own pages.
    let r = b.post(app.at("/user/alice/upload")).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = b.post(app.at("/user/alice/upload")).header("Origin", app.url.as_str()).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Scripts keep using `?token=` as before: answered in place, nothing kept.
    let r = c.get(app.at(&format!("/user/alice/whoami?token={token}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("set-cookie").is_none());

    // Revoking the token ends the cookie's use at once.
    alice.revoke_token("alice", &link.id).await.unwrap();
    let r = b.get(app.at("/user/alice/whoami")).header("Accept", "application/json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// What a client claims about itself (`X-Real-Ip`, `Forwarded`, `X-Scheme`, its own
/// `X-Forwarded-Proto`/`-Host`) never reaches the server, which would believe it: through the
/// fast lane (a session's plain GET) and through the general path (an API token) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_claims_about_itself_never_reach_the_server() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let session = session_cookie(&app, "alice").await;
    let host = app.url.trim_start_matches("http://").to_string();
    let c = script();
    let claims = [
        ("X-Real-Ip", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
        ("X-Scheme", "https"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
    ];
    for (path, credential) in
        [("the lane", ("Cookie", session.as_str())), ("the general path", ("Authorization", alice.authorization()))]
    {
        let mut r = c.get(app.at("/user/alice/whoami")).header(credential.0, credential.1);
        for (name, value) in claims {
            r = r.header(name, value);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let who: Value = r.json().await.unwrap();
        let headers = &who["headers"];
        for name in ["x-real-ip", "forwarded", "x-scheme"] {
            assert!(headers[name].is_null(), "{path}: {name} reached the server: {who}");
        }
        assert_eq!(headers["x-forwarded-proto"], json!(["http"]), "{path}");
        assert_eq!(headers["x-forwarded-host"], json!([host]), "{path}");
        assert_eq!(headers["x-forwarded-for"], json!(["127.0.0.1"]), "{path}");
    }
}
