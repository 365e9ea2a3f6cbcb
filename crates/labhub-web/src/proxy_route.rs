//! `/user/{name}/[{server}/]…`: who may reach a user's server, and the hand-off to the proxy.
//!
//! Every request and every WebSocket upgrade is authenticated (session cookie, API token in
//! `Authorization`, or `?token=`, or the token a browser opened the server with) and must come
//! from the owner, an admin, or a visitor the owner shared the server with (the one gate,
//! `Access::may_reach`). Cookie-authenticated requests that change state, and every
//! cookie-authenticated WebSocket, must come from the hub's own origin: the proxy authenticates
//! to the server with the server's token, which makes jupyter_server skip its own XSRF check,
//! so this check takes its place.
//!
//! A person's browser opening a server with `?token=` gets the same address without it, and
//! keeps the token in a cookie for that user's servers until it closes (as JupyterHub keeps
//! it in the server's cookie): the page never holds the token in `location.search`, where the
//! server's scripts would read it.

use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use labhub_core::{Contract, ServerName, UserName};
use labhub_proxy::{ClientInfo, PathError, ProxyError, Scheme, parse_user_path, strip_token_param};
use labhub_service::{Actor, AuthVia, Need, Principal, ServerRef, ServiceError};

use crate::error::json_error;
use crate::extract::{MaybeUser, Surface, client_addr, is_navigation, is_upgrade, same_origin, token_in_query};
use crate::pages::servers::NotRunningPage;
use crate::views::{ErrorPage, Page, login_url};
use crate::{AppState, cookies};

/// What a visitor who may not reach a server is told.
const SOMEONE_ELSES: &str = "This server belongs to someone else.";

fn page_error(status: StatusCode, message: &str, req: &Request) -> Response {
    let id = req.extensions().get::<crate::middleware::RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let mut resp = ErrorPage::new(status, message.to_string(), id).into_response();
    *resp.status_mut() = status;
    resp
}

pub(crate) fn refuse(status: StatusCode, message: &str, navigation: bool, req: &Request) -> Response {
    if navigation { page_error(status, message, req) } else { json_error(status, message) }
}

/// Every request under `/user/…` (the front door sends them here): the proxied traffic.
pub(crate) async fn handle(state: AppState, req: Request) -> Response {
    let navigation = is_navigation(&req);
    let raw_path = req.uri().path().to_string();
    let user_path = match parse_user_path(&raw_path) {
        Ok(p) => p,
        Err(PathError::NotLowerCase { canonical }) if req.method() == Method::GET => {
            let target = match req.uri().query() {
                Some(q) => format!("{canonical}?{q}"),
                None => canonical,
            };
            return Redirect::permanent(&target).into_response();
        }
        Err(e) => {
            return refuse(StatusCode::BAD_REQUEST, &format!("This address is not valid: {e}."), navigation, &req);
        }
    };
    let mut req = req;
    // Looked up once: a route removed while the request is authenticated is noticed by the
    // proxy (the server's "not running" answer), as is one removed while it is forwarded.
    let route = state.hub().routes().resolve(&user_path);
    if let Some(route) = &route {
        match route.route().contract {
            Contract::Labhub => forget_server_token(&mut req, route.route().token.expose()),
            Contract::Jupyterhub => forget_single_user_tokens(&state, &mut req, route.route()).await,
        }
    }
    // For an upgrade, read before the credential is looked up (see `labhub_service::tunnels`).
    let changes = is_upgrade(&req).then(|| state.hub().tunnels().changes());
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(Surface::Proxy);
    let principal = match MaybeUser::from_request_parts(&mut parts, &state).await {
        Ok(MaybeUser(p)) => p,
        Err(e) => {
            let req = Request::from_parts(parts, body);
            return refuse(e.status(), &e.to_string(), navigation, &req);
        }
    };
    let req = Request::from_parts(parts, body);
    let Some(me) = principal else {
        if navigation {
            let here = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or(raw_path);
            return Redirect::to(&login_url(Some(&here))).into_response();
        }
        return json_error(StatusCode::UNAUTHORIZED, "sign in, or send an API token, to reach this server");
    };
    // Without a route, the "not running" answer asks the service, which checks the same gate.
    let mut holder = None;
    if let Some(r) = &route {
        // A WebSocket closes when its credential ends, and a visitor's when their share or
        // role ends. The watch is taken before the gate reads the share index, so a revoke
        // between the two still reaches the tunnel.
        let watch = is_upgrade(&req).then(|| r.watch_holder(me.user_id, me.via.credential()));
        let to = ServerRef { owner: r.route().owner, owner_name: &r.key().user, server: r.key().server.as_ref() };
        if state.hub().access().may_reach(&me, to).is_none() {
            return refuse(StatusCode::FORBIDDEN, SOMEONE_ELSES, navigation, &req);
        }
        holder = watch;
    }
    let token_in_url = req.uri().query().and_then(token_in_query).is_some();
    let token_in_header = req.headers().contains_key(header::AUTHORIZATION);
    // By a cookie: the session, or the token a browser opened the server with.
    let by_cookie = matches!(me.via, AuthVia::Session { .. }) || !(token_in_url || token_in_header);
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let has_origin = req.headers().contains_key(header::ORIGIN);
    if (by_cookie && (unsafe_method || is_upgrade(&req)) || has_origin && is_upgrade(&req))
        && !same_origin(req.headers(), &state)
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "This request did not come from the hub's own pages (Origin check failed).",
            navigation,
            &req,
        );
    }
    if let (Some(changes), Some(_)) = (changes, &holder)
        && let Some((status, message)) = ended_since(&state, changes, me.via).await
    {
        return refuse(status, message, navigation, &req);
    }
    if navigation && token_in_url && !token_in_header {
        return forget_url_token(&state, &req, &user_path.user);
    }
    let Some(route) = route else {
        let cookies = req.headers().get(header::COOKIE).cloned();
        // Rare and large (the database, a page): boxed, so every proxied request's future
        // (allocated and moved whole) stays small.
        return Box::pin(not_running(&state, me, user_path.user, user_path.server, navigation, cookies)).await;
    };
    let client = client_info(&state, &req);
    let owner = route.key().user.clone();
    let server = route.key().server.clone();
    // Kept only to render the "not running" page if the server turns out to be gone.
    let cookies = if navigation { req.headers().get(header::COOKIE).cloned() } else { None };
    match state.proxy().forward_for(route, req, client, holder).await {
        Ok(resp) => resp,
        Err(ProxyError::Unreachable) => Box::pin(not_running(&state, me, owner, server, navigation, cookies)).await,
        Err(e) => {
            let mut resp = json_error(e.status(), &e.to_string());
            if let Some(s) = e.retry_after_secs() {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            resp
        }
    }
}

