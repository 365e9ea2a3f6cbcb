//! Extractors: who is asking (and with what right), whether a form is genuine, where a
//! request came from. A handler states the role it needs by the extractor it takes:
//! [`MaybeUser`] (anyone), [`CurrentUser`] (any signed-in user), [`AdminUser`] (admins),
//! [`Caller`] (a user or a registered service: only the scope-checked JupyterHub endpoints
//! take it; every other extractor refuses a service's token). Group leads get their own
//! checks in the service, per group.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use labhub_service::sessions::SessionHost;
use labhub_service::{Principal, Requester};
use serde::de::DeserializeOwned;

use crate::origins::{HostKind, request_host};
use crate::{AppError, AppState, cookies};

/// Which surface a request came through; set by a layer on each router. It decides which
/// credentials count: pages take the session cookie only; the API and the proxy also take
/// API tokens (`Authorization: token|Bearer …`, or `?token=`); the API, failing those, the
/// tokens of JupyterHub's single-user contract (narrowed to their scopes); the proxy, last,
/// the token a browser opened a server with (its server-token cookie). The internal address
/// users' servers call takes the single-user contract's tokens and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The hub's pages.
    Page,
    /// The REST API under `/hub/api/`.
    Api,
    /// The proxy to users' servers and services.
    Proxy,
    /// The internal address users' servers of JupyterHub's contract call.
    Internal,
}

/// The result of authenticating a request, kept so several extractors share one lookup.
#[derive(Clone)]
struct Resolved(Option<Requester>);

fn token_from_header(parts: &Parts) -> Result<Option<&str>, AppError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| AppError::BadCredentials("the Authorization header is not valid".into()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
        Ok(Some(token.trim()))
    } else {
        Err(AppError::BadCredentials("use 'Authorization: token <token>' or 'Authorization: Bearer <token>'".into()))
    }
}

/// The value of `?token=` in the query, as JupyterHub accepts it.
pub(crate) fn token_from_query(parts: &Parts) -> Option<String> {
    token_in_query(parts.uri.query()?)
}

