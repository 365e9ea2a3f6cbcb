//! Helpers for tests that reach users' servers through the hub's proxy: WebSockets, the
//! hub's session cookie, the server's own secret, gates in the test server, and guards against
//! hanging (never a measure of speed).

use std::future::Future;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use labhub_core::ImageKind;
use labhub_testkit::TestApp;
use labhub_testkit::app::script;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket client connection.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `ws://127.0.0.1:<port><path>` for an `http://` base URL.
pub(crate) fn ws_url(base: &str, path: &str) -> String {
    format!("ws{}{path}", base.strip_prefix("http").expect("an http:// URL"))
}

/// Opens a WebSocket with extra handshake headers (credentials, `Origin`); messages up to
/// 64 MiB, like the test server.
pub(crate) async fn ws_connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            http::HeaderValue::from_str(value).expect("a header value"),
        );
    }
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20)).max_frame_size(Some(64 << 20));
    tokio_tungstenite::connect_async_with_config(request, Some(config), true).await.map(|(ws, _)| ws)
}

/// The status a refused WebSocket handshake got.
pub(crate) fn refused_status(e: &WsError) -> u16 {
    match e {
        WsError::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Sends `text` and returns the echo.
pub(crate) async fn echo(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.expect("sending on the WebSocket");
    loop {
        match hang_guard("an echo", ws.next()).await {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text echo, got {other:?}"),
        }
    }
}

/// How a client's WebSocket ended.
#[derive(Debug)]
pub(crate) enum WsEnd {
    /// A close frame (with its code), then the end.
    Closed(Option<u16>),
    /// The connection ended without a close frame (reset or EOF), and how.
    Dropped(#[expect(dead_code, reason = "read through Debug, in test output")] String),
}

/// Reads until the WebSocket ends, within `within`; panics if it is still open then.
pub(crate) async fn ws_end(ws: &mut Ws, within: Duration) -> WsEnd {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the WebSocket was still open after {within:?}"),
            Ok(None) => return WsEnd::Dropped("end of stream".into()),
            Ok(Some(Err(e))) => return WsEnd::Dropped(e.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => return WsEnd::Closed(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The secret the hub sends upstream for `user`'s default server (what the server must see
/// instead of any hub credential).
pub(crate) fn server_secret(app: &TestApp, user: &str) -> String {
    let route = app.hub.routes().get(user, None).expect("the server has a route");
    route.route().token.expose().clone()
}

/// How long something the test waits for may take before the test fails as hung: a guard
/// against hanging, never a measure of speed.
pub(crate) const HANG: Duration = Duration::from_secs(60);

/// Polls `check` every 20 ms until it holds; false if it still does not after [`HANG`].
pub(crate) async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + HANG;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > give_up {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `work`'s output; fails the test, naming `what`, if it is still not done after [`HANG`].
pub(crate) async fn hang_guard<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, work).await.unwrap_or_else(|_| panic!("{what}: still waiting after {HANG:?}"))
}

/// A gate in a user's test server (`hold?gate=`, `sse?gate=`, rserver's
/// `events/get_events?gate=`): what waits there goes on one step per opening. The test reaches
/// the gate at the server's own address with the server's secret, not through the proxy under
/// test, so it can open the gate even while the proxy refuses everything else.
pub(crate) struct Gate {
    name: String,
    /// `http://<endpoint><root>gate`.
    url: String,
    secret: String,
}

impl Gate {
    /// Gate `name` in `user`'s default server (`server`: a named one), which must be running.
    pub(crate) fn new(app: &TestApp, user: &str, server: Option<&str>, name: &str) -> Self {
        let entry = app.hub.routes().get(user, server).expect("the server has a route");
        let route = entry.route();
        // rserver serves at its root; a notebook server under the hub's prefix.
        let root = if route.kind == ImageKind::Rstudio { "/" } else { route.prefix.as_str() };
        Self {
            name: name.into(),
            url: format!("http://{}{root}gate", route.endpoint),
            secret: route.token.expose().clone(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Asks the gate (`""`) or opens it (`"/open"`); how many waited there before.
    async fn call(&self, action: &str, steps: u32) -> u64 {
        let ask = script()
            .get(format!("{}{action}", self.url))
            .query(&[("name", self.name.as_str()), ("steps", &steps.to_string())])
            .header("Authorization", format!("token {}", self.secret))
            .send();
        let r = hang_guard("the test server's gate", ask).await.expect("the test server's gate answers");
        assert_eq!(r.status(), StatusCode::OK, "the gate {}", self.name);
        r.json::<Value>().await.unwrap()["waiting"].as_u64().expect("a count of waiting requests")
    }

    /// How many requests wait at the gate now.
    pub(crate) async fn waiting(&self) -> u64 {
        self.call("", 0).await
    }

    /// Waits until `n` requests wait at the gate.
    pub(crate) async fn until_waiting(&self, n: u64) {
        let give_up = Instant::now() + HANG;
        loop {
            let waiting = self.waiting().await;
            if waiting >= n {
                return;
            }
            assert!(Instant::now() < give_up, "only {waiting} of {n} requests reached the gate {}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lets `steps` more waits through.
    pub(crate) async fn open(&self, steps: u32) {
        self.call("/open", steps).await;
    }
}

/// Signs `user` in through the login form and returns the `Cookie` header value of the hub's
/// session (for raw requests that must carry it explicitly).
pub(crate) async fn session_cookie(app: &TestApp, user: &str) -> String {
    let c = script();
    let login = c.get(app.at("/hub/login")).send().await.unwrap();
    let pre: Vec<String> = set_cookies(login.headers());
    let csrf = labhub_testkit::app::csrf_of(&login.text().await.unwrap());
    let r = c
        .post(app.at("/hub/login"))
        .header("Origin", app.url.as_str())
        .header("Cookie", pre.join("; "))
        .form(&[("_csrf", csrf.as_str()), ("username", user), ("password", "correct horse"), ("next", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "signing {user} in");
    let name = &app.config.session.cookie_name;
    set_cookies(r.headers()).into_iter().find(|c| c.starts_with(&format!("{name}="))).expect("a session cookie")
}

/// The `name=value` part of every `Set-Cookie`.
fn set_cookies(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_string)
        .collect()
}
