//! The REST API under `/hub/api`, shaped like JupyterHub's so its clients and scripts work.
//! Errors are `{"status": N, "message": "…"}`.

mod backups;
mod datasets;
mod environments;
pub(crate) mod gate;
mod groups;
mod history;
mod homes;
mod images;
pub(crate) mod models;
mod servers;
pub(crate) mod services;
pub(crate) mod shares;
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

/// The API routes, with full paths (merged, not nested, so `/hub/api` and `/hub/api/` both work),
/// each behind the one scope check (`gate.rs`).
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/hub/api", get(users::root))
        .route("/hub/api/", get(users::root))
        .route("/hub/api/info", get(users::info))
        .route("/hub/api/user", get(crate::single_user::me))
        .route("/hub/api/users/{name}/activity", post(crate::single_user::activity))
        .route("/hub/api/oauth2/token", post(crate::single_user::token))
        .route("/hub/api/users", get(users::list).post(users::create_many))
        .route(
            "/hub/api/users/{name}",
            get(users::get_one).post(users::create_one).patch(users::patch).delete(users::delete),
        )
        .route("/hub/api/users/{name}/home/archive", get(homes::download).put(homes::restore))
        .route("/hub/api/users/{name}/server", post(servers::start_default).delete(servers::stop_default))
        .route("/hub/api/users/{name}/server/progress", get(servers::progress_default))
        .route(
            "/hub/api/users/{name}/servers/{server}",
            get(servers::get_named).post(servers::start_named).delete(servers::stop_named),
        )
        .route("/hub/api/users/{name}/servers/{server}/progress", get(servers::progress_named))
        .route("/hub/api/users/{name}/server/snapshot", post(environments::snapshot_default))
        .route("/hub/api/users/{name}/servers/{server}/snapshot", post(environments::snapshot_named))
        .route("/hub/api/groups", get(groups::list).post(groups::create_many))
        .route(
            "/hub/api/groups/{name}",
            get(groups::get_one).post(groups::create_one).patch(groups::patch).delete(groups::delete),
        )
        .route("/hub/api/groups/{name}/users", post(groups::add_users).delete(groups::remove_users))
        .route("/hub/api/groups/{name}/leads", post(groups::add_leads).delete(groups::remove_leads))
        .route("/hub/api/groups/{name}/quota", get(groups::get_quota).patch(groups::patch_quota))
        .route("/hub/api/groups/{name}/usage", get(groups::usage))
        .route("/hub/api/datasets", get(datasets::list).post(datasets::create))
        .route("/hub/api/backups", get(backups::list).post(backups::create))
        .route("/hub/api/backups/{id}/verify", post(backups::verify))
        .route("/hub/api/backups/{id}/restore", post(backups::restore))
        .route("/hub/api/datasets/{name}", axum::routing::delete(datasets::delete))
        .route("/hub/api/users/{name}/sessions", get(history::list))
        .route("/hub/api/users/{name}/sessions/{id}/relaunch", post(history::relaunch))
        .route("/hub/api/environments", get(environments::list).post(environments::create))
        .route("/hub/api/environments/collect", post(history::collect))
        .route("/hub/api/environments/{name}", get(environments::get_one).delete(environments::delete))
        .route("/hub/api/environments/{name}/builds", post(environments::rebuild))
        .route("/hub/api/environments/{name}/builds/{id}/log", get(environments::log))
        .route("/hub/api/environments/{name}/pin", axum::routing::put(environments::pin))
        .route("/hub/api/images", get(images::list).post(images::create))
        .route("/hub/api/images/{name}", get(images::get_one).put(images::replace).delete(images::delete))
        .route("/hub/api/images/{name}/build", post(images::build))
        .route("/hub/api/images/{name}/build/progress", get(images::build_progress))
        .route("/hub/api/services", get(services::list))
        .route("/hub/api/services/{name}", get(services::get_one))
        .route("/hub/api/users/{name}/tokens", get(tokens::list).post(tokens::create))
        .route("/hub/api/users/{name}/tokens/{id}", get(tokens::get_one).delete(tokens::delete))
        .merge(shares_router())
        .route("/hub/api/{*rest}", axum::routing::any(not_found))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), gate::check))
        .layer(DefaultBodyLimit::max(state.settings().max_body_bytes))
        .layer(axum::Extension(Surface::Api))
}

