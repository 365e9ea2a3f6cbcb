//! The admin page of backups: the archives with their sizes, the last run's result and the
//! next one, a run by hand (everything, one account, one group), and per archive verify and
//! restore (into its owner's home, or given to another account); and archiving an orphan
//! from the storage page. Every form carries the CSRF token; the destructive ones ask first.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::response::Response;
use labhub_core::resources::format_bytes;
use labhub_core::{BackupId, GroupName, UserName};
use labhub_service::backups::{BackupKind, RunRecord, Target};
use labhub_service::{Actor, ServiceError};
use serde::Deserialize;

use crate::extract::{AdminUser, CsrfForm};
use crate::pages::login::Empty;
use crate::views::{Chrome, Page, When, redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};

const HERE: &str = "/hub/admin/backups";

struct BackupRow {
    id: String,
    kind: &'static str,
    owner: String,
    server: String,
    made: When,
    size: String,
    file: String,
    /// Whether it can go back into its owner's home.
    home: bool,
}

struct RunRow {
    when: When,
    scheduled: bool,
    result: &'static str,
    detail: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_backups.html")]
struct BackupsPage {
    c: Chrome,
    admin_tab: &'static str,
    enabled: bool,
    dir: String,
    schedule: String,
    keep: String,
    last: Option<RunRow>,
    next: Option<When>,
    backups: Vec<BackupRow>,
    total: String,
}

fn run_row(now: time::OffsetDateTime, r: RunRecord) -> RunRow {
    let result = match r.ok {
        None => "running",
        Some(true) => "succeeded",
        Some(false) => "failed",
    };
    RunRow { when: When::new(now, r.started_at), scheduled: r.scheduled, result, detail: r.detail }
}

/// `GET /hub/admin/backups` (admins).
pub async fn list(State(state): State<AppState>, AdminUser(me): AdminUser, page: Page) -> Result<Response, AppError> {
    let hub = state.hub();
    let backups = hub.backups();
    let now = hub.now();
    let settings = backups.settings_in_force();
    let runs = backups.runs(Actor::User(&me)).await?;
    let all = backups.list(Actor::User(&me), None).await?;
    let total = format_bytes(all.iter().map(|b| b.bytes).sum());
    let rows = all
        .into_iter()
        .map(|b| BackupRow {
            id: b.id.to_string(),
            kind: b.kind.as_str(),
            owner: b.owner_name,
            server: b.server,
            made: When::new(now, b.created_at),
            size: format_bytes(b.bytes),
            file: b.file,
            home: b.kind == BackupKind::Home,
        })
        .collect();
    let view = BackupsPage {
        c: page.chrome("admin"),
        admin_tab: "backups",
        enabled: backups.enabled(),
        dir: settings.dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
        schedule: format!("every day at {:02}:{:02} UTC", settings.at.hour(), settings.at.minute()),
        keep: format!(
            "the newest of each of the last {} days, {} weeks and {} months",
            settings.keep.daily, settings.keep.weekly, settings.keep.monthly
        ),
        last: runs.last.map(|r| run_row(now, r)),
        next: runs.next.map(|t| When::new(now, t)),
        backups: rows,
        total,
    };
    Ok(page.render(view))
}

/// The run form: `all`, or an account's or a group's name.
#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    what: String,
    #[serde(default)]
    name: String,
}

