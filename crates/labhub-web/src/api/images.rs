//! `/hub/api/images…`: labhub's image catalogue (JupyterHub has no such API).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use labhub_service::Actor;
use labhub_service::catalogue::ImageStatus;
use serde_json::{Value, json};

use super::ApiJson;
use crate::extract::{AdminUser, CurrentUser};
use crate::images_input::ImageInput;
use crate::{AppError, AppState, sse};

fn model(s: &ImageStatus) -> Value {
    let i = &s.image.fields;
    json!({
        "name": s.image.name,
        "display_name": i.display_name,
        "description": i.description,
        "reference": i.reference,
        "kind": i.kind,
        "port": i.port.unwrap_or_else(|| i.kind.default_port()),
        "command": i.command,
        "cpu_millis": i.cpu_millis,
        "memory_bytes": i.memory_bytes,
        "enabled": i.enabled,
        "recipe": i.recipe,
        "contract": i.contract,
        "placement": i.placement,
        "local": s.local.as_ref().map(|l| json!({ "digest": l.digest, "size_bytes": l.size_bytes })),
        "build": s.build,
    })
}

/// `GET /hub/api/images` (any signed-in user): the catalogue; members see enabled entries only.
pub async fn list(State(state): State<AppState>, CurrentUser(me): CurrentUser) -> Result<Json<Vec<Value>>, AppError> {
    let all = state.hub().catalogue().list().await?;
    Ok(Json(all.iter().filter(|s| me.admin || s.image.fields.enabled).map(model).collect()))
}

/// `GET /hub/api/images/{name}` (any signed-in user; disabled entries for admins only).
pub async fn get_one(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    let all = state.hub().catalogue().list().await?;
    all.iter()
        .find(|s| s.image.name == name && (me.admin || s.image.fields.enabled))
        .map(|s| Json(model(s)))
        .ok_or_else(|| AppError::NotFound(format!("there is no image '{name}'")))
}

#[derive(serde::Deserialize)]
pub struct NewImage {
    name: String,
    #[serde(flatten)]
    input: ImageInput,
}

/// `POST /hub/api/images` (admins).
pub async fn create(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    ApiJson(body): ApiJson<NewImage>,
) -> Result<Response, AppError> {
    let fields = body.input.into_fields()?;
    let hub = state.hub();
    hub.catalogue().add(Actor::User(&me), &body.name, fields).await?;
    let status = hub.catalogue().list().await?.into_iter().find(|s| s.image.name == body.name);
    Ok((StatusCode::CREATED, Json(status.as_ref().map(model))).into_response())
}

/// `PUT /hub/api/images/{name}` (admins): replaces the entry's fields.
pub async fn replace(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ImageInput>,
) -> Result<Json<Value>, AppError> {
    let hub = state.hub();
    hub.catalogue().update(Actor::User(&me), &name, body.into_fields()?).await?;
    get_one(State(state), CurrentUser(me), Path(name)).await
}

/// `DELETE /hub/api/images/{name}` (admins).
pub async fn delete(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    state.hub().catalogue().remove(Actor::User(&me), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /hub/api/images/{name}/build` (admins): builds it from its recipe; 202 with the progress URL.
pub async fn build(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    state.hub().catalogue().build(Actor::User(&me), &name).await?;
    let url = format!("/hub/api/images/{name}/build/progress");
    Ok((StatusCode::ACCEPTED, Json(json!({ "progress_url": url })).into_response()).into_response())
}

/// `GET /hub/api/images/{name}/build/progress` (admins): Server-Sent Events of the latest build.
pub async fn build_progress(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let image = state.hub().catalogue().get(&name).await?;
    let log = state
        .hub()
        .catalogue()
        .build_progress(&image.fields.reference)
        .ok_or_else(|| AppError::NotFound(format!("'{name}' has not been built since the hub started")))?;
    Ok(sse::stream(log).into_response())
}
