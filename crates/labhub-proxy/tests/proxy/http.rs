//! Plain HTTP: methods, bodies, queries, headers, redirects, streaming responses, timeouts.

use std::time::Duration;

use futures::StreamExt;
use labhub_core::ImageKind;

use crate::common::*;

#[tokio::test]
async fn get_and_post_pass_through_with_their_bodies() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let c = client();

    let r = c.get(hub.url("/user/alice/echo")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (line, _) = parse_dump(&r.text().await.unwrap());
    assert_eq!(line, "GET /user/alice/echo");

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r = c.post(hub.url("/user/alice/api/body")).body(payload.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), payload.as_slice());

    let r = c.put(hub.url("/user/alice/api/body")).body("x").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "x");

    // The upstream's own 404 comes back as it is.
    let r = c.get(hub.url("/user/alice/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "upstream has no nope");
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let c = client();
    for _ in 0..20 {
        let r = c.get(hub.url("/user/alice/echo")).send().await.unwrap();
        r.bytes().await.unwrap();
    }
    assert_eq!(up.accepted(), 1, "20 sequential requests should share one pooled connection");
}

/// Three GETs answered `ok`, each followed by 300 ms of quiet: long enough for a server with
/// a short keep-alive timeout to hang up on the parked connection, and for the proxy to
/// count it as possibly closing.
async fn three_gets_a_while_apart(c: &reqwest::Client, hub: &Hub) {
    for i in 0..3 {
        let r = c.get(hub.url("/user/alice/x")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_server_closing_its_idle_connections_costs_no_request() {
    let (addr, accepted) = closes_when_idle_upstream().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, addr, ImageKind::Jupyter);
    let c = client();
    three_gets_a_while_apart(&c, &hub).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "each request needed a fresh connection");
}

#[tokio::test]
async fn a_request_meeting_a_server_closing_its_idle_connection_is_sent_again_if_safe() {
    let (addr, accepted) = hangs_up_on_the_second_request_upstream().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, addr, ImageKind::Jupyter);
    let c = client();
    three_gets_a_while_apart(&c, &hub).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "each GET after the first was sent again");
    // An upload is not sent twice: the server may have acted on it.
    let r = c.post(hub.url("/user/alice/x")).body("save this").send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_connection_still_sending_an_upload_is_not_lent_to_the_next_request() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let c = client();
    // `echo` answers from the headers alone, while this body keeps going for a minute.
    let stalled = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"first"))]).chain(
        futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(bytes::Bytes::from_static(b"last"))
        }),
    );
    let r = c.post(hub.url("/user/alice/echo")).body(reqwest::Body::wrap_stream(stalled)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();

    let next = tokio::time::timeout(Duration::from_secs(10), c.get(hub.url("/user/alice/echo")).send()).await;
    let r = next.expect("the next request waited for the unfinished upload's connection").unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_query_is_kept_byte_for_byte_but_the_hub_token_never_arrives() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let c = client();
    let cases = [
        ("/user/alice/echo?a=1&token=HUBTOKEN&b=%2F+x&c", "/user/alice/echo?a=1&b=%2F+x&c"),
        ("/user/alice/echo?token=HUBTOKEN", "/user/alice/echo"),
        ("/user/alice/echo?%74oken=HUBTOKEN&token=HUBTOKEN&z=%7E", "/user/alice/echo?z=%7E"),
        ("/user/alice/echo?x=%41&tokens=keep&y=", "/user/alice/echo?x=%41&tokens=keep&y="),
        ("/user/alice/echo", "/user/alice/echo"),
    ];
    for (sent, want) in cases {
        let text = c.get(hub.url(sent)).send().await.unwrap().text().await.unwrap();
        let (line, _) = parse_dump(&text);
        assert_eq!(line, format!("GET {want}"), "{sent}");
        assert!(!text.contains("HUBTOKEN"), "{sent}: {text}");
    }
}

