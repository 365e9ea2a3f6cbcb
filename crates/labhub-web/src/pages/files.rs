//! The page restoring an archive into one's home: a confirmation and a file picker, sent as a
//! multipart form whose file streams to the runtime as it arrives.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use futures::{StreamExt, TryStreamExt};
use labhub_core::ServerState;
use labhub_core::resources::format_bytes;
use labhub_service::{Actor, Principal, ServiceError};

use crate::extract::{CsrfMultipart, CurrentUser};
use crate::views::{Chrome, Page, redirect_with_flash};
use crate::{AppError, AppState};

#[derive(Template, WebTemplate)]
#[template(path = "restore_files.html")]
struct RestorePage {
    c: Chrome,
    running: bool,
    error: Option<String>,
}

async fn running(state: &AppState, me: &Principal) -> Result<bool, AppError> {
    let servers = state.hub().servers().of(Actor::User(me), &me.name).await?;
    Ok(servers.iter().any(|s| s.state != ServerState::Stopped))
}

/// `GET /hub/account/files/restore`: what a restore does, and the form.
pub async fn form(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
) -> Result<Response, AppError> {
    let view = RestorePage { c: page.chrome("account"), running: running(&state, &me).await?, error: None };
    Ok(page.render(view))
}

/// Why a restore form is refused before anything is written, when it is.
async fn checked_form(form: &mut multer::Multipart<'static>) -> Result<multer::Field<'static>, String> {
    let mut confirmed = false;
    while let Some(field) = form.next_field().await.map_err(|e| format!("The form could not be read: {e}."))? {
        match field.name() {
            Some("confirm") => confirmed = field.text().await.is_ok_and(|t| t == "yes"),
            Some("archive") if !confirmed => return Err("Tick the box to confirm that files may be replaced.".into()),
            Some("archive") => return Ok(field),
            _ => {}
        }
    }
    Err("Choose an archive to restore.".into())
}

/// `POST /hub/account/files/restore` (multipart: `_csrf`, `confirm`, `archive`).
pub async fn restore(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    CsrfMultipart(mut form): CsrfMultipart,
) -> Result<Response, AppError> {
    let error = match checked_form(&mut form).await {
        Err(e) => e,
        Ok(file) => {
            let upload = file.map_err(std::io::Error::other).boxed();
            match state.hub().homes().restore(Actor::User(&me), &me.name, None, upload).await {
                Ok(r) => {
                    let msg = format!("Restored {} of files into your home.", format_bytes(r.bytes));
                    return Ok(redirect_with_flash(&state, "/hub/account", &msg));
                }
                Err(e @ (ServiceError::Invalid(_) | ServiceError::Conflict(_))) => e.to_string(),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let view = RestorePage { c: page.chrome("account"), running: running(&state, &me).await?, error: Some(error) };
    Ok(page.render_status(StatusCode::BAD_REQUEST, view))
}
