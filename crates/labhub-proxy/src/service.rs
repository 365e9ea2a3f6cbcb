//! Forwarding `/services/{name}/…` to a registered service's address, with the same header
//! rules as users' servers (`headers.rs`: the hub's cookies and the client's `Authorization`
//! never reach it, `X-Forwarded-*` are the proxy's own) and the path unchanged (JupyterHub's
//! proxy sends services the full path too). The web layer decides who may; this forwards.
//!
//! WebSockets are tunnelled as to users' servers. Each is held by a watch taken for the one
//! who opened it before the gate let them in ([`ServiceTarget::watch_holder`]): it closes
//! when the service is removed or moves, when the service's rechecks find that its user
//! lost `access:services` ([`ServiceTarget::close_visitors_where`]), and when the credential
//! it was opened with ends ([`ServiceTarget::close_credentials_where`]). Requests and WebSockets
//! to one service are capped as a server's are (`max_connections_per_server`).

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use dashmap::DashMap;
use http::{Extensions, Version};

use http::StatusCode;
use labhub_core::{Credential, UserId};

use crate::TunnelWatch;
use crate::body::ProxiedBody;
use crate::closer::Closer;
use crate::error::ProxyError;
use crate::forward::{OwnValues, Proxy, check_head, prepare_headers, switch_protocols, take_upgrade, upstream_uri};
use crate::pool::{Pool, SendError};
use crate::settings::ClientInfo;
use crate::values::LocationRewrite;
use crate::{headers, tunnel};

/// A service's address with its pool of connections, which close when the target goes
/// (the service removed or moved).
pub struct ServiceTarget {
    prefix: String,
    endpoint: SocketAddr,
    internal_origin: String,
    pool: OnceLock<Arc<Pool>>,
    closer: Arc<Closer>,
    /// Requests and WebSockets in progress to it, capped as a server's are.
    in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ServiceTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTarget").field("prefix", &self.prefix).field("endpoint", &self.endpoint).finish()
    }
}

