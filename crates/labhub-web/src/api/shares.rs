//! JupyterHub 5's sharing API: `/hub/api/shares/{owner}[/{server}]`,
//! `/hub/api/users/{name}/shared[/{owner}/{server}]`, `/hub/api/groups/{name}/shared[…]` and
//! `/hub/api/share-codes/{owner}[/{server}]`. The default server's name is empty
//! (`/hub/api/shares/alice/`); without a server segment only `GET` is allowed (all of the
//! owner's). Lists always answer with JupyterHub's pagination envelope, as JupyterHub does.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use labhub_core::{GroupName, ServerName, UserName};
use labhub_service::Actor;
use labhub_service::shares::{CodeChoice, OwnerServers, ShareCodeView, ShareView, ShareWith};
use serde::Deserialize;
use serde_json::{Value, json};

use super::models::iso;
use super::{ApiJson, Page, envelope, offset_limit};
use crate::extract::CurrentUser;
use crate::{AppError, AppState};

type Params = HashMap<String, String>;

/// A path parameter the route always has.
fn param<'a>(p: &'a Params, key: &str) -> &'a str {
    p.get(key).map_or("", String::as_str)
}

fn user_name(raw: &str) -> Result<UserName, AppError> {
    UserName::parse(raw).map_err(|_| AppError::NotFound(format!("No such user: {raw}")))
}

fn group_name(raw: &str) -> Result<GroupName, AppError> {
    GroupName::parse(raw).map_err(|_| AppError::NotFound(format!("No such group: {raw}")))
}

/// The owner and server a path names: `{owner}` and `{server}` (absent for the default server).
fn owner_server(p: &Params) -> Result<(UserName, Option<ServerName>), AppError> {
    let owner = user_name(param(p, "owner"))?;
    let server = match p.get("server") {
        None => None,
        Some(raw) => {
            Some(ServerName::parse(raw).map_err(|_| AppError::NotFound(format!("No such server: {owner}/{raw}")))?)
        }
    };
    Ok((owner, server))
}

/// The share's server, as JupyterHub shows it in sharing models.
fn server_model(state: &AppState, owner: &UserName, server: Option<&ServerName>, url: &str, ready: bool) -> Value {
    let full_url = state.settings().public_url.join(url.trim_start_matches('/')).ok().map(|u| u.to_string());
    json!({
        "user": { "name": owner.as_str() },
        "name": server.map_or("", ServerName::as_str),
        "url": url,
        "full_url": full_url,
        "ready": ready,
    })
}

/// JupyterHub's share model.
pub(crate) fn share_model(state: &AppState, s: &ShareView) -> Value {
    let (user, group, kind) = match &s.with {
        ShareWith::User(u) => (json!({ "name": u.as_str() }), Value::Null, "user"),
        ShareWith::Group(g) => (Value::Null, json!({ "name": g.as_str() }), "group"),
    };
    json!({
        "server": server_model(state, &s.owner, s.server.as_ref(), &s.url(), s.ready),
        "scopes": s.filtered_scopes(),
        "user": user,
        "group": group,
        "kind": kind,
        "created_at": iso(s.created_at),
    })
}

/// JupyterHub's share code model (never the code, except in the answer that makes it).
fn code_model(state: &AppState, c: &ShareCodeView) -> Value {
    json!({
        "server": server_model(state, &c.owner, c.server.as_ref(), &c.url(), c.ready),
        "scopes": c.filtered_scopes(),
        "id": format!("sc_{}", c.id),
        "created_at": iso(c.created_at),
        "expires_at": iso(c.expires_at),
        "exchange_count": c.exchange_count,
        "last_exchanged_at": c.last_exchanged_at.map(iso),
    })
}

fn list_answer(state: &AppState, uri: &axum::http::Uri, q: &Params, items: Vec<Value>, page: Page) -> Response {
    Json(envelope(state, uri.path().trim_start_matches('/'), q, items, page)).into_response()
}

/// `GET /hub/api/shares/{owner}`: the shares of all the owner's servers.
pub async fn list_all(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(p): Path<Params>,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    list_of(state, me, p, uri, q, true).await
}

/// `GET /hub/api/shares/{owner}/{server}`: the shares of one server (`/shares/alice/`: the
/// default server's).
pub async fn list(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(p): Path<Params>,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    list_of(state, me, p, uri, q, false).await
}

