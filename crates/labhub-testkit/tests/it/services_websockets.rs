//! WebSockets to a registered service through `/services/{name}/`: tunnelled as to users'
//! servers, opened only by those granted `access:services` on it (a browser's only from the
//! hub's own pages), and closed the moment that access ends, the session or token it was
//! opened with ends, or the service moves or goes.

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use labhub_service::Actor;
use labhub_service::roles::Assignee;
use labhub_testkit::TestApp;

use crate::proxied::{HANG, echo, refused_status, session_cookie, ws_connect, ws_end, ws_url};
use crate::services::{add_service, role, service};

/// A service on loopback whose `/services/board/ws` echoes text messages.
async fn echo_over_websockets() -> SocketAddr {
    async fn upgrade(ws: WebSocketUpgrade) -> Response {
        ws.on_upgrade(|mut socket| async move {
            while let Some(Ok(m)) = socket.recv().await {
                if let Message::Text(t) = m
                    && socket.send(Message::Text(t)).await.is_err()
                {
                    break;
                }
            }
        })
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/services/board/ws", axum::routing::get(upgrade));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_to_a_service_open_for_those_granted_access_and_close_when_it_ends() {
    let app = TestApp::spawn().await;
    // As `labhub serve` does: what Postgres announces (a session ended) is acted on.
    tokio::spawn(app.hub.clone().follow_replicas(std::future::pending()));
    for name in ["alice", "bob", "carol"] {
        app.add_user(name, "correct horse", false).await;
    }
    let (alice, bob, carol) = (app.api_for("alice").await, app.api_for("bob").await, app.api_for("carol").await);
    let first = echo_over_websockets().await;
    add_service(&app, "board", Some(&format!("http://{first}")), &[]).await;
    let roles = app.hub.roles();
    roles.put(Actor::System, &role("board-viewer"), "", &["access:services!service=board".to_string()]).await.unwrap();
    for name in ["alice", "bob"] {
        roles.assign(Actor::System, &role("board-viewer"), &Assignee::User(name.parse().unwrap()), true).await.unwrap();
    }
    let url = ws_url(&app.url, "/services/board/ws");

    let mut alice_ws = ws_connect(&url, &[("Authorization", alice.authorization())]).await.expect("alice's upgrade");
    assert_eq!(echo(&mut alice_ws, "hello").await, "hello");
    let mut bob_ws = ws_connect(&url, &[("Authorization", bob.authorization())]).await.expect("bob's upgrade");
    assert_eq!(echo(&mut bob_ws, "hi").await, "hi");
    // Without the scope: refused.
    let refused = ws_connect(&url, &[("Authorization", carol.authorization())]).await.expect_err("carol refused");
    assert_eq!(refused_status(&refused), 403);
    // A browser's handshake from another site's page is refused; from the hub's own, let in.
    let cookie = session_cookie(&app, "alice").await;
    let cookie = cookie.split(';').next().unwrap().to_string();
    let elsewhere = ws_connect(&url, &[("Cookie", &cookie), ("Origin", "http://evil.example")]).await;
    assert_eq!(refused_status(&elsewhere.expect_err("another site's page")), 403);
    let own = app.url.trim_end_matches('/').to_string();
    let mut by_cookie = ws_connect(&url, &[("Cookie", &cookie), ("Origin", &own)]).await.expect("the hub's page");
    assert_eq!(echo(&mut by_cookie, "from the hub").await, "from the hub");

    // Bob's role taken away: his WebSocket closes, alice's stays.
    roles.assign(Actor::System, &role("board-viewer"), &Assignee::User("bob".parse().unwrap()), false).await.unwrap();
    ws_end(&mut bob_ws, HANG).await;
    assert_eq!(echo(&mut alice_ws, "still here").await, "still here");
    // That browser signed out: its WebSocket closes, her token's stays.
    app.hub.sessions().end(cookie.split_once('=').expect("name=value").1).await.unwrap();
    ws_end(&mut by_cookie, HANG).await;
    assert_eq!(echo(&mut alice_ws, "signed out elsewhere").await, "signed out elsewhere");

    // The service moved: what went to the old address closes; the new one is reached.
    let second = echo_over_websockets().await;
    app.hub.services().set_url(Actor::System, &service("board"), Some(&format!("http://{second}"))).await.unwrap();
    ws_end(&mut alice_ws, HANG).await;
    let mut moved = ws_connect(&url, &[("Authorization", alice.authorization())]).await.expect("the new address");
    assert_eq!(echo(&mut moved, "moved").await, "moved");

    // Removed: it closes, and no new one opens.
    app.hub.services().remove(Actor::System, &service("board")).await.unwrap();
    ws_end(&mut moved, HANG).await;
    assert!(ws_connect(&url, &[("Authorization", alice.authorization())]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_takes_no_more_connections_than_a_server_may() {
    let app = TestApp::builder().config(|c| c.proxy.max_connections_per_server = 2).spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let alice = app.api_for("alice").await;
    let addr = echo_over_websockets().await;
    add_service(&app, "board", Some(&format!("http://{addr}")), &[]).await;
    let roles = app.hub.roles();
    roles.put(Actor::System, &role("board-viewer"), "", &["access:services!service=board".to_string()]).await.unwrap();
    roles.assign(Actor::System, &role("board-viewer"), &Assignee::User("alice".parse().unwrap()), true).await.unwrap();
    let url = ws_url(&app.url, "/services/board/ws");
    let headers = [("Authorization", alice.authorization())];
    let open = || ws_connect(&url, &headers);

    let mut first = open().await.expect("the first");
    let mut second = open().await.expect("the second");
    assert_eq!(echo(&mut second, "two").await, "two");
    // Both slots are held: a third is answered 503 at once, not queued.
    assert_eq!(refused_status(&open().await.expect_err("past the limit")), 503);
    // One closed frees its slot.
    first.close(None).await.unwrap();
    ws_end(&mut first, HANG).await;
    // Freed when the tunnel's task sees the close: asked again until then (the limit is no
    // measure of time; a generous number of tries).
    let mut tries = 0;
    let mut again = loop {
        match open().await {
            Ok(ws) => break ws,
            Err(e) => {
                assert_eq!(refused_status(&e), 503);
                tries += 1;
                assert!(tries < 200, "the slot was never freed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(echo(&mut again, "again").await, "again");
}