/// `POST /hub/admin/backups/create` (admins): everything in the background (the page shows
/// the run), or one account's homes or one group's folder at once.
pub async fn create(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    CsrfForm(form): CsrfForm<CreateForm>,
) -> Result<Response, AppError> {
    let name = form.name.trim();
    let target = match form.what.as_str() {
        "all" => Target::All,
        "user" => match UserName::parse(name) {
            Ok(n) => Target::User(n),
            Err(e) => return Ok(redirect_with_error(&state, HERE, &e.to_string())),
        },
        "group" => match GroupName::parse(name) {
            Ok(n) => Target::Group(n),
            Err(e) => return Ok(redirect_with_error(&state, HERE, &e.to_string())),
        },
        other => return Err(AppError::BadRequest(format!("{other:?} is not something to back up"))),
    };
    if target == Target::All {
        let hub = state.hub().clone();
        // Checked here so that a refusal is shown at once; the run itself takes long.
        if !hub.backups().enabled() {
            return Ok(redirect_with_error(&state, HERE, "Backups are off: set [backups] dir in the configuration."));
        }
        tokio::spawn(async move {
            if let Err(e) = hub.backups().create(Actor::User(&me), &Target::All).await {
                tracing::warn!(error = %e, "a backup run asked for on the admin page did not run");
            }
        });
        return Ok(redirect_with_flash(
            &state,
            HERE,
            "A backup of everything has started; this page shows its result.",
        ));
    }
    Ok(match state.hub().backups().create(Actor::User(&me), &target).await {
        Ok(report) if report.failed.is_empty() => redirect_with_flash(&state, HERE, &report.summary()),
        Ok(report) => redirect_with_error(&state, HERE, &report.summary()),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_) | ServiceError::Invalid(_))) => {
            redirect_with_error(&state, HERE, &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}

fn backup_id(raw: &str) -> Result<BackupId, AppError> {
    raw.parse::<i64>().map(BackupId::new).map_err(|_| AppError::NotFound(format!("there is no backup {raw:?}")))
}

/// `POST /hub/admin/backups/{id}/verify` (admins).
pub async fn verify(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    let v = state.hub().backups().verify(Actor::User(&me), backup_id(&id)?).await?;
    Ok(if v.ok {
        redirect_with_flash(&state, HERE, &format!("Backup {id} is intact: {}.", v.detail))
    } else {
        redirect_with_error(&state, HERE, &format!("Backup {id} is damaged: {}.", v.detail))
    })
}

/// The restore form: empty `into` puts the archive back into its owner's home.
#[derive(Deserialize)]
pub struct RestoreForm {
    #[serde(default)]
    into: String,
}

/// `POST /hub/admin/backups/{id}/restore` (admins, after confirming): into the owner's home
/// (their servers stopped), or into a new volume attached to another account.
pub async fn restore(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<RestoreForm>,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let id = backup_id(&id)?;
    let into = form.into.trim();
    let result = if into.is_empty() {
        let backup = hub.backups().get(Actor::User(&me), id).await?;
        match UserName::parse(&backup.owner_name) {
            Ok(owner) => hub.backups().restore(Actor::User(&me), id, Some(&owner), None).await,
            Err(_) => Err(ServiceError::Invalid("this archive has no account to go back to; give it to one".into())),
        }
    } else {
        match UserName::parse(into) {
            Ok(other) => hub.backups().restore(Actor::User(&me), id, None, Some(&other)).await,
            Err(e) => Err(e.into()),
        }
    };
    Ok(match result {
        Ok(r) => redirect_with_flash(
            &state,
            HERE,
            &format!("Restored backup {id} into {} of {} (from their next start).", r.place, r.account),
        ),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_) | ServiceError::Invalid(_))) => {
            redirect_with_error(&state, HERE, &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}

/// `POST /hub/admin/storage/{volume}/archive` (admins): archives an orphan into the backup
/// directory (it stays until deleted).
pub async fn archive_orphan(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(volume): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    let back = "/hub/admin/storage";
    Ok(match state.hub().backups().create(Actor::User(&me), &Target::Orphan(volume.clone())).await {
        Ok(report) if report.failed.is_empty() => redirect_with_flash(
            &state,
            back,
            &format!("Archived {volume} to the backup directory ({}).", report.summary()),
        ),
        Ok(report) => redirect_with_error(&state, back, &report.summary()),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_) | ServiceError::Invalid(_))) => {
            redirect_with_error(&state, back, &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}
