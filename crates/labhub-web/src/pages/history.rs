//! The History page: every session of the user's (admins: everyone's, `?all=1`), newest first,
//! with the exact image each ran and a button to relaunch it exactly.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use labhub_core::UserName;
use labhub_service::history::SessionView;
use labhub_service::{Actor, Principal, ServiceError};

use crate::extract::{CsrfForm, CurrentUser};
use crate::pages::login::Empty;
use crate::views::{Chrome, Page, When, redirect_with_error};
use crate::{AppError, AppState};

/// Sessions shown on one page.
const PAGE: i64 = 50;
/// Sessions shown in the home page's History section.
const RECENT: i64 = 5;

/// One session as a row of History (the page, and the home page's section).
pub(super) struct SessionRow {
    pub(super) id: i64,
    pub(super) user: String,
    pub(super) server: String,
    pub(super) image: String,
    pub(super) image_id: String,
    pub(super) image_id_full: String,
    /// `name@sha256:…`, or empty when the image had none.
    pub(super) repo_digest: String,
    pub(super) environment: String,
    pub(super) started: When,
    pub(super) stopped: When,
    pub(super) stop_reason: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "history.html")]
struct HistoryPage {
    c: Chrome,
    all: bool,
    admin: bool,
    sessions: Vec<SessionRow>,
    total: i64,
}

/// `GET /hub/history[?all=1]`.
pub async fn history(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let all = me.admin && q.get("all").is_some_and(|v| v == "1");
    let (sessions, total) = if all {
        hub.history().all(Actor::User(&me), 0, PAGE).await?
    } else {
        hub.history().of_user(Actor::User(&me), &me.name, 0, PAGE).await?
    };
    let now = hub.now();
    let rows = sessions.into_iter().map(|s| row(now, s)).collect();
    let v = HistoryPage { c: page.chrome("home"), all, admin: me.admin, sessions: rows, total };
    Ok(page.render(v))
}

/// The user's most recent sessions, for the home page; and how many there are in all.
pub(super) async fn recent(state: &AppState, me: &Principal) -> Result<(Vec<SessionRow>, i64), AppError> {
    let hub = state.hub();
    let (sessions, total) = hub.history().of_user(Actor::User(me), &me.name, 0, RECENT).await?;
    let now = hub.now();
    Ok((sessions.into_iter().map(|s| row(now, s)).collect(), total))
}

fn row(now: time::OffsetDateTime, s: SessionView) -> SessionRow {
    SessionRow {
        id: s.id,
        server: if s.server.is_empty() { "default".into() } else { s.server.clone() },
        user: s.user,
        image: s.image.unwrap_or_else(|| "(removed from the catalogue)".into()),
        image_id: labhub_service::catalogue::short_id(&s.image_id),
        image_id_full: s.image_id,
        repo_digest: s.repo_digest.unwrap_or_default(),
        environment: match (s.environment, s.build) {
            (Some(e), Some(b)) => format!("{e}, build {b}"),
            _ => String::new(),
        },
        started: When::new(now, s.started),
        stopped: When::opt(now, s.stopped),
        stop_reason: s.stop_reason.unwrap_or_default(),
    }
}

/// `POST /hub/history/{user}/{id}/relaunch`: starts the session's server on exactly the image
/// it ran, then follows the start.
pub async fn relaunch(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path((user, id)): Path<(String, i64)>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    let owner = UserName::parse(&user).map_err(|e| AppError::NotFound(e.to_string()))?;
    let history = state.hub().history();
    let session = history.session(Actor::User(&me), &owner, id).await?;
    let pending = match session.server.as_str() {
        "" => format!("/hub/spawn-pending/{owner}"),
        s => format!("/hub/spawn-pending/{owner}/{s}"),
    };
    match history.relaunch(Actor::User(&me), &owner, id).await {
        Ok(_) => Ok(Redirect::to(&pending).into_response()),
        Err(e @ (ServiceError::Invalid(_) | ServiceError::Conflict(_) | ServiceError::Forbidden(_))) => {
            Ok(redirect_with_error(&state, "/hub/history", &e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}
