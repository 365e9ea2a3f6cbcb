//! Pages for people: server-rendered, forms with CSRF tokens, errors as pages.

mod account;
mod admin;
mod admin_backups;
mod admin_datasets;
mod admin_images;
mod admin_services;
mod admin_storage;
mod environments;
mod files;
mod groups;
mod history;
mod login;
mod oauth;
pub(crate) mod servers;
mod shares;

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
        .route("/hub/host-login", get(crate::hosts::host_login))
        .route("/hub/logout", get(login::logout_form).post(login::logout))
        .route("/hub/signup", get(login::signup_form).post(login::signup))
        .route("/hub/oauth_login/{provider}", get(oauth::oauth_login))
        .route("/hub/oauth_callback", get(oauth::oauth_callback))
        .route("/hub/home", get(servers::home))
        .route("/hub/home/stop", post(servers::stop))
        .route("/hub/home/keep", post(servers::keep))
        .route("/hub/home/delete", post(servers::delete))
        .route("/hub/home/save", post(environments::save))
        .route("/hub/spawn", get(servers::spawn_form).post(servers::spawn))
        .route("/hub/spawn/{user}", get(servers::spawn_form).post(servers::spawn))
        .route("/hub/spawn/{user}/{server}", get(servers::spawn_form).post(servers::spawn))
        .route("/hub/spawn-pending/{user}", get(servers::spawn_pending))
        .route("/hub/spawn-pending/{user}/{server}", get(servers::spawn_pending))
        .route("/hub/share/{owner}", get(shares::show).post(shares::act))
        .route("/hub/share/{owner}/{server}", get(shares::show).post(shares::act))
        .route("/hub/shared/leave", post(shares::leave))
        .route("/hub/accept-share", get(shares::accept_form).post(shares::accept))
        .route("/hub/api/oauth2/authorize", get(crate::single_user::authorize))
        .route("/hub/account", get(account::account))
        .route("/hub/account/password", post(account::change_password))
        .route("/hub/account/files/restore", get(files::form).post(files::restore))
        .route("/hub/account/logout-everywhere", post(account::logout_everywhere))
        .route("/hub/account/sessions/{id}/end", post(account::end_session))
        .route("/hub/token", get(account::tokens).post(account::create_token))
        .route("/hub/token/{id}/revoke", post(account::revoke_token))
        .route("/hub/admin", get(|| async { Redirect::to("/hub/admin/users") }))
        .route("/hub/admin/users", get(admin::users).post(admin::add_user))
        .route("/hub/admin/users/{name}/storage", get(admin_storage::storage_form).post(admin_storage::remove_storage))
        .route("/hub/admin/users/{name}/delete", get(admin_storage::delete_form).post(admin_storage::delete_user))
        .route("/hub/admin/users/{name}/identities", get(oauth::identities))
        .route("/hub/admin/users/{name}/identities/{id}/unlink", post(oauth::unlink))
        .route("/hub/admin/users/{name}/{action}", post(admin::user_action))
        .route("/hub/admin/servers", get(admin::servers))
        .route("/hub/admin/servers/{user}/logs", get(admin::server_logs))
        .route("/hub/admin/servers/{user}/stop", post(admin::stop_server))
        .route("/hub/history", get(history::history))
        .route("/hub/history/{user}/{id}/relaunch", post(history::relaunch))
        .route("/hub/environments", get(environments::list).post(environments::create))
        .route("/hub/environments/upload", post(environments::create_upload))
        .route("/hub/environments/{name}", get(environments::show))
        .route("/hub/environments/{name}/upload", post(environments::rebuild_upload))
        .route("/hub/environments/{name}/builds", post(environments::rebuild))
        .route("/hub/environments/{name}/builds/{id}", get(environments::build_log))
        .route("/hub/environments/{name}/pin", post(environments::pin))
        .route("/hub/environments/{name}/delete", post(environments::delete))
        .route("/hub/admin/images", get(admin_images::list).post(admin_images::add))
        .route("/hub/admin/images/{name}", get(admin_images::edit_form).post(admin_images::edit))
        .route("/hub/admin/images/{name}/build", post(admin_images::build))
        .route("/hub/admin/images/{name}/delete", post(admin_images::delete))
        .route("/hub/admin/audit", get(admin::audit))
        .route("/hub/admin/storage", get(admin_storage::orphans))
        .route("/hub/admin/datasets", get(admin_datasets::list).post(admin_datasets::add))
        .route("/hub/admin/datasets/{name}/remove", post(admin_datasets::remove))
        .route("/hub/admin/services", get(admin_services::list))
        .route("/hub/admin/storage/{volume}/remove", post(admin_storage::remove_orphan))
        .route("/hub/admin/storage/{volume}/give", post(admin_storage::give_orphan))
        .route("/hub/admin/storage/{volume}/archive", post(admin_backups::archive_orphan))
        .route("/hub/admin/backups", get(admin_backups::list))
        .route("/hub/admin/backups/create", post(admin_backups::create))
        .route("/hub/admin/backups/{id}/verify", post(admin_backups::verify))
        .route("/hub/admin/backups/{id}/restore", post(admin_backups::restore))
        .route("/hub/admin/groups", get(groups::admin_list).post(groups::create))
        .route("/hub/groups", get(groups::mine))
        .route("/hub/groups/{name}", get(groups::show))
        .route("/hub/groups/{name}/members", post(groups::add_members))
        .route("/hub/groups/{name}/members/{user}/{action}", post(groups::member_action))
        .route("/hub/groups/{name}/quota", post(groups::set_quota))
        .route("/hub/groups/{name}/images", post(groups::set_images))
        .route("/hub/groups/{name}/ceiling", post(groups::set_ceiling))
        .route("/hub/groups/{name}/rename", post(groups::rename))
        .route("/hub/groups/{name}/shared", post(groups::set_shared))
        .route("/hub/groups/{name}/environments", post(groups::set_environments))
        .route("/hub/groups/{name}/delete", post(groups::delete))
        .route("/hub/groups/{name}/stop", post(groups::stop))
        .fallback(|| async { crate::AppError::NotFound("There is no page at this address.".into()) })
        .layer(DefaultBodyLimit::disable())
        .layer(axum::Extension(Surface::Page))
}

/// The name rule, as shown next to name fields.
pub const NAME_RULE: &str = "1–64 characters: letters a–z, digits, and . _ - @ ; starting and ending with a letter or digit. Upper case becomes lower case.";
