//! Routes coming and going: removal closes sockets and tunnels, stopped servers are
//! `Unreachable`, activity is counted.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use labhub_core::{ImageKind, Secret};
use labhub_proxy::Route;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[tokio::test]
async fn removing_a_route_closes_its_pooled_sockets_and_tunnels_at_once() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    let key = hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let c = client();
    // The tunnel first: an upgrade takes an idle pooled connection for itself.
    let (mut ws, _) = connect_async(hub.ws_url("/user/alice/ws")).await.unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    for _ in 0..3 {
        c.get(hub.url("/user/alice/echo")).send().await.unwrap().bytes().await.unwrap();
    }
    assert_eq!(up.open(), 2, "one idle pooled connection and one tunnel");
    assert_eq!(hub.table.open_tunnels(), 1);
    let route = hub.table.get("alice", None).unwrap();

    assert!(hub.table.remove(&key));
    assert!(eventually(Duration::from_secs(10), || up.open() == 0).await, "upstream sockets left open: {}", up.open());
    assert!(eventually(Duration::from_secs(10), || hub.table.open_tunnels() == 0).await);
    // A guard against a hang, not a measure: a tunnel left open would never end.
    let ended =
        tokio::time::timeout(Duration::from_secs(10), async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(ended.is_ok(), "the client's WebSocket stayed open");
    assert_eq!(route.in_flight(), 0);

    // A request still holding the removed entry fails cleanly.
    let r = c.get(hub.url("/user/alice/echo")).send().await.unwrap();
    assert_eq!(r.status(), 404, "no route any more");
    let stale = hub.proxy.forward(
        route,
        axum::extract::Request::new(axum::body::Body::empty()),
        labhub_proxy::ClientInfo { addr: [127, 0, 0, 1].into(), scheme: labhub_proxy::Scheme::Http, host: "h".into() },
    );
    assert_eq!(stale.await.unwrap_err(), labhub_proxy::ProxyError::Unreachable);
}

#[tokio::test]
async fn replacing_a_route_moves_traffic_and_closes_the_old_servers_sockets() {
    let old = Upstream::start().await;
    let new = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, old.addr, ImageKind::Jupyter);
    let c = client();
    let (mut ws, _) = connect_async(hub.ws_url("/user/alice/ws")).await.unwrap();
    c.get(hub.url("/user/alice/echo")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(old.open(), 2);

    // Re-inserting the same route (a reconcile pass) changes nothing.
    hub.add("alice", None, old.addr, ImageKind::Jupyter);
    assert_eq!(hub.table.open_tunnels(), 1);

    hub.add("alice", None, new.addr, ImageKind::Jupyter);
    assert!(eventually(Duration::from_secs(10), || old.open() == 0).await);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), async { while let Some(Ok(_)) = ws.next().await {} })
            .await
            .is_ok()
    );
    c.get(hub.url("/user/alice/echo")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(new.accepted(), 1);
}

// On the paused clock (tokio's, which the connect timeout runs on), so that the refusal is
// seen to come before the connect timeout, exactly.
#[tokio::test(start_paused = true)]
async fn a_server_that_is_gone_is_unreachable_not_a_bad_gateway() {
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, closed_port().await, ImageKind::Jupyter);
    let start = tokio::time::Instant::now();
    let r = client().get(hub.url("/user/alice/lab")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-proxy-error"], "unreachable");
    assert!(start.elapsed() < settings().connect_timeout, "a refused connection waited for the connect timeout");
    assert_eq!(hub.proxy.in_flight(), 0);

    // A server killed with connections pooled: the next request is answered, not hung.
    let up = Upstream::start().await;
    hub.add("bob", None, up.addr, ImageKind::Jupyter);
    client().get(hub.url("/user/bob/echo")).send().await.unwrap().bytes().await.unwrap();
    up.kill.cancel();
    assert!(eventually(Duration::from_secs(10), || up.open() == 0).await);
    let r = client().get(hub.url("/user/bob/echo")).send().await.unwrap();
    assert_eq!(r.status(), 503, "{:?}", r.headers().get("x-proxy-error"));
}

