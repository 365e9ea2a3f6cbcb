use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use labhub_auth::CsrfKey;
use labhub_proxy::Proxy;
use labhub_service::sessions::SessionHost;
use labhub_service::{Hub, Principal, Requester, ServiceError};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::runtime::Handle;
use tokio::task::{JoinError, JoinHandle};
use url::Url;

use crate::cookies::CookieNames;

/// How the web surface presents itself.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// The address people use to reach the hub (scheme, host, port); decides cookie `Secure`
    /// and the origin that cookie-authenticated API calls and WebSockets must come from.
    pub public_url: Url,
    /// What the hub's cookies are called.
    pub cookies: CookieNames,
    /// Largest request body accepted by pages and the API (the proxy streams without limit).
    pub max_body_bytes: usize,
    /// Believe `X-Forwarded-For` for the client address (only behind a trusted reverse proxy).
    pub trust_forwarded_for: bool,
    /// `/hub/metrics` without `read:metrics`.
    pub metrics_public: bool,
    /// Serve each user's servers from a host of their own, `{user}.{hub host}` (origin isolation).
    pub user_subdomains: bool,
    /// Connection timeouts and the connection cap.
    pub front_door: crate::FrontDoor,
}

impl WebSettings {
    /// Whether cookies must be `Secure` (the public URL is https).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// The public origin, `scheme://host[:port]`, as browsers send it in `Origin`.
    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }
}

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    hub: Hub,
    settings: WebSettings,
    csrf: CsrfKey,
    metrics: Option<PrometheusHandle>,
    origin: String,
    proxy: Proxy,
    /// The runtime the state was made on; `None` when made outside one.
    hub_runtime: Option<Handle>,
}

impl AppState {
    /// The web surface over these services, proxying users' traffic with `proxy` (which must
    /// read the hub's route table). Made on a runtime, that runtime is the hub's (see
    /// [`AppState::on_hub`]).
    pub fn new(hub: Hub, settings: WebSettings, metrics: Option<PrometheusHandle>, proxy: Proxy) -> Self {
        let csrf = CsrfKey::new(hub.key().clone());
        let origin = settings.public_origin();
        let hub_runtime = Handle::try_current().ok();
        Self(Arc::new(Inner { hub, settings, csrf, metrics, origin, proxy, hub_runtime }))
    }

    /// Runs `work` on the hub's runtime and waits for it; where it already is, in place.
    ///
    /// Proxied requests are answered on the HTTP threads' own runtimes. A database connection
    /// opened there would belong to that thread's reactor: every later query on it, from
    /// anywhere, would wait on that thread, and die with it at shutdown. So the front door
    /// sends every other request here, and whatever may reach the database while answering
    /// a proxied one goes through here too.
    pub(crate) async fn on_hub<F>(&self, work: F) -> Result<F::Output, JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        on_runtime(self.0.hub_runtime.as_ref(), work).await
    }

    /// A call into the services made through [`AppState::on_hub`].
    pub(crate) async fn hub_call<T, F>(&self, call: impl FnOnce(Hub) -> F) -> Result<T, ServiceError>
    where
        F: Future<Output = Result<T, ServiceError>> + Send + 'static,
        T: Send + 'static,
    {
        self.on_hub(call(self.hub().clone())).await.unwrap_or_else(|e| {
            Err(ServiceError::Internal(format!("the hub's part of the request did not finish: {e}")))
        })
    }

    /// The user behind a session cookie sent to `host`: from the credential cache where the
    /// request is, or from the database on the hub's runtime.
    pub(crate) async fn session_principal(
        &self,
        cookie: String,
        host: SessionHost,
    ) -> Result<Option<Principal>, ServiceError> {
        match self.hub().sessions().principal_cached(&cookie, &host) {
            Some(known) => Ok(known),
            // Boxed: a query's future is large, and it would otherwise be part of every
            // request's future, which is allocated and moved whole.
            None => Box::pin(self.hub_call(|hub| async move { hub.sessions().principal(&cookie, &host).await })).await,
        }
    }

    /// The user behind an API token, as [`AppState::session_principal`] finds a session's.
    pub(crate) async fn token_principal(&self, token: String) -> Result<Option<Principal>, ServiceError> {
        match self.hub().tokens().principal_cached(&token) {
            Some(known) => Ok(known),
            None => Box::pin(self.hub_call(|hub| async move { hub.tokens().principal(&token).await })).await,
        }
    }

    /// Who an API token speaks for: a user (as [`AppState::token_principal`] finds them) or a
    /// registered service, from the caches where the request is, else from the database on
    /// the hub's runtime (users' tokens first: they are the many).
    pub(crate) async fn token_requester(&self, token: String) -> Result<Option<Requester>, ServiceError> {
        match self.hub().tokens().principal_cached(&token) {
            Some(Some(p)) => return Ok(Some(Requester::User(p))),
            Some(None) => return Ok(None),
            None => {}
        }
        if let Some(s) = self.hub().services().principal_cached(&token) {
            return Ok(Some(Requester::Service(s)));
        }
        let looked_up = self.hub_call(|hub| async move {
            match hub.tokens().principal(&token).await? {
                Some(p) => Ok(Some(Requester::User(p))),
                None => Ok(hub.services().principal(&token).await?.map(Requester::Service)),
            }
        });
        Box::pin(looked_up).await
    }

    /// The account behind a token of JupyterHub's single-user contract, narrowed to its scopes.
    pub(crate) async fn single_user_principal(&self, token: String) -> Result<Option<Principal>, ServiceError> {
        Box::pin(self.hub_call(|hub| async move { hub.single_user().principal(&token).await })).await
    }

    /// The proxy to users' servers.
    pub fn proxy(&self) -> &Proxy {
        &self.0.proxy
    }

    /// The hub's services.
    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    /// The web settings.
    pub fn settings(&self) -> &WebSettings {
        &self.0.settings
    }

    /// CSRF token maker.
    pub fn csrf(&self) -> &CsrfKey {
        &self.0.csrf
    }

    /// The Prometheus exporter, when metrics are on.
    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.0.metrics.as_ref()
    }

    /// The public origin (`scheme://host[:port]`).
    pub fn origin(&self) -> &str {
        &self.0.origin
    }
}

