//! Group pages: the admin's list, and one group's page for its leads and admins: members,
//! limits, images, what runs against the budget, and the usage chart. Rights are checked by
//! the service; the templates only hide what a visitor could not do anyway.

use std::time::Duration;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::{Redirect, Response};
use labhub_core::resources::{format_bytes, format_cpu};
use labhub_core::{GroupName, GroupRole, ImageAllowance, Quota, ServerName, UserName};
use labhub_service::environments::Whose;
use labhub_service::quotas::{cpu_text, summary};
use labhub_service::usage::{Amounts, GroupUsage, UsageRange};
use labhub_service::words::memory_text;
use labhub_service::{Actor, Principal, ServiceError};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::extract::{AdminUser, CsrfForm, CurrentUser};
use crate::views::{Chrome, Page, When, redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};

mod chart;
mod forms;

use chart::{Chart, ChartSpec, chart};
pub use forms::{
    add_members, delete, member_action, rename, set_ceiling, set_environments, set_images, set_quota, set_shared, stop,
};

fn group_name(raw: &str) -> Result<GroupName, AppError> {
    GroupName::parse(raw).map_err(|e| AppError::NotFound(e.to_string()))
}

fn group_path(name: &GroupName) -> String {
    format!("/hub/groups/{name}")
}

/// Whether a failure is the visitor's to fix (shown on the page they came from) or not.
fn for_people(e: &ServiceError) -> bool {
    matches!(e, ServiceError::Invalid(_) | ServiceError::Conflict(_) | ServiceError::NotFound(_))
}

/// Answers a form: back to `to` with the message, or with the reason it did not work.
fn answer(state: &AppState, to: &str, result: Result<String, ServiceError>) -> Result<Response, AppError> {
    match result {
        Ok(msg) => Ok(redirect_with_flash(state, to, &msg)),
        Err(e) if for_people(&e) => Ok(redirect_with_error(state, to, &e.to_string())),
        Err(e) => Err(e.into()),
    }
}

struct GroupRow {
    name: String,
    members: usize,
    leads: String,
    limits: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_groups.html")]
struct AdminGroupsPage {
    c: Chrome,
    admin_tab: &'static str,
    groups: Vec<GroupRow>,
    total: i64,
    site: String,
}

/// `GET /hub/admin/groups` (admins): every group, and a form to add one.
pub async fn admin_list(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let (groups, total) = hub.groups().list(Actor::User(&me), 0, 1000).await?;
    let rows = groups
        .iter()
        .map(|d| GroupRow {
            name: d.group.name.to_string(),
            members: d.members.len(),
            leads: d.leads().iter().map(UserName::as_str).collect::<Vec<_>>().join(", "),
            limits: summary(&d.quota),
        })
        .collect();
    let view = AdminGroupsPage {
        c: page.chrome("admin"),
        admin_tab: "groups",
        groups: rows,
        total,
        site: summary(&hub.quota_settings().site_default),
    };
    Ok(page.render(view))
}

/// The admin page's "new group" form.
#[derive(Deserialize)]
pub struct NewGroupForm {
    #[serde(default)]
    name: String,
}

/// `POST /hub/admin/groups` (admins): adds a group and opens its page.
pub async fn create(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    CsrfForm(form): CsrfForm<NewGroupForm>,
) -> Result<Response, AppError> {
    let created = match GroupName::parse(form.name.trim()) {
        Ok(name) => state.hub().groups().create(Actor::User(&me), &name).await,
        Err(e) => Err(e.into()),
    };
    match created {
        Ok(g) => Ok(redirect_with_flash(&state, &group_path(&g.name), &format!("Added the group {}.", g.name))),
        Err(e) => answer(&state, "/hub/admin/groups", Err(e)),
    }
}

/// `GET /hub/groups` (leads and admins): where a lead finds their groups.
pub async fn mine(State(state): State<AppState>, CurrentUser(me): CurrentUser) -> Result<Response, AppError> {
    if me.admin {
        return Ok(axum::response::IntoResponse::into_response(Redirect::to("/hub/admin/groups")));
    }
    let (groups, _) = state.hub().groups().list(Actor::User(&me), 0, 1).await?;
    let first = groups.first().map(|d| group_path(&d.group.name)).unwrap_or_else(|| "/hub/home".into());
    Ok(axum::response::IntoResponse::into_response(Redirect::to(&first)))
}

struct ServerLine {
    owner: String,
    name: String,
    label: String,
    text: String,
    started: When,
    last_activity: When,
}

struct MemberRow {
    name: String,
    role: &'static str,
    is_lead: bool,
    in_group: bool,
    servers: Vec<ServerLine>,
    reserved: String,
    used: String,
}

/// A quota's values as the form shows them.
struct QuotaFields {
    max_cpu: String,
    max_memory: String,
    max_gpus: String,
    max_servers: String,
    budget_cpu: String,
    budget_memory: String,
    storage: String,
    idle_minutes: String,
    lifetime_minutes: String,
    cull_busy: bool,
    build_minutes: String,
}

fn minutes(d: Option<Duration>) -> String {
    d.map(|d| {
        let m = d.as_secs_f64() / 60.0;
        if m.fract() == 0.0 { format!("{m:.0}") } else { format!("{m:.2}").trim_end_matches('0').to_string() }
    })
    .unwrap_or_default()
}

impl QuotaFields {
    fn of(q: &Quota) -> Self {
        Self {
            max_cpu: format_cpu(q.max_cpu_millis),
            max_memory: memory_text(q.max_memory_bytes),
            max_gpus: q.max_gpus.to_string(),
            max_servers: q.max_servers_per_member.to_string(),
            budget_cpu: q.budget_cpu_millis.map(cpu_text).unwrap_or_default(),
            budget_memory: q.budget_memory_bytes.map(memory_text).unwrap_or_default(),
            storage: q.storage_bytes.map(memory_text).unwrap_or_default(),
            idle_minutes: minutes(q.idle_timeout),
            lifetime_minutes: minutes(q.max_lifetime),
            cull_busy: q.cull_busy,
            build_minutes: minutes(q.build_timeout),
        }
    }
}

struct ImageCheck {
    name: String,
    display_name: String,
    checked: bool,
}

/// A budget as a meter: what is reserved against it.
struct Meter {
    value: u64,
    max: u64,
    text: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "group.html")]
