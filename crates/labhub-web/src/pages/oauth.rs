//! Signing in with identity providers: the redirect to a provider, the one callback every
//! provider returns to (JupyterHub's `/hub/oauth_callback`), and the identities linked to an
//! account, which admins can see and unlink.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use labhub_auth::oidc::BrowserBinding;
use labhub_core::UserName;
use labhub_service::Actor;
use labhub_service::model::LinkedIdentity;
use labhub_service::sso::{CallbackParams, SIGN_IN_WINDOW};
use serde::Deserialize;

use super::login::{Empty, enter};
use crate::extract::{AdminUser, ClientAddr, CsrfForm};
use crate::views::{Chrome, Page, When, redirect_with_flash, safe_next};
use crate::{AppError, AppState, cookies};

/// Where the binding cookie is sent: only back to the callback (unless `__Host-` prefixed,
/// which needs `Path=/`). Like every hub cookie it is `SameSite=Lax`: the provider sends the
/// browser back with a top-level GET from its own site.
const CALLBACK_PATH: &str = "/hub/oauth_callback";

/// The browser binding a request carries, if any.
fn binding_of(state: &AppState, headers: &HeaderMap) -> Option<BrowserBinding> {
    cookies::request_cookie(headers, &state.settings().cookies.oauth_binding)
        .and_then(|v| BrowserBinding::from_cookie(&v))
}

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// `GET /hub/oauth_login/{provider}` (anyone): starts a sign-in and sends the browser to the provider.
pub async fn oauth_login(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // A browser keeps one binding for all its sign-ins in flight, so two tabs do not undo each other.
    let binding = binding_of(&state, &headers).unwrap_or_else(BrowserBinding::generate);
    let next = if safe_next(&q.next) { q.next.as_str() } else { "" };
    let to = state.hub().sign_on().begin(&provider, &binding, next).await?;
    let cookie = cookies::oauth_binding(&state, binding.value(), CALLBACK_PATH, SIGN_IN_WINDOW);
    let jar = CookieJar::new().add(cookie);
    Ok((jar, Redirect::to(&to)).into_response())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /hub/oauth_callback` (the provider sends the browser here): finishes the sign-in and
/// starts a session.
pub async fn oauth_callback(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, AppError> {
    let hub = state.hub();
    let binding = binding_of(&state, &headers);
    let params =
        CallbackParams { state: q.state, code: q.code, error: q.error, error_description: q.error_description };
    let done = hub.sign_on().finish(params, binding.as_ref()).await?;
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = hub.sessions().start(&done.account, ua, &addr).await?;
    // The binding cookie stays until it expires: a reload of this URL then says "already used".
    Ok(enter(&state, CookieJar::new(), &token, &done.next))
}

/// A linked identity, as pages show it.
pub(crate) struct IdentityView {
    pub(crate) id: i64,
    pub(crate) provider: String,
    pub(crate) username: String,
    pub(crate) email: String,
    pub(crate) subject: String,
    pub(crate) linked: When,
    pub(crate) last_login: When,
}

/// Identities as pages show them, with the providers' display names.
pub(crate) fn identity_views(state: &AppState, identities: Vec<LinkedIdentity>) -> Vec<IdentityView> {
    let hub = state.hub();
    let now = hub.now();
    identities
        .into_iter()
        .map(|i| IdentityView {
            id: i.id,
            // A provider removed from the configuration still shows, by its id.
            provider: hub.providers().get(&i.provider).map_or(i.provider.clone(), |p| p.display_name().to_string()),
            username: i.username,
            email: i.email.unwrap_or_default(),
            subject: i.subject,
            linked: When::new(now, i.created_at),
            last_login: When::new(now, i.last_login_at),
        })
        .collect()
}

#[derive(Template, WebTemplate)]
#[template(path = "oauth_identities.html")]
struct IdentitiesPage {
    c: Chrome,
    admin_tab: &'static str,
    name: String,
    identities: Vec<IdentityView>,
}

fn user_name(raw: &str) -> Result<UserName, AppError> {
    UserName::parse(raw).map_err(|e| AppError::NotFound(e.to_string()))
}

/// `GET /hub/admin/users/{name}/identities` (admins): a user's linked identities.
pub async fn identities(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let name = user_name(&name)?;
    let identities = state.hub().sign_on().identities(Actor::User(&me), &name).await?;
    let view = IdentitiesPage {
        c: page.chrome("admin"),
        admin_tab: "users",
        name: name.to_string(),
        identities: identity_views(&state, identities),
    };
    Ok(page.render(view))
}

/// `POST /hub/admin/users/{name}/identities/{id}/unlink` (admins): unlinks one identity.
pub async fn unlink(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path((name, id)): Path<(String, i64)>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    let name = user_name(&name)?;
    let gone = state.hub().sign_on().unlink(Actor::User(&me), &name, id).await?;
    let back = format!("/hub/admin/users/{name}/identities");
    let via =
        state.hub().providers().get(&gone.provider).map_or(gone.provider.clone(), |p| p.display_name().to_string());
    Ok(redirect_with_flash(&state, &back, &format!("Unlinked {name}'s {via} identity.")))
}
