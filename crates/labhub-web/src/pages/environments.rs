//! Environment pages: the list with forms to build one (from a git repository, or from an
//! uploaded archive of its files), an environment with its build history (rebuild, and pin
//! for admins), and a build's live log with its progress bar; and saving a running server of the home page as an environment (a snapshot).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use futures::{StreamExt, TryStreamExt};
use labhub_core::{BuildId, GroupName, ServerName};
use labhub_service::environments::{BuildView, EnvironmentView, NewEnvironment, NewUpload, UploadStream, Whose};
use labhub_service::{Actor, Principal, ServiceError};
use serde::Deserialize;

use crate::extract::{CsrfForm, CsrfMultipart, CurrentUser};
use crate::views::{Chrome, Page, When, redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};

fn whose(h: &Whose) -> String {
    match h {
        Whose::Lab => "the lab".into(),
        Whose::Group(g) => format!("group {g}"),
        Whose::Personal(u) => format!("{u} (personal)"),
    }
}

fn short(id: Option<&str>) -> String {
    id.map(labhub_service::catalogue::short_id).unwrap_or_else(|| "—".into())
}

struct EnvRow {
    name: String,
    whose: String,
    status: String,
    image: String,
    commit: String,
    source: String,
    git_ref: String,
    snapshot: bool,
    uploaded: bool,
}

impl From<&EnvironmentView> for EnvRow {
    fn from(e: &EnvironmentView) -> Self {
        Self {
            name: e.name.clone(),
            whose: whose(&e.holder),
            status: e.status.clone(),
            image: short(e.image_id.as_deref()),
            commit: e.commit.as_deref().unwrap_or("—").chars().take(12).collect(),
            source: e.source.clone(),
            git_ref: e.git_ref.clone(),
            snapshot: e.snapshot,
            uploaded: e.uploaded,
        }
    }
}

/// The build form, as typed.
#[derive(Deserialize, Default)]
pub struct NewForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    source: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    base: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "environments.html")]
struct ListPage {
    c: Chrome,
    admin: bool,
    environments: Vec<EnvRow>,
    form: NewForm,
}

async fn list_view(state: &AppState, me: &Principal, page: &Page, form: NewForm) -> Result<ListPage, AppError> {
    let all = state.hub().environments().list(Actor::User(me)).await?;
    Ok(ListPage {
        c: page.chrome("environments"),
        admin: me.admin,
        environments: all.iter().map(EnvRow::from).collect(),
        form,
    })
}

/// `GET /hub/environments`: the environments the user may see, and the build form.
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
) -> Result<Response, AppError> {
    let v = list_view(&state, &me, &page, NewForm::default()).await?;
    Ok(page.render(v))
}

fn build_path(name: &str, build: BuildId) -> String {
    format!("/hub/environments/{name}/builds/{build}")
}

/// `POST /hub/environments`: creates an environment and shows its first build's live log; a
/// refusal shows the form again as typed, with the reason.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    CsrfForm(form): CsrfForm<NewForm>,
) -> Result<Response, AppError> {
    let optional = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let group = optional(&form.group).map(|g| GroupName::parse(&g).map_err(ServiceError::from));
    let result = match group.transpose() {
        Ok(group) => {
            let new = NewEnvironment {
                name: form.name.trim().to_string(),
                source: form.source.trim().to_string(),
                git_ref: optional(&form.git_ref),
                group,
                base: optional(&form.base),
            };
            state.hub().environments().create(Actor::User(&me), new).await
        }
        Err(e) => Err(e),
    };
    shown(&state, &me, page, form, result).await
}

