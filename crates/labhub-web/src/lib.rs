//! The hub's HTTP surface: server-rendered pages for people, the JupyterHub-shaped REST API
//! for scripts, and the front door that hands `/user/…` traffic to the proxy.
//!
//! A request goes router → extractor (who is asking, is the form genuine) → service → back.
//! Handlers return [`AppError`] on failure; each surface renders it once, as a page or as JSON.

mod api;
mod cookies;
mod edge;
mod error;
mod extract;
pub(crate) mod hosts;
mod images_input;
mod lane;
mod middleware;
mod origins;
mod pages;
mod proxy_route;
mod service_route;
mod single_user;
mod sse;
mod state;
mod static_files;
mod views;

pub use cookies::CookieNames;
pub use edge::{HubService, ResponseFuture};
pub use error::AppError;
pub use extract::{AdminUser, ClientAddr, CsrfForm, CurrentUser, MaybeUser};
pub use lane::{FrontDoor, LaneEnd};
pub use state::{AppState, WebSettings};

use axum::Router;

/// The hub's internal address for users' servers: only JupyterHub's single-user endpoints.
pub fn internal_service(state: AppState) -> Router {
    single_user::internal_router(state)
}

/// The whole hub: proxied traffic under `/user/` and the router of everything else.
pub fn service(state: AppState) -> HubService {
    HubService::new(router(state.clone()), state)
}

/// The hub's pages, API, health, metrics and static files.
fn router(state: AppState) -> Router {
    let api = api::router(&state).layer(axum::middleware::from_fn(error::render_api_errors));
    let pages = pages::router().layer(axum::middleware::from_fn_with_state(state.clone(), views::render_page_errors));
    Router::new()
        .merge(api)
        .merge(pages)
        .route("/hub/health", axum::routing::get(middleware::health))
        // Scrapers send tokens: the metrics take the API's credentials.
        .route(
            "/hub/metrics",
            axum::routing::get(middleware::metrics)
                .layer(axum::Extension(extract::Surface::Api))
                .layer(axum::middleware::from_fn(error::render_api_errors)),
        )
        .route("/hub/static/{file}", axum::routing::get(static_files::serve))
        .route(service_route::ROUTES[0], axum::routing::any(service_route::handle))
        .route(service_route::ROUTES[1], axum::routing::any(service_route::handle))
        .route(service_route::ROUTES[2], axum::routing::any(service_route::handle))
        // Outside the host router, so its own answers (the host hand-off) get the headers too.
        .layer(axum::middleware::from_fn_with_state(state.clone(), hosts::route_hosts))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::security_headers))
        .layer(axum::middleware::from_fn(middleware::observe))
        .with_state(state)
}
