//! `/hub/api/services[/{name}]`: registered services, with JupyterHub's service model
//! (`list:services` / `read:services`, which the API's gate checks).

use axum::Json;
use axum::extract::{Path, State};
use labhub_core::ServiceName;
use labhub_service::services::ServiceView;
use serde_json::{Value, json};

use super::models::iso;
use crate::extract::Caller;
use crate::{AppError, AppState};

/// JupyterHub's model of a service. labhub runs no service itself (`pid` 0, no `command`);
/// one with a URL is reached at its prefix and is an OAuth client of the hub (`service-{name}`).
pub(crate) fn service_model(s: &ServiceView) -> Value {
    let routed = s.url.is_some();
    json!({
        "kind": "service",
        "name": s.name,
        "admin": false,
        "roles": s.roles,
        "url": s.url.clone().unwrap_or_default(),
        "prefix": if routed { s.prefix() } else { String::new() },
        "pid": 0,
        "command": [],
        "info": {},
        "display": routed,
        "oauth_client_id": routed.then(|| format!("service-{}", s.name)),
        "oauth_no_confirm": false,
        "last_activity": s.last_activity.map(iso),
        "created": iso(s.created_at),
    })
}

/// `GET /hub/api/services`: the services the asker may list, by name, as an object keyed by
/// name (JupyterHub's shape).
pub async fn list(State(state): State<AppState>, Caller(me): Caller) -> Result<Json<Value>, AppError> {
    let all = state.hub().services().list(me.actor()).await?;
    Ok(Json(Value::Object(all.iter().map(|s| (s.name.to_string(), service_model(s))).collect())))
}

/// `GET /hub/api/services/{name}`.
pub async fn get_one(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    let name = ServiceName::parse(&name).map_err(|e| AppError::NotFound(format!("no service named {name:?} ({e})")))?;
    Ok(Json(service_model(&state.hub().services().get(me.actor(), &name).await?)))
}
