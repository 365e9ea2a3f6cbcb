//! Group pages: the admin's list, and one group's page for its leads and admins: members,
//! limits, images, what runs against the budget, and the usage chart. Rights are checked by
//! the service; the templates only hide what a visitor could not do anyway.

use std::collections::HashMap;
use std::time::Duration;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::{Redirect, Response};
use labhub_core::resources::{format_bytes, format_cpu, parse_cpu, parse_memory};
use labhub_core::{GroupName, GroupRole, ImageAllowance, Quota, ServerName, UserName};
use labhub_service::model::UsageSample;
use labhub_service::quotas::{QuotaPatch, cpu_text, summary};
use labhub_service::usage::{Amounts, GroupUsage, UsageRange};
use labhub_service::words::memory_text;
use labhub_service::{Actor, Principal, ServiceError};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::extract::{AdminUser, CsrfForm, CurrentUser};
use crate::pages::login::Empty;
use crate::views::{Chrome, Page, When, redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};

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

/// A usage chart, with every coordinate computed here: the template only draws.
pub struct Chart {
    title: String,
    class: &'static str,
    used: String,
    reserved: String,
    budget_y: Option<String>,
    y_labels: Vec<(String, String)>,
    /// (x, text, text-anchor): the ends are anchored inwards so they stay inside the chart.
    x_labels: Vec<(String, String, &'static str)>,
    empty: bool,
}

const W: f64 = 720.0;
const H: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 24.0;

/// What one chart draws: a resource's use and reservation, against a budget.
struct ChartSpec {
    title: &'static str,
    /// The CSS class of its lines (`cpu` or `mem`).
    class: &'static str,
    /// (in use, reserved) of a sample.
    pick: fn(&UsageSample) -> (i64, i64),
    budget: Option<u64>,
    /// The smallest top of the scale, so an idle group's chart is not all noise.
    floor: u64,
    /// Writes an amount for the axis.
    label: fn(u64) -> String,
}

/// Draws one resource of a group's samples over the range.
fn chart(spec: ChartSpec, samples: &[UsageSample], range: UsageRange, now: OffsetDateTime) -> Chart {
    let span = range.span().as_secs_f64();
    let start = now - time::Duration::seconds_f64(span);
    let pick = spec.pick;
    let peak = samples.iter().map(|s| pick(s).0.max(pick(s).1)).max().unwrap_or(0).max(0) as u64;
    let top = (peak.max(spec.budget.unwrap_or(0)).max(spec.floor) as f64 * 1.1).max(1.0);
    let x = |t: OffsetDateTime| LEFT + ((t - start).as_seconds_f64() / span).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - (v / top).clamp(0.0, 1.0)) * (H - TOP - BOTTOM);
    let line = |which: fn((i64, i64)) -> i64| {
        samples.iter().map(|s| format!("{:.1},{:.1}", x(s.at), y(which(pick(s)) as f64))).collect::<Vec<_>>().join(" ")
    };
    let y_labels = [0.0, 0.5, 1.0]
        .iter()
        .map(|f| (format!("{:.1}", y(top * f) + 4.0), (spec.label)((top * f).round() as u64)))
        .collect();
    let fmt = time::macros::format_description!("[month]-[day] [hour]:[minute]");
    let x_labels = (0..=4)
        .map(|i| {
            let t = start + time::Duration::seconds_f64(span * f64::from(i) / 4.0);
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            (format!("{:.1}", x(t)), t.format(&fmt).unwrap_or_default(), anchor)
        })
        .collect();
    Chart {
        title: spec.title.to_string(),
        class: spec.class,
        used: line(|p| p.0),
        reserved: line(|p| p.1),
        budget_y: spec.budget.map(|b| format!("{:.1}", y(b as f64))),
        y_labels,
        x_labels,
        empty: samples.is_empty(),
    }
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
    let view = group_page(&page, &me, u, &catalogue, hub.now());
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
    }
}

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

/// `POST /hub/groups/{name}/delete` (admins).
pub async fn delete(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    let name = group_name(&name)?;
    match state.hub().groups().delete(Actor::User(&me), &name).await {
        Ok(()) => Ok(redirect_with_flash(&state, "/hub/admin/groups", &format!("Deleted the group {name}."))),
        Err(e) => answer(&state, &group_path(&name), Err(e)),
    }
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
