//! `/hub/api/environments…`: environments built from repositories or uploaded archives of
//! their files (labhub's own; JupyterHub has none). Their model: `{"name", "source", "ref",
//! "uploaded", "holder": {"kind": "lab"|"group"|"personal", "name"}, "status": "building"|
//! "ready"|"failed", "image_id", "commit", "serving", "pinned", "snapshot", "builds": [{"id",
//! "ref", "status", "commit", "recipe_hash", "base_image_id", "image_id", "tag",
//! "builder_version", "built_by", "started", "finished", "error"}]}`; an uploaded one's
//! `source` is `upload` and its `ref` and `commit` the `sha256:` of its files. A build's log
//! is Server-Sent Events in the spawn progress format. A running server saved as its owner's
//! environment (`…/snapshot`) has the same model.

use axum::Json;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use labhub_core::{BuildId, GroupName, ServerName, UserName};
use labhub_service::Actor;
use labhub_service::environments::{BuildLog, NewEnvironment, NewUpload, UploadStream};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiJson;
use crate::extract::CurrentUser;
use crate::{AppError, AppState, sse};

fn log_url(name: &str, build: BuildId) -> String {
    format!("/hub/api/environments/{name}/builds/{build}/log")
}

/// `GET /hub/api/environments`: those the caller may see (admins: all; others: the lab's,
/// their groups' and their own).
pub async fn list(State(state): State<AppState>, CurrentUser(me): CurrentUser) -> Result<Json<Value>, AppError> {
    let all = state.hub().environments().list(Actor::User(&me)).await?;
    Ok(Json(json!(all)))
}

/// `GET /hub/api/environments/{name}`.
pub async fn get_one(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(json!(state.hub().environments().get(Actor::User(&me), &name).await?)))
}

/// `DELETE /hub/api/environments/{name}`: admins any, a group's leads the group's, a member
/// their own; 204. The images stay for the sessions that ran them.
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    state.hub().environments().remove(Actor::User(&me), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /hub/api/environments`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBody {
    name: String,
    source: String,
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    base: Option<String>,
}

/// The query of an upload to `POST /hub/api/environments`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    name: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    base: Option<String>,
}

/// Whether a request's body is an archive of files (`application/x-tar`, `application/gzip`,
/// `application/octet-stream`) rather than JSON.
fn is_archive(req: &Request) -> bool {
    let kind = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let kind = kind.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    ["application/x-tar", "application/gzip", "application/x-gzip", "application/octet-stream"].contains(&kind.as_str())
}

fn group_name(raw: Option<&str>) -> Result<Option<GroupName>, AppError> {
    raw.map(|g| GroupName::parse(g).map_err(|e| AppError::BadRequest(format!("group {g:?}: {e}")))).transpose()
}

fn upload_of(req: Request) -> UploadStream {
    req.into_body().into_data_stream().map_err(std::io::Error::other).boxed()
}

/// `POST /hub/api/environments` `{name, source, ref?, group?, base?}`, or an archive of the
/// files (a tar or tar.gz body, `?name=…[&group=…][&base=…]`): 201 with the model and the first build's
/// `log_url`; the build runs on.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    req: Request,
) -> Result<Response, AppError> {
    let envs = state.hub().environments();
    let (env, build) = if is_archive(&req) {
        let Query(q) = Query::<UploadQuery>::try_from_uri(req.uri()).map_err(|e| {
            AppError::BadRequest(format!("an upload names the environment: ?name=…[&group=…][&base=…] ({e})"))
        })?;
        let new = NewUpload { name: q.name, group: group_name(q.group.as_deref())?, base: q.base };
        envs.create_from_upload(Actor::User(&me), new, upload_of(req)).await?
    } else {
        let ApiJson(body) = ApiJson::<NewBody>::from_request(req, &state).await?;
        let group = group_name(body.group.as_deref())?;
        let new =
            NewEnvironment { name: body.name, source: body.source, git_ref: body.git_ref, group, base: body.base };
        envs.create(Actor::User(&me), new).await?
    };
    let mut model = json!(env);
    model["build"] = json!(build);
    model["log_url"] = json!(log_url(&env.name, build));
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

/// The body of `POST /hub/api/environments/{name}/builds`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BuildBody {
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
}

/// `POST /hub/api/environments/{name}/builds` `{ref?}`, or new files for an uploaded
/// environment (a tar or tar.gz body): a rebuild; 202 with `{build, log_url}`.
pub async fn rebuild(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, AppError> {
    let envs = state.hub().environments();
    let build = if is_archive(&req) {
        envs.rebuild_from_upload(Actor::User(&me), &name, upload_of(req)).await?
    } else {
        let ApiJson(body) = ApiJson::<BuildBody>::from_request(req, &state).await?;
        envs.rebuild(Actor::User(&me), &name, body.git_ref).await?
    };
    Ok((StatusCode::ACCEPTED, Json(json!({ "build": build, "log_url": log_url(&name, build) }))).into_response())
}

/// `GET /hub/api/environments/{name}/builds/{id}/log`: Server-Sent Events, live while the
/// build runs, replayed from what was kept after.
pub async fn log(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path((name, build)): Path<(String, i64)>,
) -> Result<Response, AppError> {
    match state.hub().environments().log(Actor::User(&me), &name, BuildId::new(build)).await? {
        BuildLog::Live(log) => Ok(sse::stream(log).into_response()),
        BuildLog::Stored(events) => Ok(sse::replay(events).into_response()),
    }
}

/// The body of `PUT /hub/api/environments/{name}/pin`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinBody {
    build: Option<i64>,
}

/// `PUT /hub/api/environments/{name}/pin` `{"build": id|null}` (admins): the build starts run
/// whatever is newer; `null` serves the newest good build again.
pub async fn pin(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PinBody>,
) -> Result<Json<Value>, AppError> {
    let env = state.hub().environments().pin(Actor::User(&me), &name, body.build.map(BuildId::new)).await?;
    Ok(Json(json!(env)))
}

/// The body of `POST /hub/api/users/{name}/server[s/{server}]/snapshot`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBody {
    name: String,
}

/// `POST /hub/api/users/{name}/server/snapshot` `{name}`: saves the running default server
/// (its container, never its home) as the owner's environment `name`; 201 with its model.
pub async fn snapshot_default(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(owner): Path<String>,
    ApiJson(body): ApiJson<SnapshotBody>,
) -> Result<Response, AppError> {
    snapshot(&state, &me, &owner, None, &body.name).await
}

/// `POST /hub/api/users/{name}/servers/{server}/snapshot` `{name}`: the same for a named server.
pub async fn snapshot_named(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path((owner, server)): Path<(String, String)>,
    ApiJson(body): ApiJson<SnapshotBody>,
) -> Result<Response, AppError> {
    let server = ServerName::parse(&server).map_err(|e| AppError::BadRequest(e.to_string()))?;
    snapshot(&state, &me, &owner, Some(&server), &body.name).await
}

async fn snapshot(
    state: &AppState,
    me: &labhub_service::Principal,
    owner: &str,
    server: Option<&ServerName>,
    name: &str,
) -> Result<Response, AppError> {
    let owner = UserName::parse(owner).map_err(|e| AppError::NotFound(format!("no user named {owner:?} ({e})")))?;
    let env = state.hub().environments().snapshot(Actor::User(me), &owner, server, name).await?;
    Ok((StatusCode::CREATED, Json(json!(env))).into_response())
}
