//! The hub's cookies: the session, the pre-login CSRF binding, and one-shot flash messages.

use axum_extra::extract::cookie::{Cookie, SameSite};
use time::Duration;

use crate::AppState;

/// The cookie that binds the sign-in form's CSRF token to a browser before there is a session.
pub const LOGIN_CSRF_COOKIE: &str = "labhub-login-csrf";
/// A message shown once on the next page.
pub const FLASH_COOKIE: &str = "labhub-flash";

fn base(state: &AppState, name: String, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(state.settings().secure_cookies())
        .same_site(SameSite::Lax)
        .build()
}

/// The session cookie. Host-only (no `Domain`), so no other host ever receives it.
pub fn session(state: &AppState, token: &str) -> Cookie<'static> {
    base(state, state.settings().cookie_name.clone(), token.to_string())
}

/// Deletes the session cookie.
pub fn session_removal(state: &AppState) -> Cookie<'static> {
    let mut c = base(state, state.settings().cookie_name.clone(), String::new());
    c.make_removal();
    c
}

/// The pre-login CSRF cookie.
pub fn login_csrf(state: &AppState, value: &str) -> Cookie<'static> {
    let mut c = base(state, LOGIN_CSRF_COOKIE.to_string(), value.to_string());
    c.set_path("/hub/");
    c.set_max_age(Duration::hours(12));
    c
}

/// A one-shot message for the next page.
pub fn flash(state: &AppState, message: &str) -> Cookie<'static> {
    let encoded = percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut c = base(state, FLASH_COOKIE.to_string(), encoded);
    c.set_path("/hub/");
    c.set_max_age(Duration::minutes(1));
    c
}

/// Deletes the flash cookie once shown.
pub fn flash_removal(state: &AppState) -> Cookie<'static> {
    let mut c = base(state, FLASH_COOKIE.to_string(), String::new());
    c.set_path("/hub/");
    c.make_removal();
    c
}

/// Reads a flash message.
pub fn read_flash(value: &str) -> String {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy().chars().take(500).collect()
}
