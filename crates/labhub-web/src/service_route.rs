//! `/services/{name}/…`: a registered service's web address, for those whose scopes grant
//! `access:services` on it (filtered `!service={name}`; admins hold it whole). The service's
//! URL is set by an admin only (`labhub service add --url`, `set-url`): it is an address on
//! the hub's own network, which no user may choose.
//!
//! Authenticated like the proxy to users' servers (session cookie, API token, `?token=`);
//! cookie-authenticated requests that change state, and WebSocket handshakes, must come from
//! the hub's own origin. The hub's cookies and the client's `Authorization` are not sent on
//! (the proxy's header rules). A WebSocket closes when its user loses `access:services` on
//! the service, or the service is removed or moves.

use axum::extract::{FromRequestParts, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use labhub_core::{Scope, ServiceName};
use labhub_proxy::ProxyError;
use labhub_service::roles::Resource;
use labhub_service::{AuthVia, Requester, ServiceError};

use crate::AppState;
use crate::error::json_error;
use crate::extract::{MaybeCaller, Surface, is_navigation, same_origin};
use crate::proxy_route::{client_info, ended_since, refuse};
use crate::views::login_url;

/// The route's paths (the bare prefix gets its slash from the proxy).
pub(crate) const ROUTES: [&str; 3] = ["/services/{name}", "/services/{name}/", "/services/{name}/{*rest}"];

/// Every request under `/services/{name}`.
pub(crate) async fn handle(axum::extract::State(state): axum::extract::State<AppState>, req: Request) -> Response {
    let navigation = is_navigation(&req);
    let segment = req.uri().path().trim_start_matches("/services/").split('/').next().unwrap_or_default();
    let Ok(name) = ServiceName::parse(segment) else {
        return refuse(StatusCode::NOT_FOUND, "There is no such service.", navigation, &req);
    };
    // For an upgrade, read before the credential is looked up (see `labhub_service::tunnels`).
    let changes = crate::extract::is_upgrade(&req).then(|| state.hub().tunnels().changes());
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(Surface::Proxy);
    let who = MaybeCaller::from_request_parts(&mut parts, &state).await;
    let req = Request::from_parts(parts, body);
    let who = match who {
        Ok(MaybeCaller(Some(who))) => who,
        Ok(MaybeCaller(None)) if navigation => {
            let here = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
            return Redirect::to(&login_url(Some(&here))).into_response();
        }
        Ok(MaybeCaller(None)) => {
            return json_error(StatusCode::UNAUTHORIZED, "sign in, or send an API token, to reach this service");
        }
        Err(e) => return refuse(e.status(), &e.to_string(), navigation, &req),
    };
    // The target, and for a WebSocket the caller's hold on it, come before the decision (a
    // WebSocket of someone whose access ends meanwhile closes); whether there is one is told
    // only to those let in.
    let wanted = name.clone();
    let looked_up = Box::pin(state.hub_call(|hub| async move { hub.services().route(&wanted).await })).await;
    let (user, via) = match &who {
        Requester::User(p) => (Some(p.user_id), Some(p.via)),
        Requester::Service(_) => (None, None),
    };
    let upgrade = crate::extract::is_upgrade(&req);
    let looked_up = looked_up.map(|t| {
        let watch = upgrade.then(|| t.watch_holder(user, via.and_then(|v| v.credential())));
        (t, watch)
    });
    let resource = Resource::Service(name);
    if let Err(e) = state.hub().roles().require_of(who.actor(), &[Scope::AccessServices], &resource).await {
        return refuse(StatusCode::FORBIDDEN, &e.to_string(), navigation, &req);
    }
    let by_cookie = matches!(&who, Requester::User(p) if matches!(p.via, AuthVia::Session { .. }));
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // A WebSocket's handshake is a GET, but browsers let any page open one (with the
    // hub's cookies): one from a browser must come from the hub's own pages, as a change must.
    let has_origin = req.headers().contains_key(header::ORIGIN);
    if (by_cookie && (unsafe_method || upgrade) || has_origin && upgrade) && !same_origin(req.headers(), &state) {
        let message = "This request did not come from the hub's own pages (Origin check failed).";
        return refuse(StatusCode::FORBIDDEN, message, navigation, &req);
    }
    let (target, watch) = match looked_up {
        Ok(found) => found,
        Err(ServiceError::NotFound(m)) => return refuse(StatusCode::NOT_FOUND, &m, navigation, &req),
        Err(e) => {
            return refuse(crate::AppError::from(e).status(), "the service's address is not known", navigation, &req);
        }
    };
    if let (Some(changes), Some(_), Some(via)) = (changes, &watch, via)
        && let Some((status, message)) = ended_since(&state, changes, via).await
    {
        return refuse(status, message, navigation, &req);
    }
    let client = client_info(&state, &req);
    match state.proxy().forward_service(target, req, client, watch).await {
        Ok(resp) => resp,
        Err(ProxyError::Unreachable) => json_error(StatusCode::BAD_GATEWAY, "the service is not answering"),
        Err(e) => {
            let mut resp = json_error(e.status(), &e.to_string());
            if let Some(s) = e.retry_after_secs() {
                resp.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from(s));
            }
            resp
        }
    }
}
