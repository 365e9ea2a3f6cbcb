//! Signing in and out, and signing up.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use labhub_core::Secret;
use labhub_service::accounts::LoginClient;
use labhub_service::{ServiceError, SignupPolicy};
use serde::Deserialize;

use super::NAME_RULE;
use crate::extract::{ClientAddr, CsrfForm, same_origin, session_cookie};
use crate::views::{Chrome, Page, redirect_with_flash, safe_next};
use crate::{AppError, AppState, cookies};

/// The cookie that makes a browser a known device of the accounts it signed in to, so that
/// others' guessing at those accounts does not lock it out (`labhub_auth::devices`).
pub const DEVICE_COOKIE: &str = "labhub-device";

/// How long a browser stays a known device after its last sign-in.
const DEVICE_COOKIE_DAYS: i64 = 365;

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    c: Chrome,
    next: String,
    username: String,
    error: Option<String>,
    signup: bool,
    password_login: bool,
    /// The directory's name when it checks the form's passwords.
    directory: Option<String>,
    providers: Vec<ProviderButton>,
}

/// A "Sign in with …" button.
struct ProviderButton {
    id: String,
    display_name: String,
}

#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

/// `GET /hub/`: home when signed in, the sign-in page otherwise.
pub async fn root(page: Page) -> Response {
    if page.user.is_some() { Redirect::to("/hub/home") } else { Redirect::to("/hub/login") }.into_response()
}

fn login_page(state: &AppState, page: &Page, next: String, username: String, error: Option<String>) -> LoginPage {
    let settings = state.hub().account_settings();
    LoginPage {
        c: page.chrome("login"),
        next: if safe_next(&next) { next } else { String::new() },
        username,
        error,
        signup: settings.signup != SignupPolicy::Closed,
        password_login: settings.password_login.form(),
        directory: state
            .hub()
            .directory()
            .filter(|_| settings.password_login.directory())
            .map(|d| d.display_name().to_string()),
        providers: state
            .hub()
            .providers()
            .iter()
            .map(|p| ProviderButton { id: p.id().to_string(), display_name: p.display_name().to_string() })
            .collect(),
    }
}

/// The answer to a successful sign-in, however it was made: the session cookie (added to
/// `jar`) and a redirect to `next` when it stays on the hub, else home.
pub(super) fn enter(state: &AppState, jar: CookieJar, token: &Secret<String>, next: &str) -> Response {
    let to = if safe_next(next) { next } else { "/hub/home" };
    (jar.add(cookies::session(state, token.expose())), Redirect::to(to)).into_response()
}

/// `GET /hub/login` (anyone).
pub async fn login_form(State(state): State<AppState>, page: Page, Query(q): Query<NextQuery>) -> Response {
    if page.user.is_some() {
        let to = if safe_next(&q.next) { q.next } else { "/hub/home".to_string() };
        return Redirect::to(&to).into_response();
    }
    let view = login_page(&state, &page, q.next, String::new(), None);
    page.render(view)
}

/// Signing in and signing up count only when posted from the hub's own pages: their `Origin`
/// (or, without one, a `Referer`) must be the hub's. The forms' CSRF token is bound to the
/// pre-login cookie, which a sibling host could have set in the browser; without this check it
/// could sign the browser in to an account of its choosing.
fn require_hub_pages(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    if same_origin(headers, state) {
        return Ok(());
    }
    Err(AppError::Csrf(
        "This form did not come from this hub's own pages (Origin check failed). Go back, reload the page and try again.",
    ))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// `POST /hub/login` (anyone, with the sign-in form's CSRF token).
pub async fn login(
    State(state): State<AppState>,
    page: Page,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> Result<Response, AppError> {
    require_hub_pages(&state, &headers)?;
    let hub = state.hub();
    let device_cookie = device_cookie(&headers);
    let client = LoginClient { address: &addr, device_cookie: device_cookie.as_deref() };
    let result = hub.accounts().password_login(&form.username, Secret::new(form.password), client).await;
    let signed_in = match result {
        Ok(s) => s,
        Err(
            e @ (ServiceError::Unauthenticated(_)
            | ServiceError::Forbidden(_)
            | ServiceError::TooMany { .. }
            | ServiceError::Unavailable(_)),
        ) => {
            let err = AppError::from(e);
            let view = login_page(&state, &page, form.next, form.username, Some(err.to_string()));
            let mut resp = page.render_status(err.status(), view);
            if let Some(s) = err.retry_after_secs() {
                resp.headers_mut().insert(header::RETRY_AFTER, s.into());
            }
            return Ok(resp);
        }
        Err(e) => return Err(e.into()),
    };
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = hub.sessions().start(&signed_in.account, ua, &addr).await?;
    let jar = CookieJar::new().add(device(&state, signed_in.device_cookie));
    Ok(enter(&state, jar, &token, &form.next))
}

/// Every value the browser sent as the device cookie, joined: a cookie of the same name set
/// for a parent domain (by a user's host, say) must not hide the hub's own.
fn device_cookie(headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| name.trim() == DEVICE_COOKIE)
        .map(|(_, value)| value.trim())
        .collect();
    (!values.is_empty()).then(|| values.join("."))
}

/// The device cookie, sent only to the sign-in form.
fn device(state: &AppState, value: String) -> Cookie<'static> {
    Cookie::build((DEVICE_COOKIE, value))
        .path("/hub/login")
        .http_only(true)
        .secure(state.settings().secure_cookies())
        .same_site(SameSite::Strict)
        .max_age(time::Duration::days(DEVICE_COOKIE_DAYS))
        .build()
}

