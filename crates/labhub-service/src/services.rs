//! External services registered with the hub (JupyterHub's services): a name, where the proxy
//! sends `/services/{name}/` (if anywhere), an API token kept as its SHA-256, and roles.
//!
//! A service is not an account: its token yields a [`ServicePrincipal`], which holds only the
//! scopes of its roles (expanded for the service: `!service` is itself, `self` is nothing) and
//! acts as [`Actor::Service`]. Every check written for owners and admins compares user ids or
//! the admin flag, which a service has neither of, so only scopes ever admit it. Recognised
//! tokens are cached briefly; every change of roles or services (in this process, or announced
//! by Postgres on `labhub_roles`, which the services' triggers send) empties the cache, so a
//! removed service is refused at once.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use labhub_auth::tokens::looks_like_token;
use labhub_auth::{TokenHash, new_token, sha256};
use labhub_core::{Holder, RoleName, Scope, ScopeSet, ScopeSpec, Secret, ServiceId, ServiceName};
use labhub_db::{oauth, roles, services as store};
use labhub_proxy::{ServiceTable, ServiceTarget};
use serde_json::json;
use time::OffsetDateTime;

use crate::access::Actor;
use crate::roles::Resource;
use crate::sessions::CACHE_TTL;
use crate::state::Epoch;
use crate::{Hub, ServiceError};

impl Hub {
    /// Registered external services.
    pub fn services(&self) -> Services<'_> {
        Services { hub: self }
    }
}

/// Registered external services.
#[derive(Clone, Copy)]
pub struct Services<'h> {
    hub: &'h Hub,
}

/// A service presenting its API token: what it may do, and nothing of any account.
#[derive(Debug, Clone)]
pub struct ServicePrincipal {
    pub service_id: ServiceId,
    pub name: ServiceName,
    /// How the audit log names it: `service:{name}` (no user name has a `:`).
    pub label: String,
    /// Its roles' scopes, expanded for it.
    pub scopes: Arc<ScopeSet>,
    /// Its roles' names.
    pub roles: Vec<String>,
}

/// A registered service, as the API and the CLI show it (never its token).
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub name: ServiceName,
    pub url: Option<String>,
    pub roles: Vec<String>,
    /// The first characters of its token, to tell tokens apart.
    pub token_prefix: String,
    pub created_at: OffsetDateTime,
    pub last_activity: Option<OffsetDateTime>,
}

impl ServiceView {
    /// Where the hub serves it: `/services/{name}/`.
    pub fn prefix(&self) -> String {
        route_prefix(&self.name)
    }
}

/// `/services/{name}/`.
pub fn route_prefix(name: &ServiceName) -> String {
    format!("/services/{name}/")
}

/// JupyterHub's OAuth client id for a service: `service-{name}`.
pub fn oauth_client_id(name: &ServiceName) -> String {
    format!("service-{name}")
}

impl TryFrom<store::Service> for ServiceView {
    type Error = ServiceError;

    fn try_from(s: store::Service) -> Result<Self, ServiceError> {
        Ok(Self {
            name: ServiceName::parse(&s.name)?,
            url: s.url,
            roles: s.roles,
            token_prefix: s.token_prefix,
            created_at: s.created_at,
            last_activity: s.last_activity,
        })
    }
}

/// A recognised service token, trusted for a short time.
#[derive(Clone)]
pub(crate) struct CachedService {
    principal: ServicePrincipal,
    fetched: OffsetDateTime,
}

/// Recognised service tokens, by their hashes, and where the proxy reaches services.
#[derive(Default)]
pub(crate) struct ServicesState {
    cache: DashMap<TokenHash, CachedService>,
    /// Bumped before every forgetting (see [`Epoch`]).
    epoch: Epoch,
    targets: ServiceTable,
}

/// A service's URL, checked: `http://` with an IP address and a port, since the proxy
/// connects to it directly on the hub's host (no name is looked up on the way), and no path:
/// requests keep theirs (`/services/{name}/…`), so a path here would be ignored.
fn check_url(raw: &str) -> Result<(String, SocketAddr), ServiceError> {
    let bad = || {
        ServiceError::Invalid(format!(
            "{raw:?} is not a service URL the proxy can reach: write http://ADDRESS:PORT with an IP address"
        ))
    };
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    if url.scheme() != "http"
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || url.path() != "/"
    {
        return Err(bad());
    }
    let ip: std::net::IpAddr = match url.host() {
        Some(url::Host::Ipv4(a)) => a.into(),
        Some(url::Host::Ipv6(a)) => a.into(),
        _ => return Err(bad()),
    };
    let port = url.port_or_known_default().ok_or_else(bad)?;
    Ok((url.as_str().trim_end_matches('/').to_string(), SocketAddr::new(ip, port)))
}

