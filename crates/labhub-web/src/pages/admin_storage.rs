//! Admin pages about users' homes: deleting an account (and choosing what becomes of its
//! home), removing an account's home, and the homes no account can use (orphans).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use labhub_core::UserName;
use labhub_core::resources::format_bytes;
use labhub_service::model::StorageFate;
use labhub_service::{Actor, ServiceError};
use serde::Deserialize;

use crate::extract::{AdminUser, CsrfForm};
use crate::views::{Chrome, Page, When, redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};

fn user_name(raw: &str) -> Result<UserName, AppError> {
    UserName::parse(raw).map_err(|e| AppError::NotFound(e.to_string()))
}

/// Whether the typed confirmation is the name.
fn confirmed(typed: &str, name: &UserName) -> bool {
    typed.trim().to_ascii_lowercase() == name.as_str()
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_storage.html")]
struct StoragePage {
    c: Chrome,
    admin_tab: &'static str,
    name: String,
    error: Option<String>,
}

/// `GET /hub/admin/users/{name}/storage` (admins): asks to confirm removing a user's files.
pub async fn storage_form(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let name = user_name(&name)?;
    state.hub().accounts().get(Actor::User(&me), &name).await?;
    let view = StoragePage { c: page.chrome("admin"), admin_tab: "users", name: name.to_string(), error: None };
    Ok(page.render(view))
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /hub/admin/users/{name}/storage` (admins, after typing the name): deletes their storage.
pub async fn remove_storage(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<ConfirmForm>,
) -> Result<Response, AppError> {
    let name = user_name(&name)?;
    let error = if !confirmed(&form.confirm, &name) {
        Some("The name you typed does not match; nothing was removed.".to_string())
    } else {
        match state.hub().homes().remove(Actor::User(&me), &name, None).await {
            Ok(true) => {
                return Ok(redirect_with_flash(&state, "/hub/admin/users", &format!("Removed {name}'s storage.")));
            }
            Ok(false) => {
                return Ok(redirect_with_flash(&state, "/hub/admin/users", &format!("{name} had no storage.")));
            }
            Err(e @ ServiceError::Conflict(_)) => Some(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    };
    let view = StoragePage { c: page.chrome("admin"), admin_tab: "users", name: name.to_string(), error };
    Ok(page.render_status(StatusCode::BAD_REQUEST, view))
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_delete_user.html")]
struct DeleteUserPage {
    c: Chrome,
    admin_tab: &'static str,
    name: String,
    delete_files: bool,
    error: Option<String>,
}

/// `GET /hub/admin/users/{name}/delete` (admins): asks what becomes of the account's files.
pub async fn delete_form(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let name = user_name(&name)?;
    state.hub().accounts().get(Actor::User(&me), &name).await?;
    let view = DeleteUserPage {
        c: page.chrome("admin"),
        admin_tab: "users",
        name: name.to_string(),
        delete_files: false,
        error: None,
    };
    Ok(page.render(view))
}

#[derive(Deserialize)]
pub struct DeleteForm {
    /// `keep` (the default) or `delete`.
    #[serde(default)]
    storage: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /hub/admin/users/{name}/delete` (admins, after typing the name): deletes the account;
/// its files stay as an orphan unless the form asks to delete them too.
pub async fn delete_user(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<DeleteForm>,
) -> Result<Response, AppError> {
    let name = user_name(&name)?;
    let fate = StorageFate::parse(&form.storage)?;
    let error = if !confirmed(&form.confirm, &name) {
        Some("The name you typed does not match; nothing was deleted.".to_string())
    } else {
        match state.hub().accounts().delete(Actor::User(&me), &name, fate).await {
            Ok(()) => {
                let what = match fate {
                    StorageFate::Keep => "their files are kept under Storage until you remove them",
                    StorageFate::Delete => "their files are deleted",
                };
                return Ok(redirect_with_flash(&state, "/hub/admin/users", &format!("Deleted {name}; {what}.")));
            }
            Err(e @ (ServiceError::Conflict(_) | ServiceError::Unavailable(_))) => Some(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    };
    let view = DeleteUserPage {
        c: page.chrome("admin"),
        admin_tab: "users",
        name: name.to_string(),
        delete_files: fate == StorageFate::Delete,
        error,
    };
    Ok(page.render_status(StatusCode::BAD_REQUEST, view))
}

/// A home without an account, as the storage page lists it.
struct OrphanRow {
    volume: String,
    former_owner: String,
    server: String,
    size: String,
    created: When,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_orphans.html")]
struct OrphansPage {
    c: Chrome,
    admin_tab: &'static str,
    orphans: Vec<OrphanRow>,
}

/// `GET /hub/admin/storage` (admins): the homes no account can use, with size and age.
pub async fn orphans(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let now = hub.now();
    let orphans = hub
        .homes()
        .orphans(Actor::User(&me))
        .await?
        .into_iter()
        .map(|o| OrphanRow {
            former_owner: o.former_owner(),
            server: o.server.as_ref().map(|s| s.to_string()).unwrap_or_default(),
            size: o.bytes.map(format_bytes).unwrap_or_else(|| "not measured".into()),
            created: When::opt(now, o.created),
            volume: o.volume,
        })
        .collect();
    let view = OrphansPage { c: page.chrome("admin"), admin_tab: "storage", orphans };
    Ok(page.render(view))
}

/// `POST /hub/admin/storage/{volume}/remove` (admins): deletes an orphan home for good.
pub async fn remove_orphan(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(volume): Path<String>,
    CsrfForm(_): CsrfForm<crate::pages::login::Empty>,
) -> Result<Response, AppError> {
    Ok(match state.hub().homes().remove_orphan(Actor::User(&me), &volume).await {
        Ok(()) => redirect_with_flash(&state, "/hub/admin/storage", &format!("Removed {volume}.")),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_))) => {
            redirect_with_error(&state, "/hub/admin/storage", &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}

#[derive(Deserialize)]
pub struct GiveForm {
    #[serde(default)]
    to: String,
}

/// `POST /hub/admin/storage/{volume}/give` (admins): copies an orphan home's files into a new
/// folder of another account's home.
pub async fn give_orphan(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(volume): Path<String>,
    CsrfForm(form): CsrfForm<GiveForm>,
) -> Result<Response, AppError> {
    let Ok(to) = UserName::parse(form.to.trim()) else {
        return Ok(redirect_with_error(&state, "/hub/admin/storage", "Give the name of the account to copy into."));
    };
    Ok(match state.hub().homes().give_orphan(Actor::User(&me), &volume, &to).await {
        Ok(folder) => redirect_with_flash(
            &state,
            "/hub/admin/storage",
            &format!("Copied {volume} into {to}'s home, in the folder {folder}."),
        ),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_) | ServiceError::Invalid(_))) => {
            redirect_with_error(&state, "/hub/admin/storage", &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}
