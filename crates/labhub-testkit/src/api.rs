//! A typed client for the hub's REST API (`/hub/api/…`), for tests.
//!
//! Built from the hub's base URL and a credential (an API token, or a signed-in browser's
//! cookies), it has a method for each call the suite repeats, answering with test-side mirrors
//! of the API's JupyterHub-shaped models, and a raw escape hatch ([`Api::get`],
//! [`Api::post_json`], [`Api::send`], …) answering with status, headers and body for tests
//! about exact HTTP behaviour.
//!
//! The mirrors name only the fields tests read, but every one of those is required: serde would
//! take a missing `Option` field for `None`, so nullable fields go through [`nullable`], and a
//! renamed or dropped field fails the test that reads it, loudly, instead of reading as `null`.
//! Unknown fields are allowed, so adding one to the API breaks nothing here.
//!
//! Every request and every wait has a generous limit that only guards against a hang: it fails
//! with what was last seen, and no test may read it as a measure of speed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// How long one request may take before the test fails as hung.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(120);
/// How long a wait for a state (a server ready, stopped …) may take before the test fails as hung.
pub const WAIT_LIMIT: Duration = Duration::from_secs(120);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);

/// The `Accept` value that asks for JupyterHub's pagination envelope.
pub const PAGINATION: &str = "application/jupyterhub-pagination+json";

/// A field that must be present and may be `null`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

/// JupyterHub's user model.
#[derive(Debug, Clone, Deserialize)]
pub struct UserModel {
    pub kind: String,
    pub name: String,
    pub admin: bool,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// The default server's URL, once it is ready.
    #[serde(deserialize_with = "nullable")]
    pub server: Option<String>,
    /// The default server's pending action (`spawn`, `stop`).
    #[serde(deserialize_with = "nullable")]
    pub pending: Option<String>,
    pub created: String,
    #[serde(deserialize_with = "nullable")]
    pub last_activity: Option<String>,
    /// Active servers by name (`""` is the default server).
    pub servers: BTreeMap<String, ServerModel>,
    /// labhub's own: `active`, `pending` or `disabled`.
    pub account_state: String,
}

impl UserModel {
    /// The server of that name (`None`: the default server), when active.
    pub fn server(&self, server: Option<&str>) -> Option<&ServerModel> {
        self.servers.get(server.unwrap_or(""))
    }

    /// Whether the server of that name is ready.
    pub fn is_ready(&self, server: Option<&str>) -> bool {
        self.server(server).is_some_and(|s| s.ready)
    }
}

/// JupyterHub's server model.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerModel {
    pub name: String,
    pub ready: bool,
    /// `spawn` while starting, `stop` while stopping.
    #[serde(deserialize_with = "nullable")]
    pub pending: Option<String>,
    pub stopped: bool,
    pub url: String,
    pub progress_url: String,
    #[serde(deserialize_with = "nullable")]
    pub started: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub last_activity: Option<String>,
    pub state: Value,
    pub user_options: Value,
    /// labhub's own: the image reference and the content id it really runs.
    #[serde(deserialize_with = "nullable")]
    pub image: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub image_digest: Option<String>,
    /// labhub's own: why it last stopped.
    #[serde(deserialize_with = "nullable")]
    pub stop_reason: Option<String>,
}

/// JupyterHub's token model.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenModel {
    /// `a<number>`, as JupyterHub writes them.
    pub id: String,
    pub kind: String,
    pub user: String,
    pub note: String,
    pub created: String,
    #[serde(deserialize_with = "nullable")]
    pub expires_at: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub last_activity: Option<String>,
    pub prefix: String,
    pub scopes: Vec<String>,
    /// The token itself: only in the answer that creates it.
    #[serde(default)]
    pub token: Option<String>,
}

/// JupyterHub's group model, with labhub's leads and quota.
#[derive(Debug, Clone, Deserialize)]
pub struct GroupModel {
    pub kind: String,
    pub name: String,
    /// Members, leads first.
    pub users: Vec<String>,
    pub roles: Vec<Value>,
    pub properties: Value,
    pub leads: Vec<String>,
    /// The limits, with `ceiling` inside.
    pub quota: Value,
}

