//! WebSockets: handshake forwarded first, bytes tunnelled untouched, endings clean.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use labhub_core::ImageKind;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::common::*;

async fn setup() -> (Upstream, Hub) {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    (up, hub)
}

#[tokio::test]
async fn echo_large_and_many_messages() {
    let (_up, hub) = setup().await;
    let (mut ws, _) = connect_async(hub.ws_url("/user/alice/api/kernels/k1/ws")).await.unwrap();
    assert_eq!(hub.table.open_tunnels(), 1);

    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert!(b.as_ref() == big.as_slice(), "16 MiB echo differs"),
        other => panic!("unexpected {other:?}"),
    }

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
        match rx.next().await.unwrap().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), format!("message {i}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    let tx = sender.await.unwrap();
    eprintln!("10k echoed messages in {:?}", start.elapsed());
    drop((tx, rx));
    assert!(eventually(Duration::from_secs(2), || hub.table.open_tunnels() == 0).await);
}

#[tokio::test]
async fn close_codes_pass_through_both_ways() {
    let (_up, hub) = setup().await;

    // Client-initiated: the server's reply carries our code back.
    let (mut ws, _) = connect_async(hub.ws_url("/user/alice/ws")).await.unwrap();
    ws.send(Message::Close(Some(CloseFrame { code: CloseCode::from(4001), reason: "client bye".into() })))
        .await
        .unwrap();
    let mut got = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Close(frame) = msg {
            got = frame;
        }
    }
    assert_eq!(got.map(|f| u16::from(f.code)), Some(4001));

    // Server-initiated: its code and reason reach the client untouched.
    let (mut ws, _) = connect_async(hub.ws_url("/user/alice/ws")).await.unwrap();
    ws.send(Message::text("close-me")).await.unwrap();
    let mut got = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Close(frame) = msg {
            got = frame;
        }
    }
    let frame = got.unwrap();
    assert_eq!(u16::from(frame.code), 4002);
    assert_eq!(frame.reason.as_str(), "server says bye");
    assert!(eventually(Duration::from_secs(2), || hub.table.open_tunnels() == 0).await);
}

#[tokio::test]
async fn the_subprotocol_is_negotiated_end_to_end() {
    let (_up, hub) = setup().await;
    let mut req = hub.ws_url("/user/alice/api/kernels/k1/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "v1.kernel.websocket.jupyter.org, something-else".parse().unwrap());
    let (mut ws, response) = connect_async(req).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "v1.kernel.websocket.jupyter.org");
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
}

#[tokio::test]
async fn the_handshake_reaches_the_server_with_hub_credentials_stripped() {
    let (_up, hub) = setup().await;
    let mut req = hub.ws_url("/user/alice/ws-headers?token=HUBTOKEN").into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("cookie", format!("{HUB_COOKIE}=HUBSESSION; _xsrf=keep").parse().unwrap());
    h.insert("authorization", "token HUBTOKEN".parse().unwrap());
    h.insert("origin", format!("http://{}", hub.addr).parse().unwrap());
    let (mut ws, _) = connect_async(req).await.unwrap();
    let report = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => t.to_string(),
        other => panic!("unexpected {other:?}"),
    };
    assert!(!report.contains("HUBSESSION") && !report.contains("HUBTOKEN"), "{report}");
    let (line, h) = parse_dump(&report);
    assert_eq!(line, "GET /user/alice/ws-headers");
    assert_eq!(header_values(&h, "host"), [hub.addr.to_string().as_str()]);
    assert_eq!(header_values(&h, "origin"), [format!("http://{}", hub.addr).as_str()]);
    assert_eq!(header_values(&h, "cookie"), ["_xsrf=keep"]);
    assert_eq!(header_values(&h, "authorization"), [format!("token {SERVER_TOKEN}").as_str()]);
    assert_eq!(header_values(&h, "upgrade"), ["websocket"]);
    assert_eq!(header_values(&h, "connection"), ["upgrade"]);
    assert_eq!(header_values(&h, "sec-websocket-version"), ["13"]);
}

#[tokio::test]
async fn a_refused_upgrade_comes_back_as_the_server_sent_it() {
    let (_up, hub) = setup().await;
    match connect_async(hub.ws_url("/user/alice/ws-forbidden")).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 403);
            assert_eq!(response.body().as_deref(), Some(&b"no websockets for you"[..]));
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    assert_eq!(hub.table.open_tunnels(), 0);
    assert!(eventually(Duration::from_secs(1), || hub.proxy.in_flight() == 0).await);
}

#[tokio::test]
async fn a_server_crash_or_a_client_hang_up_ends_the_tunnel() {
    let (_up, hub) = setup().await;

    let (mut ws, _) = connect_async(hub.ws_url("/user/alice/ws-crash")).await.unwrap();
    ws.send(Message::text("now")).await.unwrap();
    // The server vanished without a close frame: the client sees the end, not a hang.
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the tunnel outlived its server");
    assert!(eventually(Duration::from_secs(2), || hub.table.open_tunnels() == 0).await);

    let (ws, _) = connect_async(hub.ws_url("/user/alice/ws")).await.unwrap();
    assert_eq!(hub.table.open_tunnels(), 1);
    drop(ws);
    assert!(eventually(Duration::from_secs(2), || hub.table.open_tunnels() == 0).await);
    assert!(eventually(Duration::from_secs(1), || hub.proxy.in_flight() == 0).await);
}

#[tokio::test]
async fn websocket_traffic_counts_as_activity() {
    let (_up, hub) = setup().await;
    let (mut ws, _) = connect_async(hub.ws_url("/user/alice/ws")).await.unwrap();
    hub.table.take_activity();
    hub.clock.advance(time::Duration::minutes(10));
    ws.send(Message::text("x")).await.unwrap();
    ws.next().await.unwrap().unwrap();
    let activity = hub.table.take_activity();
    assert_eq!(activity, vec![(key("alice", None), time::macros::datetime!(2026-01-01 0:10 UTC))]);
}
