//! A member's own pages: home, account (password, sessions), API tokens.

use std::time::Duration;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use labhub_core::Secret;
use labhub_service::Actor;
use labhub_service::{AuthVia, ServiceError};
use serde::Deserialize;

use crate::extract::{CsrfForm, CurrentUser};
use crate::pages::login::Empty;
use crate::pages::oauth::{IdentityView, identity_views};
use crate::views::{Chrome, Page, When, redirect_with_flash};
use crate::{AppError, AppState, cookies};

struct SessionView {
    id: labhub_core::SessionId,
    user_agent: String,
    client_addr: String,
    created: When,
    last_seen: When,
    current: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "account.html")]
struct AccountPage {
    c: Chrome,
    name: String,
    admin: bool,
    created: When,
    has_password: bool,
    min_password: usize,
    error: Option<String>,
    sessions: Vec<SessionView>,
    identities: Vec<IdentityView>,
}

async fn account_page(
    state: &AppState,
    me: &labhub_service::Principal,
    page: &Page,
    error: Option<String>,
) -> Result<AccountPage, AppError> {
    let hub = state.hub();
    let user = hub.accounts().get(Actor::User(me), &me.name).await?;
    let now = hub.now();
    let current = match me.via {
        AuthVia::Session { session_id } => Some(session_id),
        AuthVia::Token { .. } | AuthVia::Recheck | AuthVia::SingleUser => None,
    };
    let sessions = hub
        .sessions()
        .list(Actor::User(me), &me.name)
        .await?
        .into_iter()
        .map(|s| SessionView {
            id: s.id,
            user_agent: short_agent(&s.user_agent),
            client_addr: s.client_addr,
            created: When::new(now, s.created_at),
            last_seen: When::new(now, s.last_seen_at),
            current: Some(s.id) == current,
        })
        .collect();
    let identities = identity_views(state, hub.sign_on().identities(Actor::User(me), &me.name).await?);
    Ok(AccountPage {
        c: page.chrome("account"),
        name: me.name.to_string(),
        admin: me.admin,
        created: When::new(now, user.created_at),
        has_password: user.has_password,
        min_password: hub.account_settings().password_min_len,
        error,
        sessions,
        identities,
    })
}

/// A readable browser name from a User-Agent string.
fn short_agent(ua: &str) -> String {
    let browser = ["Firefox", "Edg", "Chrome", "Safari", "curl", "python-requests"]
        .iter()
        .find(|b| ua.contains(*b))
        .map(|b| if *b == "Edg" { "Edge" } else { b });
    let os = ["Windows", "Mac OS X", "Android", "iPhone", "Linux"].iter().find(|o| ua.contains(*o));
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {}", o.replace("Mac OS X", "macOS")),
        (Some(b), None) => b.to_string(),
        _ if ua.is_empty() => "unknown".to_string(),
        _ => ua.chars().take(40).collect(),
    }
}

