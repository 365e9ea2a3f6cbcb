//! JupyterHub's single-user endpoints: the OAuth provider (`/hub/api/oauth2/authorize`,
//! `/hub/api/oauth2/token`), who a single-user token is (`GET /hub/api/user`) and a server's
//! activity reports (`POST /hub/api/users/{name}/activity`).
//!
//! The tokens of that contract (a server's own, and the access tokens the provider issues)
//! are answered here by who they are; elsewhere on the API they stand for their account
//! narrowed to their scopes (`access:servers!server=…`, and `shares!server=…` for whoever may
//! manage that server's shares), so the one scope check admits them to little else.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use labhub_core::UserName;
use labhub_service::Requester;
use labhub_service::single_user::oauth::{AuthorizeRequest, TokenRequest};
use labhub_service::single_user::{ActivityReport, Caller as SingleUserToken};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::api::ApiJson;
use crate::api::models::UserModel;
use crate::extract::{Caller, CurrentUser, token_from_query};
use crate::{AppError, AppState};

/// The caller, when the request carries a token of the single-user contract
/// (`Authorization: token|Bearer …` or `?token=`); `None` for anything else.
pub struct SingleUserCaller(pub Option<SingleUserToken>);

impl FromRequestParts<AppState> for SingleUserCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header_token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        let Some(token) = header_token.or_else(|| token_from_query(parts)) else { return Ok(Self(None)) };
        Ok(Self(state.hub().single_user().caller(&token).await?))
    }
}

/// `GET /hub/api/user`: who a token of the single-user contract speaks for, with its scopes
/// (as JupyterHub answers a server checking a user's token); anyone else as usual.
pub async fn me(
    State(state): State<AppState>,
    SingleUserCaller(caller): SingleUserCaller,
    mut parts: Parts,
) -> Result<Response, AppError> {
    if let Some(c) = caller {
        return Ok(Json(caller_model(&c)).into_response());
    }
    let me = match Caller::from_request_parts(&mut parts, &state).await?.0 {
        Requester::User(me) => me,
        Requester::Service(s) => {
            // JupyterHub's answer for a service's own token: the service, with its scopes.
            let view = state.hub().services().get(labhub_service::Actor::System, &s.name).await?;
            let mut model = crate::api::services::service_model(&view);
            model["scopes"] = json!(s.scopes.names());
            return Ok(Json(model).into_response());
        }
    };
    let v = state.hub().accounts().view(labhub_service::Actor::User(&me), &me.name).await?;
    let mut model = UserModel::of(&v);
    model.scopes = Some(me.scopes.names());
    Ok(Json(model).into_response())
}

/// `GET /hub/api/user` on the internal address: a token of the single-user contract only.
pub async fn internal_me(SingleUserCaller(caller): SingleUserCaller) -> Result<Json<serde_json::Value>, AppError> {
    let c = caller.ok_or(AppError::Forbidden("only a server's tokens are answered on this address".into()))?;
    Ok(Json(caller_model(&c)))
}

/// JupyterHub's user model of a single-user token: the user it speaks for and its scopes.
fn caller_model(c: &SingleUserToken) -> serde_json::Value {
    json!({
        "kind": "user",
        "name": c.name,
        "admin": c.admin,
        "groups": [],
        "roles": [],
        "scopes": c.scopes,
        "session_id": null,
    })
}