struct GroupPage {
    c: Chrome,
    admin_tab: &'static str,
    is_admin: bool,
    name: String,
    members: Vec<MemberRow>,
    total: String,
    cpu_budget: Option<Meter>,
    memory_budget: Option<Meter>,
    limits: String,
    quota: QuotaFields,
    ceiling: QuotaFields,
    ceiling_summary: String,
    images: Vec<ImageCheck>,
    all_images: bool,
    ceiling_images: Vec<ImageCheck>,
    ceiling_all_images: bool,
    charts: Vec<Chart>,
    week: bool,
    shared_folder: bool,
    shared_read_only: bool,
    shared_size: Option<String>,
    shared_warnings: Vec<String>,
    members_build_environments: bool,
    /// The group's environments (filled in by `show`).
    environments: Vec<GroupEnvironment>,
}

/// One of the group's environments: its page, and its latest build's page (the live log).
struct GroupEnvironment {
    name: String,
    status: String,
    latest: String,
}

fn amounts_text(a: &Amounts) -> (String, String) {
    (
        format!("{} CPU, {}", cpu_text(a.cpu_reserved), format_bytes(a.memory_reserved)),
        format!("{} CPU, {}", cpu_text(a.cpu_used), format_bytes(a.memory_used)),
    )
}

/// The group page's query: which range the usage chart shows.
#[derive(Deserialize, Default)]
pub struct GroupQuery {
    #[serde(default)]
    range: String,
}

/// `GET /hub/groups/{name}?range=day|week` (admins, its leads).
pub async fn show(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let range = if q.range == "week" { UsageRange::Week } else { UsageRange::Day };
    let u = hub.usage().of_group(Actor::User(&me), &group_name(&name)?, range).await?;
    let catalogue = hub.catalogue().list().await?;
    let holder = Whose::Group(u.detail.group.name.to_string());
    let environments = hub
        .environments()
        .list(Actor::User(&me))
        .await?
        .into_iter()
        .filter(|e| e.holder == holder)
        .map(|e| GroupEnvironment {
            status: e.status,
            latest: e.builds.first().map(|b| b.id.to_string()).unwrap_or_default(),
            name: e.name,
        })
        .collect();
    let view = GroupPage { environments, ..group_page(&page, &me, u, &catalogue, hub.now()) };
    Ok(page.render(view))
}