async fn list_of(
    state: AppState,
    CurrentUser(me): CurrentUser,
    p: Params,
    uri: axum::http::Uri,
    q: Params,
    all: bool,
) -> Result<Response, AppError> {
    let (owner, server) = owner_server(&p)?;
    let (offset, limit) = offset_limit(&q)?;
    let which = if all { OwnerServers::All } else { OwnerServers::One(server.as_ref()) };
    let (shares, total) = state.hub().shares().of_owner(Actor::User(&me), &owner, which, offset, limit).await?;
    let items = shares.iter().map(|s| share_model(&state, s)).collect();
    Ok(list_answer(&state, &uri, &q, items, Page { offset, limit, total }))
}

/// A grant or a revocation: exactly one of `user` and `group`, and the scopes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

impl ShareRequest {
    fn with(&self) -> Result<ShareWith, AppError> {
        match (&self.user, &self.group) {
            (Some(_), Some(_)) => {
                Err(AppError::BadRequest("Expected exactly one of `user` or `group`, not both.".into()))
            }
            (None, None) => Err(AppError::BadRequest("Specify exactly one of `user` or `group`".into())),
            (Some(u), None) => UserName::parse(u)
                .map(ShareWith::User)
                .map_err(|e| AppError::BadRequest(format!("No such user: {u} ({e})"))),
            (None, Some(g)) => GroupName::parse(g)
                .map(ShareWith::Group)
                .map_err(|e| AppError::BadRequest(format!("No such group: {g} ({e})"))),
        }
    }
}

/// `POST /hub/api/shares/{owner}/{server}`: grants `{user}` or `{group}` the `scopes`
/// (`access:servers` when none), adding to an existing share.
pub async fn grant(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(p): Path<Params>,
    ApiJson(body): ApiJson<ShareRequest>,
) -> Result<Json<Value>, AppError> {
    let (owner, server) = owner_server(&p)?;
    let with = body.with()?;
    let share =
        state.hub().shares().grant(Actor::User(&me), &owner, server.as_ref(), &with, body.scopes.as_deref()).await?;
    Ok(Json(share_model(&state, &share)))
}

/// `PATCH /hub/api/shares/{owner}/{server}`: revokes the listed scopes (all when none) from
/// `{user}` or `{group}`; the share that is left, or `{}`.
pub async fn revoke(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(p): Path<Params>,
    ApiJson(body): ApiJson<ShareRequest>,
) -> Result<Json<Value>, AppError> {
    let (owner, server) = owner_server(&p)?;
    let with = body.with()?;
    let left =
        state.hub().shares().revoke(Actor::User(&me), &owner, server.as_ref(), &with, body.scopes.as_deref()).await?;
    Ok(Json(left.map_or_else(|| json!({}), |s| share_model(&state, &s))))
}