#[tokio::test]
async fn hub_credentials_are_stripped_and_forwarding_headers_set() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let text = client()
        .get(hub.url("/user/alice/echo"))
        .header("host", "hub.example:8443")
        .header("cookie", format!("{HUB_COOKIE}=HUBSESSION; _xsrf=2|abc|def; theme=dark"))
        .header("authorization", "token HUBTOKEN")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "drop me")
        .header("proxy-authorization", "Basic cHJveHk=")
        .header("te", "trailers")
        .header("x-rstudio-root-path", "/elsewhere")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("HUBSESSION") && !text.contains("HUBTOKEN"), "{text}");
    let (_, h) = parse_dump(&text);
    let one = |name: &str| header_values(&h, name);
    assert_eq!(one("host"), ["hub.example:8443"], "the browser's Host is kept");
    assert_eq!(one("cookie"), ["_xsrf=2|abc|def; theme=dark"]);
    assert_eq!(one("authorization"), [format!("token {SERVER_TOKEN}").as_str()]);
    assert_eq!(one("x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(one("x-forwarded-proto"), ["http"]);
    assert_eq!(one("x-forwarded-host"), ["hub.example:8443"]);
    assert_eq!(one("x-custom"), ["kept"]);
    for gone in ["x-hop", "proxy-authorization", "te", "x-rstudio-root-path", "upgrade"] {
        assert!(one(gone).is_empty(), "{gone} reached the server: {text}");
    }

    // A request whose only cookie is the hub's carries no Cookie header at all.
    let text = client()
        .get(hub.url("/user/alice/echo"))
        .header("cookie", format!("{HUB_COOKIE}=HUBSESSION"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(header_values(&parse_dump(&text).1, "cookie").is_empty(), "{text}");
}

/// A request carrying client-address claims of its own and the hub token in its `Referer`.
pub fn with_claims_and_a_tokened_referer(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("x-real-ip", "203.0.113.66")
        .header("forwarded", "for=203.0.113.66;proto=https")
        .header("x-scheme", "https")
        .header("x-forwarded-port", "443")
        .header("x-forwarded-prefix", "/elsewhere")
        .header("referer", "http://hub.example/user/alice/lab?token=HUBTOKEN&x=1")
}

/// Checks the upstream's dump of a [`with_claims_and_a_tokened_referer`] request.
pub fn assert_no_claims_and_no_token(dump: &str) {
    assert!(!dump.contains("HUBTOKEN"), "{dump}");
    let (_, h) = parse_dump(dump);
    for gone in ["x-real-ip", "forwarded", "x-scheme", "x-forwarded-port", "x-forwarded-prefix"] {
        assert!(header_values(&h, gone).is_empty(), "{gone} reached the server: {dump}");
    }
    assert_eq!(header_values(&h, "referer"), ["http://hub.example/user/alice/lab?x=1"]);
}

#[tokio::test]
async fn client_address_claims_and_hub_tokens_in_the_referer_never_reach_the_server() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let r = with_claims_and_a_tokened_referer(client().get(hub.url("/user/alice/echo"))).send().await.unwrap();
    assert_no_claims_and_no_token(&r.text().await.unwrap());
}

#[tokio::test]
async fn a_servers_service_worker_cannot_claim_a_wider_scope() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let r = client().get(hub.url("/user/alice/sw.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("service-worker-allowed").is_none(), "{:?}", r.headers());
    assert_eq!(r.text().await.unwrap(), "self.skipWaiting();");
}

#[tokio::test]
async fn redirects_to_the_internal_address_become_hub_paths() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let c = client();
    let cases = [
        ("http://INTERNAL/user/alice/tree?x=1", "/user/alice/tree?x=1"),
        ("/user/alice/lab", "/user/alice/lab"),
        ("https://elsewhere.example/x", "https://elsewhere.example/x"),
    ];
    for (to, want) in cases {
        let r = c.get(hub.url(&format!("/user/alice/redirect?to={}", enc(to)))).send().await.unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], want, "{to}");
    }
    // The server only answers under its prefix: the bare prefix gets its slash.
    let r = c.get(hub.url("/user/alice?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/user/alice/?x=1");
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    // The head must reach the client before any event does.
    let r = client().get(hub.url("/user/alice/events/sse")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = read_events_in_turn(r, &up.events).await;
    assert_eq!(text, (0..5).map(|i| format!("data: event {i}\n\n")).collect::<String>());
}

// The read timeout is tokio-timed: on a paused clock, which moves on only when every task
// waits, the timings below are exact, whatever the machine's load.

#[tokio::test(start_paused = true)]
async fn a_long_poll_within_the_read_timeout_passes() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await; // read timeout 5 s
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let start = tokio::time::Instant::now();
    let r = client().get(hub.url("/user/alice/poll/sleep?ms=4900")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "slept");
    assert!(start.elapsed() >= Duration::from_millis(4900), "the server answered late, on the paused clock");
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_times_out_but_a_slow_upload_does_not() {
    let up = Upstream::start().await;
    let mut s = settings();
    s.read_timeout = Duration::from_secs(1);
    let hub = Hub::start(s).await;
    let key = hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let c = client();

    // `silent` answers after an hour: only the read timeout can end the wait first.
    let start = tokio::time::Instant::now();
    let r = c.get(hub.url("/user/alice/silent")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["x-proxy-error"], "timeout");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(2), "{waited:?} on the paused clock");

    // 6 chunks 400 ms apart: 2.4 s of upload against a 1 s read timeout, never idle for 1 s.
    let chunks = futures::stream::unfold(0, |i| async move {
        if i == 6 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        Some((Ok::<_, std::io::Error>(vec![b'u'; 1000]), i + 1))
    });
    let r = c.post(hub.url("/user/alice/upload")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "6000");
    let route = hub.table.get(key.user.as_str(), None).unwrap();
    assert!(eventually(Duration::from_secs(10), || route.in_flight() == 0).await);
}

#[tokio::test]
async fn a_server_dying_mid_response_gives_a_truncated_body_and_no_leak() {
    let dying = dying_upstream("HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n", 1000).await;
    let mute = dying_upstream("", 0).await;
    let healthy = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    let key = hub.add("alice", None, dying, ImageKind::Jupyter);
    hub.add("bob", None, mute, ImageKind::Jupyter);
    hub.add("carol", None, healthy.addr, ImageKind::Jupyter);
    let c = client();

    let r = c.get(hub.url("/user/alice/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Either the client notices the cut (an error) or sees a short body; never a full one.
    if let Ok(b) = r.bytes().await {
        assert!(b.len() < 100_000, "a truncated body must not look complete");
    }
    let route = hub.table.get(key.user.as_str(), None).unwrap();
    assert!(eventually(Duration::from_secs(2), || route.in_flight() == 0).await);

    // Hanging up before any answer is a 502 with words, not a panic.
    let r = c.get(hub.url("/user/bob/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-proxy-error"], "upstream");
    assert!(r.text().await.unwrap().contains("closed the connection"));

    // The hub is unharmed.
    let r = c.get(hub.url("/user/carol/echo")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hub.proxy.in_flight(), 0);
}

#[tokio::test]
async fn a_client_hanging_up_mid_download_releases_everything() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    let key = hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let r = client().get(hub.url("/user/alice/download?bytes=1073741824")).send().await.unwrap();
    let mut stream = r.bytes_stream();
    let mut got = 0;
    while got < 4 << 20 {
        got += stream.next().await.unwrap().unwrap().len();
    }
    let route = hub.table.get(key.user.as_str(), None).unwrap();
    assert_eq!(route.in_flight(), 1);
    drop(stream);
    assert!(eventually(Duration::from_secs(2), || route.in_flight() == 0 && hub.proxy.in_flight() == 0).await);
    // The half-read upstream connection cannot be reused, so it is closed, not pooled.
    assert!(eventually(Duration::from_secs(2), || up.open() == 0).await, "open: {}", up.open());
}