/// The value of the `token` parameter of a query string.
pub(crate) fn token_in_query(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

/// The session cookie's value, if any, and the host it was sent to: the hub's cookie on the
/// hub's host, the user host's session on a user's own host (origin isolation).
pub(crate) fn session_cookie(headers: &HeaderMap, state: &AppState) -> Option<(String, SessionHost)> {
    let (name, host) = match state.host_kind(headers) {
        HostKind::User(_) => {
            let host = request_host(headers)?.to_ascii_lowercase();
            (state.settings().cookies.user_host_session.as_str(), SessionHost::User(host))
        }
        HostKind::Hub | HostKind::Other => (state.settings().cookies.session.as_str(), SessionHost::Hub),
    };
    Some((cookies::request_cookie(headers, name)?, host))
}

/// The user behind the server-token cookie, if it holds a live token. A revoked or expired one
/// is no credential (the browser then signs in as usual).
pub(crate) async fn server_token_principal(
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Option<Principal>, AppError> {
    match cookies::request_cookie(headers, &state.settings().cookies.server_token) {
        Some(token) => Ok(state.token_principal(token).await?),
        None => Ok(None),
    }
}

/// Whether a request is a person's browser navigating (answered with pages and redirects)
/// rather than a script, a page's own fetch or a WebSocket (answered with JSON).
pub(crate) fn is_navigation(req: &Request) -> bool {
    req.method() == Method::GET
        && !is_upgrade(req)
        && req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

/// Whether a request asks to become a WebSocket.
pub(crate) fn is_upgrade(req: &Request) -> bool {
    req.headers().get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a cookie-authenticated request comes from the pages of the host it was sent to: its
/// `Origin` (or, failing that, its `Referer`) must be that host's public origin — the hub's, or
/// with origin isolation a user's host's.
pub(crate) fn same_origin(headers: &HeaderMap, state: &AppState) -> bool {
    let expected = state.expected_origin(headers);
    if let Some(o) = headers.get(header::ORIGIN) {
        return o.as_bytes() == expected.as_bytes();
    }
    headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| url::Url::parse(r).ok())
        .is_some_and(|u| u.origin().ascii_serialization() == expected)
}

async fn resolve(parts: &mut Parts, state: &AppState) -> Result<Option<Requester>, AppError> {
    if let Some(r) = parts.extensions.get::<Resolved>() {
        return Ok(r.0.clone());
    }
    let surface = parts.extensions.get::<Surface>().copied().unwrap_or(Surface::Page);
    let token = match surface {
        Surface::Page => None,
        _ => token_from_header(parts)?.map(str::to_string).or_else(|| token_from_query(parts)),
    };
    if surface == Surface::Internal {
        let requester = match token {
            Some(token) => Some(Requester::User(state.single_user_principal(token).await?.ok_or_else(|| {
                AppError::BadCredentials("only a server's tokens are answered on this address".into())
            })?)),
            None => None,
        };
        parts.extensions.insert(Resolved(requester.clone()));
        return Ok(requester);
    }
    let mut principal = None;
    if let Some(token) = token {
        let known = match state.token_requester(token.clone()).await? {
            None if surface == Surface::Api => state.single_user_principal(token).await?.map(Requester::User),
            known => known,
        };
        match known {
            None => {
                return Err(AppError::BadCredentials("the API token is not valid: unknown, expired or revoked".into()));
            }
            Some(Requester::User(p)) => principal = Some(p),
            Some(service) => {
                parts.extensions.insert(Resolved(Some(service.clone())));
                return Ok(Some(service));
            }
        }
    }
    if principal.is_none()
        && let Some((cookie, host)) = session_cookie(&parts.headers, state)
    {
        principal = state.session_principal(cookie, host).await?;
        if principal.is_some()
            && surface == Surface::Api
            && is_unsafe(&parts.method)
            && !same_origin(&parts.headers, state)
        {
            return Err(AppError::Csrf(
                "cookie-authenticated API calls that change things must come from the hub's own pages (Origin check failed); scripts should use an API token",
            ));
        }
    }
    if principal.is_none() && surface == Surface::Proxy {
        principal = server_token_principal(&parts.headers, state).await?;
    }
    let requester = principal.map(Requester::User);
    parts.extensions.insert(Resolved(requester.clone()));
    Ok(requester)
}

/// The user behind the request, if any; a service's token is refused here, since only the
/// endpoints that take [`Caller`] serve services.
async fn resolve_user(parts: &mut Parts, state: &AppState) -> Result<Option<Principal>, AppError> {
    match resolve(parts, state).await? {
        None => Ok(None),
        Some(Requester::User(p)) => Ok(Some(p)),
        Some(Requester::Service(s)) => {
            Err(AppError::Forbidden(format!("{} is a service; this endpoint serves users only", s.name)))
        }
    }
}

/// Anyone: the signed-in user if there is one.
pub struct MaybeUser(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        resolve_user(parts, state).await.map(MaybeUser)
    }
}

/// Any signed-in, active user.
pub struct CurrentUser(pub Principal);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        resolve_user(parts, state).await?.map(CurrentUser).ok_or(AppError::LoginRequired)
    }
}

impl OptionalFromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        Ok(resolve_user(parts, state).await?.map(CurrentUser))
    }
}

/// An admin.
pub struct AdminUser(pub Principal);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let p = resolve_user(parts, state).await?.ok_or(AppError::LoginRequired)?;
        if p.admin { Ok(AdminUser(p)) } else { Err(AppError::Forbidden("this needs an admin".into())) }
    }
}

/// Whoever holds a credential, a user or a registered service: for the JupyterHub endpoints
/// that scopes alone decide (the API's gate checked them before the handler runs).
pub struct Caller(pub Requester);

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        resolve(parts, state).await?.map(Caller).ok_or(AppError::LoginRequired)
    }
}

/// [`Caller`] when there is one.
pub struct MaybeCaller(pub Option<Requester>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        resolve(parts, state).await.map(MaybeCaller)
    }
}

/// Where a request came from: the peer address, or the first `X-Forwarded-For` entry when the
/// hub is configured to trust its reverse proxy.
pub struct ClientAddr(pub String);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        Ok(ClientAddr(client_addr(&parts.headers, peer, state).map_or_else(|| "unknown".into(), |a| a.to_string())))
    }
}