#[derive(Template, WebTemplate)]
#[template(path = "logout.html")]
struct LogoutPage {
    c: Chrome,
}

/// `GET /hub/logout` (anyone): a button, because signing out changes state and takes a CSRF token.
pub async fn logout_form(page: Page) -> Response {
    let view = LogoutPage { c: page.chrome("") };
    page.render(view)
}

#[derive(Deserialize)]
pub struct Empty {}

/// `POST /hub/logout` (anyone with a session): ends this browser's session.
pub async fn logout(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    if let Some((cookie, _)) = session_cookie(&parts.headers, &state) {
        state.hub().sessions().end(&cookie).await?;
    }
    let jar = CookieJar::new().add(cookies::session_removal(&state)).add(cookies::flash(&state, "You are signed out."));
    Ok((jar, Redirect::to("/hub/login")).into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "signup.html")]
struct SignupPage {
    c: Chrome,
    username: String,
    error: Option<String>,
    approval: bool,
    min_password: usize,
    name_rule: &'static str,
}

fn signup_page(state: &AppState, page: &Page, username: String, error: Option<String>) -> Result<SignupPage, AppError> {
    let settings = state.hub().account_settings();
    if settings.signup == SignupPolicy::Closed {
        return Err(AppError::NotFound("Sign-up is closed on this hub; ask an admin for an account.".into()));
    }
    Ok(SignupPage {
        c: page.chrome("login"),
        username,
        error,
        approval: settings.signup == SignupPolicy::Approval,
        min_password: settings.password_min_len,
        name_rule: NAME_RULE,
    })
}

/// `GET /hub/signup` (anyone, when sign-up is open).
pub async fn signup_form(State(state): State<AppState>, page: Page) -> Result<Response, AppError> {
    let view = signup_page(&state, &page, String::new(), None)?;
    Ok(page.render(view))
}

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `POST /hub/signup` (anyone, when sign-up is open).
pub async fn signup(
    State(state): State<AppState>,
    page: Page,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    CsrfForm(form): CsrfForm<SignupForm>,
) -> Result<Response, AppError> {
    require_hub_pages(&state, &headers)?;
    match state.hub().accounts().sign_up(&form.username, Secret::new(form.password), &addr).await {
        Ok(user) => {
            let msg = if user.state == labhub_core::AccountState::Pending {
                format!("Account {} created. An admin will approve it; you can sign in once they have.", user.name)
            } else {
                format!("Account {} created. You can sign in now.", user.name)
            };
            Ok(redirect_with_flash(&state, "/hub/login", &msg))
        }
        Err(
            e @ (ServiceError::Invalid(_)
            | ServiceError::Conflict(_)
            | ServiceError::TooMany { .. }
            | ServiceError::Unavailable(_)),
        ) => {
            let err = AppError::from(e);
            let view = signup_page(&state, &page, form.username, Some(err.to_string()))?;
            let mut resp = page.render_status(err.status(), view);
            if let Some(s) = err.retry_after_secs() {
                resp.headers_mut().insert(header::RETRY_AFTER, s.into());
            }
            Ok(resp)
        }
        Err(e) => Err(e.into()),
    }
}
