//! `/hub/api`, `/hub/api/info`, `/hub/api/user`, `/hub/api/users…`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use labhub_core::listing::{ServerStateFilter, UserFilter, UserSort};
use labhub_core::{AccountState, GroupName, Scope, Secret, Target, UserName};
use labhub_service::accounts::NewAccount;
use labhub_service::model::StorageFate;
use labhub_service::{Actor, ServiceError};
use serde::Deserialize;
use serde_json::json;

use super::models::UserModel;
use super::{ApiJson, JUPYTERHUB_API_VERSION, Page, offset_limit, paged};
use crate::extract::{AdminUser, Caller};
use crate::{AppError, AppState};

/// `GET /hub/api` (anyone): the API version.
pub async fn root() -> Json<serde_json::Value> {
    Json(json!({ "version": JUPYTERHUB_API_VERSION, "labhub_version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /hub/api/info` (`read:hub`, which the API's gate checks): versions and the plugged-in parts.
pub async fn info(State(state): State<AppState>, Caller(_): Caller) -> Json<serde_json::Value> {
    let settings = state.hub().account_settings();
    Json(json!({
        "version": JUPYTERHUB_API_VERSION,
        "labhub_version": env!("CARGO_PKG_VERSION"),
        "authenticator": {
            "class": "labhub.LocalAuthenticator",
            "password_login": settings.password_login.form(),
            "directory": settings.password_login.directory(),
            "signup": settings.signup,
        },
    }))
}

fn parse_list_query(q: &HashMap<String, String>) -> Result<UserFilter, AppError> {
    let (offset, limit) = offset_limit(q)?;
    let server_state = q
        .get("state")
        .filter(|s| !s.is_empty())
        .map(|s| {
            ServerStateFilter::parse(s)
                .ok_or_else(|| AppError::BadRequest(format!("'state' must be ready, active or inactive, not {s:?}")))
        })
        .transpose()?;
    let sort = q
        .get("sort")
        .filter(|s| !s.is_empty())
        .map(|s| {
            UserSort::parse(s).ok_or_else(|| {
                AppError::BadRequest(format!(
                    "'sort' must be name, created or last_activity (prefix '-' for descending), not {s:?}"
                ))
            })
        })
        .transpose()?
        .unwrap_or_default();
    Ok(UserFilter {
        name_prefix: q.get("name_filter").filter(|s| !s.is_empty()).cloned(),
        server_state,
        sort,
        offset,
        limit,
        ..UserFilter::default()
    })
}

/// `GET /hub/api/users` (`list:users`; the scope check is the API's gate): with `offset`,
/// `limit`, `name_filter`, `state`, `sort`, and JupyterHub's pagination envelope when asked for
/// with `Accept: application/jupyterhub-pagination+json`. A filtered `list:users` (a lead's)
/// sees only the users it names, counted in the page as JupyterHub does.
pub async fn list(
    State(state): State<AppState>,
    Caller(me): Caller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let filter = parse_list_query(&q)?;
    let hub = state.hub();
    let (views, total) = hub.accounts().list_views(Actor::System, &filter).await?;
    let seen = |v: &labhub_service::views::UserView| {
        let groups: Vec<GroupName> = v.groups.iter().filter_map(|g| GroupName::parse(g).ok()).collect();
        me.scopes().allows(&Scope::ListUsers, &Target::User { name: &v.account.name, groups: &groups })
    };
    let items: Vec<serde_json::Value> =
        views.iter().filter(|v| seen(v)).map(|v| serde_json::to_value(UserModel::of(v)).unwrap_or_default()).collect();
    Ok(paged(&state, "hub/api/users", &headers, &q, items, Page { offset: filter.offset, limit: filter.limit, total }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMany {
    usernames: Vec<String>,
    #[serde(default)]
    admin: bool,
    /// labhub's own: the identity provider whose identity of each name may claim the account
    /// at its first sign-in (without it, no provider can claim these accounts by name).
    #[serde(default)]
    provider: Option<String>,
}

/// `POST /hub/api/users` (admins): `{"usernames": [...], "admin": false, "provider": "github"}`.
/// The accounts have no password. Names that exist are skipped, as JupyterHub does; if all
/// exist, 409. Any invalid name refuses the whole request.
pub async fn create_many(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    ApiJson(body): ApiJson<CreateMany>,
) -> Result<Response, AppError> {
    if body.usernames.is_empty() {
        return Err(AppError::BadRequest("'usernames' must list at least one name".into()));
    }
    let mut names = Vec::new();
    for raw in &body.usernames {
        let n = UserName::parse(raw).map_err(|e| AppError::BadRequest(format!("{raw:?}: {e}")))?;
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let hub = state.hub();
    let mut created = Vec::new();
    for name in names {
        let new = NewAccount { name, password: None, admin: body.admin, provider: body.provider.clone() };
        match hub.accounts().create(Actor::User(&me), new).await {
            Ok(u) => created.push(u),
            Err(ServiceError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if created.is_empty() {
        return Err(ServiceError::Conflict("all of these users already exist".into()).into());
    }
    // New accounts are in no group and have no servers yet.
    let models: Vec<UserModel> = created.iter().map(UserModel::account).collect();
    Ok((StatusCode::CREATED, Json(models)).into_response())
}

fn path_name(raw: &str) -> Result<UserName, AppError> {
    UserName::parse(raw).map_err(|e| AppError::NotFound(format!("no user named {raw:?} ({e})")))
}

/// `GET /hub/api/users/{name}` (`read:users` on that user: themselves, an admin, a lead of
/// their group, a token or role that says so; the API's gate decided before this runs, and a
/// member asking about someone else is refused there without learning whether they exist).
pub async fn get_one(
    State(state): State<AppState>,
    Caller(_): Caller,
    Path(name): Path<String>,
) -> Result<Json<UserModel>, AppError> {
    let name = path_name(&name)?;
    let v = state.hub().accounts().view(Actor::System, &name).await?;
    Ok(Json(UserModel::of(&v)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateOne {
    #[serde(default)]
    admin: bool,
    /// labhub's own: an initial password for a local account.
    #[serde(default)]
    password: Option<String>,
    /// labhub's own: for an account without a password, the identity provider whose identity
    /// of this name may claim it at its first sign-in.
    #[serde(default)]
    provider: Option<String>,
}

/// `POST /hub/api/users/{name}` (admins): creates one account.
pub async fn create_one(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<CreateOne>,
) -> Result<Response, AppError> {
    let name = UserName::parse(&name).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let hub = state.hub();
    let new = NewAccount { name, password: body.password.map(Secret::new), admin: body.admin, provider: body.provider };
    let account = hub.accounts().create(Actor::User(&me), new).await?;
    Ok((StatusCode::CREATED, Json(UserModel::account(&account))).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    name: Option<String>,
    admin: Option<bool>,
    password: Option<String>,
    account_state: Option<String>,
    /// A provider's id, or null for none (present and null differ from absent).
    #[serde(default, deserialize_with = "present")]
    provider: Option<serde_json::Value>,
}

/// Reads a field that may be sent as null: `Some(Value::Null)` then, `None` only when absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// `PATCH /hub/api/users/{name}` (admins): `name`, `admin`, and labhub's `password`,
/// `account_state` (`active` or `disabled`) and `provider` (the identity provider whose
/// identity of this name may claim a password-less account, or null). All checked before
/// anything changes.
pub async fn patch(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Patch>,
) -> Result<Json<UserModel>, AppError> {
    let name = path_name(&name)?;
    let new_name = body
        .name
        .as_deref()
        .map(|n| UserName::parse(n).map_err(|e| AppError::BadRequest(e.to_string())))
        .transpose()?;
    let account_state = body
        .account_state
        .as_deref()
        .map(|s| match s {
            "active" => Ok(AccountState::Active),
            "disabled" => Ok(AccountState::Disabled),
            other => Err(AppError::BadRequest(format!("'account_state' must be active or disabled, not {other:?}"))),
        })
        .transpose()?;
    let provider = match &body.provider {
        None => None,
        Some(serde_json::Value::Null) => Some(None),
        Some(serde_json::Value::String(p)) if state.hub().providers().get(p).is_some() => Some(Some(p.as_str())),
        Some(serde_json::Value::String(p)) => {
            return Err(AppError::BadRequest(format!("there is no identity provider called '{p}' on this hub")));
        }
        Some(other) => {
            return Err(AppError::BadRequest(format!("'provider' must be a provider's id or null, not {other}")));
        }
    };
    if let Some(p) = &body.password {
        labhub_auth::PasswordPolicy { min_len: state.hub().account_settings().password_min_len }
            .check(p)
            .map_err(|e| AppError::BadRequest(e.to_string()))?;
    }
    let hub = state.hub();
    let actor = Actor::User(&me);
    let mut user = hub.accounts().get(actor, &name).await?;
    if let Some(admin) = body.admin {
        user = hub.accounts().set_admin(actor, &user.name, admin).await?;
    }
    if let Some(s) = account_state {
        user = hub.accounts().set_state(actor, &user.name, s).await?;
    }
    if let Some(p) = provider {
        user = hub.accounts().set_link_provider(actor, &user.name, p).await?;
    }
    if let Some(p) = body.password {
        hub.accounts().set_password(actor, &user.name, Secret::new(p)).await?;
    }
    if let Some(n) = new_name {
        user = hub.accounts().rename(actor, &user.name, &n).await?;
    }
    Ok(Json(UserModel::of(&*hub.accounts().view(actor, &user.name).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    /// labhub's own: what becomes of the account's home, `keep` (the default: an orphan only
    /// admins see, never mounted for anyone) or `delete`.
    #[serde(default)]
    storage: Option<String>,
}

/// `DELETE /hub/api/users/{name}` (admins); `{"storage": "delete"}` deletes the home too.
pub async fn delete(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<DeleteBody>,
) -> Result<StatusCode, AppError> {
    let name = path_name(&name)?;
    let fate = StorageFate::parse(body.storage.as_deref().unwrap_or(""))?;
    state.hub().accounts().delete(Actor::User(&me), &name, fate).await?;
    Ok(StatusCode::NO_CONTENT)
}
