//! The hub as an OAuth2 provider (authorization-code grant), as JupyterHub's is: a signed-in
//! user is sent to `/hub/api/oauth2/authorize` by a client, the hub answers with a code at the
//! client's registered redirect URI, and the client exchanges the code (with its secret) at
//! `/hub/api/oauth2/token` for an access token whose `GET /hub/api/user` names the user.
//!
//! Clients are the running servers of JupyterHub's contract and the registered services with
//! a URL (`service-{name}`, whose secret is the service's API token). Whether a user may sign
//! in to a server is the one gate's answer (`Access::may_reach`): its owner, an admin, or a
//! visitor it is shared with; to a service, whether their scopes grant `access:services` on
//! it (the one scope check). No consent is asked (JupyterHub asks none for what the user may
//! access either). Codes are single-use (taken by the exchange, whatever it decides), live
//! [`CODE_LIFETIME`] and are stored as their SHA-256; so are the access tokens, which live as
//! long as the server's run.

use std::time::Duration;

use labhub_auth::tokens::same_hash;
use labhub_auth::{new_token, sha256};
use labhub_core::{Scope, ServiceName};
use labhub_db::oauth as store;

use super::{IssuedToken, SingleUser, access_scope, share_scope};
use crate::access::ServerRef;
use crate::roles::Resource;
use crate::{Principal, ServiceError};

/// How long an authorization code may wait for its exchange.
pub const CODE_LIFETIME: Duration = Duration::from_secs(300);

/// What a client asks `/hub/api/oauth2/authorize` for.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeRequest {
    pub client_id: String,
    pub redirect_uri: Option<String>,
    pub response_type: String,
    pub state: Option<String>,
}

/// What a client sends `/hub/api/oauth2/token`.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub grant_type: String,
    pub code: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: Option<String>,
}

impl SingleUser<'_> {
    /// Issues a code for `who` to the client and returns where to send the browser: the
    /// client's registered redirect URI with `code` and `state`. Refused when the redirect URI
    /// is not exactly the registered one, or when `who` may not reach the client's server.
    pub async fn authorize(&self, who: &Principal, req: &AuthorizeRequest) -> Result<String, ServiceError> {
        if req.response_type != "code" {
            return Err(ServiceError::Invalid("only response_type=code is supported".into()));
        }
        let client = store::client(self.hub.db(), &req.client_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("there is no OAuth client {:?}", req.client_id)))?;
        if req.redirect_uri.as_ref().is_some_and(|r| *r != client.redirect_uri) {
            return Err(ServiceError::Invalid("redirect_uri is not the one this client registered".into()));
        }
        let scopes = match &client.holder {
            store::Holder::Server(server_id) => {
                let (owner_id, owner, server) = self.server_of(*server_id).await?;
                let to = ServerRef { owner: owner_id, owner_name: &owner, server: server.as_ref() };
                if self.hub.access().may_reach(who, to).is_none() {
                    return Err(ServiceError::Forbidden(format!("{} may not use this server", who.name)));
                }
                let mut scopes = vec![access_scope(&owner, server.as_ref())];
                // Its owner may manage its shares from inside it (JupyterHub's
                // `oauth_client_allowed_scopes = ["access:servers!server", "shares!server"]`,
                // which JupyterLab's share dialogs use), if their roles let them share it. No one
                // else's token carries it: code in the server is the owner's, so a visitor's
                // (an admin's, a lead's) powers would be theirs to use, and a share does not
                // pass itself on.
                let on = Resource::Server(owner.clone(), server.clone());
                if who.user_id == owner_id && self.hub.roles().require(who, &[Scope::Shares], &on).await.is_ok() {
                    scopes.push(share_scope(&owner, server.as_ref()));
                }
                scopes
            }
            store::Holder::Service(name) => {
                let name = ServiceName::parse(name)?;
                let on = Resource::Service(name.clone());
                if self.hub.roles().require(who, &[Scope::AccessServices], &on).await.is_err() {
                    return Err(ServiceError::Forbidden(format!("{} may not use the service {name}", who.name)));
                }
                vec![format!("access:services!service={name}")]
            }
        };
        let (code, hash) = new_token();
        let now = self.hub.now();
        let new = store::NewCode {
            code_hash: &hash,
            client_id: &client.client_id,
            user_id: who.user_id,
            redirect_uri: &client.redirect_uri,
            scopes: &scopes,
            created_at: now,
            expires_at: now + CODE_LIFETIME,
        };
        store::insert_code(self.hub.db(), &new).await?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("code", &code);
        if let Some(state) = &req.state {
            query.append_pair("state", state);
        }
        let sep = if client.redirect_uri.contains('?') { '&' } else { '?' };
        Ok(format!("{}{sep}{}", client.redirect_uri, query.finish()))
    }

    /// Exchanges a code for an access token. The client's secret is compared by its hash in
    /// constant time; the code is taken first, so a second exchange of it fails whatever the
    /// first decided. Every refusal is the same `Unauthenticated`, as OAuth's `invalid_grant`.
    pub async fn exchange(&self, req: &TokenRequest) -> Result<IssuedToken, ServiceError> {
        if req.grant_type != "authorization_code" {
            return Err(ServiceError::Invalid("only grant_type=authorization_code is supported".into()));
        }
        let refused = || ServiceError::Unauthenticated("the code or the client's credentials are not valid".into());
        let client = store::client(self.hub.db(), &req.client_id).await?;
        let secret_ok = client.as_ref().is_some_and(|c| same_hash(&c.secret_hash, &sha256(&req.client_secret)));
        let code = store::take_code(self.hub.db(), &sha256(&req.code)).await?;
        let (Some(client), Some(code)) = (client.filter(|_| secret_ok), code) else { return Err(refused()) };
        let redirect_ok = req.redirect_uri.as_ref().is_none_or(|r| *r == code.redirect_uri);
        if code.client_id != client.client_id || code.expires_at <= self.hub.now() || !redirect_ok {
            return Err(refused());
        }
        let (token, hash) = new_token();
        store::insert_token(self.hub.db(), &hash, &client.client_id, code.user_id, &code.scopes, self.hub.now())
            .await?;
        Ok(IssuedToken { access_token: token.into(), scopes: code.scopes })
    }
}
