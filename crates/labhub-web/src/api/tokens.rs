//! `/hub/api/users/{name}/tokens…`.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use labhub_core::UserName;
use labhub_service::Actor;
use serde::Deserialize;
use serde_json::json;

use super::ApiJson;
use super::models::{TokenModel, parse_token_id};
use crate::extract::CurrentUser;
use crate::{AppError, AppState};

fn owner(raw: &str) -> Result<UserName, AppError> {
    UserName::parse(raw).map_err(|e| AppError::NotFound(format!("no user named {raw:?} ({e})")))
}

fn token_id(raw: &str) -> Result<labhub_core::TokenId, AppError> {
    parse_token_id(raw).ok_or_else(|| AppError::NotFound(format!("no token {raw:?}")))
}

/// `GET /hub/api/users/{name}/tokens` (that user or an admin).
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let name = owner(&name)?;
    let tokens = state.hub().tokens().list(Actor::User(&me), &name).await?;
    let models: Vec<TokenModel> = tokens.iter().map(|t| TokenModel::of(name.as_str(), t)).collect();
    Ok(Json(json!({ "api_tokens": models, "oauth_tokens": [] })))
}

#[derive(Deserialize, Default)]
pub struct NewToken {
    #[serde(default)]
    note: Option<String>,
    /// Seconds until the token expires; absent or null for no expiry.
    #[serde(default)]
    expires_in: Option<u64>,
    /// The token's scopes (a subset of its owner's); absent: the owner's (`inherit`).
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// JupyterHub's older way: roles whose scopes the token gets; only `token` (`inherit`)
    /// is accepted.
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// `POST /hub/api/users/{name}/tokens` (that user or an admin): `{"note", "expires_in"}`.
/// The answer carries the token itself, once.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<Response, AppError> {
    let name = owner(&name)?;
    if body.roles.iter().flatten().any(|r| r != "token") {
        return Err(AppError::BadRequest(
            "give a token 'scopes' rather than 'roles' (only the role 'token' is accepted)".into(),
        ));
    }
    let expires = body.expires_in.map(Duration::from_secs);
    let note = body.note.as_deref().unwrap_or("");
    let scopes = body.scopes.as_deref().filter(|s| !s.is_empty());
    let (token, row) = state.hub().tokens().create(Actor::User(&me), &name, note, expires, scopes).await?;
    let mut model = TokenModel::of(name.as_str(), &row);
    model.token = Some(token.expose().clone());
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

/// `GET /hub/api/users/{name}/tokens/{id}` (that user or an admin).
pub async fn get_one(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<TokenModel>, AppError> {
    let name = owner(&name)?;
    let t = state.hub().tokens().get(Actor::User(&me), &name, token_id(&id)?).await?;
    Ok(Json(TokenModel::of(name.as_str(), &t)))
}

/// `DELETE /hub/api/users/{name}/tokens/{id}` (that user or an admin): revokes at once.
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let name = owner(&name)?;
    state.hub().tokens().revoke(Actor::User(&me), &name, token_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
