//! `/hub/api/groups…`: JupyterHub's group API, plus labhub's leads, quotas and usage.
//!
//! The group model is JupyterHub's (`kind`, `name`, `users`, `roles`, `properties`) with
//! labhub's `leads` and `quota` (the limits in force, with the admin's `ceiling` inside).
//! Admins may do everything; a group's leads may read it, change its members (not its leads),
//! set its quota within the ceiling and read its usage; others are refused.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use labhub_core::{GroupName, ImageAllowance, Placement, ServerName, UserName};
use labhub_service::Actor;
use labhub_service::model::GroupDetail;
use labhub_service::model::StorageFate;
use labhub_service::quotas::{QuotaPatch, describe};
use labhub_service::usage::{Amounts, UsageRange};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::models::iso;
use super::{ApiJson, Page, offset_limit, paged};
use crate::extract::{AdminUser, CurrentUser};
use crate::{AppError, AppState};

/// The group model.
fn model(d: &GroupDetail) -> Value {
    json!({
        "kind": "group",
        "name": d.group.name,
        "users": d.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        "roles": [],
        "properties": {},
        "leads": d.leads(),
        "quota": quota_model(d),
        "shared_folder": d.group.shared_folder,
        "shared_read_only": d.group.shared_read_only,
        "members_build_environments": d.members_build_environments,
        "placement": d.placement,
    })
}

fn quota_model(d: &GroupDetail) -> Value {
    let mut q = describe(&d.quota);
    q["ceiling"] = describe(&d.ceiling);
    q
}

fn group_name(raw: &str) -> Result<GroupName, AppError> {
    GroupName::parse(raw).map_err(|e| AppError::NotFound(format!("no group named {raw:?} ({e})")))
}

fn user_names(raw: &[String]) -> Result<Vec<UserName>, AppError> {
    raw.iter().map(|n| UserName::parse(n).map_err(|e| AppError::BadRequest(format!("{n:?}: {e}")))).collect()
}

/// `GET /hub/api/groups` (admins: every group; leads: theirs): with `offset`, `limit` and the
/// pagination envelope.
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let (offset, limit) = offset_limit(&q)?;
    let (groups, total) = state.hub().groups().list(Actor::User(&me), offset, limit).await?;
    let items = groups.iter().map(model).collect();
    Ok(paged(&state, "hub/api/groups", &headers, &q, items, Page { offset, limit, total }))
}

/// The body of `POST /hub/api/groups`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMany {
    groups: Vec<String>,
}

/// `POST /hub/api/groups` (admins): `{"groups": [...]}`; 409 if any exists (nothing is created).
pub async fn create_many(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    ApiJson(body): ApiJson<CreateMany>,
) -> Result<Response, AppError> {
    if body.groups.is_empty() {
        return Err(AppError::BadRequest("'groups' must list at least one name".into()));
    }
    let names: Vec<GroupName> = body
        .groups
        .iter()
        .map(|g| GroupName::parse(g).map_err(|e| AppError::BadRequest(format!("{g:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    let created = state.hub().groups().create_many(Actor::User(&me), &names, &[]).await?;
    Ok((StatusCode::CREATED, Json(created.iter().map(model).collect::<Vec<_>>())).into_response())
}

/// `GET /hub/api/groups/{name}` (admins, its leads).
pub async fn get_one(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(model(&state.hub().groups().get(Actor::User(&me), &group_name(&name)?).await?)))
}

/// A body naming users: `{"users": [...]}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Users {
    #[serde(default)]
    users: Vec<String>,
}

/// `POST /hub/api/groups/{name}` (admins): creates it, with `{"users": [...]}` as members.
pub async fn create_one(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Users>,
) -> Result<Response, AppError> {
    let name = GroupName::parse(&name).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let users = user_names(&body.users)?;
    let mut created = state.hub().groups().create_many(Actor::User(&me), std::slice::from_ref(&name), &users).await?;
    Ok((StatusCode::CREATED, Json(model(&created.remove(0)))).into_response())
}

/// The body of `PATCH /hub/api/groups/{name}`: any of a new name (admins), and the shared
/// folder's switches (admins, its leads).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    shared_folder: Option<bool>,
    #[serde(default)]
    shared_read_only: Option<bool>,
    #[serde(default)]
    members_build_environments: Option<bool>,
    /// Swarm placement constraints of the group's servers (admins).
    #[serde(default)]
    placement: Option<Vec<String>>,
}

/// `PATCH /hub/api/groups/{name}`: `{"name": "<new name>"}` (admins), `{"shared_folder": true,
/// "shared_read_only": false}`, `{"members_build_environments": true}` (admins, its leads),
/// `{"placement": ["node.labels.gpu==true"]}` (admins).
pub async fn patch(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Patch>,
) -> Result<Json<Value>, AppError> {
    let mut name = group_name(&name)?;
    let hub = state.hub();
    // First: admins' only, so a lead's request that also asks for it changes nothing.
    if let Some(placement) = &body.placement {
        let placement: Vec<Placement> = placement
            .iter()
            .map(|p| Placement::parse(p).map_err(|e| AppError::BadRequest(e.to_string())))
            .collect::<Result<_, _>>()?;
        hub.groups().set_placement(Actor::User(&me), &name, &placement).await?;
    }
    if body.shared_folder.is_some() || body.shared_read_only.is_some() {
        let now = hub.groups().get(Actor::User(&me), &name).await?.group;
        let on = body.shared_folder.unwrap_or(now.shared_folder);
        let read_only = body.shared_read_only.unwrap_or(now.shared_read_only);
        hub.groups().set_shared_folder(Actor::User(&me), &name, on, read_only).await?;
    }
    if let Some(allowed) = body.members_build_environments {
        hub.environments().set_members_may_build(Actor::User(&me), &name, allowed).await?;
    }
    if let Some(new) = &body.name {
        let new = GroupName::parse(new).map_err(|e| AppError::BadRequest(e.to_string()))?;
        hub.groups().rename(Actor::User(&me), &name, &new).await?;
        name = new;
    }
    Ok(Json(model(&hub.groups().get(Actor::User(&me), &name).await?)))
}

/// The body of `DELETE /hub/api/groups/{name}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    /// What becomes of the group's shared folder: `keep` (the default: an orphan only admins
    /// see, never mounted for anyone) or `delete`.
    #[serde(default)]
    storage: Option<String>,
}

