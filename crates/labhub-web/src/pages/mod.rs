//! Pages for people: server-rendered, forms with CSRF tokens, errors as pages.

mod account;
mod admin;
mod login;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::AppState;
use crate::extract::Surface;

/// The page routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/hub/") }))
        .route("/hub", get(|| async { Redirect::to("/hub/") }))
        .route("/hub/", get(login::root))
        .route("/hub/login", get(login::login_form).post(login::login))
        .route("/hub/logout", get(login::logout_form).post(login::logout))
        .route("/hub/signup", get(login::signup_form).post(login::signup))
        .route("/hub/home", get(account::home))
        .route("/hub/account", get(account::account))
        .route("/hub/account/password", post(account::change_password))
        .route("/hub/account/logout-everywhere", post(account::logout_everywhere))
        .route("/hub/account/sessions/{id}/end", post(account::end_session))
        .route("/hub/token", get(account::tokens).post(account::create_token))
        .route("/hub/token/{id}/revoke", post(account::revoke_token))
        .route("/hub/admin", get(|| async { Redirect::to("/hub/admin/users") }))
        .route("/hub/admin/users", get(admin::users).post(admin::add_user))
        .route("/hub/admin/users/{name}/{action}", post(admin::user_action))
        .route("/hub/admin/audit", get(admin::audit))
        .fallback(|| async { crate::AppError::NotFound("There is no page at this address.".into()) })
        .layer(DefaultBodyLimit::disable())
        .layer(axum::Extension(Surface::Page))
}

/// The name rule, as shown next to name fields.
pub const NAME_RULE: &str = "1–64 characters: letters a–z, digits, and . _ - @ ; starting and ending with a letter or digit. Upper case becomes lower case.";
