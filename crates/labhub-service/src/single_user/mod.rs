//! JupyterHub's single-user contract: what a server of a `contract = "jupyterhub"` catalogue
//! entry is told at start (its `JUPYTERHUB_*` variables and its own API token), who the tokens
//! of that contract speak for, and the activity such a server reports. The hub's OAuth
//! provider, through which these servers sign their users in, is `oauth.rs`.
//!
//! A server's API token is its OAuth client secret too (JupyterHub's `jupyterhub-singleuser`
//! sends it as `client_secret`), so one row of `oauth_clients` holds both; the statement that
//! marks the server stopped deletes it, and with it every code and access token issued to it.

pub mod oauth;

use std::collections::BTreeMap;

use labhub_auth::tokens::looks_like_token;
use labhub_auth::{new_token, sha256};
use labhub_core::{AccountState, Secret, ServerId, ServerName, UserId, UserName};
use labhub_db::{oauth as store, servers, users};
use time::OffsetDateTime;

use crate::model::route_prefix;
use crate::{Hub, ServiceError};

impl Hub {
    /// JupyterHub's single-user contract and the hub's OAuth provider.
    pub fn single_user(&self) -> SingleUser<'_> {
        SingleUser { hub: self }
    }
}

/// JupyterHub's single-user contract and the hub's OAuth provider.
#[derive(Clone, Copy)]
pub struct SingleUser<'h> {
    hub: &'h Hub,
}

/// What a token of the single-user contract is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// A server's own API token (`JUPYTERHUB_API_TOKEN`), acting for its owner.
    Server,
    /// An access token the OAuth provider issued to a server for a user who signed in to it.
    OAuth,
}

/// Who a token of the single-user contract speaks for, with the scopes it carries.
#[derive(Debug, Clone)]
pub struct Caller {
    pub kind: CallerKind,
    /// The account it acts for: the server's owner, or the user who signed in.
    pub user_id: UserId,
    pub name: UserName,
    pub admin: bool,
    /// JupyterHub's scope names with their filters, as `GET /hub/api/user` shows them.
    pub scopes: Vec<String>,
    /// The client it was issued to (and dies with).
    pub client: ClientOf,
}

/// The OAuth client a token of the single-user contract belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOf {
    /// A running server: its owner's id and its name.
    Server { owner: UserId, server: Option<ServerName> },
    /// A registered service (only access tokens a user signed in to it with).
    Service(labhub_core::ServiceName),
}

/// A server's report of its activity (`POST /hub/api/users/{name}/activity`).
#[derive(Debug, Clone, Default)]
pub struct ActivityReport {
    /// The user's last activity, if reported.
    pub last_activity: Option<OffsetDateTime>,
    /// Each server's (by name, `""` for the default one).
    pub servers: BTreeMap<String, OffsetDateTime>,
}

/// JupyterHub's client id for a user's server: `jupyterhub-user-{name}[-{server}]`.
pub fn client_id(owner: &UserName, server: Option<&ServerName>) -> String {
    match server {
        Some(s) => format!("jupyterhub-user-{owner}-{s}"),
        None => format!("jupyterhub-user-{owner}"),
    }
}

/// JupyterHub's scope for reaching one server: `access:servers!server={owner}/{server}`.
pub fn access_scope(owner: &UserName, server: Option<&ServerName>) -> String {
    format!("access:servers!server={owner}/{}", server.map_or("", ServerName::as_str))
}

/// JupyterHub's scope for managing one server's shares: `shares!server={owner}/{server}`.
pub fn share_scope(owner: &UserName, server: Option<&ServerName>) -> String {
    format!("shares!server={owner}/{}", server.map_or("", ServerName::as_str))
}

/// The scopes of a server's own token: JupyterHub's `server` role, filtered to the server and
/// its owner (report activity, reach itself, read its owner's name).
fn server_scopes(owner: &UserName, server: Option<&ServerName>) -> Vec<String> {
    vec![format!("users:activity!user={owner}"), access_scope(owner, server), format!("read:users:name!user={owner}")]
}

