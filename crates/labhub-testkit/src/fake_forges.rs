//! Fakes of GitHub and GitLab for tests: small axum servers on 127.0.0.1:0 that serve the
//! OAuth2 endpoints (authorize approves at once; the token endpoint checks the client, the
//! redirect URI and the PKCE verifier, and takes each code once) and the documented JSON of
//! the user, email, org, team and group endpoints. They are fakes, named as such: the real
//! OpenID Connect provider in the suite is [`crate::oidc::MockProvider`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A person as a fake forge knows them.
#[derive(Debug, Clone)]
pub struct ForgeUser {
    /// The numeric id (the identity's subject).
    pub id: u64,
    /// GitHub `login` / GitLab `username`.
    pub login: String,
    /// The primary email address.
    pub email: String,
    /// Whether it is verified (GitHub `verified`, GitLab `confirmed_at`).
    pub email_verified: bool,
    /// GitHub organizations, or GitLab group full paths.
    pub groups: Vec<String>,
    /// GitHub teams as (organization, team slug).
    pub teams: Vec<(String, String)>,
}

impl ForgeUser {
    /// A person with a verified address and no groups.
    pub fn new(id: u64, login: &str) -> Self {
        Self {
            id,
            login: login.into(),
            email: format!("{}@example.org", login.to_lowercase()),
            email_verified: true,
            groups: Vec::new(),
            teams: Vec::new(),
        }
    }
}

struct Grant {
    user: ForgeUser,
    challenge: String,
    redirect_uri: String,
}

struct Forge {
    client_id: String,
    client_secret: String,
    user: Mutex<ForgeUser>,
    codes: Mutex<HashMap<String, Grant>>,
    tokens: Mutex<HashMap<String, ForgeUser>>,
}

impl Forge {
    fn new(client_id: &str, client_secret: &str, user: ForgeUser) -> Arc<Self> {
        Arc::new(Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            user: Mutex::new(user),
            codes: Mutex::default(),
            tokens: Mutex::default(),
        })
    }

    /// The person a bearer token was issued to.
    fn bearer(&self, headers: &HeaderMap) -> Option<ForgeUser> {
        let token = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?;
        self.tokens.lock().unwrap().get(token).cloned()
    }

    fn issued_tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().keys().cloned().collect()
    }
}

/// Unpadded base64url (RFC 4648 §5), as PKCE writes its S256 challenge.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    client_id: String,
    redirect_uri: String,
    state: String,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
}

/// The authorize endpoint: the person is signed in there and approved the app long ago.
async fn authorize(State(forge): State<Arc<Forge>>, Query(q): Query<AuthorizeQuery>) -> Response {
    if q.client_id != forge.client_id || q.code_challenge_method != "S256" || q.code_challenge.is_empty() {
        return (StatusCode::BAD_REQUEST, "unknown client or no S256 PKCE challenge").into_response();
    }
    let code = random_hex();
    let user = forge.user.lock().unwrap().clone();
    forge
        .codes
        .lock()
        .unwrap()
        .insert(code.clone(), Grant { user, challenge: q.code_challenge, redirect_uri: q.redirect_uri.clone() });
    let mut to = reqwest::Url::parse(&q.redirect_uri).expect("a redirect URI");
    to.query_pairs_mut().append_pair("code", &code).append_pair("state", &q.state);
    Redirect::to(to.as_str()).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    client_id: String,
    client_secret: String,
    code: String,
    redirect_uri: String,
    code_verifier: String,
}

/// Checks a token request and spends its code; the access token on success.
fn redeem(forge: &Forge, f: &TokenForm) -> Option<String> {
    let grant = forge.codes.lock().unwrap().remove(&f.code)?;
    let pkce_ok = base64url(&Sha256::digest(f.code_verifier.as_bytes())) == grant.challenge;
    let client_ok = f.client_id == forge.client_id && f.client_secret == forge.client_secret;
    if !(pkce_ok && client_ok && f.redirect_uri == grant.redirect_uri) {
        return None;
    }
    let token = random_hex();
    forge.tokens.lock().unwrap().insert(token.clone(), grant.user);
    Some(token)
}

/// GitHub's token endpoint. A bad code is answered with status 200 and an `error` field, as
/// GitHub documents it.
async fn github_token(State(forge): State<Arc<Forge>>, Form(f): Form<TokenForm>) -> Json<Value> {
    Json(match redeem(&forge, &f) {
        Some(token) => json!({ "access_token": token, "token_type": "bearer", "scope": "read:user,user:email" }),
        None => json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired.",
            "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code"
        }),
    })
}

/// GitLab's token endpoint (Doorkeeper): RFC 6749 errors with status 400.
async fn gitlab_token(State(forge): State<Arc<Forge>>, Form(f): Form<TokenForm>) -> Response {
    match redeem(&forge, &f) {
        Some(token) => Json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 7200,
            "refresh_token": random_hex(),
            "scope": "read_user",
            "created_at": 1_700_000_000
        }))
        .into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "invalid_grant",
                "error_description": "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."
            })),
        )
            .into_response(),
    }
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({ "message": "Bad credentials" }))).into_response()
}

async fn github_user(State(forge): State<Arc<Forge>>, headers: HeaderMap) -> Response {
    let Some(u) = forge.bearer(&headers) else { return unauthorized() };
    Json(json!({
        "login": u.login,
        "id": u.id,
        "node_id": format!("U_{}", u.id),
        "type": "User",
        "name": u.login,
        "email": null
    }))
    .into_response()
}

