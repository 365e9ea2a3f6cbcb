//! The group page's forms: members, limits, images, the ceiling, renaming, deleting, and
//! stopping a member's server.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use labhub_core::resources::{parse_cpu, parse_memory};
use labhub_core::{GroupName, ImageAllowance, ServerName, UserName};
use labhub_service::model::StorageFate;
use labhub_service::quotas::QuotaPatch;
use labhub_service::{Actor, ServiceError};
use serde::Deserialize;

use crate::extract::{AdminUser, CsrfForm, CurrentUser};
use crate::pages::login::Empty;
use crate::views::{redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};

use super::{answer, group_name, group_path};

/// A form naming users (comma or space separated).
#[derive(Deserialize)]
pub struct UsersForm {
    #[serde(default)]
    users: String,
}

fn names_in(text: &str) -> Result<Vec<UserName>, ServiceError> {
    let names: Vec<UserName> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(UserName::parse)
        .collect::<Result<_, _>>()?;
    if names.is_empty() {
        return Err(ServiceError::Invalid("give at least one user name".into()));
    }
    Ok(names)
}

/// `POST /hub/groups/{name}/members` (admins, its leads): adds the listed users.
pub async fn add_members(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<UsersForm>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let result =
        match names_in(&form.users) {
            Ok(names) => state.hub().groups().add_members(Actor::User(&me), &name, &names).await.map(|_| {
                format!("Added {} to {name}.", names.iter().map(UserName::as_str).collect::<Vec<_>>().join(", "))
            }),
            Err(e) => Err(e),
        };
    answer(&state, &group_path(&name), result)
}

/// `POST /hub/groups/{name}/members/{user}/{action}` (remove: admins, its leads; lead, unlead:
/// admins).
pub async fn member_action(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path((name, user, action)): Path<(String, String, String)>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let user = UserName::parse(&user).map_err(|e| AppError::NotFound(e.to_string()))?;
    let hub = state.hub();
    let actor = Actor::User(&me);
    let result = match action.as_str() {
        "remove" => hub
            .groups()
            .remove_members(actor, &name, std::slice::from_ref(&user))
            .await
            .map(|_| format!("{user} is no longer in {name}.")),
        "lead" => hub.groups().set_lead(actor, &name, &user, true).await.map(|_| format!("{user} now leads {name}.")),
        "unlead" => {
            hub.groups().set_lead(actor, &name, &user, false).await.map(|_| format!("{user} no longer leads {name}."))
        }
        _ => return Err(AppError::NotFound(format!("there is no action '{action}'"))),
    };
    answer(&state, &group_path(&name), result)
}

/// The limits form: every field as typed.
#[derive(Deserialize)]
pub struct QuotaForm {
    #[serde(default)]
    max_cpu: String,
    #[serde(default)]
    max_memory: String,
    #[serde(default)]
    max_gpus: String,
    #[serde(default)]
    max_servers: String,
    #[serde(default)]
    budget_cpu: String,
    #[serde(default)]
    budget_memory: String,
    #[serde(default)]
    storage: String,
    #[serde(default)]
    idle_minutes: String,
    #[serde(default)]
    lifetime_minutes: String,
    /// A checkbox: present when checked.
    #[serde(default)]
    cull_busy: Option<String>,
    /// Empty: the site's build time limit.
    #[serde(default)]
    build_minutes: String,
}

fn count(raw: &str, what: &str) -> Result<u32, ServiceError> {
    raw.trim().parse().map_err(|_| ServiceError::Invalid(format!("{what} must be a whole number, not {raw:?}")))
}

fn optional<T>(raw: &str, parse: impl FnOnce(&str) -> Result<T, ServiceError>) -> Result<Option<T>, ServiceError> {
    let raw = raw.trim();
    if raw.is_empty() { Ok(None) } else { parse(raw).map(Some) }
}

fn cpu(raw: &str) -> Result<u32, ServiceError> {
    parse_cpu(raw).map_err(|e| ServiceError::Invalid(e.to_string()))
}