/// A catalogue entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageModel {
    pub name: String,
    pub display_name: String,
    pub reference: String,
    pub kind: String,
    pub port: u16,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub enabled: bool,
}

/// One server-sent event of a start's progress.
#[derive(Debug, Clone, Deserialize)]
pub struct ProgressEvent {
    /// 0 to 100.
    pub progress: u8,
    pub message: String,
    /// Only on the last event of a success (the hub leaves it out otherwise).
    #[serde(default)]
    pub ready: bool,
    /// Only on the last event of a failure.
    #[serde(default)]
    pub failed: bool,
    /// Only on the last event of a success.
    #[serde(default)]
    pub url: Option<String>,
}

/// JupyterHub's pagination envelope.
#[derive(Debug, Clone, Deserialize)]
pub struct Paginated<T> {
    pub items: Vec<T>,
    #[serde(rename = "_pagination")]
    pub pagination: Pagination,
}

/// Where a page is in the whole.
#[derive(Debug, Clone, Deserialize)]
pub struct Pagination {
    pub offset: u64,
    pub limit: u64,
    pub total: u64,
    #[serde(deserialize_with = "nullable")]
    pub next: Option<NextPage>,
}

/// The next page.
#[derive(Debug, Clone, Deserialize)]
pub struct NextPage {
    pub offset: u64,
    pub limit: u64,
    pub url: String,
}

/// An API error as the hub answers it: `{"status": N, "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    status: u16,
    message: String,
}

/// One whole answer: status, headers, body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.text())
    }
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as `T`; fails the test, with the answer, when it is not.
    #[track_caller]
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the answer is not the expected JSON ({e}): {self:?}"))
    }

    /// The body as any JSON.
    #[track_caller]
    pub fn value(&self) -> Value {
        self.json()
    }

    /// The value of a header, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error this answer is; fails the test when it is a success or not in the hub's
    /// error shape (whose `status` must be the HTTP status).
    #[track_caller]
    pub fn error(&self) -> ApiError {
        assert!(!self.status.is_success(), "expected an error, got {self:?}");
        let body: ErrorBody = self.json();
        assert_eq!(body.status, self.status.as_u16(), "the error body's status: {self:?}");
        ApiError { status: self.status, message: body.message }
    }

    /// The error's message, for assertions.
    #[track_caller]
    pub fn message(&self) -> String {
        self.error().message
    }

    /// `T` with the status when the status is a success, the error otherwise.
    #[track_caller]
    fn result<T: DeserializeOwned>(&self) -> Result<(StatusCode, T), ApiError> {
        if self.status.is_success() { Ok((self.status, self.json())) } else { Err(self.error()) }
    }

    /// The status when it is a success (an empty answer), the error otherwise.
    #[track_caller]
    fn done(&self) -> Result<StatusCode, ApiError> {
        if self.status.is_success() { Ok(self.status) } else { Err(self.error()) }
    }

    /// `T`, after checking that the status is 200.
    #[track_caller]
    fn ok<T: DeserializeOwned>(&self) -> T {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        self.json()
    }
}

/// The API path of a user's server: the default one, or a named one.
pub fn server_path(user: &str, server: Option<&str>) -> String {
    match server {
        None => format!("/hub/api/users/{user}/server"),
        Some(s) => format!("/hub/api/users/{user}/servers/{s}"),
    }
}

