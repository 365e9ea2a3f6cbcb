use std::sync::Arc;

use labhub_auth::CsrfKey;
use labhub_proxy::Proxy;
use labhub_service::Hub;
use metrics_exporter_prometheus::PrometheusHandle;
use url::Url;

/// How the web surface presents itself.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// The address people use to reach the hub (scheme, host, port); decides cookie `Secure`
    /// and the origin that cookie-authenticated API calls and WebSockets must come from.
    pub public_url: Url,
    /// The session cookie's name.
    pub cookie_name: String,
    /// The session cookie's name on users' own hosts (origin isolation).
    pub user_host_cookie: String,
    /// Largest request body accepted by pages and the API (the proxy streams without limit).
    pub max_body_bytes: usize,
    /// Believe `X-Forwarded-For` for the client address (only behind a trusted reverse proxy).
    pub trust_forwarded_for: bool,
    /// Serve each user's servers from a host of their own, `{user}.{hub host}` (origin isolation).
    pub user_subdomains: bool,
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
}

impl AppState {
    /// The web surface over these services, proxying users' traffic with `proxy` (which must
    /// read the hub's route table).
    pub fn new(hub: Hub, settings: WebSettings, metrics: Option<PrometheusHandle>, proxy: Proxy) -> Self {
        let csrf = CsrfKey::new(hub.key().clone());
        let origin = settings.public_origin();
        Self(Arc::new(Inner { hub, settings, csrf, metrics, origin, proxy }))
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
