//! A member's servers: the list on the home page, choosing an environment, following a start.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use labhub_core::resources::{format_bytes, format_cpu, parse_cpu, parse_memory};
use labhub_core::{GroupName, GroupRole, ServerName, ServerState, UserName};
use labhub_service::Actor;
use labhub_service::catalogue::short_id;
use labhub_service::culler::{CullPlan, CullReason};
use labhub_service::model::{StartOutcome, StartRequest, route_prefix};
use labhub_service::quotas::summary;
use labhub_service::words::format_duration;
use labhub_service::{Principal, ServiceError};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::extract::{CsrfForm, CurrentUser};
use crate::views::{Chrome, Page, When, exact, redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};

/// A server as the home page shows it.
pub struct ServerRow {
    pub name: String,
    pub label: String,
    pub state: &'static str,
    pub state_text: String,
    pub note: String,
    pub image: String,
    pub digest: String,
    pub digest_full: String,
    pub started: When,
    pub last_activity: When,
    /// When the culler will stop it and why; empty when it will not.
    pub cull_note: String,
    /// Whether using it would postpone that stop (an idle stop, not a lifetime one).
    pub can_keep: bool,
    pub url: String,
    pub spawn_url: String,
    pub pending_url: String,
    pub share_url: String,
}

fn spawn_path(kind: &str, owner: &UserName, server: Option<&ServerName>) -> String {
    match server {
        Some(s) => format!("/hub/{kind}/{owner}/{s}"),
        None => format!("/hub/{kind}/{owner}"),
    }
}

fn server_label(server: Option<&ServerName>) -> String {
    server.map_or_else(|| "Default server".to_string(), |s| s.to_string())
}