/// A new environment's first build, or the form again as typed with the reason it was refused.
async fn shown(
    state: &AppState,
    me: &Principal,
    page: Page,
    form: NewForm,
    result: Result<(EnvironmentView, BuildId), ServiceError>,
) -> Result<Response, AppError> {
    match result {
        Ok((env, build)) => Ok(Redirect::to(&build_path(&env.name, build)).into_response()),
        Err(
            e @ (ServiceError::Invalid(_)
            | ServiceError::Conflict(_)
            | ServiceError::NotFound(_)
            | ServiceError::Forbidden(_)
            | ServiceError::TooLarge(_)),
        ) => {
            let mut v = list_view(state, me, &page, form).await?;
            (v.c.flash, v.c.flash_error) = (Some(e.to_string()), true);
            // The form comes back as a 400, but an upload past its limit keeps the API's 413.
            let status = match AppError::from(e).status() {
                StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            Ok(page.render_status(status, v))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads an upload form's fields up to its file (`archive`), which is left to stream.
async fn upload_form(
    form: &mut multer::Multipart<'static>,
    typed: &mut NewForm,
) -> Result<multer::Field<'static>, ServiceError> {
    let unreadable = |e: multer::Error| ServiceError::Invalid(format!("The form could not be read: {e}."));
    while let Some(mut field) = form.next_field().await.map_err(unreadable)? {
        let into = match field.name() {
            Some("name") => &mut typed.name,
            Some("group") => &mut typed.group,
            Some("archive") => return Ok(field),
            _ => continue,
        };
        // A name is short: the field is read in bounded pieces, never whole.
        let mut text = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
            text.extend_from_slice(&chunk);
            if text.len() > 1024 {
                return Err(ServiceError::Invalid("A name or group is at most a few dozen characters.".into()));
            }
        }
        *into = String::from_utf8_lossy(&text).into_owned();
    }
    Err(ServiceError::Invalid("Choose an archive (.tar or .tar.gz) of the repository's files.".into()))
}

fn streamed(file: multer::Field<'static>) -> UploadStream {
    file.map_err(std::io::Error::other).boxed()
}

/// `POST /hub/environments/upload` (multipart: `_csrf` first, `name`, `group`, `archive`):
/// creates an environment from uploaded files and shows its first build's live log.
pub async fn create_upload(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    CsrfMultipart(mut form): CsrfMultipart,
) -> Result<Response, AppError> {
    let mut typed = NewForm::default();
    let result = match upload_form(&mut form, &mut typed).await {
        Ok(file) => {
            let group = Some(typed.group.trim()).filter(|g| !g.is_empty()).map(GroupName::parse).transpose();
            match group.map_err(ServiceError::from) {
                Ok(group) => {
                    let new = NewUpload { name: typed.name.trim().to_string(), group, base: None };
                    state.hub().environments().create_from_upload(Actor::User(&me), new, streamed(file)).await
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    shown(&state, &me, page, typed, result).await
}

struct BuildRow {
    id: BuildId,
    git_ref: String,
    status: String,
    commit: String,
    image: String,
    built_by: String,
    started: When,
    error: Option<String>,
    serving: bool,
    pinned: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "environment.html")]
struct EnvPage {
    c: Chrome,
    admin: bool,
    may_delete: bool,
    env: EnvRow,
    builds: Vec<BuildRow>,
}

/// `GET /hub/environments/{name}`: the environment and its builds.
pub async fn show(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let env = state.hub().environments().get(Actor::User(&me), &name).await?;
    let may_delete = state.hub().environments().may_remove(Actor::User(&me), &name).await?;
    let now = state.hub().now();
    let builds = env
        .builds
        .iter()
        .map(|b: &BuildView| BuildRow {
            id: b.id,
            git_ref: b.git_ref.clone(),
            status: b.status.clone(),
            commit: b.commit.as_deref().unwrap_or("—").chars().take(12).collect(),
            image: short(b.image_id.as_deref()),
            built_by: b.built_by.clone(),
            started: When::new(now, b.started),
            error: b.error.clone(),
            serving: env.serving == Some(b.id),
            pinned: env.pinned == Some(b.id),
        })
        .collect();
    let v = EnvPage { c: page.chrome("environments"), admin: me.admin, may_delete, env: EnvRow::from(&env), builds };
    Ok(page.render(v))
}

/// The rebuild form.
#[derive(Deserialize, Default)]
pub struct RebuildForm {
    #[serde(default, rename = "ref")]
    git_ref: String,
}

/// `POST /hub/environments/{name}/builds`: builds it again and shows the live log.
pub async fn rebuild(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<RebuildForm>,
) -> Result<Response, AppError> {
    let git_ref = Some(form.git_ref.trim().to_string()).filter(|r| !r.is_empty());
    match state.hub().environments().rebuild(Actor::User(&me), &name, git_ref).await {
        Ok(build) => Ok(Redirect::to(&build_path(&name, build)).into_response()),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::Forbidden(_) | ServiceError::Unavailable(_))) => {
            Ok(redirect_with_error(&state, &format!("/hub/environments/{name}"), &e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /hub/environments/{name}/upload` (multipart: `_csrf` first, `archive`): builds an
/// uploaded environment again from new files and shows the live log.
pub async fn rebuild_upload(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    CsrfMultipart(mut form): CsrfMultipart,
) -> Result<Response, AppError> {
    let envs = state.hub().environments();
    let result = match upload_form(&mut form, &mut NewForm::default()).await {
        Ok(file) => envs.rebuild_from_upload(Actor::User(&me), &name, streamed(file)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(build) => Ok(Redirect::to(&build_path(&name, build)).into_response()),
        Err(
            e @ (ServiceError::Invalid(_)
            | ServiceError::Conflict(_)
            | ServiceError::Forbidden(_)
            | ServiceError::TooLarge(_)
            | ServiceError::Unavailable(_)),
        ) => Ok(redirect_with_error(&state, &format!("/hub/environments/{name}"), &e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// `POST /hub/environments/{name}/delete`: deletes it, back to the list with what happened.
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    CsrfForm(_): CsrfForm<crate::pages::login::Empty>,
) -> Result<Response, AppError> {
    match state.hub().environments().remove(Actor::User(&me), &name).await {
        Ok(()) => Ok(redirect_with_flash(
            &state,
            "/hub/environments",
            &format!("Deleted {name}. Sessions that ran it keep their images until they are collected."),
        )),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::Forbidden(_))) => {
            Ok(redirect_with_error(&state, &format!("/hub/environments/{name}"), &e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The pin form: a build's number, or empty to unpin.
#[derive(Deserialize, Default)]
pub struct PinForm {
    #[serde(default)]
    build: String,
}

/// `POST /hub/environments/{name}/pin` (admins).
pub async fn pin(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<PinForm>,
) -> Result<Response, AppError> {
    let build = match form.build.trim() {
        "" => None,
        b => Some(BuildId::new(b.parse().map_err(|_| AppError::BadRequest(format!("{b:?} is not a build number")))?)),
    };
    let back = format!("/hub/environments/{name}");
    match state.hub().environments().pin(Actor::User(&me), &name, build).await {
        Ok(env) => {
            let serving = env.serving.map_or("no build".to_string(), |b| format!("build {b}"));
            Ok(redirect_with_flash(&state, &back, &format!("Starts of {name} now run {serving}.")))
        }
        Err(e @ (ServiceError::Invalid(_) | ServiceError::Forbidden(_))) => {
            Ok(redirect_with_error(&state, &back, &e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "environment_build.html")]
struct BuildPage {
    c: Chrome,
    name: String,
    build: BuildId,
    log_url: String,
}

/// `GET /hub/environments/{name}/builds/{id}`: a build's live log and progress bar (the page
/// moves to the environment when the build succeeds).
pub async fn build_log(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    Path((name, build)): Path<(String, i64)>,
) -> Result<Response, AppError> {
    let build = BuildId::new(build);
    // Refuses builds the user may not see, and those of other environments.
    state.hub().environments().log(Actor::User(&me), &name, build).await?;
    let log_url = format!("/hub/api/environments/{name}/builds/{build}/log");
    let v = BuildPage { c: page.chrome("environments"), name, build, log_url };
    Ok(page.render(v))
}

/// The home page's "Save environment" form under a running server.
#[derive(Deserialize)]
pub struct SaveForm {
    #[serde(default)]
    server: String,
    name: String,
}

/// `POST /hub/home/save` (any signed-in user, their own running servers): saves the server's
/// container — not its home folder — as their environment, then shows it.
pub async fn save(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    CsrfForm(form): CsrfForm<SaveForm>,
) -> Result<Response, AppError> {
    let server = ServerName::parse_optional(&form.server).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let name = form.name.trim();
    match state.hub().environments().snapshot(Actor::User(&me), &me.name, server.as_ref(), name).await {
        Ok(env) => Ok(redirect_with_flash(
            &state,
            &format!("/hub/environments/{}", env.name),
            &format!("Saved as '{}'. Your home folder is not part of it; start it like any environment.", env.name),
        )),
        Err(
            e @ (ServiceError::Conflict(_)
            | ServiceError::Invalid(_)
            | ServiceError::Forbidden(_)
            | ServiceError::NotFound(_)
            | ServiceError::Unavailable(_)),
        ) => Ok(redirect_with_error(&state, "/hub/home", &e.to_string())),
        Err(e) => Err(e.into()),
    }
}