/// `GET /hub/account` (any signed-in user).
pub async fn account(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
) -> Result<Response, AppError> {
    let view = account_page(&state, &me, &page, None).await?;
    Ok(page.render(view))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /hub/account/password` (any signed-in user with a password).
pub async fn change_password(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Result<Response, AppError> {
    let result = if form.new != form.confirm {
        Err(ServiceError::Invalid("the two new passwords are not the same".into()))
    } else {
        state.hub().accounts().change_own_password(&me, Secret::new(form.current), Secret::new(form.new)).await
    };
    match result {
        Ok(()) => Ok(redirect_with_flash(
            &state,
            "/hub/account",
            "Your password is changed; your other browsers are signed out.",
        )),
        Err(e @ ServiceError::Invalid(_)) => {
            let view = account_page(&state, &me, &page, Some(e.to_string())).await?;
            Ok(page.render_status(StatusCode::BAD_REQUEST, view))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /hub/account/logout-everywhere` (any signed-in user): ends all their sessions.
pub async fn logout_everywhere(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    let n = state.hub().sessions().end_all(Actor::User(&me), &me.name).await?;
    let msg = format!("Signed out of {n} session{}.", if n == 1 { "" } else { "s" });
    let jar = CookieJar::new().add(cookies::session_removal(&state)).add(cookies::flash(&state, &msg));
    Ok((jar, Redirect::to("/hub/login")).into_response())
}

/// `POST /hub/account/sessions/{id}/end` (any signed-in user, their own sessions).
pub async fn end_session(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(id): Path<labhub_core::SessionId>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    state.hub().sessions().end_by_id(Actor::User(&me), &me.name, id).await?;
    Ok(redirect_with_flash(&state, "/hub/account", "That browser is signed out."))
}

struct TokenView {
    id: labhub_core::TokenId,
    prefix: String,
    note: String,
    created: When,
    expires: When,
    expired: bool,
    last_used: When,
}

#[derive(Template, WebTemplate)]
#[template(path = "token.html")]
struct TokenPage {
    c: Chrome,
    tokens: Vec<TokenView>,
    new_token: Option<String>,
    error: Option<String>,
    note: String,
    expires_in: String,
    expiry_options: Vec<(String, String)>,
}

const EXPIRIES: &[(u64, &str)] = &[
    (3600, "1 hour"),
    (86400, "1 day"),
    (7 * 86400, "7 days"),
    (30 * 86400, "30 days"),
    (90 * 86400, "90 days"),
    (365 * 86400, "1 year"),
];

fn expiry_options(max: Option<Duration>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = EXPIRIES
        .iter()
        .filter(|(s, _)| max.is_none_or(|m| Duration::from_secs(*s) <= m))
        .map(|(s, l)| (s.to_string(), l.to_string()))
        .collect();
    if max.is_none() {
        v.push(("never".into(), "never".into()));
    }
    v
}

async fn token_page(
    state: &AppState,
    me: &labhub_service::Principal,
    page: &Page,
    new_token: Option<String>,
    error: Option<String>,
    note: String,
) -> Result<TokenPage, AppError> {
    let hub = state.hub();
    let now = hub.now();
    let tokens = hub
        .tokens()
        .list(Actor::User(me), &me.name)
        .await?
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            prefix: t.prefix,
            note: t.note,
            created: When::new(now, t.created_at),
            expires: t.expires_at.map_or(When { text: "never".into(), exact: String::new() }, |e| When::new(now, e)),
            expired: t.expires_at.is_some_and(|e| e <= now),
            last_used: When::opt(now, t.last_used_at),
        })
        .collect();
    Ok(TokenPage {
        c: page.chrome("token"),
        tokens,
        new_token,
        error,
        note,
        expires_in: (30 * 86400).to_string(),
        expiry_options: expiry_options(hub.account_settings().max_token_lifetime),
    })
}

/// `GET /hub/token` (any signed-in user).
pub async fn tokens(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
) -> Result<Response, AppError> {
    let view = token_page(&state, &me, &page, None, None, String::new()).await?;
    Ok(page.render(view))
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    note: String,
    #[serde(default)]
    expires_in: String,
}

/// `POST /hub/token` (any signed-in user): creates a token and shows it once.
pub async fn create_token(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    CsrfForm(form): CsrfForm<TokenForm>,
) -> Result<Response, AppError> {
    let expires = match form.expires_in.as_str() {
        "never" | "" => Ok(None),
        s => s
            .parse::<u64>()
            .map(|n| Some(Duration::from_secs(n)))
            .map_err(|_| ServiceError::Invalid("choose an expiry from the list".into())),
    };
    let result = match expires {
        Ok(exp) => state.hub().tokens().create(Actor::User(&me), &me.name, &form.note, exp, None).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((token, _)) => {
            let view = token_page(&state, &me, &page, Some(token.expose().clone()), None, String::new()).await?;
            Ok(page.render_status(StatusCode::CREATED, view))
        }
        Err(e @ ServiceError::Invalid(_)) => {
            let view = token_page(&state, &me, &page, None, Some(e.to_string()), form.note).await?;
            Ok(page.render_status(StatusCode::BAD_REQUEST, view))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /hub/token/{id}/revoke` (any signed-in user, their own tokens).
pub async fn revoke_token(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(id): Path<labhub_core::TokenId>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    state.hub().tokens().revoke(Actor::User(&me), &me.name, id).await?;
    Ok(redirect_with_flash(&state, "/hub/token", "The token is revoked; it no longer works."))
}