/// Why an upgrade is refused whose credential ended, its watch now taken; `None` lets it on.
/// Postgres is asked only if credentials were announced ended since `changes` was read (the
/// pass that closed their WebSockets may have missed this watch); if it cannot say, the
/// upgrade is refused too (503).
pub(crate) async fn ended_since(state: &AppState, changes: u64, via: AuthVia) -> Option<(StatusCode, &'static str)> {
    if state.hub().tunnels().changes() == changes {
        return None;
    }
    let asked = state.hub_call(move |hub| async move { hub.tunnels().still_valid(via).await });
    match Box::pin(asked).await {
        Ok(true) => None,
        Ok(false) => Some((StatusCode::UNAUTHORIZED, "This sign-in has ended; sign in again.")),
        Err(e) => {
            tracing::warn!(error = %e, "could not check the credential of a WebSocket upgrade");
            Some((StatusCode::SERVICE_UNAVAILABLE, "The hub could not check this sign-in just now; try again."))
        }
    }
}

/// The answer to a navigation that a `?token=` in its address authenticated: the same address
/// without the token, and the token kept in the browser for `user`'s servers (see [the
/// module](self)).
fn forget_url_token(state: &AppState, req: &Request, user: &UserName) -> Response {
    let query = req.uri().query().unwrap_or_default();
    let token = token_in_query(query).unwrap_or_default();
    let path = req.uri().path();
    let target = match strip_token_param(query) {
        Some(kept) if !kept.is_empty() => format!("{path}?{kept}"),
        _ => path.to_string(),
    };
    let cookie = cookies::server_token(state, &format!("/user/{user}/"), &token);
    let mut resp = (CookieJar::new().add(cookie), Redirect::to(&target)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// JupyterLab reads its server's token from the page jupyter_server rendered and sends it back
/// on every API call (`Authorization: token …`) and WebSocket (`?token=…`). That is the
/// server's credential, not a hub one, so it is dropped before the hub authenticates: the
/// request is judged by its session cookie like any other browser request (and the proxy
/// sends the server's credential upstream itself). Compared by digest, never byte by byte.
fn forget_server_token(req: &mut Request, secret: &str) {
    // Hashed only when a request carries a candidate (most carry none).
    let digest = std::sync::OnceLock::new();
    let is_secret = |token: &str| {
        !token.is_empty() && labhub_auth::sha256(token) == *digest.get_or_init(|| labhub_auth::sha256(secret))
    };
    let in_header =
        req.headers().get(header::AUTHORIZATION).and_then(|v| authorization_token(v.as_bytes())).is_some_and(is_secret);
    if in_header {
        req.headers_mut().remove(header::AUTHORIZATION);
    }
    let Some(query) = req.uri().query() else { return };
    let is_secret_param = |part: &str| {
        url::form_urlencoded::parse(part.as_bytes()).next().is_some_and(|(k, v)| k == "token" && is_secret(&v))
    };
    if !query.split('&').any(is_secret_param) {
        return;
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_secret_param(p)).collect();
    let path_and_query =
        if kept.is_empty() { req.uri().path().to_string() } else { format!("{}?{}", req.uri().path(), kept.join("&")) };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// A server of JupyterHub's contract puts a token of its own (its API token, or the access
/// token its user signed in with) in JupyterLab's page, which sends it back on API calls and
/// WebSockets. Like labhub's server token, that is no hub credential: it is dropped before
/// the hub authenticates (the server itself goes by its cookie). Only tokens of this very
/// server are dropped; anything else is judged as usual.
async fn forget_single_user_tokens(state: &AppState, req: &mut Request, route: &labhub_proxy::Route) {
    let header = req.headers().get(header::AUTHORIZATION).and_then(|v| authorization_token(v.as_bytes()));
    let query = req.uri().query().and_then(crate::extract::token_in_query);
    for candidate in header.map(str::to_string).into_iter().chain(query) {
        let token = candidate.clone();
        let looked_up = state.hub_call(|hub| async move { hub.single_user().caller(&token).await });
        let caller = Box::pin(looked_up).await.ok().flatten();
        let this_server =
            labhub_service::single_user::ClientOf::Server { owner: route.owner, server: route.key.server.clone() };
        if caller.is_some_and(|c| c.client == this_server) {
            forget_server_token(req, &candidate);
        }
    }
}

/// The token of an `Authorization: token|Bearer …` value.
pub(crate) fn authorization_token(value: &[u8]) -> Option<&str> {
    let (scheme, token) = std::str::from_utf8(value).ok()?.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")).then(|| token.trim())
}

pub(crate) fn client_info(state: &AppState, req: &Request) -> ClientInfo {
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
    let scheme = if state.settings().secure_cookies() { Scheme::Https } else { Scheme::Http };
    ClientInfo {
        addr: client_addr(req.headers(), peer, state).unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
        scheme,
        host: req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| state.settings().public_url.host_str().unwrap_or_default().to_string()),
    }
}

/// No route: the server is not running. A person gets a page offering to start it; a script
/// gets a JSON 503. Asks the database, so it runs on the hub's runtime.
async fn not_running(
    state: &AppState,
    me: Principal,
    owner: UserName,
    candidate: Option<ServerName>,
    navigation: bool,
    cookies: Option<HeaderValue>,
) -> Response {
    let here = state.clone();
    let answer = async move { answer_not_running(&here, &me, &owner, candidate.as_ref(), navigation, cookies).await };
    state.on_hub(answer).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "the \"not running\" answer did not finish");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

async fn answer_not_running(
    state: &AppState,
    me: &Principal,
    owner: &UserName,
    candidate: Option<&ServerName>,
    navigation: bool,
    cookies: Option<HeaderValue>,
) -> Response {
    let someone_elses = || {
        let status = StatusCode::FORBIDDEN;
        if !navigation {
            return json_error(status, SOMEONE_ELSES);
        }
        let mut resp = ErrorPage::new(status, SOMEONE_ELSES.into(), String::new()).into_response();
        *resp.status_mut() = status;
        resp
    };
    // `/user/alice/foo/…` is about the named server `foo` only if alice has one this asker
    // may see (a visitor sees only the servers shared with them).
    let slots = match state.hub().servers().of(Actor::User(me), owner).await {
        Ok(slots) => slots,
        // An admin asking about an account that does not exist: nothing runs there.
        Err(ServiceError::NotFound(_)) if me.admin => Vec::new(),
        // Anyone else learns nothing, not even whether the account exists.
        Err(ServiceError::NotFound(_) | ServiceError::Forbidden(_)) => return someone_elses(),
        Err(e) => {
            tracing::warn!(error = %e, "could not say whether a server runs");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
    };
    let named = candidate.filter(|c| slots.iter().any(|s| s.name.as_ref() == Some(c)));
    let slot = slots.iter().find(|s| s.name.as_ref() == named);
    // A visitor of some other server of the owner's, on a path of one not shared with them.
    if slot.is_none() && !me.admin {
        return someone_elses();
    }
    let label = match named {
        Some(s) => format!("{owner}'s server {s}"),
        None => format!("{owner}'s server"),
    };
    if !navigation {
        let mut resp = json_error(StatusCode::SERVICE_UNAVAILABLE, &format!("{label} is not running"));
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    }
    let (mut parts, _) = Request::new(()).into_parts();
    if let Some(c) = cookies {
        parts.headers.insert(header::COOKIE, c);
    }
    let page = match Page::from_request_parts(&mut parts, state).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let reason = slot.and_then(|s| s.stop_reason.clone());
    // A visitor whose share grants only access is not offered a start.
    let can_start = state.hub().servers().may(Actor::User(me), owner, named, Need::Start).await.unwrap_or(false);
    let view = NotRunningPage::new(page.chrome("home"), owner, named, reason, can_start);
    page.render_status(StatusCode::SERVICE_UNAVAILABLE, view)
}
