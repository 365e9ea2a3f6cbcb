//! The admin page of registered services (read-only: they are registered with the CLI,
//! `labhub service add`, which prints the token once): each one's address, roles and last use.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::Response;
use labhub_service::Actor;

use crate::extract::AdminUser;
use crate::views::{Chrome, Page, When};
use crate::{AppError, AppState};

struct ServiceRow {
    name: String,
    prefix: Option<String>,
    url: Option<String>,
    roles: String,
    token_prefix: String,
    last_used: When,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_services.html")]
struct ServicesPage {
    c: Chrome,
    admin_tab: &'static str,
    services: Vec<ServiceRow>,
}

/// `GET /hub/admin/services` (admins).
pub async fn list(State(state): State<AppState>, AdminUser(me): AdminUser, page: Page) -> Result<Response, AppError> {
    let hub = state.hub();
    let now = hub.now();
    let services = hub
        .services()
        .list(Actor::User(&me))
        .await?
        .into_iter()
        .map(|s| ServiceRow {
            prefix: s.url.is_some().then(|| s.prefix()),
            name: s.name.to_string(),
            url: s.url,
            roles: if s.roles.is_empty() { "none".into() } else { s.roles.join(", ") },
            token_prefix: s.token_prefix,
            last_used: When::opt(now, s.last_activity),
        })
        .collect();
    let view = ServicesPage { c: page.chrome("admin"), admin_tab: "services", services };
    Ok(page.render(view))
}