/// The internal address's router: only what `jupyterhub-singleuser` and the extensions in a
/// server ask the hub (the API's version, who a token is, activity, the OAuth token exchange,
/// and one server's shares and share codes, for a token whose scopes reach them); everything
/// else is 404. The API's one scope check decides the shares as on the public address.
pub fn internal_router(state: AppState) -> axum::Router {
    use crate::api::shares;
    use axum::routing::{get, post};
    let one = || get(shares::list).post(shares::grant).patch(shares::revoke).delete(shares::revoke_all);
    let codes = || get(shares::list_codes).post(shares::create_code).delete(shares::revoke_codes);
    axum::Router::new()
        .route("/hub/api", get(crate::api::version))
        .route("/hub/api/", get(crate::api::version))
        .route("/hub/api/user", get(internal_me))
        .route("/hub/api/users/{name}/activity", post(activity))
        .route("/hub/api/oauth2/token", post(token))
        .route("/hub/api/shares/{owner}/", one())
        .route("/hub/api/shares/{owner}/{server}", one())
        .route("/hub/api/share-codes/{owner}/", codes())
        .route("/hub/api/share-codes/{owner}/{server}", codes())
        .fallback(|| async { AppError::NotFound("only the single-user endpoints are served on this address".into()) })
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::api::gate::check))
        .layer(axum::extract::DefaultBodyLimit::max(state.settings().max_body_bytes))
        .layer(axum::Extension(crate::extract::Surface::Internal))
        .layer(axum::middleware::from_fn(crate::error::render_api_errors))
        .with_state(state)
}

/// JupyterHub's activity report: the user's and each server's last activity.
#[derive(Deserialize)]
pub struct ActivityBody {
    #[serde(default)]
    last_activity: Option<String>,
    #[serde(default)]
    servers: BTreeMap<String, ServerActivity>,
}

#[derive(Deserialize)]
pub struct ServerActivity {
    last_activity: String,
}

fn when(raw: &str) -> Result<OffsetDateTime, AppError> {
    OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|_| AppError::BadRequest(format!("{raw:?} is not an ISO 8601 time with a time zone")))
}

/// `POST /hub/api/users/{name}/activity` (a server's own token, `users:activity!user={name}`).
pub async fn activity(
    State(state): State<AppState>,
    SingleUserCaller(caller): SingleUserCaller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ActivityBody>,
) -> Result<StatusCode, AppError> {
    let caller = caller.ok_or(AppError::LoginRequired)?;
    let name = UserName::parse(&name).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let mut report =
        ActivityReport { last_activity: body.last_activity.as_deref().map(when).transpose()?, ..Default::default() };
    for (server, a) in &body.servers {
        report.servers.insert(server.clone(), when(&a.last_activity)?);
    }
    state.hub().single_user().report_activity(&caller, &name, &report).await?;
    Ok(StatusCode::OK)
}

/// `GET /hub/api/oauth2/authorize` (signed in; others sign in first and come back): sends the
/// browser back to the client with a code.
pub async fn authorize(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Redirect, AppError> {
    let req = AuthorizeRequest {
        client_id: q.get("client_id").cloned().unwrap_or_default(),
        redirect_uri: q.get("redirect_uri").cloned(),
        response_type: q.get("response_type").cloned().unwrap_or_default(),
        state: q.get("state").cloned(),
    };
    Ok(Redirect::to(&state.hub().single_user().authorize(&me, &req).await?))
}

/// `POST /hub/api/oauth2/token` (a client, with its id and secret in the form or as HTTP
/// Basic): exchanges a code for an access token.
pub async fn token(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::RawForm(form): axum::extract::RawForm,
) -> Result<Json<serde_json::Value>, AppError> {
    let mut f: HashMap<String, String> = url::form_urlencoded::parse(&form).into_owned().collect();
    if let Some((id, secret)) = basic_credentials(&headers) {
        f.entry("client_id".into()).or_insert(id);
        f.entry("client_secret".into()).or_insert(secret);
    }
    let mut take = |k: &str| f.remove(k).unwrap_or_default();
    let req = TokenRequest {
        grant_type: take("grant_type"),
        code: take("code"),
        client_id: take("client_id"),
        client_secret: take("client_secret"),
        redirect_uri: f.remove("redirect_uri"),
    };
    let issued = state.hub().single_user().exchange(&req).await?;
    Ok(Json(json!({
        "access_token": issued.access_token.expose(),
        "token_type": "Bearer",
        "scope": issued.scopes.join(" "),
    })))
}

/// `Authorization: Basic base64(id:secret)`, as OAuth clients may send their credentials.
fn basic_credentials(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}
