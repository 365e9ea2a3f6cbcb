//! The hub's front door: `/user/…` (every click, save and poll of a notebook) goes straight
//! to the proxy route; everything else goes through the router.
//!
//! The router wraps each of its routes in the cross-cutting layers, so a request through it
//! pays for matching, a clone of its route's boxed service and one boxed future per layer.
//! Proxied traffic needs only two of those layers (ids and metrics; host routing), which it
//! gets here as plain calls: the same functions the router's layers call.
//!
//! The hub's HTTP threads each run a single-threaded runtime (see the `labhub` crate's
//! `serving`). Proxied requests are answered on the thread that read them; everything else
//! (pages, the API: the database, the spawner, tasks that outlive their request) is handed to
//! the hub's runtime, the one the service was built on, so that work never depends on an HTTP
//! thread staying alive.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower::Service;

use crate::{AppState, hosts, middleware, proxy_route};

/// The route label proxied requests are counted under in the metrics.
pub(crate) const PROXY_ROUTE: &str = "/user/{*rest}";

/// What answering one request is: a boxed future, since the two ways differ in type.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The whole hub as one service: the proxy route and the router beside it.
#[derive(Clone)]
pub struct HubService {
    router: Router,
    state: AppState,
}

impl HubService {
    pub(crate) fn new(router: Router, state: AppState) -> Self {
        Self { router, state }
    }

    pub(crate) fn state(&self) -> &AppState {
        &self.state
    }

    /// Answers one request: proxied traffic here, the rest on the hub's runtime.
    pub fn respond(&self, req: Request) -> ResponseFuture {
        let state = self.state.clone();
        if is_proxied(req.uri().path()) {
            return Box::pin(async move { Ok(proxied(state, req).await) });
        }
        let answer = self.router.clone().call(req);
        Box::pin(async move {
            state.on_hub(answer).await.unwrap_or_else(|e| {
                // A handler panicked (or the hub is shutting down under it): an answer, not a
                // dropped connection.
                tracing::error!(error = %e, "a request's handler did not finish");
                Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response())
            })
        })
    }
}

/// Whether a path is proxied traffic: `/user/` and at least one more character.
pub(crate) fn is_proxied(path: &str) -> bool {
    path.strip_prefix("/user/").is_some_and(|rest| !rest.is_empty())
}

async fn proxied(state: AppState, req: Request) -> Response {
    middleware::observed(req, PROXY_ROUTE, |req| {
        hosts::routed_by_host(&state, req, |req| proxy_route::handle(state.clone(), req))
    })
    .await
}

impl Service<Request> for HubService {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.respond(req)
    }
}

#[cfg(test)]
mod tests {
    use super::is_proxied;

    #[test]
    fn only_paths_below_user_are_proxied() {
        for p in ["/user/alice/", "/user/alice", "/user/a/lab/tree", "/user//x"] {
            assert!(is_proxied(p), "{p}");
        }
        for p in ["/user/", "/user", "/users/alice/", "/hub/user/alice/", "/", "/USER/alice/"] {
            assert!(!is_proxied(p), "{p}");
        }
    }
}