/// JupyterHub 5's sharing endpoints. Each server route comes twice: with an empty server name
/// (the default server, `…/alice/`) and with a name.
fn shares_router() -> Router<AppState> {
    use axum::routing::MethodRouter;
    use shares::{ToGroup, ToUser};
    let one = || -> MethodRouter<AppState> {
        get(shares::list).post(shares::grant).patch(shares::revoke).delete(shares::revoke_all)
    };
    let codes =
        || -> MethodRouter<AppState> { get(shares::list_codes).post(shares::create_code).delete(shares::revoke_codes) };
    let user_share = || get(shares::share_on::<ToUser>).delete(shares::drop_share::<ToUser>);
    let group_share = || get(shares::share_on::<ToGroup>).delete(shares::drop_share::<ToGroup>);
    Router::new()
        .route("/hub/api/shares/{owner}", get(shares::list_all))
        .route("/hub/api/shares/{owner}/", one())
        .route("/hub/api/shares/{owner}/{server}", one())
        .route("/hub/api/share-codes/{owner}", get(shares::list_all_codes))
        .route("/hub/api/share-codes/{owner}/", codes())
        .route("/hub/api/share-codes/{owner}/{server}", codes())
        .route("/hub/api/users/{name}/shared", get(shares::shared_with::<ToUser>))
        .route("/hub/api/users/{name}/shared/{owner}/", user_share())
        .route("/hub/api/users/{name}/shared/{owner}/{server}", user_share())
        .route("/hub/api/groups/{name}/shared", get(shares::shared_with::<ToGroup>))
        .route("/hub/api/groups/{name}/shared/{owner}/", group_share())
        .route("/hub/api/groups/{name}/shared/{owner}/{server}", group_share())
}

pub(crate) use users::root as version;

const DEFAULT_LIMIT: i64 = 200;
const MAX_LIMIT: i64 = 1000;

/// A list's `offset` and `limit` query parameters, checked.
pub(crate) fn offset_limit(q: &std::collections::HashMap<String, String>) -> Result<(i64, i64), AppError> {
    let int = |key: &str| -> Result<Option<i64>, AppError> {
        q.get(key)
            .map(|v| {
                v.parse::<i64>().map_err(|_| AppError::BadRequest(format!("'{key}' must be a whole number, not {v:?}")))
            })
            .transpose()
    };
    let offset = int("offset")?.unwrap_or(0);
    if offset < 0 {
        return Err(AppError::BadRequest("'offset' must not be negative".into()));
    }
    let limit = int("limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::BadRequest(format!("'limit' must be between 1 and {MAX_LIMIT}")));
    }
    Ok((offset, limit))
}

/// Which slice of a list an answer holds.
pub(crate) struct Page {
    pub offset: i64,
    pub limit: i64,
    pub total: i64,
}

/// A list answer: a plain JSON array, or JupyterHub's pagination envelope (with the URL of the
/// next page, keeping the other query parameters) when the client asks for it with
/// `Accept: application/jupyterhub-pagination+json`.
pub(crate) fn paged(
    state: &AppState,
    path: &str,
    headers: &axum::http::HeaderMap,
    query: &std::collections::HashMap<String, String>,
    items: Vec<serde_json::Value>,
    page: Page,
) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let wants_envelope = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/jupyterhub-pagination+json"));
    if !wants_envelope {
        return axum::Json(items).into_response();
    }
    let body = envelope(state, path, query, items, page);
    ([(header::CONTENT_TYPE, "application/jupyterhub-pagination+json")], body.to_string()).into_response()
}

/// JupyterHub's pagination envelope, `{items, _pagination: {offset, limit, total, next}}`, with
/// the URL of the next page keeping the other query parameters. Lists that JupyterHub added
/// with pagination (shares, share codes) always answer with it.
pub(crate) fn envelope(
    state: &AppState,
    path: &str,
    query: &std::collections::HashMap<String, String>,
    items: Vec<serde_json::Value>,
    page: Page,
) -> serde_json::Value {
    let next_offset = page.offset + page.limit;
    let next = (next_offset < page.total).then(|| {
        let mut url = state.settings().public_url.join(path).expect("a fixed relative path");
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                if k != "offset" && k != "limit" {
                    pairs.append_pair(k, v);
                }
            }
            pairs.append_pair("offset", &next_offset.to_string()).append_pair("limit", &page.limit.to_string());
        }
        serde_json::json!({ "offset": next_offset, "limit": page.limit, "url": url.as_str() })
    });
    serde_json::json!({
        "items": items,
        "_pagination": { "offset": page.offset, "limit": page.limit, "total": page.total, "next": next },
    })
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
