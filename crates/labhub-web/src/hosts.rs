//! Origin isolation (option `proxy.user_subdomains`): each user's servers are served from a
//! host of their own, `{label}.{hub host}`, so a notebook's JavaScript never shares an origin
//! with the hub's pages or with another user's servers.
//!
//! The hub's session cookie is host-only, so a user's host never receives it. A browser gets a
//! session for a user's host by a hand-off: the user's host sends it to the hub's
//! `/hub/host-login`, which (signed in, owner or admin) hands back a one-time code on the user's
//! host's `/_labhub/host-callback`, exchanged there for a host-only cookie whose session ends
//! with the hub session that made it.

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use labhub_core::UserName;
use labhub_service::Actor;
use serde::Deserialize;
use url::Url;

use crate::error::json_error;
use crate::extract::{CurrentUser, is_navigation};
use crate::origins::{HostKind, request_host, user_label};
use crate::views::safe_next;
use crate::{AppError, AppState};

/// Where a user's host exchanges a one-time code for its session.
pub const HOST_CALLBACK: &str = "/_labhub/host-callback";

/// The user a `/user/{name}/…` path names, if it does.
fn path_user(path: &str) -> Option<UserName> {
    let rest = path.strip_prefix("/user/")?;
    UserName::parse(rest.split('/').next()?).ok().filter(|u| u.as_str() == rest.split('/').next().unwrap_or(""))
}

/// Sends each request to the host it belongs on, when users have hosts of their own: `/user/…`
/// on the hub's host goes to the user's host; anything but `/user/{that user}/…` on a user's
/// host goes back to the hub's; an unauthenticated visit to a user's host signs in through the
/// hub. Does nothing when the option is off.
pub async fn route_hosts(State(state): State<AppState>, req: Request, next: Next) -> Response {
    routed_by_host(&state, req, |req| next.run(req)).await
}

/// [`route_hosts`] around `inner`, which serves the requests that belong on the host they came to.
pub(crate) async fn routed_by_host<F, Fut>(state: &AppState, req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if !state.user_subdomains() {
        return inner(req).await;
    }
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    match state.host_kind(req.headers()) {
        HostKind::Hub | HostKind::Other => {
            if let Some(user) = path_user(req.uri().path()) {
                let target = format!("{}{path_and_query}", state.user_origin(&user));
                if is_navigation(&req) {
                    return Redirect::to(&target).into_response();
                }
                return json_error(
                    StatusCode::NOT_FOUND,
                    &format!("users' servers are served from their own hosts: {target}"),
                );
            }
            inner(req).await
        }
        HostKind::User(label) => {
            let path = req.uri().path().to_string();
            if path == HOST_CALLBACK {
                return Box::pin(host_callback(state, req.headers().clone(), req.uri().clone())).await;
            }
            let Some(user) = path_user(&path).filter(|u| user_label(u) == label) else {
                if is_navigation(&req) && !path.starts_with("/user/") {
                    return Redirect::to(&format!("{}{}", state.origin(), path_and_query)).into_response();
                }
                return json_error(StatusCode::NOT_FOUND, "there is nothing at this address on this host");
            };
            if is_navigation(&req) && !Box::pin(has_credentials(state, req.headers().clone(), req.uri().query())).await
            {
                let here = format!("{}{path_and_query}", state.user_origin(&user));
                let mut login = state.settings().public_url.join("hub/host-login").expect("a fixed path");
                login.query_pairs_mut().append_pair("next", &here);
                return Redirect::to(login.as_str()).into_response();
            }
            inner(req).await
        }
    }
}

/// Whether a request on a user's host carries a token, a live session of that host, or the
/// live token the browser opened this user's servers with.
async fn has_credentials(state: &AppState, headers: HeaderMap, query: Option<&str>) -> bool {
    if headers.contains_key(header::AUTHORIZATION) || query.is_some_and(|q| q.contains("token=")) {
        return true;
    }
    if let Some((cookie, host)) = crate::extract::session_cookie(&headers, state)
        && state.session_principal(cookie, host).await.ok().flatten().is_some()
    {
        return true;
    }
    crate::extract::server_token_principal(&headers, state).await.ok().flatten().is_some()
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    next: String,
}

/// `GET /_labhub/host-callback?code=…&next=…` on a user's host: exchanges the one-time code for
/// this host's session cookie and goes on to `next`.
async fn host_callback(state: &AppState, headers: HeaderMap, uri: Uri) -> Response {
    let Ok(Query(q)) = Query::<CallbackQuery>::try_from_uri(&uri) else {
        return AppError::BadRequest("this sign-in link is malformed".into()).into_response();
    };
    let host = request_host(&headers).unwrap_or_default().to_ascii_lowercase();
    let token = match state.hub_call(|hub| async move { hub.sessions().redeem_host_code(&q.code, &host).await }).await {
        Ok(t) => t,
        Err(e) => return AppError::from(e).into_response(),
    };
    let next = if q.next.starts_with("/user/") && safe_next(&q.next) { q.next } else { "/".to_string() };
    let cookie = crate::cookies::user_host_session(state, token.expose());
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `?next=`: the user-host address to return to after the hand-off.
#[derive(Deserialize)]
pub struct HostLoginQuery {
    #[serde(default)]
    next: String,
}

/// `GET /hub/host-login?next=<a URL on a user's host>` (a signed-in browser, owner or admin of
/// that server): hands the user's host a one-time code for a session of its own.
pub async fn host_login(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Query(q): Query<HostLoginQuery>,
) -> Result<Response, AppError> {
    let bad = || AppError::BadRequest("this address does not lead to a server on this hub".into());
    if !state.user_subdomains() {
        return Err(AppError::NotFound("users' servers are not served from hosts of their own on this hub".into()));
    }
    let next = Url::parse(&q.next).map_err(|_| bad())?;
    let user = path_user(next.path()).ok_or_else(bad)?;
    let host = next.host_str().unwrap_or_default().to_ascii_lowercase();
    let origin = next.origin().ascii_serialization();
    if origin != state.user_origin(&user) {
        return Err(bad());
    }
    // The owner's host serves all their servers; the proxy asks the gate for each request,
    // so a code for it is given to whoever may reach at least one of them (their owner, an
    // admin, a visitor they were shared with).
    if me.name != user && !me.admin && state.hub().servers().of(Actor::User(&me), &user).await.is_err() {
        return Err(AppError::Forbidden("This server belongs to someone else.".into()));
    }
    let code = state.hub().sessions().host_code(&me, &host).await?;
    let mut target = Url::parse(&format!("{origin}{HOST_CALLBACK}")).map_err(|_| bad())?;
    let path_and_query = match next.query() {
        Some(q) => format!("{}?{q}", next.path()),
        None => next.path().to_string(),
    };
    target.query_pairs_mut().append_pair("code", &code).append_pair("next", &path_and_query);
    Ok(Redirect::to(target.as_str()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_dns_safe_and_distinct() {
        let label = |n: &str| user_label(&UserName::parse(n).unwrap());
        assert_eq!(label("alice"), "alice");
        assert_eq!(label("a-b"), "a-b");
        for n in ["a.b", "a_b", "a@b.c", "a--b"] {
            let l = label(n);
            assert!(l.starts_with("u--") && l.len() == 19, "{n}: {l}");
            assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
        assert_ne!(label("a.b"), label("a_b"));
        assert_eq!(path_user("/user/alice/lab").unwrap().as_str(), "alice");
        assert!(path_user("/user/Alice/lab").is_none(), "only the canonical spelling names a user");
        assert!(path_user("/hub/home").is_none());
    }
}