fn image_checks(catalogue: &[labhub_service::catalogue::ImageStatus], allowed: &ImageAllowance) -> Vec<ImageCheck> {
    catalogue
        .iter()
        .map(|s| ImageCheck {
            name: s.image.name.clone(),
            display_name: s.image.fields.display_name.clone(),
            checked: allowed.allows(&s.image.name),
        })
        .collect()
}

fn group_page(
    page: &Page,
    me: &Principal,
    u: GroupUsage,
    catalogue: &[labhub_service::catalogue::ImageStatus],
    now: OffsetDateTime,
) -> GroupPage {
    let d = &u.detail;
    let members = u
        .members
        .iter()
        .map(|m| {
            let (reserved, used) = amounts_text(&m.total);
            MemberRow {
                name: m.name.to_string(),
                role: match m.role {
                    Some(GroupRole::Lead) => "lead",
                    Some(GroupRole::Member) => "member",
                    None => "left the group",
                },
                is_lead: m.role == Some(GroupRole::Lead),
                in_group: m.role.is_some(),
                servers: m
                    .servers
                    .iter()
                    .map(|s| {
                        let using = match s.used {
                            Some((c, mem)) => format!(" · using {} CPU, {}", cpu_text(c), format_bytes(mem)),
                            None => String::new(),
                        };
                        let name = s.name.as_ref().map_or("", ServerName::as_str);
                        ServerLine {
                            owner: s.owner.to_string(),
                            name: name.to_string(),
                            label: if name.is_empty() { "default".into() } else { name.to_string() },
                            text: format!("{} · {}{using}", s.state.as_str(), s.reserved),
                            started: When::opt(now, s.started_at),
                            last_activity: When::opt(now, s.last_activity),
                        }
                    })
                    .collect(),
                reserved,
                used,
            }
        })
        .collect();
    let (reserved, used) = amounts_text(&u.total);
    let servers = u.total.servers;
    let charts = vec![
        chart(
            ChartSpec {
                title: "CPU (cores)",
                class: "cpu",
                pick: |s| (s.cpu_millis, s.cpu_reserved),
                budget: d.quota.budget_cpu_millis,
                floor: 1000,
                label: cpu_text,
            },
            &u.samples,
            u.range,
            now,
        ),
        chart(
            ChartSpec {
                title: "Memory",
                class: "mem",
                pick: |s| (s.memory_bytes, s.memory_reserved),
                budget: d.quota.budget_memory_bytes,
                floor: 1 << 30,
                label: format_bytes,
            },
            &u.samples,
            u.range,
            now,
        ),
    ];
    GroupPage {
        c: page.chrome(if me.admin { "admin" } else { "home" }),
        admin_tab: "groups",
        is_admin: me.admin,
        name: d.group.name.to_string(),
        members,
        total: format!(
            "{servers} server{} {reserved}; using {used} at the last sample",
            if servers == 1 { " reserves" } else { "s reserve" }
        ),
        cpu_budget: d.quota.budget_cpu_millis.map(|b| Meter {
            value: u.total.cpu_reserved,
            max: b.max(1),
            text: format!("{} of {} CPU reserved", cpu_text(u.total.cpu_reserved), cpu_text(b)),
        }),
        memory_budget: d.quota.budget_memory_bytes.map(|b| Meter {
            value: u.total.memory_reserved,
            max: b.max(1),
            text: format!("{} of {} reserved", format_bytes(u.total.memory_reserved), format_bytes(b)),
        }),
        limits: summary(&d.quota),
        quota: QuotaFields::of(&d.quota),
        ceiling: QuotaFields::of(&d.ceiling),
        ceiling_summary: summary(&d.ceiling),
        images: image_checks(catalogue, &d.quota.images),
        all_images: d.quota.images == ImageAllowance::All,
        ceiling_images: image_checks(catalogue, &d.ceiling.images),
        ceiling_all_images: d.ceiling.images == ImageAllowance::All,
        charts,
        week: u.range == UsageRange::Week,
        shared_folder: d.group.shared_folder,
        shared_read_only: d.group.shared_read_only,
        shared_size: u.shared_bytes.map(|b| format!("{} used", format_bytes(b))),
        shared_warnings: u.shared_warning.clone().into_iter().collect(),
        members_build_environments: d.members_build_environments,
        environments: Vec::new(),
    }
}
