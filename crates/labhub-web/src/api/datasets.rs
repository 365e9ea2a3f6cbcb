//! `/hub/api/datasets…` (admins): data mounted read-only at `~/datasets/{name}` in servers.
//!
//! A dataset's model: `{"name", "path"|"volume", "description", "groups"` (empty: everyone)`,
//! "created", "available", "problem"}`; `available` is false (with the reason) when its
//! source is missing now, which leaves it out of starts until it is back.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use labhub_core::{DatasetName, GroupName};
use labhub_service::Actor;
use labhub_service::datasets::{Dataset, DatasetSource, NewDatasetRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiJson;
use super::models::iso;
use crate::extract::AdminUser;
use crate::{AppError, AppState};

fn model(d: &Dataset, problem: Option<&str>) -> Value {
    let mut v = json!({
        "kind": "dataset",
        "name": d.name,
        "description": d.description,
        "groups": d.groups,
        "everyone": d.groups.is_empty(),
        "created": iso(d.created_at),
        "available": problem.is_none(),
        "problem": problem,
    });
    match &d.source {
        DatasetSource::HostPath(p) => v["path"] = json!(p),
        DatasetSource::Volume(name) => v["volume"] = json!(name),
    }
    v
}

/// `GET /hub/api/datasets` (admins): every dataset, with whether its source is there now.
pub async fn list(State(state): State<AppState>, AdminUser(me): AdminUser) -> Result<Json<Value>, AppError> {
    let all = state.hub().datasets().list(Actor::User(&me)).await?;
    Ok(Json(Value::Array(all.iter().map(|s| model(&s.dataset, s.problem.as_deref())).collect())))
}

/// The body of `POST /hub/api/datasets`: exactly one of `path` and `volume`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBody {
    name: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    volume: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    groups: Vec<String>,
}

/// `POST /hub/api/datasets` (admins): registers a dataset whose source exists now.
pub async fn create(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    ApiJson(body): ApiJson<NewBody>,
) -> Result<Response, AppError> {
    let bad = |e: labhub_core::NameError| AppError::BadRequest(e.to_string());
    let source = match (body.path, body.volume) {
        (Some(p), None) => DatasetSource::HostPath(p),
        (None, Some(v)) => DatasetSource::Volume(v),
        _ => return Err(AppError::BadRequest("give exactly one of 'path' (a folder) and 'volume'".into())),
    };
    let request = NewDatasetRequest {
        name: DatasetName::parse(&body.name).map_err(bad)?,
        source,
        description: body.description,
        groups: body.groups.iter().map(|g| GroupName::parse(g)).collect::<Result<_, _>>().map_err(bad)?,
    };
    let added = state.hub().datasets().add(Actor::User(&me), request).await?;
    Ok((StatusCode::CREATED, Json(model(&added, None))).into_response())
}

/// `DELETE /hub/api/datasets/{name}` (admins): servers no longer mount it from their next
/// start; its files stay where they are.
pub async fn delete(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    let name = DatasetName::parse(&name).map_err(|e| AppError::NotFound(format!("no dataset named {name:?} ({e})")))?;
    state.hub().datasets().remove(Actor::User(&me), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
