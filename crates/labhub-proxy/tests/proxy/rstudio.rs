//! RStudio routes: prefix stripped, `X-RStudio-Root-Path` sent, redirects kept under the prefix.

use futures::{SinkExt, StreamExt};
use labhub_core::ImageKind;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[tokio::test]
async fn the_prefix_is_stripped_and_sent_as_the_root_path() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", Some("rs"), up.addr, ImageKind::Rstudio);
    let c = client();

    let text =
        c.get(hub.url("/user/alice/rs/rpc/echo?x=%2F&token=HUBTOKEN")).send().await.unwrap().text().await.unwrap();
    let (line, h) = parse_dump(&text);
    assert_eq!(line, "GET /rpc/echo?x=%2F");
    assert_eq!(header_values(&h, "x-rstudio-root-path"), ["/user/alice/rs"]);
    assert_eq!(header_values(&h, "x-forwarded-host"), [hub.addr.to_string().as_str()]);
    assert_eq!(header_values(&h, "authorization"), [format!("token {SERVER_TOKEN}").as_str()]);

    let text = c.get(hub.url("/user/alice/rs/")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("upstream has no"), "the root reached the server as '/': {text}");

    // WebSockets go through the same rewrite.
    let (mut ws, _) = connect_async(hub.ws_url("/user/alice/rs/events/ws")).await.unwrap();
    ws.send(Message::text("r")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("r"));
    let (mut ws, _) = connect_async(hub.ws_url("/user/alice/rs/ws-headers")).await.unwrap();
    let report = ws.next().await.unwrap().unwrap().into_text().unwrap().to_string();
    let (line, h) = parse_dump(&report);
    assert_eq!(line, "GET /ws-headers");
    assert_eq!(header_values(&h, "x-rstudio-root-path"), ["/user/alice/rs"]);
}

#[tokio::test]
async fn sign_in_redirects_stay_under_the_prefix() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Rstudio);
    let c = client();
    let own = hub.addr.to_string();
    let cases = [
        ("/auth-sign-in?appUri=%2F".to_string(), "/user/alice/auth-sign-in?appUri=%2F"),
        ("http://INTERNAL/auth-sign-in".to_string(), "/user/alice/auth-sign-in"),
        (format!("http://{own}/"), "/user/alice/"),
        ("/user/alice/".to_string(), "/user/alice/"),
        ("https://elsewhere.example/x".to_string(), "https://elsewhere.example/x"),
    ];
    for (to, want) in cases {
        let r = c.get(hub.url(&format!("/user/alice/redirect?to={}", enc(&to)))).send().await.unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], want, "{to}");
    }
}