/// The client's address: the peer, or the first `X-Forwarded-For` entry when trusted.
pub(crate) fn client_addr(headers: &HeaderMap, peer: Option<SocketAddr>, state: &AppState) -> Option<std::net::IpAddr> {
    client_addr_from(headers.get("x-forwarded-for").map(|v| v.as_bytes()), peer, state)
}

/// [`client_addr`] from the first `X-Forwarded-For` value, as sent.
pub(crate) fn client_addr_from(
    forwarded_for: Option<&[u8]>,
    peer: Option<SocketAddr>,
    state: &AppState,
) -> Option<std::net::IpAddr> {
    if state.settings().trust_forwarded_for {
        let forwarded = forwarded_for
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.split(',').next())
            .and_then(|s| s.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    peer.map(|p| p.ip())
}

/// What a browser's CSRF tokens are bound to: its session, or before sign-in its pre-login cookie.
pub(crate) fn csrf_binding(parts: &Parts, state: &AppState) -> Option<Vec<u8>> {
    if let Some((s, _)) = session_cookie(&parts.headers, state) {
        return Some(labhub_auth::sha256(&s).to_vec());
    }
    cookies::request_cookie(&parts.headers, &state.settings().cookies.login_csrf)
        .map(String::into_bytes)
        .filter(|v| v.len() >= 32)
}

const EXPIRED: &str = "This form has expired or did not come from this hub. Go back, reload the page and try again.";

/// A form whose `_csrf` field matched the browser it came from. Every state-changing page
/// handler takes its input through this extractor, so no form can skip the check.
pub struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let binding = csrf_binding(&parts, state).ok_or(AppError::Csrf(EXPIRED))?;
        let bytes =
            axum::body::to_bytes(body, state.settings().max_body_bytes).await.map_err(|_| AppError::TooLarge)?;
        let token = url::form_urlencoded::parse(&bytes).find(|(k, _)| k == "_csrf").map(|(_, v)| v.into_owned());
        if !token.is_some_and(|t| state.csrf().verify(&binding, &t)) {
            return Err(AppError::Csrf(EXPIRED));
        }
        serde_urlencoded::from_bytes(&bytes)
            .map(CsrfForm)
            .map_err(|e| AppError::BadRequest(format!("The form is not valid: {e}.")))
    }
}

/// How much of a refused upload is read and dropped before the answer: a socket closed with
/// unread data resets the connection, and the browser would show that instead of the page.
/// Enough for an ordinary form; a larger or slower upload is cut off.
const DRAIN_BYTES: usize = 1 << 20;
/// How long that reading may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// `e`, once up to [`DRAIN_BYTES`] of the rest of `form` was read and dropped (never kept).
async fn refused(mut form: multer::Multipart<'static>, e: AppError) -> AppError {
    let drain = async {
        let mut read = 0;
        while let Ok(Some(mut field)) = form.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                read += chunk.len();
                if read > DRAIN_BYTES {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    e
}

/// A `multipart/form-data` form (a file upload) whose first part is `_csrf` and matched the
/// browser it came from, checked before any other part is read; the rest of the parts are
/// read as they arrive (a file is never held whole in memory). A refused form's rest is read
/// and dropped, up to [`DRAIN_BYTES`], before the refusal is answered.
pub struct CsrfMultipart(pub multer::Multipart<'static>);

impl FromRequest<AppState> for CsrfMultipart {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let binding = csrf_binding(&parts, state);
        let content_type = parts.headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let Some(boundary) = content_type.and_then(|ct| multer::parse_boundary(ct).ok()) else {
            return Err(match binding {
                None => AppError::Csrf(EXPIRED),
                Some(_) => AppError::BadRequest("The form must be sent as multipart/form-data.".into()),
            });
        };
        let limits = multer::Constraints::new().size_limit(multer::SizeLimit::new().for_field("_csrf", 1024));
        let mut form = multer::Multipart::with_constraints(body.into_data_stream(), boundary, limits);
        let Some(binding) = binding else {
            return Err(refused(form, AppError::Csrf(EXPIRED)).await);
        };
        let token = match form.next_field().await {
            Ok(Some(field)) if field.name() == Some("_csrf") => field.text().await.ok(),
            _ => None,
        };
        if !token.is_some_and(|t| state.csrf().verify(&binding, &t)) {
            return Err(refused(form, AppError::Csrf(EXPIRED)).await);
        }
        Ok(Self(form))
    }
}
