//! The fast lane (`Proxy::forward_plain_get`) through real sockets: the same request seen by
//! the server as through the general path, framings, reuse and its limits, rewriting of
//! response heads, malformed answers, and the kept socket closed with its route.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use labhub_core::ImageKind;
use labhub_proxy::{ClientInfo, Lane, LaneError, PlainGet, Proxy, ProxyError, Scheme, parse_user_path};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::common::*;

/// The status the lane hub answers a request the lane would not take with (the web layer
/// gives those to the general path).
const NOT_FORWARDED: u16 = 599;

/// A test hub whose connections are served by the fast lane alone, as the web layer's lane
/// does: requests in turn, the kept upstream closed when it retires between requests.
async fn lane_hub(proxy: Proxy) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            tokio::spawn(serve_lane(proxy.clone(), stream, peer));
        }
    });
    addr
}

async fn serve_lane(proxy: Proxy, mut stream: TcpStream, peer: SocketAddr) {
    let mut lane = Lane::new();
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        let done = {
            let mut headers = [httparse::EMPTY_HEADER; 48];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let keep = answer(&proxy, &req, &mut stream, &mut lane, peer).await;
                    Some((n, keep))
                }
                Ok(httparse::Status::Partial) => None,
                Err(_) => return,
            }
        };
        match done {
            Some((_, false)) => return,
            Some((n, true)) => {
                buf.advance(n);
                if !buf.is_empty() {
                    continue;
                }
            }
            None => {}
        }
        tokio::select! {
            () = lane.upstream_retired() => lane.close_upstream(),
            read = stream.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// One request through the lane; whether the connection goes on.
async fn answer(
    proxy: &Proxy,
    req: &httparse::Request<'_, '_>,
    stream: &mut TcpStream,
    lane: &mut Lane,
    peer: SocketAddr,
) -> bool {
    let target = req.path.unwrap();
    let host = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value).unwrap_or_default();
    let route = parse_user_path(target.split('?').next().unwrap()).ok().and_then(|p| proxy.table().resolve(&p));
    let Some(route) = route else {
        return reply(stream, 404, "no-route").await;
    };
    let client = ClientInfo { addr: peer.ip(), scheme: Scheme::Http, host: String::from_utf8_lossy(host).into() };
    let get = PlainGet { route, target, headers: req.headers, client: &client, request_id: "lane-test-id" };
    match proxy.forward_plain_get(lane, get, stream).await {
        Ok(relayed) => relayed.keep_alive,
        Err(LaneError::NotForwarded) => reply(stream, NOT_FORWARDED, "not-forwarded").await,
        Err(LaneError::Failed(e)) => {
            let name = match e {
                ProxyError::Timeout => "timeout",
                ProxyError::Upstream(_) => "upstream",
                _ => "other",
            };
            reply(stream, e.status().as_u16(), name).await
        }
        Err(LaneError::Broken { .. }) => false,
    }
}

async fn reply(stream: &mut TcpStream, status: u16, error: &str) -> bool {
    let head = format!("HTTP/1.1 {status} X\r\nx-proxy-error: {error}\r\ncontent-length: 0\r\n\r\n");
    stream.write_all(head.as_bytes()).await.is_ok()
}

/// The header lines of an upstream dump, lower-cased and sorted, without the ones that name
/// the connection they came over.
fn seen_headers(dump: &str) -> Vec<String> {
    let (_, headers) = parse_dump(dump);
    let mut lines: Vec<String> = headers
        .into_iter()
        .filter(|(k, _)| k != "x-forwarded-for")
        .map(|(k, v)| format!("{}: {v}", k.to_ascii_lowercase()))
        .collect();
    lines.sort();
    lines
}

