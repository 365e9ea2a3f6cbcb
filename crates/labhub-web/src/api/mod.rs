//! The REST API under `/hub/api`, shaped like JupyterHub's so its clients and scripts work.
//! Errors are `{"status": N, "message": "…"}`.

mod images;
pub(crate) mod models;
mod servers;
mod tokens;
mod users;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::extract::Surface;
use crate::{AppError, AppState};

/// The JupyterHub REST API version we follow (what `GET /hub/api` reports).
pub const JUPYTERHUB_API_VERSION: &str = "5.3.0";

/// The API routes, with full paths (merged, not nested, so `/hub/api` and `/hub/api/` both work).
pub fn router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/hub/api", get(users::root))
        .route("/hub/api/", get(users::root))
        .route("/hub/api/info", get(users::info))
        .route("/hub/api/user", get(users::me))
        .route("/hub/api/users", get(users::list).post(users::create_many))
        .route(
            "/hub/api/users/{name}",
            get(users::get_one).post(users::create_one).patch(users::patch).delete(users::delete),
        )
        .route("/hub/api/users/{name}/server", post(servers::start_default).delete(servers::stop_default))
        .route("/hub/api/users/{name}/server/progress", get(servers::progress_default))
        .route(
            "/hub/api/users/{name}/servers/{server}",
            get(servers::get_named).post(servers::start_named).delete(servers::stop_named),
        )
        .route("/hub/api/users/{name}/servers/{server}/progress", get(servers::progress_named))
        .route("/hub/api/images", get(images::list).post(images::create))
        .route("/hub/api/images/{name}", get(images::get_one).put(images::replace).delete(images::delete))
        .route("/hub/api/images/{name}/build", post(images::build))
        .route("/hub/api/images/{name}/build/progress", get(images::build_progress))
        .route("/hub/api/users/{name}/tokens", get(tokens::list).post(tokens::create))
        .route("/hub/api/users/{name}/tokens/{id}", get(tokens::get_one).delete(tokens::delete))
        .route("/hub/api/{*rest}", axum::routing::any(not_found))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::Extension(Surface::Api))
}

async fn not_found() -> AppError {
    AppError::NotFound("there is no such API endpoint".into())
}

/// A JSON body. Unlike `axum::Json` it does not insist on a content type (JupyterHub's
/// clients do not always send one), treats an empty body as `{}`, and turns every problem
/// into a 400 that says what is wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.settings().max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| AppError::TooLarge)?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(text)
            .map(ApiJson)
            .map_err(|e| AppError::BadRequest(format!("the request body is not valid JSON for this endpoint: {e}")))
    }
}
