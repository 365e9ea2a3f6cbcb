//! Forwarding `/services/{name}/…` to a registered service's address, with the same header
//! rules as users' servers (`headers.rs`: the hub's cookies and the client's `Authorization`
//! never reach it, `X-Forwarded-*` are the proxy's own) and the path unchanged (JupyterHub's
//! proxy sends services the full path too). The web layer decides who may; this forwards.
//!
//! Plain HTTP only: an upgrade is forwarded as an ordinary request (its `Upgrade` header is
//! hop-by-hop and dropped), so a service answers it as it answers any GET.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use dashmap::DashMap;
use http::{Extensions, Version};

use crate::body::ProxiedBody;
use crate::closer::Closer;
use crate::error::ProxyError;
use crate::forward::{OwnValues, Proxy, add_slash, header_bytes, prepare_headers, upstream_uri};
use crate::headers;
use crate::pool::{Pool, SendError};
use crate::settings::ClientInfo;
use crate::values::LocationRewrite;

/// A service's address with its pool of connections, which close when the target goes
/// (the service removed or moved).
pub struct ServiceTarget {
    prefix: String,
    endpoint: SocketAddr,
    internal_origin: String,
    pool: OnceLock<Arc<Pool>>,
    closer: Arc<Closer>,
}

impl std::fmt::Debug for ServiceTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTarget").field("prefix", &self.prefix).field("endpoint", &self.endpoint).finish()
    }
}

impl ServiceTarget {
    fn new(prefix: String, endpoint: SocketAddr) -> Self {
        let internal_origin = format!("http://{endpoint}");
        Self { prefix, endpoint, internal_origin, pool: OnceLock::new(), closer: Arc::new(Closer::default()) }
    }

    /// The path the hub serves it under: `/services/{name}/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
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
        let fresh = Arc::new(ServiceTarget::new(prefix.to_string(), endpoint));
        self.targets.insert(prefix.to_string(), fresh.clone());
        fresh
    }

    /// Forgets every target (services were removed or changed).
    pub fn clear(&self) {
        self.targets.clear();
    }
}

impl Proxy {
    /// Forwards one request under a service's prefix to it. The caller has authenticated and
    /// authorised it.
    pub async fn forward_service(
        &self,
        target: Arc<ServiceTarget>,
        req: Request,
        client: ClientInfo,
    ) -> Result<Response, ProxyError> {
        let settings = self.settings();
        if header_bytes(&req) > settings.max_request_header_bytes {
            return Err(ProxyError::HeadersTooLarge);
        }
        let prefix = target.prefix();
        let path = req.uri().path();
        if !path.starts_with(prefix) {
            if path == prefix.trim_end_matches('/') {
                return Ok(add_slash(prefix, req.uri().query()));
            }
            return Err(ProxyError::BadRequest("the path is not under the service's prefix".into()));
        }
        let uri = upstream_uri(None, req.uri())?;
        let lease = self.lease_total().ok_or(ProxyError::Busy { retry_after: settings.busy_retry_after })?;
        let (mut parts, body) = req.into_parts();
        let own = OwnValues { authorization: None, root_path: None };
        prepare_headers(&mut parts.headers, own, settings, &client, false)?;
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        parts.extensions = Extensions::new();
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
        let (mut parts, body) = response.into_parts();
        let location = LocationRewrite {
            internal_origin: &target.internal_origin,
            browser_host: &client.host,
            rstudio_prefix: None,
        };
        headers::apply_to_response(&mut parts.headers, &settings.strip_cookies, &location);
        parts.extensions = Extensions::new();
        Ok(Response::from_parts(parts, Body::new(ProxiedBody::new(body, lease, lent))))
    }
}