fn memory(raw: &str) -> Result<u64, ServiceError> {
    parse_memory(raw).map_err(|e| ServiceError::Invalid(e.to_string()))
}

fn duration_minutes(raw: &str) -> Result<Duration, ServiceError> {
    raw.parse::<f64>()
        .ok()
        .filter(|m| m.is_finite() && *m > 0.0 && *m < 1e7)
        .map(|m| Duration::from_secs(((m * 60.0).round() as u64).max(1)))
        .ok_or_else(|| ServiceError::Invalid(format!("{raw:?} is not a number of minutes (leave it empty for never)")))
}

impl QuotaForm {
    fn patch(&self) -> Result<QuotaPatch, ServiceError> {
        Ok(QuotaPatch {
            max_cpu_millis: Some(cpu(&self.max_cpu)?),
            max_memory_bytes: Some(memory(&self.max_memory)?),
            max_gpus: Some(count(&self.max_gpus, "the GPU limit")?),
            images: None,
            max_servers_per_member: Some(count(&self.max_servers, "the number of servers per member")?),
            budget_cpu_millis: Some(optional(&self.budget_cpu, |s| cpu(s).map(u64::from))?),
            budget_memory_bytes: Some(optional(&self.budget_memory, memory)?),
            storage_bytes: Some(optional(&self.storage, memory)?),
            idle_timeout: Some(optional(&self.idle_minutes, duration_minutes)?),
            max_lifetime: Some(optional(&self.lifetime_minutes, duration_minutes)?),
            cull_busy: Some(self.cull_busy.is_some()),
            build_timeout: Some(optional(&self.build_minutes, duration_minutes)?),
        })
    }
}

/// `POST /hub/groups/{name}/quota` (admins, its leads within the ceiling).
pub async fn set_quota(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<QuotaForm>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let result = match form.patch() {
        Ok(p) => state
            .hub()
            .quotas()
            .set_group_quota(Actor::User(&me), &name, &p)
            .await
            .map(|_| format!("Saved the limits of {name}.")),
        Err(e) => Err(e),
    };
    limits_answer(&state, &name, result)
}

/// Limits refused for being above the ceiling are the visitor's to fix too.
fn limits_answer(
    state: &AppState,
    name: &GroupName,
    result: Result<String, ServiceError>,
) -> Result<Response, AppError> {
    match result {
        Err(ServiceError::AboveCeiling(m)) => Ok(redirect_with_error(state, &group_path(name), &m)),
        other => answer(state, &group_path(name), other),
    }
}

/// The images chosen in a form: `all`, or the checked `img.<name>` boxes.
fn chosen_images(form: &HashMap<String, String>) -> ImageAllowance {
    if form.contains_key("all") {
        return ImageAllowance::All;
    }
    let mut names: Vec<String> = form.keys().filter_map(|k| k.strip_prefix("img.")).map(str::to_string).collect();
    names.sort();
    ImageAllowance::Only(names)
}

/// `POST /hub/groups/{name}/images` (admins, its leads within the ceiling).
pub async fn set_images(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let result = state
        .hub()
        .quotas()
        .set_group_images(Actor::User(&me), &name, chosen_images(&form))
        .await
        .map(|_| format!("Saved the images {name} may use."));
    limits_answer(&state, &name, result)
}

/// `POST /hub/groups/{name}/ceiling` (admins): the most the group's leads may grant.
pub async fn set_ceiling(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let fields = QuotaForm {
        max_cpu: field("max_cpu"),
        max_memory: field("max_memory"),
        max_gpus: field("max_gpus"),
        max_servers: field("max_servers"),
        budget_cpu: field("budget_cpu"),
        budget_memory: field("budget_memory"),
        storage: field("storage"),
        idle_minutes: field("idle_minutes"),
        lifetime_minutes: field("lifetime_minutes"),
        cull_busy: form.get("cull_busy").cloned(),
        build_minutes: field("build_minutes"),
    };
    let result = match fields.patch() {
        Ok(p) => {
            let p = QuotaPatch { images: Some(chosen_images(&form)), ..p };
            state
                .hub()
                .quotas()
                .set_group_ceiling(Actor::User(&me), &name, &p)
                .await
                .map(|_| format!("Saved the ceiling of {name}; its limits were lowered where they were above it."))
        }
        Err(e) => Err(e),
    };
    answer(&state, &group_path(&name), result)
}

