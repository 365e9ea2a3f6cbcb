//! `/hub/api/users/{name}/home/archive` (the member or an admin): the home's files as a tar
//! (`?format=tar.gz` compresses it) whether the server runs or not, and `PUT` of a tar or
//! tar.gz (recognised by its first bytes) to restore one into the home of a stopped server.
//! Both stream; neither holds an archive in memory. `?server=NAME` picks a named server's
//! home where each server has its own (elsewhere it is the same home).

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use labhub_core::{ServerName, UserName};
use labhub_service::Actor;
use labhub_service::homes::ArchiveFormat;
use serde_json::{Value, json};

use crate::extract::CurrentUser;
use crate::{AppError, AppState};

fn owner(raw: &str) -> Result<UserName, AppError> {
    UserName::parse(raw).map_err(|e| AppError::NotFound(format!("no user named {raw:?} ({e})")))
}

fn server(q: &HashMap<String, String>) -> Result<Option<ServerName>, AppError> {
    ServerName::parse_optional(q.get("server").map_or("", String::as_str))
        .map_err(|e| AppError::BadRequest(format!("'server': {e}")))
}

/// `GET /hub/api/users/{name}/home/archive[?format=tar.gz]`.
pub async fn download(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let format = ArchiveFormat::parse(q.get("format").map_or("", String::as_str))?;
    let server = server(&q)?;
    let archive = state.hub().homes().archive(Actor::User(&me), &owner(&name)?, server.as_ref(), format).await?;
    let disposition = format!("attachment; filename=\"{}\"", archive.file_name);
    let headers = [
        (header::CONTENT_TYPE, archive.format.content_type().to_string()),
        (header::CONTENT_DISPOSITION, disposition),
        (header::CACHE_CONTROL, "no-store".to_string()),
    ];
    Ok((headers, Body::from_stream(archive.body)).into_response())
}

/// `PUT /hub/api/users/{name}/home/archive`: restores a tar or tar.gz into the home; `409`
/// while a server runs.
pub async fn restore(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let server = server(&q)?;
    let upload = body.into_data_stream().map_err(std::io::Error::other).boxed();
    let restored = state.hub().homes().restore(Actor::User(&me), &owner(&name)?, server.as_ref(), upload).await?;
    Ok(Json(json!({ "restored_bytes": restored.bytes })))
}