/// `DELETE /hub/api/shares/{owner}/{server}`: revokes every share of the server.
pub async fn revoke_all(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(p): Path<Params>,
) -> Result<StatusCode, AppError> {
    let (owner, server) = owner_server(&p)?;
    state.hub().shares().revoke_all(Actor::User(&me), &owner, server.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whom a `/hub/api/users/{name}/shared…` or `/hub/api/groups/{name}/shared…` path is
/// about: the routes of the two differ only in this, so each handler below serves both.
pub trait Recipient {
    /// The user or group the path's `{name}` names.
    fn parse(raw: &str) -> Result<ShareWith, AppError>;
}

/// A user's shares (`/hub/api/users/{name}/shared…`).
pub struct ToUser;

/// A group's shares (`/hub/api/groups/{name}/shared…`).
pub struct ToGroup;

impl Recipient for ToUser {
    fn parse(raw: &str) -> Result<ShareWith, AppError> {
        user_name(raw).map(ShareWith::User)
    }
}

impl Recipient for ToGroup {
    fn parse(raw: &str) -> Result<ShareWith, AppError> {
        group_name(raw).map(ShareWith::Group)
    }
}

/// `GET /hub/api/{users|groups}/{name}/shared`: what is shared with the user (directly or
/// through their groups) or with the group.
pub async fn shared_with<R: Recipient>(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(p): Path<Params>,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    let with = R::parse(param(&p, "name"))?;
    let (offset, limit) = offset_limit(&q)?;
    let shares = state.hub().shares();
    let (shares, total) = match &with {
        ShareWith::User(u) => shares.reaching(Actor::User(&me), u, offset, limit).await?,
        ShareWith::Group(g) => shares.of_group(Actor::User(&me), g, offset, limit).await?,
    };
    let items = shares.iter().map(|s| share_model(&state, s)).collect();
    Ok(list_answer(&state, &uri, &q, items, Page { offset, limit, total }))
}

/// `GET /hub/api/{users|groups}/{name}/shared/{owner}/{server}`: the user's own (direct) or
/// the group's share of that server.
pub async fn share_on<R: Recipient>(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(p): Path<Params>,
) -> Result<Json<Value>, AppError> {
    let with = R::parse(param(&p, "name"))?;
    let (owner, server) = owner_server(&p)?;
    let shares = state.hub().shares();
    let share = match &with {
        ShareWith::User(u) => shares.of_user_on(Actor::User(&me), u, &owner, server.as_ref()).await?,
        ShareWith::Group(g) => shares.of_group_on(Actor::User(&me), g, &owner, server.as_ref()).await?,
    };
    Ok(Json(share_model(&state, &share)))
}

/// `DELETE /hub/api/{users|groups}/{name}/shared/{owner}/{server}`: the user leaves that
/// share, or the group's share is removed.
pub async fn drop_share<R: Recipient>(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(p): Path<Params>,
) -> Result<StatusCode, AppError> {
    let with = R::parse(param(&p, "name"))?;
    let (owner, server) = owner_server(&p)?;
    let shares = state.hub().shares();
    match &with {
        ShareWith::User(u) => shares.leave(Actor::User(&me), u, &owner, server.as_ref()).await?,
        ShareWith::Group(g) => shares.remove_group_share(Actor::User(&me), g, &owner, server.as_ref()).await?,
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /hub/api/share-codes/{owner}`: the codes of all the owner's servers that have not
/// expired (never the codes themselves).
pub async fn list_all_codes(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(p): Path<Params>,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    codes_of(state, me, p, uri, q, true).await
}

/// `GET /hub/api/share-codes/{owner}/{server}`: one server's codes that have not expired.
pub async fn list_codes(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(p): Path<Params>,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    codes_of(state, me, p, uri, q, false).await
}

async fn codes_of(
    state: AppState,
    CurrentUser(me): CurrentUser,
    p: Params,
    uri: axum::http::Uri,
    q: Params,
    all: bool,
) -> Result<Response, AppError> {
    let (owner, server) = owner_server(&p)?;
    let (offset, limit) = offset_limit(&q)?;
    let which = if all { OwnerServers::All } else { OwnerServers::One(server.as_ref()) };
    let (codes, total) = state.hub().shares().codes(Actor::User(&me), &owner, which, offset, limit).await?;
    let items = codes.iter().map(|c| code_model(&state, c)).collect();
    Ok(list_answer(&state, &uri, &q, items, Page { offset, limit, total }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// Seconds; a day when absent, at least a minute, at most a year.
    #[serde(default)]
    expires_in: Option<u64>,
}

/// `POST /hub/api/share-codes/{owner}/{server}`: a new code, shown this once with its
/// `accept_url`.
pub async fn create_code(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(p): Path<Params>,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<Json<Value>, AppError> {
    let (owner, server) = owner_server(&p)?;
    let made = state
        .hub()
        .shares()
        .create_code(Actor::User(&me), &owner, server.as_ref(), body.scopes.as_deref(), body.expires_in)
        .await?;
    let mut model = code_model(&state, &made.view);
    let code = made.code.expose();
    let accept_url = format!("/hub/accept-share?code={code}");
    let full = state.settings().public_url.join(accept_url.trim_start_matches('/')).ok().map(|u| u.to_string());
    model["code"] = json!(code);
    model["accept_url"] = json!(accept_url);
    model["full_accept_url"] = json!(full);
    Ok(Json(model))
}

/// `DELETE /hub/api/share-codes/{owner}/{server}[?id=sc_N | ?code=…]`: revokes one code, or all.
pub async fn revoke_codes(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
) -> Result<StatusCode, AppError> {
    let (owner, server) = owner_server(&p)?;
    let which = match (q.get("code"), q.get("id")) {
        (Some(code), _) => CodeChoice::Code(code),
        (None, Some(id)) => CodeChoice::Id(id),
        (None, None) => CodeChoice::All,
    };
    state.hub().shares().revoke_codes(Actor::User(&me), &owner, server.as_ref(), which).await?;
    Ok(StatusCode::NO_CONTENT)
}