/// A raw upstream that answers every request on a connection with `response`, for as long as
/// the connection lasts.
async fn answering_upstream(response: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    counting_raw_upstream(move |mut stream| async move {
        while read_request_head(&mut stream).await {
            if stream.write_all(response).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// A raw upstream that answers one request with `response` and closes the connection.
async fn counting_upstream_then_close(response: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    counting_raw_upstream(move |mut stream| async move {
        if read_request_head(&mut stream).await {
            let _ = stream.write_all(response).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_server_sees_the_same_request_through_the_lane_as_through_the_general_path() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let lane = lane_hub(hub.proxy.clone()).await;
    let send = |base: String| async move {
        client()
            .get(format!("{base}/user/alice/echo?a=1&b=%2F"))
            .header("Cookie", format!("_xsrf=abc; {HUB_COOKIE}=hub-secret; theme=dark"))
            .header("X-Forwarded-For", "198.51.100.7")
            .header("Proxy-Authorization", "Basic eA==")
            .header("X-Forwarded-Proto", "https")
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
    };
    let general = send(format!("http://{}", hub.addr)).await;
    let through_lane = send(format!("http://{lane}")).await;
    assert_eq!(through_lane.status(), 200);
    assert_eq!(through_lane.headers()["x-request-id"], "lane-test-id");
    let (general, through_lane) = (general.text().await.unwrap(), through_lane.text().await.unwrap());
    assert_eq!(parse_dump(&through_lane).0, "GET /user/alice/echo?a=1&b=%2F");
    let lane_headers = seen_headers(&through_lane);
    let general_headers = seen_headers(&general);
    // The Host differs (two listeners); everything else is the same request.
    let without_host = |h: &[String]| -> Vec<String> {
        h.iter().filter(|l| !l.starts_with("host:") && !l.starts_with("x-forwarded-host:")).cloned().collect()
    };
    assert_eq!(
        without_host(&lane_headers),
        without_host(&general_headers),
        "lane:\n{through_lane}\ngeneral:\n{general}"
    );
    assert!(lane_headers.contains(&"cookie: _xsrf=abc; theme=dark".to_string()), "{lane_headers:?}");
    assert!(lane_headers.contains(&format!("authorization: token {SERVER_TOKEN}")), "{lane_headers:?}");
    assert!(lane_headers.contains(&format!("x-forwarded-host: {lane}")), "{lane_headers:?}");
    assert!(!through_lane.to_ascii_lowercase().contains("proxy-authorization"), "{through_lane}");
    let (_, raw) = parse_dump(&through_lane);
    assert_eq!(header_values(&raw, "x-forwarded-for"), ["198.51.100.7, 127.0.0.1"]);
}

#[tokio::test]
async fn lengths_chunks_and_streams_pass_and_one_upstream_connection_carries_them_all() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let lane = lane_hub(hub.proxy.clone()).await;
    let c = client();
    for _ in 0..3 {
        let r = c.get(format!("http://{lane}/user/alice/download?bytes=3000001")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "3000001");
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), 3_000_001);
        assert!(body.iter().all(|b| *b == 0));

        // Server-sent events: chunked, each event as the server writes it.
        let r = c.get(format!("http://{lane}/user/alice/sse")).send().await.unwrap();
        assert_eq!(r.headers()["transfer-encoding"], "chunked");
        let text = read_events_in_turn(r, &up.events).await;
        assert_eq!(text, (0..5).map(|i| format!("data: event {i}\n\n")).collect::<String>());

        let r = c.get(format!("http://{lane}/user/alice/nope")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.text().await.unwrap(), "upstream has no nope");
    }
    assert_eq!(up.accepted(), 1, "nine GETs over one client connection share one upstream connection");
}

#[tokio::test]
async fn response_heads_are_rewritten_as_on_the_general_path() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    hub.add("bob", None, up.addr, ImageKind::Jupyter);
    let lane = lane_hub(hub.proxy.clone()).await;
    let c = client();
    let r = c
        .get(format!("http://{lane}/user/alice/redirect?to=http%3A%2F%2FINTERNAL%2Fuser%2Falice%2Ftree"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/user/alice/tree");

    let (raw, _) = answering_upstream(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
          Set-Cookie: labhub-session=planted; Path=/\r\nSet-Cookie: wide=1; Domain=example.org\r\n\
          Set-Cookie: _xsrf=fine; Path=/user/carol/\r\nX-Request-Id: upstream-id\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    hub.add("carol", None, raw, ImageKind::Jupyter);
    let r = c.get(format!("http://{lane}/user/carol/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(r.text().await.unwrap(), "ok");
    assert!(h.get("x-hop").is_none() && h.get("keep-alive").is_none(), "{h:?}");
    let cookies: Vec<_> = h.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(cookies, ["_xsrf=fine; Path=/user/carol/"]);
    assert_eq!(h["x-request-id"], "lane-test-id");
}

#[tokio::test]
async fn a_connection_header_cannot_name_the_framing_away() {
    let hub = Hub::start(settings()).await;
    let lane = lane_hub(hub.proxy.clone()).await;
    let (addr, accepted) = answering_upstream(
        b"HTTP/1.1 200 OK\r\nConnection: content-length, x-hop\r\nX-Hop: 1\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    hub.add("alice", None, addr, ImageKind::Jupyter);
    let c = client();
    for i in 0..2 {
        // Without its length the client would read the body until the connection closes,
        // which the lane, relaying by the length, never does: the guard would fire.
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            let r = c.get(format!("http://{lane}/user/alice/x")).send().await.unwrap();
            (r.headers().clone(), r.text().await.unwrap())
        })
        .await
        .expect("the response's end was not known to the client");
        assert_eq!(r.0["content-length"], "2", "request {i}");
        assert!(r.0.get("x-hop").is_none(), "request {i}");
        assert_eq!(r.1, "ok", "request {i}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_whose_connection_names_headers_is_left_for_the_general_path() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let lane = lane_hub(hub.proxy.clone()).await;
    let mut stream = TcpStream::connect(lane).await.unwrap();
    let head = "GET /user/alice/echo HTTP/1.1\r\nhost: h\r\nconnection: keep-alive, x-hop\r\nx-hop: secret\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 1024];
    let n = stream.read(&mut got).await.unwrap();
    let got = String::from_utf8_lossy(&got[..n]);
    assert!(got.starts_with(&format!("HTTP/1.1 {NOT_FORWARDED} ")), "{got}");
    assert_eq!(up.accepted(), 0, "nothing reached the server");
}

#[tokio::test]
async fn the_lane_drops_client_claims_hub_tokens_in_the_referer_and_service_worker_scopes() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let lane = lane_hub(hub.proxy.clone()).await;
    let c = client();
    let r = crate::http::with_claims_and_a_tokened_referer(c.get(format!("http://{lane}/user/alice/echo")));
    let r = r.send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "lane-test-id", "through the lane");
    crate::http::assert_no_claims_and_no_token(&r.text().await.unwrap());

    let r = c.get(format!("http://{lane}/user/alice/sw.js")).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "lane-test-id", "through the lane");
    assert!(r.headers().get("service-worker-allowed").is_none(), "{:?}", r.headers());
    assert_eq!(r.text().await.unwrap(), "self.skipWaiting();");
}

#[tokio::test]
async fn malformed_answers_are_refused_before_the_client_sees_them_and_cut_after() {
    let hub = Hub::start(settings()).await;
    let lane = lane_hub(hub.proxy.clone()).await;
    let c = client();
    // Stricter than hyper (which reads the first two as chunked): a body that could be read
    // two ways is not guessed at.
    let cases: [(&str, &'static [u8]); 4] = [
        ("both", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
        ("gzip", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
        ("lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"),
        ("switch", b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"),
    ];
    for (user, response) in cases {
        let (addr, _) = answering_upstream(response).await;
        hub.add(user, None, addr, ImageKind::Jupyter);
        let r = c.get(format!("http://{lane}/user/{user}/x")).send().await.unwrap();
        assert_eq!(r.status(), 502, "{user}");
        assert_eq!(r.headers()["x-proxy-error"], "upstream", "{user}");
    }
    // Chunking seen to be broken before anything went to the client: a 502 too.
    let (addr, _) = answering_upstream(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n").await;
    hub.add("chunks", None, addr, ImageKind::Jupyter);
    let r = c.get(format!("http://{lane}/user/chunks/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    // Broken after the head went out: the client's response is cut, not completed.
    let (addr, _) =
        counting_upstream_then_close(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n").await;
    hub.add("cut", None, addr, ImageKind::Jupyter);
    let r = c.get(format!("http://{lane}/user/cut/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "a body cut short must not read as complete");
    // 1xx heads are skipped; a body until the server closes ends the client's connection too.
    let (addr, _) = counting_upstream_then_close(
        b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nto the end",
    )
    .await;
    hub.add("close", None, addr, ImageKind::Jupyter);
    let r = c.get(format!("http://{lane}/user/close/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(r.text().await.unwrap(), "to the end");
}

/// What a client made of one response: its status and whole body, or `None` when it was
/// refused (a 502) or cut.
async fn outcome(c: &reqwest::Client, url: String) -> Option<(u16, String)> {
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        let r = c.get(url).send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    })
    .await
    .expect("the response never ended");
    r.filter(|(status, _)| *status != 502)
}

#[tokio::test]
async fn framing_is_read_as_hyper_reads_it_on_the_general_path() {
    let hub = Hub::start(settings()).await;
    let lane = lane_hub(hub.proxy.clone()).await;
    // What the upstream answers, and what the client should make of it.
    type Case = (&'static str, &'static [u8], Option<(u16, &'static str)>);
    let cases: [Case; 12] = [
        ("sign", b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok", None),
        ("hex", b"HTTP/1.1 200 OK\r\ncontent-length: 0x2\r\n\r\nok", None),
        ("spaced", b"HTTP/1.1 200 OK\r\ncontent-length: 1 1\r\n\r\nok", None),
        ("empty", b"HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\nok", None),
        ("listed", b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok", Some((200, "ok"))),
        ("notmodified", b"HTTP/1.1 304 Not Modified\r\ncontent-length: +5\r\n\r\n", Some((304, ""))),
        ("reset", b"HTTP/1.1 205 Reset Content\r\ncontent-length: 5\r\n\r\nhello", Some((205, "hello"))),
        ("old", b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", None),
        ("sizelf", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n", None),
        ("extlf", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;x\nok\r\n0\r\n\r\n", None),
        ("trailerlf", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nA: 1\nB: 2\r\n\r\n", None),
        (
            "trailers",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nA: 1\r\n\r\n",
            Some((200, "ok")),
        ),
    ];
    let c = client();
    for (user, response, want) in cases {
        let (addr, accepted) = answering_upstream(response).await;
        hub.add(user, None, addr, ImageKind::Jupyter);
        // Twice each way: a body read to the wrong end would spoil the second answer.
        for _ in 0..2 {
            let general = outcome(&c, hub.url(&format!("/user/{user}/x"))).await;
            let through_lane = outcome(&c, format!("http://{lane}/user/{user}/x")).await;
            let want = want.map(|(status, body)| (status, body.to_string()));
            assert_eq!(general, want, "{user}: hyper on the general path");
            assert_eq!(through_lane, want, "{user}: the lane");
        }
        if want.is_some() {
            assert_eq!(accepted.load(Ordering::SeqCst), 2, "{user}: one kept connection per path");
        }
    }
}

/// A raw upstream whose first answer is `bodiless` and whose later ones are `good`; after the
/// first, it sends a late body (itself a whole response) when `send_late` is notified, and
/// notifies `sent_late` once it is written.
async fn late_body_upstream(bodiless: &'static [u8], send_late: Arc<Notify>, sent_late: Arc<Notify>) -> SocketAddr {
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (addr, _) = counting_raw_upstream(move |mut stream| {
        let (first, send_late, sent_late) = (first.clone(), send_late.clone(), sent_late.clone());
        async move {
            while read_request_head(&mut stream).await {
                if !first.swap(false, Ordering::SeqCst) {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngood").await;
                    continue;
                }
                let _ = stream.write_all(bodiless).await;
                send_late.notified().await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEVIL!").await;
                sent_late.notify_one();
            }
        }
    })
    .await;
    addr
}

#[tokio::test]
async fn a_late_body_after_a_bodiless_answer_is_never_read_as_the_next_response() {
    for bodiless in [&b"HTTP/1.1 204 No Content\r\n\r\n"[..], b"HTTP/1.1 304 Not Modified\r\n\r\n"] {
        let (send_late, sent_late) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let addr = late_body_upstream(bodiless, send_late.clone(), sent_late.clone()).await;
        let hub = Hub::start(settings()).await;
        hub.add("alice", None, addr, ImageKind::Jupyter);
        // The lane's own calls, in turn on one lane: no wait between them that could notice
        // the late bytes first.
        let route = hub.proxy.table().resolve(&parse_user_path("/user/alice/x").unwrap()).unwrap();
        let client = ClientInfo { addr: [127, 0, 0, 1].into(), scheme: Scheme::Http, host: "h".into() };
        let headers = [httparse::Header { name: "host", value: b"h" }];
        let mut lane = Lane::new();
        let mut answers = Vec::new();
        for _ in 0..2 {
            let get = PlainGet {
                route: route.clone(),
                target: "/user/alice/x",
                headers: &headers,
                client: &client,
                request_id: "i",
            };
            let mut out = Vec::new();
            let relayed = hub.proxy.forward_plain_get(&mut lane, get, &mut out).await.unwrap();
            answers.push((relayed.status, String::from_utf8_lossy(&out).into_owned()));
            if answers.len() == 1 {
                send_late.notify_one();
                sent_late.notified().await;
            }
        }
        assert_eq!(answers[0].0, bodiless[9..12].iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')));
        assert_eq!(answers[1].0, 200, "{answers:?}");
        assert!(answers[1].1.ends_with("\r\n\r\ngood"), "{answers:?}");
    }
}

#[tokio::test]
async fn hyper_never_reads_a_late_body_as_the_next_response_either() {
    for bodiless in [&b"HTTP/1.1 204 No Content\r\n\r\n"[..], b"HTTP/1.1 304 Not Modified\r\n\r\n"] {
        let (send_late, sent_late) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let addr = late_body_upstream(bodiless, send_late.clone(), sent_late.clone()).await;
        let hub = Hub::start(settings()).await;
        hub.add("alice", None, addr, ImageKind::Jupyter);
        let c = client();
        let r = c.get(hub.url("/user/alice/x")).send().await.unwrap();
        assert!(r.status() == 204 || r.status() == 304);
        r.bytes().await.unwrap();
        send_late.notify_one();
        sent_late.notified().await;
        let r = c.get(hub.url("/user/alice/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "good");
    }
}

#[tokio::test]
async fn a_kept_connection_the_server_closed_is_replaced_and_the_get_sent_again() {
    let (addr, accepted) = hangs_up_on_the_second_request_upstream().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, addr, ImageKind::Jupyter);
    let lane = lane_hub(hub.proxy.clone()).await;
    let c = client();
    for i in 0..3 {
        let r = c.get(format!("http://{lane}/user/alice/x")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "each resend opened a fresh connection");
}

#[tokio::test]
async fn what_the_lane_does_not_take_is_left_for_the_general_path() {
    let up = Upstream::start().await;
    let mut s = settings();
    s.max_connections_per_server = 0;
    let busy = Hub::start(s).await;
    busy.add("alice", None, up.addr, ImageKind::Jupyter);
    let busy_lane = lane_hub(busy.proxy.clone()).await;
    let hub = Hub::start(settings()).await;
    let lane = lane_hub(hub.proxy.clone()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    hub.add("rs", None, up.addr, ImageKind::Rstudio);
    hub.add("gone", None, closed_port().await, ImageKind::Jupyter);
    let c = client();
    for (base, path) in [
        (busy_lane, "/user/alice/echo"),
        (lane, "/user/alice/echo?token=abc"),
        (lane, "/user/alice/echo?%74oken=abc"),
        (lane, "/user/rs/echo"),
        (lane, "/user/gone/echo"),
    ] {
        let r = c.get(format!("http://{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), NOT_FORWARDED, "{path}");
    }
    let mut many_hops = c.get(format!("http://{lane}/user/alice/echo"));
    for i in 0..5 {
        many_hops = many_hops.header("X-Forwarded-For", format!("192.0.2.{i}"));
    }
    assert_eq!(many_hops.send().await.unwrap().status().as_u16(), NOT_FORWARDED, "five X-Forwarded-For headers");
    assert_eq!(up.accepted(), 0, "nothing reached the server");
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_times_out_and_a_removed_route_closes_the_kept_socket() {
    let (slow, up) = (Upstream::start().await, Upstream::start().await);
    let mut s = settings();
    s.read_timeout = Duration::from_millis(500);
    let hub = Hub::start(s).await;
    hub.add("slow", None, slow.addr, ImageKind::Jupyter);
    let key = hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let lane = lane_hub(hub.proxy.clone()).await;
    let c = client();
    // `silent` answers after an hour; on the paused clock (tokio's, which the read timeout
    // runs on) only the timeout can end the wait first, and exactly when it is due.
    let started = tokio::time::Instant::now();
    let r = c.get(format!("http://{lane}/user/slow/silent")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["x-proxy-error"], "timeout");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(500) && waited < Duration::from_secs(1), "{waited:?} on the paused clock");

    let r = c.get(format!("http://{lane}/user/alice/echo")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    assert_eq!(up.open(), 1, "the lane keeps its upstream socket between requests");
    assert!(hub.table.remove(&key));
    assert!(eventually(Duration::from_secs(10), || up.open() == 0).await, "the kept socket outlived its route");
}