impl ServiceTarget {
    fn new(prefix: String, endpoint: SocketAddr) -> Self {
        let internal_origin = format!("http://{endpoint}");
        Self {
            prefix,
            endpoint,
            internal_origin,
            pool: OnceLock::new(),
            closer: Arc::new(Closer::default()),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The path the hub serves it under: `/services/{name}/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where the proxy reaches it.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// The hold of whoever is about to be let in (`user` is `None` for a registered service,
    /// which is no account), with the credential they came with, to be taken BEFORE the gate
    /// decides: a WebSocket opened with it closes when they lose access or that credential
    /// ends, even if that happened while its upgrade was on its way.
    pub fn watch_holder(&self, user: Option<UserId>, credential: Option<Credential>) -> TunnelWatch {
        TunnelWatch(self.closer.watch_for(user, credential))
    }

    /// The users with a WebSocket open to it (each once).
    pub fn visitors(&self) -> Vec<UserId> {
        self.closer.visitors()
    }

    /// Closes the WebSockets to it of the users `lost` picks; how many.
    pub fn close_visitors_where(&self, lost: impl FnMut(UserId) -> bool) -> usize {
        self.closer.close_visitors(lost)
    }

    /// The credentials that WebSockets to it were opened with (each once).
    pub fn credentials(&self) -> Vec<Credential> {
        self.closer.credentials()
    }

    /// Closes the WebSockets to it opened with a credential `ended` picks; how many.
    pub fn close_credentials_where(&self, ended: impl FnMut(Credential) -> bool) -> usize {
        self.closer.close_credentials(ended)
    }
}

impl Drop for ServiceTarget {
    fn drop(&mut self) {
        self.closer.close();
    }
}

/// The services' targets by prefix, so connections are reused across requests.
#[derive(Default)]
pub struct ServiceTable {
    targets: DashMap<String, Arc<ServiceTarget>>,
}

impl std::fmt::Debug for ServiceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTable").field("targets", &self.targets.len()).finish()
    }
}

impl ServiceTable {
    /// The target for `prefix` at `endpoint`: the one in use, or a new one when there was
    /// none or the service moved (the old one's connections close once it is unused).
    pub fn target(&self, prefix: &str, endpoint: SocketAddr) -> Arc<ServiceTarget> {
        if let Some(t) = self.targets.get(prefix).filter(|t| t.endpoint == endpoint) {
            return t.clone();
        }
        // Decided under the entry's lock: two first requests at once share one target (the
        // other's would close its WebSocket the moment its own request ended).
        let fresh = || Arc::new(ServiceTarget::new(prefix.to_string(), endpoint));
        let mut entry = self.targets.entry(prefix.to_string()).or_insert_with(fresh);
        if entry.endpoint != endpoint {
            *entry = fresh();
        }
        entry.clone()
    }

    /// Every target in use.
    pub fn targets(&self) -> Vec<Arc<ServiceTarget>> {
        self.targets.iter().map(|t| t.value().clone()).collect()
    }

    /// Removes `target` (its service was removed or moved), if it is still the one in use, and
    /// closes its connections and WebSockets at once either way.
    pub fn remove(&self, target: &Arc<ServiceTarget>) {
        self.targets.remove_if(&target.prefix, |_, t| Arc::ptr_eq(t, target));
        target.closer.close();
    }
}

impl Proxy {
    /// Forwards one request under a service's prefix to it (a WebSocket upgrade becomes a
    /// tunnel held by `watch`, or else by the target alone). The caller has authenticated and
    /// authorised it, with `watch` taken before it decided.
    pub async fn forward_service(
        &self,
        target: Arc<ServiceTarget>,
        req: Request,
        client: ClientInfo,
        watch: Option<TunnelWatch>,
    ) -> Result<Response, ProxyError> {
        let settings = self.settings();
        if let Some(answer) = check_head(&req, target.prefix(), "service", settings)? {
            return Ok(answer);
        }
        let uri = upstream_uri(None, req.uri())?;
        let lease =
            self.lease_service(&target.in_flight).ok_or(ProxyError::Busy { retry_after: settings.busy_retry_after })?;
        let mut req = req;
        let client_upgrade = take_upgrade(&mut req);
        let upgrade = client_upgrade.is_some();
        let (mut parts, body) = req.into_parts();
        let own = OwnValues { authorization: None, root_path: None };
        prepare_headers(&mut parts.headers, own, settings, &client, upgrade)?;
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        parts.extensions = Extensions::new();
        let body = if upgrade { Body::empty() } else { body };
        let pool = target.pool.get_or_init(|| {
            Arc::new(Pool::new(
                target.endpoint,
                settings.connect_timeout,
                settings.max_connections_per_server,
                target.closer.clone(),
            ))
        });
        let sent = pool.send(http::Request::from_parts(parts, body));
        let (response, lent) = tokio::time::timeout(settings.read_timeout, sent)
            .await
            .map_err(|_| ProxyError::Timeout)?
            .map_err(|e| match e {
                SendError::Connect(_) => ProxyError::Unreachable,
                SendError::Http(h) => ProxyError::Upstream(h.to_string()),
            })?;
        let location = LocationRewrite {
            internal_origin: &target.internal_origin,
            browser_host: &client.host,
            rstudio_prefix: None,
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(ProxyError::Upstream("it switched protocols without being asked to".into()));
            };
            let closed = watch.map_or_else(|| target.closer.watch(), |w| w.0);
            let ends = tunnel::Ends { shutdown: self.tunnels_shutdown(), closed };
            let through = tunnel::Through::Service(target.prefix.clone());
            return Ok(switch_protocols(through, &location, lease, client_upgrade, response, ends, settings));
        }
        let (mut parts, body) = response.into_parts();
        headers::apply_to_response(&mut parts.headers, &settings.strip_cookies, &location);
        parts.extensions = Extensions::new();
        Ok(Response::from_parts(parts, Body::new(ProxiedBody::new(body, lease, lent))))
    }
}