async fn github_emails(State(forge): State<Arc<Forge>>, headers: HeaderMap) -> Response {
    let Some(u) = forge.bearer(&headers) else { return unauthorized() };
    Json(json!([
        { "email": format!("{}@users.noreply.github.com", u.id), "primary": false, "verified": true, "visibility": null },
        { "email": u.email, "primary": true, "verified": u.email_verified, "visibility": "private" }
    ]))
    .into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: Option<usize>,
}

/// GitHub's organizations, one per page, so the hub must follow the `Link` header.
async fn github_orgs(State(forge): State<Arc<Forge>>, headers: HeaderMap, Query(q): Query<PageQuery>) -> Response {
    let Some(u) = forge.bearer(&headers) else { return unauthorized() };
    let page = q.page.unwrap_or(1).max(1);
    let body: Vec<Value> = u.groups.get(page - 1).map(|o| json!({ "login": o, "id": page })).into_iter().collect();
    let mut resp = Json(body).into_response();
    if page < u.groups.len() {
        let next = format!("</api/user/orgs?per_page=1&page={}>; rel=\"next\"", page + 1);
        resp.headers_mut().insert(header::LINK, next.parse().expect("a header value"));
    }
    resp
}

async fn github_teams(State(forge): State<Arc<Forge>>, headers: HeaderMap) -> Response {
    let Some(u) = forge.bearer(&headers) else { return unauthorized() };
    let teams: Vec<Value> = u
        .teams
        .iter()
        .map(|(org, slug)| json!({ "slug": slug, "name": slug, "organization": { "login": org } }))
        .collect();
    Json(teams).into_response()
}

async fn gitlab_user(State(forge): State<Arc<Forge>>, headers: HeaderMap) -> Response {
    let Some(u) = forge.bearer(&headers) else { return unauthorized() };
    Json(json!({
        "id": u.id,
        "username": u.login,
        "name": u.login,
        "state": "active",
        "email": u.email,
        "confirmed_at": if u.email_verified { json!("2024-05-23T09:05:22.000Z") } else { Value::Null }
    }))
    .into_response()
}

#[derive(Deserialize)]
struct GroupsQuery {
    #[serde(default)]
    min_access_level: Option<u32>,
}

async fn gitlab_groups(State(forge): State<Arc<Forge>>, headers: HeaderMap, Query(q): Query<GroupsQuery>) -> Response {
    let Some(u) = forge.bearer(&headers) else { return unauthorized() };
    if q.min_access_level.is_none() {
        // Without it GitLab lists every group the person can see, not the ones they belong to.
        return Json(json!([{ "id": 999, "name": "public", "path": "public", "full_path": "everyone/public" }]))
            .into_response();
    }
    let groups: Vec<Value> = u
        .groups
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let leaf = path.rsplit('/').next().unwrap_or(path);
            json!({ "id": i + 1, "name": leaf, "path": leaf, "full_path": path })
        })
        .collect();
    Json(groups).into_response()
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

/// A fake GitHub: `base_url()` for the OAuth2 endpoints, `api_url()` for the REST API.
pub struct FakeGitHub {
    url: String,
    forge: Arc<Forge>,
}

impl FakeGitHub {
    /// Starts one that knows one app (`client_id`, `client_secret`) and signs `user` in.
    pub async fn start(client_id: &str, client_secret: &str, user: ForgeUser) -> Self {
        let forge = Forge::new(client_id, client_secret, user);
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(github_token))
            .route("/api/user", get(github_user))
            .route("/api/user/emails", get(github_emails))
            .route("/api/user/orgs", get(github_orgs))
            .route("/api/user/teams", get(github_teams))
            .with_state(forge.clone());
        Self { url: serve(app).await, forge }
    }

    /// `[[auth.providers]] base_url`.
    pub fn base_url(&self) -> String {
        self.url.clone()
    }

    /// `[[auth.providers]] api_url`.
    pub fn api_url(&self) -> String {
        format!("{}api/", self.url)
    }

    /// Signs someone else in from now on.
    pub fn set_user(&self, user: ForgeUser) {
        *self.forge.user.lock().unwrap() = user;
    }

    /// Every access token it has issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.forge.issued_tokens()
    }
}

/// A fake GitLab: `base_url()` for the OAuth2 endpoints; the API is at `api/v4/` below it.
pub struct FakeGitLab {
    url: String,
    forge: Arc<Forge>,
}

impl FakeGitLab {
    /// Starts one that knows one app (`client_id`, `client_secret`) and signs `user` in.
    pub async fn start(client_id: &str, client_secret: &str, user: ForgeUser) -> Self {
        let forge = Forge::new(client_id, client_secret, user);
        let app = Router::new()
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(gitlab_token))
            .route("/api/v4/user", get(gitlab_user))
            .route("/api/v4/groups", get(gitlab_groups))
            .with_state(forge.clone());
        Self { url: serve(app).await, forge }
    }

    /// `[[auth.providers]] base_url`.
    pub fn base_url(&self) -> String {
        self.url.clone()
    }

    /// Signs someone else in from now on.
    pub fn set_user(&self, user: ForgeUser) {
        *self.forge.user.lock().unwrap() = user;
    }

    /// Every access token it has issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.forge.issued_tokens()
    }
}

#[cfg(test)]
mod tests {
    use super::base64url;

    #[test]
    fn base64url_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = base64url(&<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }
}
