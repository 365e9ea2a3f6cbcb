//! Connection and header limits: past them, an immediate answer, never a hang.

use std::time::Duration;

use labhub_core::ImageKind;
use tokio_tungstenite::connect_async;

use crate::common::*;

#[tokio::test]
async fn a_full_server_answers_busy_at_once_and_recovers() {
    let up = Upstream::start().await;
    let mut s = settings();
    s.max_connections_per_server = 2;
    let hub = Hub::start(s).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    hub.add("bob", None, up.addr, ImageKind::Jupyter);
    let route = hub.table.get("alice", None).unwrap();

    // Two requests the server holds until the test lets them go: both slots stay taken.
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let url = hub.url("/user/alice/hold");
            tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || route.in_flight() == 2).await);

    // No slot frees until the held requests are let go, below: an answer that waited for
    // one would never come (the timeout only guards against that hang).
    let busy = tokio::time::timeout(Duration::from_secs(10), client().get(hub.url("/user/alice/echo")).send());
    let r = busy.await.expect("Busy waited for a slot").unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-proxy-error"], "busy");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(route.in_flight(), 2, "the held requests were still going");
    // The limit is per server: bob is not affected.
    assert_eq!(client().get(hub.url("/user/bob/echo")).send().await.unwrap().status(), 200);

    up.release.add_permits(2);
    for p in polls {
        assert_eq!(p.await.unwrap(), 200);
    }
    assert!(eventually(Duration::from_secs(10), || route.in_flight() == 0).await);
    assert_eq!(client().get(hub.url("/user/alice/echo")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_total_limit_spans_servers_and_tunnels_hold_a_slot() {
    let up = Upstream::start().await;
    let mut s = settings();
    s.max_connections_total = 1;
    let hub = Hub::start(s).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    hub.add("bob", None, up.addr, ImageKind::Jupyter);

    let (ws, _) = connect_async(hub.ws_url("/user/alice/ws")).await.unwrap();
    let r = client().get(hub.url("/user/bob/echo")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-proxy-error"], "busy");
    // A second WebSocket is refused the same way, before any upstream handshake.
    assert!(connect_async(hub.ws_url("/user/alice/ws")).await.is_err());

    drop(ws);
    assert!(eventually(Duration::from_secs(2), || hub.proxy.in_flight() == 0).await);
    assert_eq!(client().get(hub.url("/user/bob/echo")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let up = Upstream::start().await;
    let mut s = settings();
    s.max_request_header_bytes = 8 * 1024;
    let hub = Hub::start(s).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let c = client();
    let r = c.get(hub.url("/user/alice/echo")).header("x-big", "b".repeat(9000)).send().await.unwrap();
    assert_eq!(r.status(), 431);
    let r = c.get(hub.url(&format!("/user/alice/echo?q={}", "q".repeat(9000)))).send().await.unwrap();
    assert_eq!(r.status(), 431);
    let r = c.get(hub.url("/user/alice/echo")).header("x-ok", "b".repeat(4000)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.accepted(), 1, "refused requests never reach the server");
}