/// The form renaming a group.
#[derive(Deserialize)]
pub struct RenameForm {
    #[serde(default)]
    name: String,
}

/// `POST /hub/groups/{name}/rename` (admins).
pub async fn rename(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<RenameForm>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let renamed = match GroupName::parse(form.name.trim()) {
        Ok(new) => state.hub().groups().rename(Actor::User(&me), &name, &new).await,
        Err(e) => Err(e.into()),
    };
    match renamed {
        Ok(g) => Ok(redirect_with_flash(&state, &group_path(&g.name), &format!("Renamed {name} to {}.", g.name))),
        Err(e) => answer(&state, &group_path(&name), Err(e)),
    }
}

/// The form deleting a group: what becomes of its shared folder.
#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    storage: String,
}

/// `POST /hub/groups/{name}/delete` (admins).
pub async fn delete(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<DeleteForm>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let fate = StorageFate::parse(&form.storage)?;
    let folder = match fate {
        StorageFate::Keep => "its shared folder, if any, is kept under Storage",
        StorageFate::Delete => "its shared folder, if any, is deleted",
    };
    match state.hub().groups().delete(Actor::User(&me), &name, fate).await {
        Ok(()) => Ok(redirect_with_flash(&state, "/hub/admin/groups", &format!("Deleted the group {name}; {folder}."))),
        Err(e) => answer(&state, &group_path(&name), Err(e)),
    }
}

/// The shared-folder form of the group page.
#[derive(Deserialize)]
pub struct SharedForm {
    #[serde(default)]
    shared_folder: Option<String>,
    #[serde(default)]
    read_only: Option<String>,
}

/// `POST /hub/groups/{name}/shared` (admins, its leads): turns the shared folder on or off.
pub async fn set_shared(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<SharedForm>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let (on, read_only) = (form.shared_folder.is_some(), form.read_only.is_some());
    let result =
        state.hub().groups().set_shared_folder(Actor::User(&me), &name, on, read_only).await.map(|_| match on {
            true => {
                format!("{name}'s shared folder is at ~/shared/{name} in its members' servers from their next start.")
            }
            false => format!("{name} has no shared folder from its members' next start; its files are kept."),
        });
    answer(&state, &group_path(&name), result)
}

/// The group page's environments form: a checkbox, present when checked.
#[derive(Deserialize)]
pub struct EnvironmentsForm {
    #[serde(default)]
    members_build: Option<String>,
}

/// `POST /hub/groups/{name}/environments` (admins, its leads): whether members build their own.
pub async fn set_environments(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<EnvironmentsForm>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let allowed = form.members_build.is_some();
    let result = state.hub().environments().set_members_may_build(Actor::User(&me), &name, allowed).await.map(|()| {
        if allowed {
            format!("{name}'s members may build their own environments.")
        } else {
            format!("{name}'s members no longer build their own environments (what they built stays).")
        }
    });
    answer(&state, &group_path(&name), result)
}

/// The form stopping a member's server from the group page.
#[derive(Deserialize)]
pub struct StopForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    server: String,
}

/// `POST /hub/groups/{name}/stop` (admins, its leads): stops a server running under the group.
pub async fn stop(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<StopForm>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    let owner = UserName::parse(&form.user).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let server = ServerName::parse_optional(&form.server).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let label = match &server {
        Some(s) => format!("{owner}'s server {s}"),
        None => format!("{owner}'s server"),
    };
    let result = state.hub().servers().stop(Actor::User(&me), &owner, server.as_ref()).await.map(|o| match o {
        labhub_service::model::StopOutcome::Stopped => format!("Stopped {label}."),
        labhub_service::model::StopOutcome::Stopping => format!("{label} is stopping."),
    });
    answer(&state, &group_path(&name), result)
}
