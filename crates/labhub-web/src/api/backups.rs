//! `/hub/api/backups…` (admins): the archives in the backup directory, a run by hand, and
//! verifying and restoring one archive.
//!
//! An archive's model: `{"id", "kind": "home"|"group"|"orphan", "owner", "owner_id",
//! "server", "volume", "file", "bytes", "sha256", "created", "labhub_version"}`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use labhub_core::{BackupId, GroupName, UserName};
use labhub_service::Actor;
use labhub_service::backups::{Backup, Target};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiJson;
use super::models::iso;
use crate::extract::AdminUser;
use crate::{AppError, AppState};

fn model(b: &Backup) -> Value {
    json!({
        "id": b.id,
        "kind": b.kind.as_str(),
        "owner": b.owner_name,
        "owner_id": b.owner_id,
        "server": b.server,
        "volume": b.volume,
        "file": b.file,
        "bytes": b.bytes,
        "sha256": b.sha256,
        "created": iso(b.created_at),
        "labhub_version": b.labhub_version,
    })
}

fn user_name(raw: &str) -> Result<UserName, AppError> {
    UserName::parse(raw).map_err(|e| AppError::BadRequest(e.to_string()))
}

fn backup_id(raw: &str) -> Result<BackupId, AppError> {
    raw.parse::<i64>().map(BackupId::new).map_err(|_| AppError::NotFound(format!("there is no backup {raw:?}")))
}

/// `?user=NAME`: only that account's home archives.
#[derive(Deserialize)]
pub struct ListQuery {
    user: Option<String>,
}

/// `GET /hub/api/backups` (admins): every archive, newest first.
pub async fn list(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, AppError> {
    let user = q.user.as_deref().map(user_name).transpose()?;
    let all = state.hub().backups().list(Actor::User(&me), user.as_ref()).await?;
    Ok(Json(Value::Array(all.iter().map(model).collect())))
}

/// The body of `POST /hub/api/backups`: exactly one of `user`, `group`, `all`, `orphan`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    orphan: Option<String>,
}

/// `POST /hub/api/backups` (admins): one run now; 201 with the archives made, 200 with
/// `failed` listing what could not be archived, 409 while another run is in progress.
pub async fn create(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, AppError> {
    let target = match (body.user, body.group, body.all, body.orphan) {
        (Some(u), None, false, None) => Target::User(user_name(&u)?),
        (None, Some(g), false, None) => {
            Target::Group(GroupName::parse(&g).map_err(|e| AppError::BadRequest(e.to_string()))?)
        }
        (None, None, true, None) => Target::All,
        (None, None, false, Some(v)) => Target::Orphan(v),
        _ => return Err(AppError::BadRequest("give exactly one of 'user', 'group', 'all': true and 'orphan'".into())),
    };
    let report = state.hub().backups().create(Actor::User(&me), &target).await?;
    let status = if report.failed.is_empty() { StatusCode::CREATED } else { StatusCode::OK };
    let body = json!({
        "made": report.made.iter().map(model).collect::<Vec<_>>(),
        "failed": report.failed,
        "expired": report.expired,
        "summary": report.summary(),
    });
    Ok((status, Json(body)).into_response())
}

/// `POST /hub/api/backups/{id}/verify` (admins): `{"ok", "detail"}`.
pub async fn verify(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let v = state.hub().backups().verify(Actor::User(&me), backup_id(&id)?).await?;
    Ok(Json(json!({ "id": v.id, "ok": v.ok, "detail": v.detail })))
}

/// The body of `POST /hub/api/backups/{id}/restore`: the archive's owner (`user`), and/or
/// another account to attach it to (`into`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    into: Option<String>,
}

/// `POST /hub/api/backups/{id}/restore` (admins): `{"account", "place", "bytes"}`; 409 while
/// a server of the owner runs.
pub async fn restore(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> Result<Json<Value>, AppError> {
    let user = body.user.as_deref().map(user_name).transpose()?;
    let into = body.into.as_deref().map(user_name).transpose()?;
    let r = state.hub().backups().restore(Actor::User(&me), backup_id(&id)?, user.as_ref(), into.as_ref()).await?;
    Ok(Json(json!({ "id": r.id, "account": r.account, "place": r.place, "bytes": r.bytes })))
}