impl<'h> Services<'h> {
    fn state(&self) -> &'h ServicesState {
        &self.hub.0.services
    }

    /// Registers a service (admins, the CLI) with the roles given; returns its API token,
    /// shown this once, and the service.
    pub async fn add(
        &self,
        actor: Actor<'_>,
        name: &ServiceName,
        url: Option<&str>,
        role_names: &[RoleName],
    ) -> Result<(Secret<String>, ServiceView), ServiceError> {
        actor.require_admin()?;
        let url = url.map(check_url).transpose()?.map(|(u, _)| u);
        let mut tx = self.hub.begin().await?;
        let mut given = Vec::new();
        for r in role_names {
            let role = roles::by_name(&mut *tx, r.as_str())
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("no role named {r}")))?;
            given.push(role);
        }
        let (token, hash) = new_token();
        let id = store::insert(&mut *tx, name.as_str(), url.as_deref(), &hash, &token[..4], self.hub.now())
            .await?
            .ok_or_else(|| ServiceError::Conflict(format!("a service named {name} exists already")))?;
        for role in &given {
            store::assign(&mut *tx, role.role_id, id).await?;
        }
        self.register_client(&mut tx, id, name, url.is_some()).await?;
        let detail = json!({ "url": url, "roles": role_names.iter().map(RoleName::as_str).collect::<Vec<_>>() });
        self.hub.audit().record(&mut *tx, actor, "service.add", name.as_str(), detail).await?;
        tx.commit().await?;
        let view = self.row(name).await?;
        Ok((Secret::new(token), view))
    }

    /// Every service the actor may list (`list:services`, filtered `!service=`).
    pub async fn list(&self, actor: Actor<'_>) -> Result<Vec<ServiceView>, ServiceError> {
        let all = store::list(self.hub.db()).await?;
        let mut seen = Vec::new();
        for s in all {
            let view = ServiceView::try_from(s)?;
            let target = Resource::Service(view.name.clone());
            if self.hub.roles().require_of(actor, &[Scope::ListServices], &target).await.is_ok() {
                seen.push(view);
            }
        }
        Ok(seen)
    }

    /// One service (`read:services` on it).
    pub async fn get(&self, actor: Actor<'_>, name: &ServiceName) -> Result<ServiceView, ServiceError> {
        self.hub.roles().require_of(actor, &[Scope::ReadServices], &Resource::Service(name.clone())).await?;
        self.row(name).await
    }

    async fn row(&self, name: &ServiceName) -> Result<ServiceView, ServiceError> {
        store::by_name(self.hub.db(), name.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no service named {name}")))?
            .try_into()
    }

    /// Removes a service (admins); its token is refused from now on, in every hub process.
    pub async fn remove(&self, actor: Actor<'_>, name: &ServiceName) -> Result<(), ServiceError> {
        actor.require_admin()?;
        let mut tx = self.hub.begin().await?;
        if !store::delete(&mut *tx, name.as_str()).await? {
            return Err(ServiceError::NotFound(format!("no service named {name}")));
        }
        self.hub.audit().record(&mut *tx, actor, "service.remove", name.as_str(), json!({})).await?;
        tx.commit().await?;
        self.hub.shares().changed().await;
        Ok(())
    }

    /// Sets or clears where the proxy sends the service's route (admins only: it is an
    /// address on the hub's own network).
    pub async fn set_url(&self, actor: Actor<'_>, name: &ServiceName, url: Option<&str>) -> Result<(), ServiceError> {
        actor.require_admin()?;
        let url = url.map(check_url).transpose()?.map(|(u, _)| u);
        let mut tx = self.hub.begin().await?;
        let id = store::set_url(&mut *tx, name.as_str(), url.as_deref())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no service named {name}")))?;
        self.register_client(&mut tx, id, name, url.is_some()).await?;
        self.hub.audit().record(&mut *tx, actor, "service.set_url", name.as_str(), json!({ "url": url })).await?;
        tx.commit().await?;
        // The old address's WebSockets close here at once (elsewhere on `labhub_roles`).
        self.hub.shares().changed().await;
        Ok(())
    }

    /// Makes a service with a URL the OAuth client `service-{name}` of the hub's provider (its
    /// secret: its API token; its redirect URI: `/services/{name}/oauth_callback`), and one
    /// without a URL none, in the caller's transaction.
    async fn register_client(
        &self,
        tx: &mut crate::hub::HubTx<'_>,
        id: ServiceId,
        name: &ServiceName,
        routed: bool,
    ) -> Result<(), ServiceError> {
        if !routed {
            oauth::remove_service(&mut **tx, id).await?;
            return Ok(());
        }
        let client_id = oauth_client_id(name);
        let redirect = format!("{}oauth_callback", route_prefix(name));
        // The row's own secret is never used (see migration 0022): random, so no token matches it.
        let (_, unused) = new_token();
        if !oauth::register_service(tx, id, &client_id, &redirect, &unused, self.hub.now()).await? {
            return Err(ServiceError::Conflict(format!("{client_id} is already another OAuth client's id")));
        }
        Ok(())
    }

    /// Where `/services/{name}/` goes, for a principal already admitted to it; `NotFound`
    /// when there is no such service or it has no URL. Read from Postgres each time (a
    /// service's route is no hot path), so a new URL counts at once in every hub process.
    pub async fn route(&self, name: &ServiceName) -> Result<Arc<ServiceTarget>, ServiceError> {
        let no_route = || ServiceError::NotFound(format!("the service {name} has no web address on this hub"));
        let view = self.row(name).await.map_err(|_| no_route())?;
        let (_, endpoint) = check_url(view.url.as_deref().ok_or_else(no_route)?)?;
        Ok(self.state().targets.target(&view.prefix(), endpoint))
    }

    /// What [`Services::principal`] would answer when memory alone can say it is a service.
    pub fn principal_cached(&self, token: &str) -> Option<ServicePrincipal> {
        if !looks_like_token(token) {
            return None;
        }
        let now = self.hub.now();
        let hit = self.state().cache.get(&sha256(token))?;
        (now - hit.fetched < CACHE_TTL).then(|| hit.principal.clone())
    }

    /// The service behind an API token; `None` for anything else. Cached briefly; the cache is
    /// emptied whenever roles or services change.
    pub async fn principal(&self, token: &str) -> Result<Option<ServicePrincipal>, ServiceError> {
        if let Some(known) = self.principal_cached(token) {
            return Ok(Some(known));
        }
        if !looks_like_token(token) {
            return Ok(None);
        }
        let hash = sha256(token);
        let now = self.hub.now();
        let cache = &self.state().cache;
        let epoch = self.state().epoch.now();
        let db = self.hub.db();
        let Some(row) = store::by_token_hash(db, &hash).await? else {
            cache.remove(&hash);
            return Ok(None);
        };
        let name = ServiceName::parse(&row.name)?;
        let specs: Vec<ScopeSpec> =
            store::scopes(db, row.service_id).await?.iter().filter_map(|s| ScopeSpec::parse(s).ok()).collect();
        let scopes = ScopeSet::expand(&specs, Holder::Service(&name), None);
        store::touch(db, row.service_id, now).await?;
        let principal = ServicePrincipal {
            service_id: row.service_id,
            label: format!("service:{name}"),
            name,
            scopes: Arc::new(scopes),
            roles: row.roles,
        };
        self.state().epoch.remember(epoch, cache, hash, CachedService { principal: principal.clone(), fetched: now });
        Ok(Some(principal))
    }

    /// Forgets every recognised token, after a change of roles or services.
    pub(crate) fn forget_all(&self) {
        self.state().epoch.bump();
        self.state().cache.clear();
    }

    /// The proxy's targets of services in use.
    pub(crate) fn targets(&self) -> Vec<std::sync::Arc<labhub_proxy::ServiceTarget>> {
        self.state().targets.targets()
    }

    /// After a change of roles, memberships or services: the proxy's targets of services that
    /// are gone or moved are dropped (closing their connections and WebSockets), and the
    /// WebSockets of users who no longer hold `access:services` on a service are closed, each
    /// account decided again as it now stands. A service's own WebSockets to another close
    /// only with the target (a service is no account to decide again).
    pub(crate) async fn recheck_tunnels(&self) -> Result<(), ServiceError> {
        let table = &self.state().targets;
        for target in table.targets() {
            let name = target.prefix().strip_prefix("/services/").map(|n| n.trim_end_matches('/'));
            let Some(name) = name.and_then(|n| ServiceName::parse(n).ok()) else {
                table.remove(&target);
                continue;
            };
            let still = match self.row(&name).await {
                Ok(view) => view.url.as_deref().and_then(|u| check_url(u).ok()).map(|(_, at)| at),
                Err(ServiceError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if still != Some(target.endpoint()) {
                table.remove(&target);
                continue;
            }
            let on = Resource::Service(name);
            let mut lost = std::collections::HashSet::new();
            for user in target.visitors() {
                let keeps = match self.hub.roles().recheck(user).await? {
                    Some(who) => self.hub.roles().require(&who, &[Scope::AccessServices], &on).await.is_ok(),
                    None => false,
                };
                if !keeps {
                    lost.insert(user);
                }
            }
            if !lost.is_empty() {
                let closed = target.close_visitors_where(|u| lost.contains(&u));
                tracing::info!(service = %target.prefix(), tunnels = closed, "closed WebSockets of users who lost access to a service");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn a_service_url_is_plain_http_to_an_ip_address_and_port() {
        let (url, addr) = check_url("http://127.0.0.1:8181/").unwrap();
        assert_eq!((url.as_str(), addr.to_string().as_str()), ("http://127.0.0.1:8181", "127.0.0.1:8181"));
        assert_eq!(check_url("http://[::1]:9000").unwrap().1.to_string(), "[::1]:9000");
        for bad in [
            "https://127.0.0.1:1",
            "http://example.org:80",
            "http://u:p@127.0.0.1:1",
            "ftp://1.2.3.4",
            "nope",
            "http://10.0.0.5:8000/board",
            "http://10.0.0.5:8000/#x",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