impl<'h> SingleUser<'h> {
    /// Registers a starting server of JupyterHub's contract as an OAuth client with a new API
    /// token (replacing its previous run's) and returns the `JUPYTERHUB_*` variables it gets.
    /// Runs inside the start's transaction, so a start that is refused registers nothing.
    pub(crate) async fn register(
        &self,
        db: &mut labhub_db::PgConnection,
        server_id: ServerId,
        owner: &UserName,
        server: Option<&ServerName>,
        port: u16,
    ) -> Result<BTreeMap<String, String>, ServiceError> {
        let (token, hash) = new_token();
        let prefix = route_prefix(owner, server);
        let client = store::Client {
            client_id: client_id(owner, server),
            server_id,
            redirect_uri: format!("{prefix}oauth_callback"),
            scopes: server_scopes(owner, server),
        };
        if !store::register_server(db, &client, &hash, self.hub.now()).await? {
            return Err(ServiceError::Conflict(format!(
                "{} is already the JupyterHub client id of another running server (a user and server name joined by '-' can read like another account's); stop that server first",
                client.client_id
            )));
        }
        let api_url = self.hub.server_settings().hub_api_url.trim_end_matches('/').to_string();
        let access = serde_json::json!([access_scope(owner, server), format!("access:servers!user={owner}")]);
        let vars = [
            ("JUPYTERHUB_API_TOKEN", token),
            ("JUPYTERHUB_API_URL", api_url.clone()),
            ("JUPYTERHUB_CLIENT_ID", client.client_id.clone()),
            ("JUPYTERHUB_USER", owner.to_string()),
            ("JUPYTERHUB_SERVER_NAME", server.map_or("", ServerName::as_str).to_string()),
            ("JUPYTERHUB_SERVICE_PREFIX", prefix.clone()),
            // Where the server listens: every address of its container, the kind's port.
            ("JUPYTERHUB_SERVICE_URL", format!("http://0.0.0.0:{port}{prefix}")),
            ("JUPYTERHUB_BASE_URL", "/".to_string()),
            // The hub's pages are on the same origin as the server's.
            ("JUPYTERHUB_HOST", String::new()),
            ("JUPYTERHUB_OAUTH_CALLBACK_URL", client.redirect_uri.clone()),
            ("JUPYTERHUB_OAUTH_SCOPES", access.to_string()),
            ("JUPYTERHUB_OAUTH_ACCESS_SCOPES", access.to_string()),
            // What the hub may grant a sign-in beyond access (its owner's only; see `oauth.rs`).
            ("JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES", serde_json::json!([share_scope(owner, server)]).to_string()),
            ("JUPYTERHUB_ACTIVITY_URL", format!("{api_url}/users/{owner}/activity")),
        ];
        Ok(vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// Who a token of the single-user contract speaks for; `None` for any other string (an
    /// ordinary API token included), a revoked token, or an account that is not active.
    pub async fn caller(&self, token: &str) -> Result<Option<Caller>, ServiceError> {
        Ok(self.lookup(token).await?.map(|(caller, _)| caller))
    }

    /// The principal a token of the single-user contract stands for at the API: its account,
    /// narrowed to the scopes the token was issued with (as any token's are), so only the
    /// scope-checked endpoints those scopes reach admit it. `None` as for [`Self::caller`].
    pub async fn principal(&self, token: &str) -> Result<Option<crate::Principal>, ServiceError> {
        let Some((caller, user)) = self.lookup(token).await? else { return Ok(None) };
        let via = crate::AuthVia::SingleUser;
        Ok(Some(self.hub.roles().principal(user, via, Some(&caller.scopes)).await?))
    }

    async fn lookup(&self, token: &str) -> Result<Option<(Caller, users::User)>, ServiceError> {
        if !looks_like_token(token) {
            return Ok(None);
        }
        let hash = sha256(token);
        let db = self.hub.db();
        let (kind, user_id, scopes, server_id, service) = if let Some(c) = store::client_by_secret(db, &hash).await? {
            (CallerKind::Server, None, c.scopes, Some(c.server_id), None)
        } else if let Some(t) = store::token(db, &hash).await? {
            (CallerKind::OAuth, Some(t.user_id), t.scopes, t.server_id, t.service)
        } else {
            return Ok(None);
        };
        let (client, acting_for) = match (server_id, service, user_id) {
            (Some(server_id), _, _) => {
                let Some(row) = servers::by_id_with_owner(db, server_id).await? else { return Ok(None) };
                let owner = row.server.user_id;
                let server =
                    ServerName::parse_optional(&row.server.name).map_err(|e| ServiceError::Internal(e.to_string()))?;
                (ClientOf::Server { owner, server }, user_id.unwrap_or(owner))
            }
            (None, Some(service), Some(user_id)) => {
                (ClientOf::Service(labhub_core::ServiceName::parse(&service)?), user_id)
            }
            _ => return Ok(None),
        };
        let Some(user) = users::by_id(db, acting_for).await? else { return Ok(None) };
        if user.state != AccountState::Active {
            return Ok(None);
        }
        let caller = Caller { kind, user_id: user.user_id, name: user.name.clone(), admin: user.admin, scopes, client };
        Ok(Some((caller, user)))
    }

    /// Records the activity a server reported for its owner (JupyterHub's
    /// `POST /users/{name}/activity`, which needs `users:activity!user={name}`): never moving
    /// times backwards, so the proxy's and the server's reports merge and the newer wins; a
    /// time past the hub's clock counts as now.
    pub async fn report_activity(
        &self,
        caller: &Caller,
        name: &UserName,
        report: &ActivityReport,
    ) -> Result<(), ServiceError> {
        if !caller.scopes.contains(&format!("users:activity!user={name}")) {
            return Err(ServiceError::Forbidden(format!("this token may not report activity for {name}")));
        }
        let now = self.hub.now();
        let mut seen = Vec::new();
        for (server, at) in &report.servers {
            let row = servers::get(self.hub.db(), caller.user_id, server).await?;
            if row.is_none() {
                return Err(ServiceError::Invalid(format!("{name} has no server named {server:?}")));
            }
            seen.push((name.to_string(), server.clone(), (*at).min(now)));
        }
        servers::touch_activity(self.hub.db(), &seen).await?;
        let mut tx = self.hub.begin().await?;
        if let Some(at) = report.last_activity {
            users::touch_activity(&mut *tx, caller.user_id, at.min(now)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The running server a single-user token belongs to: its owner and name.
    pub(crate) async fn server_of(
        &self,
        server_id: ServerId,
    ) -> Result<(UserId, UserName, Option<ServerName>), ServiceError> {
        let row = servers::by_id_with_owner(self.hub.db(), server_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("the server has gone".into()))?;
        let server = ServerName::parse_optional(&row.server.name).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok((row.server.user_id, row.owner, server))
    }
}

/// A token shown once: the access token a code was exchanged for.
#[derive(Debug)]
pub struct IssuedToken {
    pub access_token: Secret<String>,
    pub scopes: Vec<String>,
}