/// A client of the hub's API with one credential.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: Client,
    authorization: Option<String>,
    origin: Option<String>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Api {
    /// A client of the hub at `base_url` (no trailing slash) with an API token, given bare or
    /// as the header's value (`token …`, `Bearer …`).
    pub fn new(base_url: &str, token: &str) -> Self {
        let authorization = if token.starts_with("token ") || token.starts_with("Bearer ") {
            token.into()
        } else {
            format!("token {token}")
        };
        Self { authorization: Some(authorization), ..Self::anonymous(base_url) }
    }

    /// A client with an API token that sends through `client` (one that resolves a test host
    /// name, say).
    pub fn with_client(base_url: &str, client: &Client, token: &str) -> Self {
        Self { client: client.clone(), ..Self::new(base_url, token) }
    }

    /// A client with no credential.
    pub fn anonymous(base_url: &str) -> Self {
        Self {
            base: base_url.trim_end_matches('/').into(),
            client: crate::http::script(),
            authorization: None,
            origin: None,
        }
    }

    /// A client that is a signed-in browser: its cookies, and the hub's own `Origin` on every
    /// request (cookie-authenticated writes need it).
    pub fn session(base_url: &str, browser: &Client) -> Self {
        let base = base_url.trim_end_matches('/').to_string();
        Self { origin: Some(base.clone()), base, client: browser.clone(), authorization: None }
    }

    /// The `Authorization` header value this client sends, for raw requests elsewhere (the
    /// proxy).
    pub fn authorization(&self) -> &str {
        self.authorization.as_deref().expect("a client with an API token")
    }

    /// The token alone.
    pub fn token(&self) -> &str {
        let a = self.authorization();
        a.split_once(' ').map_or(a, |(_, t)| t)
    }

    /// The absolute URL of a path on the hub.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.into()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// A request with this client's credential, for a test to add to and send itself.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self.client.request(method, self.url(path));
        if let Some(a) = &self.authorization {
            r = r.header("Authorization", a);
        }
        if let Some(o) = &self.origin {
            r = r.header("Origin", o);
        }
        r
    }

    /// Sends a request and reads the whole answer.
    pub async fn answer(&self, request: RequestBuilder) -> Answer {
        let what = format!("{request:?}");
        let go = async {
            let r = request.send().await.unwrap_or_else(|e| panic!("sending {what}: {e}"));
            let (status, headers) = (r.status(), r.headers().clone());
            let body = r.bytes().await.unwrap_or_else(|e| panic!("reading the answer to {what}: {e}"));
            Answer { status, headers, body }
        };
        tokio::time::timeout(REQUEST_LIMIT, go)
            .await
            .unwrap_or_else(|_| panic!("no answer to {what} in {REQUEST_LIMIT:?}"))
    }

    /// `method path`, with a JSON body when there is one.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r.json(b);
        }
        self.answer(r).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    /// `GET path`, asking for JupyterHub's pagination envelope.
    pub async fn get_paginated(&self, path: &str) -> Answer {
        self.answer(self.request(Method::GET, path).header("Accept", PAGINATION)).await
    }

    /// `POST path` without a body.
    pub async fn post(&self, path: &str) -> Answer {
        self.send(Method::POST, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch_json(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// `DELETE path` without a body.
    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }

    /// `DELETE path` with a JSON body.
    pub async fn delete_json(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::DELETE, path, Some(body)).await
    }

    // -----------------------------------------------------------------------------------------
    // Users.

    /// `GET /hub/api/user`: who this client is.
    pub async fn me(&self) -> UserModel {
        self.get("/hub/api/user").await.ok()
    }

    /// A user's model (which must be readable).
    pub async fn user(&self, name: &str) -> UserModel {
        self.get(&format!("/hub/api/users/{name}")).await.ok()
    }

    /// `GET /hub/api/users?query` (`state=ready`, `name_filter=u&sort=-name` …; empty for all).
    pub async fn users(&self, query: &str) -> Vec<UserModel> {
        let path = if query.is_empty() { "/hub/api/users".to_string() } else { format!("/hub/api/users?{query}") };
        self.get(&path).await.ok()
    }

    /// The names of the users `GET /hub/api/users?query` lists.
    pub async fn user_names(&self, query: &str) -> Vec<String> {
        self.users(query).await.into_iter().map(|u| u.name).collect()
    }

    // -----------------------------------------------------------------------------------------
    // Servers.

    /// Starts a user's server (`None`: the default one) with a start body (`None`: no body at
    /// all): the status (201 ready, 202 starting) and the server model, or the refusal.
    pub async fn start(
        &self,
        user: &str,
        server: Option<&str>,
        body: impl Into<Option<Value>>,
    ) -> Result<(StatusCode, ServerModel), ApiError> {
        let body = body.into();
        self.send(Method::POST, &server_path(user, server), body.as_ref()).await.result()
    }

    /// Stops a user's server: 204 stopped, 202 stopping, or the refusal.
    pub async fn stop(&self, user: &str, server: Option<&str>) -> Result<StatusCode, ApiError> {
        self.delete(&server_path(user, server)).await.done()
    }

    /// Stops a named server and forgets it (`{"remove": true}`, as JupyterHub's idle culler does).
    pub async fn remove(&self, user: &str, server: &str) -> Result<StatusCode, ApiError> {
        self.delete_json(&server_path(user, Some(server)), &serde_json::json!({"remove": true})).await.done()
    }

    /// Polls the user's model until `check` holds; fails with the last model after [`WAIT_LIMIT`].
    pub async fn wait_until(&self, user: &str, what: &str, check: impl Fn(&UserModel) -> bool) -> UserModel {
        let give_up = Instant::now() + WAIT_LIMIT;
        loop {
            let model = self.user(user).await;
            if check(&model) {
                return model;
            }
            assert!(
                Instant::now() < give_up,
                "{user}: {what} never happened in {WAIT_LIMIT:?}; last model: {model:#?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the server is ready; its model.
    pub async fn wait_ready(&self, user: &str, server: Option<&str>) -> ServerModel {
        let what = format!("server {:?} ready", server.unwrap_or(""));
        let model = self.wait_until(user, &what, |u| u.is_ready(server)).await;
        model.server(server).cloned().expect("a ready server")
    }

    /// Waits until the server is no longer active (the model lists only active servers).
    pub async fn wait_stopped(&self, user: &str, server: Option<&str>) -> UserModel {
        let what = format!("server {:?} stopped", server.unwrap_or(""));
        self.wait_until(user, &what, |u| u.server(server).is_none()).await
    }

    /// A start's progress: every server-sent event until the hub ends the stream. Fails unless
    /// the answer is a 200 `text/event-stream`.
    pub async fn progress(&self, user: &str, server: Option<&str>) -> Vec<ProgressEvent> {
        let path = format!("{}/progress", server_path(user, server));
        let read = async {
            let r = self.request(Method::GET, &path).send().await.expect("the progress request");
            assert_eq!(r.status(), StatusCode::OK, "progress of {path}");
            let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            assert_eq!(kind, "text/event-stream", "progress of {path}");
            let mut text = String::new();
            let mut body = r.bytes_stream();
            while let Some(chunk) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.expect("the event stream goes on")));
            }
            text
        };
        let text = tokio::time::timeout(WAIT_LIMIT, read)
            .await
            .unwrap_or_else(|_| panic!("the progress of {path} did not end in {WAIT_LIMIT:?}"));
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("a progress event ({e}): {d}")))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Tokens, groups, images.

    /// A user's API tokens.
    pub async fn tokens(&self, user: &str) -> Vec<TokenModel> {
        #[derive(Deserialize)]
        struct List {
            api_tokens: Vec<TokenModel>,
        }
        self.get(&format!("/hub/api/users/{user}/tokens")).await.ok::<List>().api_tokens
    }

    /// Creates a token for a user (`{"note": …, "expires_in": …}`); its model, with the token.
    pub async fn create_token(&self, user: &str, body: Value) -> Result<TokenModel, ApiError> {
        self.post_json(&format!("/hub/api/users/{user}/tokens"), &body).await.result().map(|(_, t)| t)
    }

    /// Revokes a token by its id.
    pub async fn revoke_token(&self, user: &str, id: &str) -> Result<StatusCode, ApiError> {
        self.delete(&format!("/hub/api/users/{user}/tokens/{id}")).await.done()
    }

    /// The groups this client may see.
    pub async fn groups(&self) -> Vec<GroupModel> {
        self.get("/hub/api/groups").await.ok()
    }

    /// One group, or the refusal.
    pub async fn group(&self, name: &str) -> Result<GroupModel, ApiError> {
        self.get(&format!("/hub/api/groups/{name}")).await.result().map(|(_, g)| g)
    }

    /// The catalogue as this client sees it.
    pub async fn images(&self) -> Vec<ImageModel> {
        self.get("/hub/api/images").await.ok()
    }

    /// Adds a catalogue entry (`{"name": …, "display_name": …, "reference": …, …}`).
    pub async fn add_image(&self, body: Value) -> Result<ImageModel, ApiError> {
        self.post_json("/hub/api/images", &body).await.result().map(|(_, i)| i)
    }
}
