//! `/hub/api/users/{name}/sessions…` (that user or an admin): every server start that came
//! up, paginated like `/hub/api/users`; relaunching one on exactly the image id it ran. And
//! `POST /hub/api/environments/collect` (admins): the image collector.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use labhub_core::{ServerName, UserName};
use labhub_service::Actor;
use serde_json::{Value, json};

use super::{Page, offset_limit, paged};
use crate::extract::{AdminUser, CurrentUser};
use crate::{AppError, AppState};

fn user(raw: &str) -> Result<UserName, AppError> {
    UserName::parse(raw).map_err(|e| AppError::NotFound(format!("no user named {raw:?} ({e})")))
}

/// `GET /hub/api/users/{name}/sessions`: `offset`, `limit`; the `{items, _pagination}`
/// envelope with `Accept: application/jupyterhub-pagination+json`. Newest first.
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let (offset, limit) = offset_limit(&q)?;
    let (sessions, total) = state.hub().history().of_user(Actor::User(&me), &user(&name)?, offset, limit).await?;
    let items: Vec<Value> = sessions.iter().map(|s| json!(s)).collect();
    let path = format!("hub/api/users/{name}/sessions");
    Ok(paged(&state, &path, &headers, &q, items, Page { offset, limit, total }))
}

/// `POST /hub/api/users/{name}/sessions/{id}/relaunch`: starts that session's server on exactly
/// the image id it ran (201 ready / 202 starting, as a start).
pub async fn relaunch(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Response, AppError> {
    let owner = user(&name)?;
    let history = state.hub().history();
    let session = history.session(Actor::User(&me), &owner, id).await?;
    let server = match session.server.as_str() {
        "" => None,
        s => Some(ServerName::parse(s).map_err(|e| AppError::BadRequest(e.to_string()))?),
    };
    let outcome = history.relaunch(Actor::User(&me), &owner, id).await?;
    super::servers::answer_start(&state, Actor::User(&me), owner, server, outcome).await
}

/// `POST /hub/api/environments/collect` (admins): removes built images nothing needs; says
/// what it removed and how many bytes that freed.
pub async fn collect(State(state): State<AppState>, AdminUser(me): AdminUser) -> Result<Json<Value>, AppError> {
    Ok(Json(json!(state.hub().history().collect_images(Actor::User(&me)).await?)))
}