#[tokio::test]
async fn every_forwarded_request_is_activity() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    hub.add("alice", Some("gpu"), up.addr, ImageKind::Jupyter);
    hub.add("bob", None, up.addr, ImageKind::Jupyter);
    assert!(hub.table.take_activity().is_empty());
    hub.clock.advance(time::Duration::minutes(3));
    let c = client();
    c.get(hub.url("/user/alice/gpu/echo")).send().await.unwrap().bytes().await.unwrap();
    c.get(hub.url("/user/bob/echo")).send().await.unwrap().bytes().await.unwrap();
    let mut got = hub.table.take_activity();
    got.sort_by_key(|(k, _)| k.to_string());
    let at = time::macros::datetime!(2026-01-01 0:03 UTC);
    assert_eq!(got, vec![(key("alice", Some("gpu")), at), (key("bob", None), at)]);
    assert!(hub.table.take_activity().is_empty());
}

#[tokio::test]
async fn paths_are_routed_exactly_and_tricks_refused() {
    let alice = Upstream::start().await;
    let alice_gpu = Upstream::start().await;
    let alice2 = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, alice.addr, ImageKind::Jupyter);
    hub.add("alice", Some("gpu"), alice_gpu.addr, ImageKind::Jupyter);
    hub.add("alice2", None, alice2.addr, ImageKind::Jupyter);
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("/user/alice/echo", 200, Some("GET /user/alice/echo")),
        ("/user/alice/gpu/echo", 200, Some("GET /user/alice/gpu/echo")),
        ("/user/alice/lab/echo", 200, Some("GET /user/alice/lab/echo")),
        ("/user/alice2/echo", 200, Some("GET /user/alice2/echo")),
        ("/user/alice/..%2f..%2falice2/echo", 400, None),
        ("/user/alice/%2e%2e/alice2/echo", 400, None),
        ("/user/alice/../alice2/echo", 400, None),
        ("/user/alice/%2E./alice2/echo", 400, None),
        ("/user/alice\\..\\alice2/echo", 400, None),
        ("/user/alice%2falice2/echo", 400, None),
        ("/user/%61lice/echo", 400, None),
        ("/user/Alice/echo", 400, None),
        ("/user/alice./echo", 400, None),
        ("/user/alice//echo", 400, None),
        ("/user/bob/echo", 404, None),
    ];
    for (path, status, line) in cases {
        let (got, body) = raw_get(hub.addr, path).await;
        assert_eq!(got, *status, "{path}: {body}");
        if let Some(line) = line {
            assert!(body.contains(&format!("{line}\n")), "{path}: {body}");
        }
    }
    assert_eq!((alice.accepted(), alice_gpu.accepted(), alice2.accepted()), (1, 1, 1));

    // A route handed a path outside its prefix refuses it instead of forwarding.
    let route = hub.table.get("alice", None).unwrap();
    let req = axum::extract::Request::builder().uri("/user/alice2/echo").body(axum::body::Body::empty()).unwrap();
    let info =
        labhub_proxy::ClientInfo { addr: [127, 0, 0, 1].into(), scheme: labhub_proxy::Scheme::Http, host: "h".into() };
    assert!(matches!(hub.proxy.forward(route, req, info).await, Err(labhub_proxy::ProxyError::BadRequest(_))));
}

#[tokio::test]
async fn routes_with_unsendable_tokens_are_refused() {
    let hub = Hub::start(settings()).await;
    let r = Route::new(
        key("alice", None),
        labhub_core::UserId::new(1),
        closed_port().await,
        Secret::new("bad\ntoken".into()),
        ImageKind::Jupyter,
    );
    assert!(hub.table.insert(r).is_err());
    assert!(hub.table.is_empty());
}
