//! `/hub/api/users/{name}/server`, `/hub/api/users/{name}/servers/{server}` and their progress.
//! A registered service may call them too: the one server gate admits it by its scopes alone.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use labhub_core::resources::Amount;
use labhub_core::{GroupName, ServerName, ServerState, UserName};
use labhub_service::Actor;
use labhub_service::model::{StartOutcome, StartRequest, StopOutcome};
use labhub_service::progress::ProgressEvent;
use serde::Deserialize;

use super::ApiJson;
use super::models::ServerModel;
use crate::extract::Caller;
use crate::{AppError, AppState, sse};

fn owner(raw: &str) -> Result<UserName, AppError> {
    UserName::parse(raw).map_err(|e| AppError::NotFound(format!("no user named {raw:?} ({e})")))
}

fn server_name(raw: &str) -> Result<ServerName, AppError> {
    ServerName::parse(raw).map_err(|e| AppError::BadRequest(e.to_string()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The catalogue image's name.
    #[serde(default)]
    image: Option<String>,
    /// KubeSpawner's name for the same choice.
    #[serde(default)]
    profile: Option<String>,
    /// labhub's own: the group to start under (and charge), when the owner is in several.
    #[serde(default)]
    group: Option<String>,
    /// labhub's own: a CPU limit in cores (within the group's limit).
    #[serde(default)]
    cpu: Option<Amount>,
    /// labhub's own: a memory limit, in bytes or as "2G" (within the group's limit).
    #[serde(default)]
    memory: Option<Amount>,
    /// labhub's own: GPUs to request.
    #[serde(default)]
    gpus: Option<u32>,
}

impl StartBody {
    fn into_request(self) -> Result<StartRequest, AppError> {
        Ok(StartRequest {
            image: self.image.or(self.profile),
            group: self
                .group
                .map(|g| GroupName::parse(&g).map_err(|e| AppError::BadRequest(e.to_string())))
                .transpose()?,
            cpu_millis: self.cpu.as_ref().map(Amount::cpu_millis).transpose()?,
            memory_bytes: self.memory.as_ref().map(Amount::memory_bytes).transpose()?,
            gpus: self.gpus,
            exact_image: None,
        })
    }
}

async fn start(
    state: &AppState,
    me: Actor<'_>,
    owner: UserName,
    server: Option<ServerName>,
    body: StartBody,
) -> Result<Response, AppError> {
    let request = body.into_request()?;
    let outcome = state.hub().servers().start(me, &owner, server.as_ref(), request).await?;
    answer_start(state, me, owner, server, outcome).await
}

/// The answer to a start (or a relaunch): 201 with the server's model when it answered within
/// the hub's patience, 202 while it is still starting, the refusal otherwise.
pub(crate) async fn answer_start(
    state: &AppState,
    me: Actor<'_>,
    owner: UserName,
    server: Option<ServerName>,
    outcome: StartOutcome,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let label = match &server {
        Some(s) => format!("{owner}/{s}"),
        None => format!("{owner}'s server"),
    };
    let servers = hub.servers();
    let ticket = match outcome {
        StartOutcome::AlreadyRunning(_) => return Err(AppError::BadRequest(format!("{label} is already running"))),
        StartOutcome::AlreadyPending(_) => return Err(AppError::BadRequest(format!("{label} is already starting"))),
        StartOutcome::Started(ticket) => ticket,
    };
    let last = servers.wait_for_start(&ticket, hub.server_settings().slow_spawn_timeout).await;
    if let Some(e) = last.as_ref().filter(|e| e.failed) {
        return Err(AppError::SpawnFailed(e.message.clone()));
    }
    let status = if last.is_some_and(|e| e.ready) { StatusCode::CREATED } else { StatusCode::ACCEPTED };
    let view = servers.get(me, &owner, server.as_ref()).await?;
    Ok((status, Json(ServerModel::of(&view))).into_response())
}

async fn stop(
    state: &AppState,
    me: Actor<'_>,
    owner: UserName,
    server: Option<ServerName>,
) -> Result<StatusCode, AppError> {
    match state.hub().servers().stop(me, &owner, server.as_ref()).await? {
        StopOutcome::Stopped => Ok(StatusCode::NO_CONTENT),
        StopOutcome::Stopping => Ok(StatusCode::ACCEPTED),
    }
}

/// `POST /hub/api/users/{name}/server` (that user or an admin): `{"image": "<name>"}` optional.
/// 201 when the server answered within the hub's patience, 202 while it is still starting.
pub async fn start_default(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<Response, AppError> {
    start(&state, me.actor(), owner(&name)?, None, body).await
}

/// `DELETE /hub/api/users/{name}/server` (that user or an admin): 204 stopped, 202 stopping.
pub async fn stop_default(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    stop(&state, me.actor(), owner(&name)?, None).await
}

/// `POST /hub/api/users/{name}/servers/{server}` (that user or an admin).
pub async fn start_named(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path((name, server)): Path<(String, String)>,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<Response, AppError> {
    start(&state, me.actor(), owner(&name)?, Some(server_name(&server)?), body).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    /// Also forget the named server (JupyterHub's `remove`); its storage stays.
    #[serde(default)]
    remove: bool,
}

/// `DELETE /hub/api/users/{name}/servers/{server}` (that user or an admin); `{"remove": true}`
/// also forgets it once stopped.
pub async fn stop_named(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path((name, server)): Path<(String, String)>,
    ApiJson(body): ApiJson<StopBody>,
) -> Result<StatusCode, AppError> {
    let (owner, server) = (owner(&name)?, server_name(&server)?);
    let status = stop(&state, me.actor(), owner.clone(), Some(server.clone())).await?;
    if body.remove {
        if status == StatusCode::ACCEPTED {
            return Err(AppError::Service(labhub_service::ServiceError::Conflict(
                "the server is still stopping; remove it once it has stopped".into(),
            )));
        }
        state.hub().servers().delete_named(me.actor(), &owner, &server).await?;
    }
    Ok(status)
}

/// `GET /hub/api/users/{name}/servers/{server}` (that user or an admin): the server model.
pub async fn get_named(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path((name, server)): Path<(String, String)>,
) -> Result<Json<ServerModel>, AppError> {
    let (owner, server) = (owner(&name)?, server_name(&server)?);
    let view = state.hub().servers().get(me.actor(), &owner, Some(&server)).await?;
    Ok(Json(ServerModel::of(&view)))
}

async fn progress(
    state: &AppState,
    me: Actor<'_>,
    owner: UserName,
    server: Option<ServerName>,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let view = hub.servers().get(me, &owner, server.as_ref()).await?;
    let url = view.url();
    let progress = match view.id {
        Some(id) if matches!(view.state, ServerState::Pending | ServerState::Stopped) => {
            Some(hub.servers().progress(id).await?)
        }
        _ => None,
    };
    Ok(match view.state {
        ServerState::Running => {
            sse::single(ProgressEvent::ready(format!("Server ready at {url}"), Some(url))).into_response()
        }
        ServerState::Pending => match progress {
            Some(log) => sse::stream(log).into_response(),
            None => sse::single(ProgressEvent::step(50, "The server is starting")).into_response(),
        },
        ServerState::Stopping => sse::single(ProgressEvent::failed("The server is stopping")).into_response(),
        ServerState::Stopped => match progress.filter(|l| l.finished()) {
            Some(log) => sse::stream(log).into_response(),
            None => {
                let why = view.stop_reason.map(|r| format!(" (it stopped: {r})")).unwrap_or_default();
                sse::single(ProgressEvent::failed(format!("The server is not running{why}"))).into_response()
            }
        },
    })
}

/// `GET /hub/api/users/{name}/server/progress` (that user or an admin): Server-Sent Events,
/// `{progress, message, ready, failed, url}`.
pub async fn progress_default(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    progress(&state, me.actor(), owner(&name)?, None).await
}

/// `GET /hub/api/users/{name}/servers/{server}/progress` (that user or an admin).
pub async fn progress_named(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path((name, server)): Path<(String, String)>,
) -> Result<Response, AppError> {
    progress(&state, me.actor(), owner(&name)?, Some(server_name(&server)?)).await
}