/// A group the user is in, as the home page lists it.
struct HomeGroup {
    name: String,
    lead: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
struct HomePage {
    c: Chrome,
    name: String,
    admin: bool,
    created: When,
    servers: Vec<ServerRow>,
    warnings: Vec<String>,
    named_limit: u32,
    named_count: usize,
    groups: Vec<HomeGroup>,
    /// Servers others shared with this user.
    shared: Vec<super::shares::SharedRow>,
    /// The most recent sessions (History), and how many there are.
    history: (Vec<super::history::SessionRow>, i64),
}

/// `GET /hub/home` (any signed-in user): their servers and account.
pub async fn home(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let user = hub.accounts().get(Actor::User(&me), &me.name).await?;
    let now = hub.now();
    // Every slot, the default one first even before its first start.
    let slots = hub.servers().of(Actor::User(&me), &me.name).await?;
    let named_count = slots.iter().filter(|s| s.name.is_some()).count();
    let servers = slots
        .into_iter()
        .map(|s| {
            let (state_text, note) = match s.state {
                ServerState::Running => ("running".to_string(), String::new()),
                ServerState::Pending => ("starting".to_string(), String::new()),
                ServerState::Stopping => ("stopping".to_string(), String::new()),
                ServerState::Stopped => (
                    "stopped".to_string(),
                    s.stop_reason.clone().map(|r| format!("Last stop: {r}")).unwrap_or_default(),
                ),
            };
            let resources = match s.resources {
                Some(r) if s.state != ServerState::Stopped => format!(" · {r}"),
                _ => String::new(),
            };
            let (cull_note, can_keep) = s.cull.map_or((String::new(), false), |plan| cull_note(now, &plan));
            ServerRow {
                cull_note,
                can_keep,
                label: server_label(s.name.as_ref()),
                state: s.state.as_str(),
                state_text,
                note,
                image: s.image.clone().map(|i| format!("{i}{resources}")).unwrap_or_else(|| "—".into()),
                digest: s.image_digest.as_deref().map(short_id).unwrap_or_default(),
                digest_full: s.image_digest.clone().unwrap_or_default(),
                started: When::opt(now, s.started_at.filter(|_| s.state == ServerState::Running)),
                last_activity: When::opt(now, s.last_activity),
                url: s.url(),
                spawn_url: spawn_path("spawn", &me.name, s.name.as_ref()),
                pending_url: spawn_path("spawn-pending", &me.name, s.name.as_ref()),
                share_url: spawn_path("share", &me.name, s.name.as_ref()),
                name: s.name_str().to_string(),
            }
        })
        .collect();
    let view = HomePage {
        c: page.chrome("home"),
        name: me.name.to_string(),
        admin: me.admin,
        created: When::new(now, user.created_at),
        servers,
        warnings: hub.quotas().storage_warnings(Actor::User(&me), &me.name).await?,
        named_limit: hub.server_settings().named_server_limit,
        named_count,
        groups: hub
            .groups()
            .memberships(Actor::User(&me), user.id)
            .await?
            .into_iter()
            .map(|m| HomeGroup { name: m.group.name.to_string(), lead: m.role == GroupRole::Lead })
            .collect(),
        shared: super::shares::shared_with_me(&state, &me).await?,
        history: super::history::recent(&state, &me).await?,
    };
    Ok(page.render(view))
}

/// The home page's warning of a coming stop, and whether "Keep it running" postpones it.
fn cull_note(now: OffsetDateTime, plan: &CullPlan) -> (String, bool) {
    let stops = format!("stops at {} ({})", exact(plan.at), When::new(now, plan.at).text);
    match plan.reason {
        CullReason::Idle { since, limit } => (
            format!(
                "Idle since {} ({}): {stops} after {} without activity, unless you use it.",
                exact(since),
                When::new(now, since).text,
                format_duration(limit)
            ),
            true,
        ),
        CullReason::Lifetime { limit } => {
            (format!("It {stops}: {} is the longest a server may run.", format_duration(limit)), false)
        }
    }
}

/// An environment on the start page.
struct ImageChoice {
    name: String,
    display_name: String,
    description: String,
    reference: String,
    resources: String,
    present: bool,
    fetch: &'static str,
    checked: bool,
}

/// A group to start under, when the owner is in several.
struct GroupChoice {
    name: String,
    limits: String,
    checked: bool,
}

/// One option of a size menu: (value, label, selected).
type SizeOption = (String, String, bool);

#[derive(Template, WebTemplate)]
#[template(path = "spawn.html")]
struct SpawnPage {
    c: Chrome,
    label: String,
    action: String,
    /// Asking which group first: the owner is in several and has not chosen.
    choose_group: bool,
    groups: Vec<GroupChoice>,
    /// The chosen group's name ("" for users in no group).
    group: String,
    limits: String,
    images: Vec<ImageChoice>,
    cpu_options: Vec<SizeOption>,
    memory_options: Vec<SizeOption>,
    gpu_options: Vec<SizeOption>,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct SpawnQuery {
    /// From the home page's "new named server" form.
    #[serde(default)]
    server: Option<String>,
    /// The group chosen on the first step, for members of several.
    #[serde(default)]
    group: Option<String>,
}

/// Which user's which server a page is about. Who may act on it (the owner, an admin, a
/// visitor whose share allows starting it) is the service's one gate to decide.
fn target(
    me: &Principal,
    user: Option<String>,
    server: Option<String>,
) -> Result<(UserName, Option<ServerName>), AppError> {
    let owner = match user {
        Some(u) => UserName::parse(&u).map_err(|e| AppError::NotFound(e.to_string()))?,
        None => me.name.clone(),
    };
    let server = match server.filter(|s| !s.is_empty()) {
        Some(s) => Some(ServerName::parse(&s).map_err(|e| AppError::BadRequest(e.to_string()))?),
        None => None,
    };
    Ok((owner, server))
}

/// What the start form was filled with (kept when it is shown again with an error).
#[derive(Deserialize, Default)]
pub struct SpawnForm {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    group: Option<String>,
    /// Cores; empty for the image's own.
    #[serde(default)]
    cpu: String,
    /// Bytes; empty for the image's own.
    #[serde(default)]
    memory: String,
    #[serde(default)]
    gpus: String,
}

impl SpawnForm {
    fn request(&self) -> Result<StartRequest, ServiceError> {
        let invalid = |e: String| ServiceError::Invalid(e);
        let nonempty = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        Ok(StartRequest {
            image: self.image.clone(),
            group: self.group.as_deref().and_then(nonempty).map(|g| GroupName::parse(&g)).transpose()?,
            cpu_millis: nonempty(&self.cpu).map(|c| parse_cpu(&c).map_err(|e| invalid(e.to_string()))).transpose()?,
            memory_bytes: nonempty(&self.memory)
                .map(|m| parse_memory(&m).map_err(|e| invalid(e.to_string())))
                .transpose()?,
            gpus: nonempty(&self.gpus)
                .map(|g| g.parse().map_err(|_| invalid(format!("{g:?} is not a number of GPUs"))))
                .transpose()?,
            exact_image: None,
        })
    }
}

/// The sizes offered up to a limit: common steps, and the limit itself.
fn sizes(steps: &[u64], max: u64, chosen: &str, label: fn(u64) -> String, value: fn(u64) -> String) -> Vec<SizeOption> {
    let mut values: Vec<u64> = steps.iter().copied().filter(|v| *v < max).collect();
    values.push(max);
    let mut out = vec![(String::new(), "the image's own (within the limit)".to_string(), chosen.is_empty())];
    out.extend(values.into_iter().map(|v| (value(v), label(v), value(v) == chosen)));
    out
}

async fn spawn_page(
    state: &AppState,
    page: &Page,
    me: &Principal,
    owner: &UserName,
    server: Option<&ServerName>,
    form: &SpawnForm,
    error: Option<String>,
) -> Result<SpawnPage, AppError> {
    let hub = state.hub();
    let options = hub.quotas().start_options(Actor::User(me), owner).await?;
    let wanted = form.group.as_deref().filter(|g| !g.is_empty());
    let chosen = match wanted {
        Some(g) => Some(
            options
                .iter()
                .find(|o| o.group.as_ref().is_some_and(|n| n.as_str() == g))
                .ok_or_else(|| AppError::BadRequest(format!("{owner} is not a member of the group {g}")))?,
        ),
        None if options.len() == 1 => options.first(),
        None => None,
    };
    let label = match server {
        Some(s) => format!("{owner}'s server {s}"),
        None => format!("{owner}'s server"),
    };
    let action = spawn_path("spawn", owner, server);
    let Some(chosen) = chosen else {
        // A member of several groups says first which one the server runs (and counts) under.
        return Ok(SpawnPage {
            c: page.chrome("home"),
            label,
            action,
            choose_group: true,
            groups: options
                .iter()
                .enumerate()
                .filter_map(|(i, o)| {
                    Some(GroupChoice {
                        name: o.group.as_ref()?.to_string(),
                        limits: summary(&o.quota),
                        checked: i == 0,
                    })
                })
                .collect(),
            group: String::new(),
            limits: String::new(),
            images: Vec::new(),
            cpu_options: Vec::new(),
            memory_options: Vec::new(),
            gpu_options: Vec::new(),
            error,
        });
    };
    let quota = &chosen.quota;
    let images = hub.catalogue().list().await?;
    let allowed: Vec<_> =
        images.into_iter().filter(|s| s.image.fields.enabled && quota.images.allows(&s.image.name)).collect();
    let first = allowed.first().map(|s| s.image.name.clone());
    let checked_image = form.image.clone().or(first);
    const CPU_STEPS: &[u64] = &[250, 500, 1000, 2000, 4000, 8000, 16000, 32000];
    const MEMORY_STEPS: &[u64] = &[256 << 20, 512 << 20, 1 << 30, 2 << 30, 4 << 30, 8 << 30, 16 << 30, 32 << 30];
    Ok(SpawnPage {
        c: page.chrome("home"),
        label,
        action,
        choose_group: false,
        groups: Vec::new(),
        group: chosen.group.as_ref().map(|g| g.to_string()).unwrap_or_default(),
        limits: summary(quota),
        images: allowed
            .into_iter()
            .map(|s| ImageChoice {
                checked: Some(&s.image.name) == checked_image.as_ref(),
                resources: format!(
                    "{} CPU, {}",
                    format_cpu(s.image.fields.cpu_millis.min(quota.max_cpu_millis)),
                    format_bytes(s.image.fields.memory_bytes.min(quota.max_memory_bytes))
                ),
                present: s.local.is_some(),
                fetch: if s.image.fields.recipe.is_some() {
                    "it is built on the first start (a few minutes)"
                } else {
                    "it is pulled on the first start"
                },
                name: s.image.name,
                display_name: s.image.fields.display_name,
                description: s.image.fields.description,
                reference: s.image.fields.reference.to_string(),
            })
            .collect(),
        cpu_options: sizes(
            CPU_STEPS,
            u64::from(quota.max_cpu_millis),
            &form.cpu,
            |m| format!("{} CPU", format_cpu(m as u32)),
            |m| format_cpu(m as u32),
        ),
        memory_options: sizes(MEMORY_STEPS, quota.max_memory_bytes, &form.memory, format_bytes, |b| b.to_string()),
        gpu_options: if quota.max_gpus == 0 {
            Vec::new()
        } else {
            (0..=quota.max_gpus.min(8))
                .map(|n| {
                    let selected = n.to_string() == form.gpus || (n == 0 && form.gpus.is_empty());
                    (n.to_string(), format!("{n} GPU{}", if n == 1 { "" } else { "s" }), selected)
                })
                .collect()
        },
        error,
    })
}

/// `GET /hub/spawn[/{user}[/{server}]][?group=]` (the owner or an admin): choose the group
/// (for members of several), then the environment and size.
pub async fn spawn_form(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    path: Option<Path<Vec<String>>>,
    Query(q): Query<SpawnQuery>,
) -> Result<Response, AppError> {
    let mut segs = path.map(|p| p.0).unwrap_or_default().into_iter();
    let (user, server) = (segs.next(), segs.next());
    if user.is_none()
        && let Some(s) = q.server.filter(|s| !s.trim().is_empty())
    {
        // The home page's form: normalise and move to the server's own address.
        let server = ServerName::parse(s.trim()).map_err(|e| AppError::BadRequest(e.to_string()))?;
        return Ok(Redirect::to(&spawn_path("spawn", &me.name, Some(&server))).into_response());
    }
    let (owner, server) = target(&me, user, server)?;
    let form = SpawnForm { group: q.group, ..SpawnForm::default() };
    // Said before the form is filled in, not only after it is sent.
    let refusal = state.hub().servers().isolation_refusal();
    let view = spawn_page(&state, &page, &me, &owner, server.as_ref(), &form, refusal).await?;
    Ok(page.render(view))
}

/// `POST /hub/spawn[/{user}[/{server}]]` (whoever may start it): starts it, then shows progress.
pub async fn spawn(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    path: Option<Path<Vec<String>>>,
    CsrfForm(form): CsrfForm<SpawnForm>,
) -> Result<Response, AppError> {
    let mut segs = path.map(|p| p.0).unwrap_or_default().into_iter();
    let (owner, server) = target(&me, segs.next(), segs.next())?;
    let pending = spawn_path("spawn-pending", &owner, server.as_ref());
    let started = match form.request() {
        Ok(request) => state.hub().servers().start(Actor::User(&me), &owner, server.as_ref(), request).await,
        Err(e) => Err(e),
    };
    match started {
        Ok(StartOutcome::Started(_) | StartOutcome::AlreadyPending(_)) => Ok(Redirect::to(&pending).into_response()),
        Ok(StartOutcome::AlreadyRunning(_)) => Ok(Redirect::to(&route_prefix(&owner, server.as_ref())).into_response()),
        Err(
            e @ (ServiceError::Invalid(_)
            | ServiceError::Conflict(_)
            | ServiceError::Forbidden(_)
            | ServiceError::TooMany { .. }
            | ServiceError::Unavailable(_)),
        ) => {
            let err = AppError::from(e);
            let status = err.status();
            let view = spawn_page(&state, &page, &me, &owner, server.as_ref(), &form, Some(err.to_string())).await?;
            Ok(page.render_status(status, view))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "spawn_pending.html")]
struct PendingPage {
    c: Chrome,
    label: String,
    message: String,
    percent: u8,
    progress_url: String,
    url: String,
    spawn_url: String,
}

/// `GET /hub/spawn-pending/{user}[/{server}]` (the owner or an admin): a live progress bar.
pub async fn spawn_pending(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    Path(segs): Path<Vec<String>>,
) -> Result<Response, AppError> {
    let mut segs = segs.into_iter();
    let (owner, server) = target(&me, segs.next(), segs.next())?;
    let row = state.hub().servers().of(Actor::User(&me), &owner).await?.into_iter().find(|s| s.name == server);
    let url = route_prefix(&owner, server.as_ref());
    if row.as_ref().is_some_and(|r| r.state == ServerState::Running) {
        return Ok(Redirect::to(&url).into_response());
    }
    let last = match row.as_ref().and_then(|r| r.id) {
        Some(id) => state.hub().servers().progress(id).await?.last(),
        None => None,
    };
    let progress_url = match &server {
        Some(s) => format!("/hub/api/users/{owner}/servers/{s}/progress"),
        None => format!("/hub/api/users/{owner}/server/progress"),
    };
    let view = PendingPage {
        c: page.chrome("home"),
        label: match &server {
            Some(s) => format!("{owner}'s server {s}"),
            None => format!("{owner}'s server"),
        },
        message: last.as_ref().map_or_else(|| "Waiting for the server…".to_string(), |e| e.message.clone()),
        percent: last.map_or(0, |e| e.progress),
        progress_url,
        url,
        spawn_url: spawn_path("spawn", &owner, server.as_ref()),
    };
    Ok(page.render(view))
}

#[derive(Deserialize)]
pub struct ServerForm {
    #[serde(default)]
    server: String,
}

/// `POST /hub/home/stop` (any signed-in user, their own servers).
pub async fn stop(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    CsrfForm(form): CsrfForm<ServerForm>,
) -> Result<Response, AppError> {
    let server = ServerName::parse_optional(&form.server).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let label = server_label(server.as_ref());
    Ok(match state.hub().servers().stop(Actor::User(&me), &me.name, server.as_ref()).await {
        Ok(labhub_service::model::StopOutcome::Stopped) => {
            redirect_with_flash(&state, "/hub/home", &format!("{label} stopped. Your files are kept."))
        }
        Ok(labhub_service::model::StopOutcome::Stopping) => {
            redirect_with_flash(&state, "/hub/home", &format!("{label} is stopping."))
        }
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_))) => {
            redirect_with_error(&state, "/hub/home", &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}

/// `POST /hub/home/keep` (any signed-in user, their own running servers): counts as activity,
/// so the idle timeout starts again.
pub async fn keep(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    CsrfForm(form): CsrfForm<ServerForm>,
) -> Result<Response, AppError> {
    let server = ServerName::parse_optional(&form.server).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let label = server_label(server.as_ref());
    Ok(match state.hub().culler().keep_running(Actor::User(&me), &me.name, server.as_ref()).await {
        Ok(()) => redirect_with_flash(
            &state,
            "/hub/home",
            &format!("{label} counts as used now; its idle time starts again."),
        ),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_))) => {
            redirect_with_error(&state, "/hub/home", &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}

/// `POST /hub/home/delete` (any signed-in user, their own stopped named servers).
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    CsrfForm(form): CsrfForm<ServerForm>,
) -> Result<Response, AppError> {
    let server = ServerName::parse(&form.server).map_err(|e| AppError::BadRequest(e.to_string()))?;
    Ok(match state.hub().servers().delete_named(Actor::User(&me), &me.name, &server).await {
        Ok(()) => {
            redirect_with_flash(&state, "/hub/home", &format!("Forgot the server {server}; your files are kept."))
        }
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_))) => {
            redirect_with_error(&state, "/hub/home", &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}

/// The page for `/user/…` when the server is not running: offers to start it.
#[derive(Template, WebTemplate)]
#[template(path = "not_running.html")]
pub struct NotRunningPage {
    pub c: Chrome,
    pub label: String,
    pub reason: String,
    pub can_start: bool,
    pub spawn_url: String,
}

impl NotRunningPage {
    /// The page for a user's server that is not running.
    pub fn new(
        c: Chrome,
        owner: &UserName,
        server: Option<&ServerName>,
        reason: Option<String>,
        can_start: bool,
    ) -> Self {
        Self {
            c,
            label: match server {
                Some(s) => format!("{owner}'s server {s}"),
                None => format!("{owner}'s server"),
            },
            reason: reason.unwrap_or_default(),
            can_start,
            spawn_url: spawn_path("spawn", owner, server),
        }
    }
}
