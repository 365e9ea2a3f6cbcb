//! Admin pages: users and the audit log.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use labhub_core::listing::{AuditFilter, UserFilter};
use labhub_core::{AccountState, Secret, ServerState, UserName};
use labhub_service::accounts::NewAccount;
use labhub_service::{Actor, ServiceError};
use serde::Deserialize;

use super::NAME_RULE;
use crate::extract::{AdminUser, CsrfForm};
use crate::pages::login::Empty;
use crate::views::{Chrome, Page, When, redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};

const PAGE_SIZE: i64 = 50;

struct UserRow {
    name: String,
    admin: bool,
    state: &'static str,
    servers: String,
    last_activity: When,
    created: When,
    /// (path segment, label, asks for confirmation)
    actions: Vec<(&'static str, &'static str, bool)>,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_users.html")]
struct UsersPage {
    c: Chrome,
    admin_tab: &'static str,
    users: Vec<UserRow>,
    total: i64,
    q: String,
    state: String,
    state_options: Vec<(&'static str, &'static str)>,
    page: i64,
    pages: i64,
    error: Option<String>,
    new_name: String,
    name_rule: &'static str,
    /// The identity providers an account can be made for: (id, display name).
    providers: Vec<(String, String)>,
}

#[derive(Deserialize, Default)]
pub struct UsersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    page: Option<i64>,
}

fn actions_for(state: AccountState, admin: bool) -> Vec<(&'static str, &'static str, bool)> {
    let mut a = Vec::new();
    match state {
        AccountState::Pending => a.push(("approve", "Approve", false)),
        AccountState::Active => a.push(("disable", "Disable", true)),
        AccountState::Disabled => a.push(("enable", "Enable", false)),
    }
    if admin {
        a.push(("unadmin", "Remove admin", true));
    } else {
        a.push(("admin", "Make admin", false));
    }
    a.push(("end-sessions", "End sessions", true));
    a
}

async fn users_page(
    state: &AppState,
    me: &labhub_service::Principal,
    page: &Page,
    q: UsersQuery,
    error: Option<String>,
    new_name: String,
) -> Result<UsersPage, AppError> {
    let hub = state.hub();
    let account_state = match q.state.as_str() {
        "active" => Some(AccountState::Active),
        "pending" => Some(AccountState::Pending),
        "disabled" => Some(AccountState::Disabled),
        _ => None,
    };
    let page_no = q.page.unwrap_or(1).max(1);
    let filter = UserFilter {
        name_contains: Some(q.q.trim().to_string()).filter(|s| !s.is_empty()),
        account_state,
        offset: (page_no - 1) * PAGE_SIZE,
        limit: PAGE_SIZE,
        ..UserFilter::default()
    };
    let (views, total) = hub.accounts().list_views(Actor::User(me), &filter).await?;
    let now = hub.now();
    let rows = views
        .into_iter()
        .map(|v| {
            let active: Vec<String> = v
                .servers
                .iter()
                .filter(|s| s.state != ServerState::Stopped)
                .map(|s| match &s.name {
                    None => s.state.as_str().to_string(),
                    Some(n) => format!("{n}: {}", s.state.as_str()),
                })
                .collect();
            (v.account, if active.is_empty() { "—".to_string() } else { active.join(", ") })
        })
        .map(|(u, servers)| UserRow {
            servers,
            name: u.name.to_string(),
            admin: u.admin,
            state: u.state.as_str(),
            last_activity: When::opt(now, u.last_activity),
            created: When::new(now, u.created_at),
            actions: actions_for(u.state, u.admin),
        })
        .collect();
    Ok(UsersPage {
        c: page.chrome("admin"),
        admin_tab: "users",
        users: rows,
        total,
        q: q.q,
        state: if account_state.is_some() { q.state } else { String::new() },
        state_options: vec![
            ("", "everyone"),
            ("active", "active"),
            ("pending", "waiting for approval"),
            ("disabled", "disabled"),
        ],
        page: page_no,
        pages: ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1),
        error,
        new_name,
        name_rule: NAME_RULE,
        providers: hub
            .providers()
            .iter()
            .map(|p| (p.id().to_string(), p.display_name().to_string()))
            .chain(hub.directory().map(|d| (labhub_auth::ldap::LDAP_ID.to_string(), d.display_name().to_string())))
            .collect(),
    })
}

/// `GET /hub/admin/users` (admins).
pub async fn users(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    Query(q): Query<UsersQuery>,
) -> Result<Response, AppError> {
    let view = users_page(&state, &me, &page, q, None, String::new()).await?;
    Ok(page.render(view))
}

#[derive(Deserialize)]
pub struct AddUserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    admin: Option<String>,
    /// The identity provider that may claim a password-less account; empty for none.
    #[serde(default)]
    provider: String,
}