/// `DELETE /hub/api/groups/{name}` (admins); `{"storage": "delete"}` deletes its folder too.
pub async fn delete(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<DeleteBody>,
) -> Result<StatusCode, AppError> {
    let fate = StorageFate::parse(body.storage.as_deref().unwrap_or(""))?;
    state.hub().groups().delete(Actor::User(&me), &group_name(&name)?, fate).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /hub/api/groups/{name}/users` (admins, its leads): `{"users": [...]}` become members.
pub async fn add_users(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Users>,
) -> Result<Json<Value>, AppError> {
    let users = user_names(&body.users)?;
    Ok(Json(model(&state.hub().groups().add_members(Actor::User(&me), &group_name(&name)?, &users).await?)))
}

/// `DELETE /hub/api/groups/{name}/users` (admins, its leads; leads only by admins):
/// `{"users": [...]}` leave it.
pub async fn remove_users(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Users>,
) -> Result<Json<Value>, AppError> {
    let users = user_names(&body.users)?;
    Ok(Json(model(&state.hub().groups().remove_members(Actor::User(&me), &group_name(&name)?, &users).await?)))
}

async fn set_leads(
    state: &AppState,
    me: &labhub_service::Principal,
    name: &str,
    body: Users,
    lead: bool,
) -> Result<Json<Value>, AppError> {
    let users = user_names(&body.users)?;
    Ok(Json(model(&state.hub().groups().set_leads(Actor::User(me), &group_name(name)?, &users, lead).await?)))
}

/// `POST /hub/api/groups/{name}/leads` (admins): `{"users": [...]}` lead it (and join it).
pub async fn add_leads(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Users>,
) -> Result<Json<Value>, AppError> {
    set_leads(&state, &me, &name, body, true).await
}

/// `DELETE /hub/api/groups/{name}/leads` (admins): `{"users": [...]}` stay as plain members.
pub async fn remove_leads(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Users>,
) -> Result<Json<Value>, AppError> {
    set_leads(&state, &me, &name, body, false).await
}

/// `Some(None)` for an explicit `null`, `None` when the key is absent.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A change to a quota, in the quota model's own fields (`null` removes a limit; `images: null`
/// allows every catalogue image).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuotaBody {
    #[serde(default)]
    max_cpu_millis: Option<u32>,
    #[serde(default)]
    max_memory_bytes: Option<u64>,
    #[serde(default)]
    max_gpus: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    images: Option<Option<Vec<String>>>,
    #[serde(default)]
    max_servers_per_member: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    budget_cpu_millis: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_memory_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    storage_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    idle_timeout_seconds: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    max_lifetime_seconds: Option<Option<u64>>,
    /// Whether the idle timeout also stops servers with a busy kernel or an open terminal.
    #[serde(default)]
    cull_busy: Option<bool>,
    /// The longest one environment build may take; `null`: the site's `environments.build_timeout`.
    #[serde(default, deserialize_with = "nullable")]
    build_timeout_seconds: Option<Option<u64>>,
    /// The admin's ceiling, changed first (admins only).
    #[serde(default)]
    ceiling: Option<Box<QuotaBody>>,
}

impl QuotaBody {
    fn patch(&self) -> QuotaPatch {
        let secs = |v: Option<Option<u64>>| v.map(|v| v.map(Duration::from_secs));
        QuotaPatch {
            max_cpu_millis: self.max_cpu_millis,
            max_memory_bytes: self.max_memory_bytes,
            max_gpus: self.max_gpus,
            images: self.images.clone().map(|i| i.map_or(ImageAllowance::All, ImageAllowance::Only)),
            max_servers_per_member: self.max_servers_per_member,
            budget_cpu_millis: self.budget_cpu_millis,
            budget_memory_bytes: self.budget_memory_bytes,
            storage_bytes: self.storage_bytes,
            idle_timeout: secs(self.idle_timeout_seconds),
            max_lifetime: secs(self.max_lifetime_seconds),
            cull_busy: self.cull_busy,
            build_timeout: secs(self.build_timeout_seconds),
        }
    }
}

/// `GET /hub/api/groups/{name}/quota` (admins, its leads): the limits in force and the ceiling.
pub async fn get_quota(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(quota_model(&state.hub().groups().get(Actor::User(&me), &group_name(&name)?).await?)))
}

/// `PATCH /hub/api/groups/{name}/quota` (admins, its leads within the ceiling; the `ceiling`
/// key for admins only): changes the fields given.
pub async fn patch_quota(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<QuotaBody>,
) -> Result<Json<Value>, AppError> {
    let name = group_name(&name)?;
    let hub = state.hub();
    let actor = Actor::User(&me);
    if let Some(c) = &body.ceiling {
        if c.ceiling.is_some() {
            return Err(AppError::BadRequest("a ceiling has no ceiling of its own".into()));
        }
        hub.quotas().set_group_ceiling(actor, &name, &c.patch()).await?;
    }
    let patch = body.patch();
    let detail = if patch.is_empty() {
        hub.groups().get(actor, &name).await?
    } else {
        hub.quotas().set_group_quota(actor, &name, &patch).await?
    };
    Ok(Json(quota_model(&detail)))
}

fn amounts(a: &Amounts) -> Value {
    json!({
        "servers": a.servers,
        "cpu_reserved_millis": a.cpu_reserved,
        "memory_reserved_bytes": a.memory_reserved,
        "cpu_used_millis": a.cpu_used,
        "memory_used_bytes": a.memory_used,
    })
}

/// `GET /hub/api/groups/{name}/usage?range=day|week` (admins, its leads): what runs under the
/// group, per member and in total, against its budget, and the sampled use over the range.
pub async fn usage(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let range = match q.get("range").map(String::as_str) {
        None | Some("day") => UsageRange::Day,
        Some("week") => UsageRange::Week,
        Some(other) => return Err(AppError::BadRequest(format!("'range' must be day or week, not {other:?}"))),
    };
    let u = state.hub().usage().of_group(Actor::User(&me), &group_name(&name)?, range).await?;
    let members: Vec<Value> = u
        .members
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "role": m.role.map(|r| r.as_str()),
                "total": amounts(&m.total),
                "servers": m.servers.iter().map(|s| json!({
                    "name": s.name.as_ref().map_or("", ServerName::as_str),
                    "state": s.state.as_str(),
                    "image": s.image,
                    "cpu_millis": s.reserved.cpu_millis,
                    "memory_bytes": s.reserved.memory_bytes,
                    "gpus": s.reserved.gpus,
                    "cpu_used_millis": s.used.map(|u| u.0),
                    "memory_used_bytes": s.used.map(|u| u.1),
                    "started": s.started_at.map(iso),
                    "last_activity": s.last_activity.map(iso),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "group": u.detail.group.name,
        "budget": {
            "cpu_millis": u.detail.quota.budget_cpu_millis,
            "memory_bytes": u.detail.quota.budget_memory_bytes,
        },
        "total": amounts(&u.total),
        "shared_folder": u.detail.group.shared_folder.then(|| json!({
            "bytes": u.shared_bytes,
            "warning": u.shared_warning,
        })),
        "members": members,
        "range": if u.range == UsageRange::Week { "week" } else { "day" },
        "samples": u.samples.iter().map(|s| json!({
            "at": iso(s.at),
            "cpu_used_millis": s.cpu_millis,
            "memory_used_bytes": s.memory_bytes,
            "cpu_reserved_millis": s.cpu_reserved,
            "memory_reserved_bytes": s.memory_reserved,
        })).collect::<Vec<_>>(),
    })))
}