/// Runs `work` on `runtime` (in place when already there, or when there is none).
async fn on_runtime<F>(runtime: Option<&Handle>, work: F) -> Result<F::Output, JoinError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match runtime {
        Some(rt) if Handle::try_current().map(|here| here.id()).ok() != Some(rt.id()) => {
            OnHubRuntime(rt.spawn(work)).await
        }
        _ => Ok(work.await),
    }
}

/// Work running on the hub's runtime for a request. Dropped (the client went away), it stops
/// that work, as dropping it in place would have.
struct OnHubRuntime<T>(JoinHandle<T>);

impl<T> Drop for OnHubRuntime<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for OnHubRuntime<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    fn hub_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    /// Where a piece of work ran: its runtime, and whether it was a task of its own.
    async fn whereabouts() -> (tokio::runtime::Id, bool) {
        (Handle::current().id(), tokio::task::try_id().is_some())
    }

    #[test]
    fn work_from_another_runtime_runs_on_the_hub_runtime() {
        let hub = hub_runtime();
        let handle = hub.handle().clone();
        let http_thread = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (ran_on, spawned) = http_thread.block_on(on_runtime(Some(&handle), whereabouts())).unwrap();
        assert_eq!(ran_on, handle.id());
        assert!(spawned);
    }

    #[test]
    fn work_already_on_the_hub_runtime_runs_in_place() {
        let hub = hub_runtime();
        let handle = hub.handle().clone();
        let (ran_on, spawned) = hub.block_on(on_runtime(Some(&handle), whereabouts())).unwrap();
        assert_eq!(ran_on, handle.id());
        assert!(!spawned, "no hop when the caller is on the hub's runtime already");
    }

    #[test]
    fn a_request_that_goes_away_stops_its_work_on_the_hub_runtime() {
        let hub = hub_runtime();
        let handle = hub.handle().clone();
        let finished = Arc::new(AtomicBool::new(false));
        let work = {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                finished.store(true, Ordering::SeqCst);
            }
        };
        let http_thread = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let waited = http_thread
            .block_on(async { tokio::time::timeout(Duration::from_millis(20), on_runtime(Some(&handle), work)).await });
        assert!(waited.is_err(), "the work takes longer than the request waited");
        std::thread::sleep(Duration::from_millis(400));
        assert!(!finished.load(Ordering::SeqCst), "dropped with its request, the work was aborted");
    }
}