/// `POST /hub/admin/users` (admins): adds an account.
pub async fn add_user(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    CsrfForm(form): CsrfForm<AddUserForm>,
) -> Result<Response, AppError> {
    let result = async {
        let name = UserName::parse(form.username.trim())?;
        let password = Some(form.password.clone()).filter(|p| !p.is_empty()).map(Secret::new);
        state
            .hub()
            .accounts()
            .create(
                Actor::User(&me),
                NewAccount {
                    name,
                    password,
                    admin: form.admin.is_some(),
                    provider: Some(form.provider.clone()).filter(|p| !p.is_empty()),
                },
            )
            .await
    }
    .await;
    match result {
        Ok(u) => Ok(redirect_with_flash(&state, "/hub/admin/users", &format!("Added {}.", u.name))),
        Err(e @ (ServiceError::Invalid(_) | ServiceError::Conflict(_))) => {
            let status =
                if matches!(e, ServiceError::Conflict(_)) { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
            let view =
                users_page(&state, &me, &page, UsersQuery::default(), Some(e.to_string()), form.username).await?;
            Ok(page.render_status(status, view))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /hub/admin/users/{name}/{action}` (admins): approve, disable, enable, admin, unadmin,
/// end-sessions, delete.
pub async fn user_action(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path((name, action)): Path<(String, String)>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let actor = Actor::User(&me);
    let name = UserName::parse(&name).map_err(|e| AppError::NotFound(e.to_string()))?;
    let result: Result<String, ServiceError> = match action.as_str() {
        "approve" => {
            hub.accounts().set_state(actor, &name, AccountState::Active).await.map(|_| format!("Approved {name}."))
        }
        "enable" => {
            hub.accounts().set_state(actor, &name, AccountState::Active).await.map(|_| format!("Enabled {name}."))
        }
        "disable" => hub
            .accounts()
            .set_state(actor, &name, AccountState::Disabled)
            .await
            .map(|_| format!("Disabled {name}; their sessions ended.")),
        "admin" => hub.accounts().set_admin(actor, &name, true).await.map(|_| format!("{name} is now an admin.")),
        "unadmin" => {
            hub.accounts().set_admin(actor, &name, false).await.map(|_| format!("{name} is no longer an admin."))
        }
        "end-sessions" => hub
            .sessions()
            .end_all(actor, &name)
            .await
            .map(|n| format!("Ended {n} session{} of {name}.", if n == 1 { "" } else { "s" })),
        _ => return Err(AppError::NotFound(format!("there is no action '{action}'"))),
    };
    Ok(match result {
        Ok(msg) => redirect_with_flash(&state, "/hub/admin/users", &msg),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_) | ServiceError::Invalid(_))) => {
            redirect_with_error(&state, "/hub/admin/users", &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}

struct AuditRow {
    when: When,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    c: Chrome,
    admin_tab: &'static str,
    entries: Vec<AuditRow>,
    total: i64,
    actor: String,
    action: String,
    target: String,
    since: String,
    query: String,
    known_actions: Vec<&'static str>,
    page: i64,
    pages: i64,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    page: Option<i64>,
}

/// The actions the hub records, for the filter's suggestions.
const KNOWN_ACTIONS: &[&str] = &[
    "user.",
    "user.create",
    "user.delete",
    "user.set_admin",
    "user.approve",
    "user.disable",
    "user.enable",
    "user.rename",
    "user.set_password",
    "user.set_provider",
    "user.sessions_ended",
    "user.signup",
    "token.create",
    "token.revoke",
    "group.",
    "group.create",
    "group.rename",
    "group.delete",
    "group.add_member",
    "group.remove_member",
    "group.set_lead",
    "group.set_quota",
    "group.set_ceiling",
    "group.set_images",
    "server.",
    "server.start",
    "server.stop",
    "server.cull",
    "storage.remove",
    "image.",
    "image.create",
    "image.update",
    "image.delete",
    "image.build",
];

/// `GET /hub/admin/audit` (admins).
pub async fn audit(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    Query(q): Query<AuditQuery>,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let mut error = None;
    let since = if q.since.is_empty() {
        None
    } else {
        let f = time::macros::format_description!("[year]-[month]-[day]");
        match time::Date::parse(&q.since, &f) {
            Ok(d) => Some(d.midnight().assume_utc()),
            Err(_) => {
                error = Some("'since' must be a date like 2026-01-31".to_string());
                None
            }
        }
    };
    let page_no = q.page.unwrap_or(1).max(1);
    let nonempty = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let filter = AuditFilter {
        actor: nonempty(&q.actor).map(|a| a.to_ascii_lowercase()),
        action: nonempty(&q.action),
        target: nonempty(&q.target),
        since,
        until: None,
        offset: (page_no - 1) * PAGE_SIZE,
        limit: PAGE_SIZE,
    };
    let (entries, total) = hub.audit().log(Actor::User(&me), &filter).await?;
    let now = hub.now();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("actor", &q.actor)
        .append_pair("action", &q.action)
        .append_pair("target", &q.target)
        .append_pair("since", &q.since)
        .finish();
    let view = AuditPage {
        c: page.chrome("admin"),
        admin_tab: "audit",
        entries: entries
            .into_iter()
            .map(|e| AuditRow {
                when: When::new(now, e.at),
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: if e.detail == serde_json::json!({}) { String::new() } else { e.detail.to_string() },
            })
            .collect(),
        total,
        actor: q.actor,
        action: q.action,
        target: q.target,
        since: q.since,
        query,
        known_actions: KNOWN_ACTIONS.to_vec(),
        page: page_no,
        pages: ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1),
        error,
    };
    Ok(page.render(view))
}

struct ActiveServerRow {
    owner: String,
    name: String,
    label: String,
    state: &'static str,
    image: String,
    digest: String,
    limits: String,
    started: When,
    last_activity: When,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_servers.html")]
struct ServersPage {
    c: Chrome,
    admin_tab: &'static str,
    servers: Vec<ActiveServerRow>,
    strangers: Vec<String>,
    replicas: Vec<ReplicaRow>,
}

/// One hub process on the servers page.
struct ReplicaRow {
    host: String,
    version: String,
    started: When,
    heard: When,
    alive: bool,
    this: bool,
}

/// `GET /hub/admin/servers` (admins): every active server, and the hub processes serving them.
pub async fn servers(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let now = hub.now();
    let rows = hub
        .servers()
        .active(Actor::User(&me))
        .await?
        .into_iter()
        .map(|s| ActiveServerRow {
            owner: s.owner.to_string(),
            label: s.name.as_ref().map_or_else(|| "default".into(), |n| n.to_string()),
            name: s.name_str().to_string(),
            state: s.state.as_str(),
            image: s.image.clone().unwrap_or_default(),
            digest: s.image_digest.as_deref().map(labhub_service::catalogue::short_id).unwrap_or_default(),
            limits: s.resources.map(|r| r.to_string()).unwrap_or_default(),
            started: When::opt(now, s.started_at),
            last_activity: When::opt(now, s.last_activity),
        })
        .collect();
    let view = ServersPage {
        c: page.chrome("admin"),
        admin_tab: "servers",
        servers: rows,
        strangers: hub.servers().stranger_containers(),
        replicas: hub
            .replicas()
            .list(Actor::User(&me))
            .await?
            .into_iter()
            .map(|r| ReplicaRow {
                host: r.host,
                version: r.version,
                started: When::new(now, r.started_at),
                heard: When::new(now, r.last_heartbeat),
                alive: r.alive,
                this: r.this,
            })
            .collect(),
    };
    Ok(page.render(view))
}

#[derive(Deserialize, Default)]
pub struct ServerQuery {
    #[serde(default)]
    server: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_logs.html")]
struct LogsPage {
    c: Chrome,
    admin_tab: &'static str,
    label: String,
    tail: usize,
    logs: String,
}

/// `GET /hub/admin/servers/{user}/logs?server=` (admins): the server's last log lines.
pub async fn server_logs(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    Path(user): Path<String>,
    Query(q): Query<ServerQuery>,
) -> Result<Response, AppError> {
    let owner = UserName::parse(&user).map_err(|e| AppError::NotFound(e.to_string()))?;
    let server = labhub_core::ServerName::parse_optional(&q.server).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let tail = 200;
    let logs = state.hub().servers().logs(Actor::User(&me), &owner, server.as_ref(), tail).await?;
    let label = match &server {
        Some(s) => format!("{owner}/{s}"),
        None => owner.to_string(),
    };
    let view = LogsPage { c: page.chrome("admin"), admin_tab: "servers", label, tail, logs };
    Ok(page.render(view))
}

#[derive(Deserialize)]
pub struct ServerForm {
    #[serde(default)]
    server: String,
}

/// `POST /hub/admin/servers/{user}/stop` (admins): stops a user's server.
pub async fn stop_server(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(user): Path<String>,
    CsrfForm(form): CsrfForm<ServerForm>,
) -> Result<Response, AppError> {
    let owner = UserName::parse(&user).map_err(|e| AppError::NotFound(e.to_string()))?;
    let server =
        labhub_core::ServerName::parse_optional(&form.server).map_err(|e| AppError::BadRequest(e.to_string()))?;
    Ok(match state.hub().servers().stop(Actor::User(&me), &owner, server.as_ref()).await {
        Ok(_) => redirect_with_flash(&state, "/hub/admin/servers", &format!("Stopping {owner}'s server.")),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_))) => {
            redirect_with_error(&state, "/hub/admin/servers", &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}
