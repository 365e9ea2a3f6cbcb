//! What the hub does, without HTTP.
//!
//! [`Hub`] holds the state; its capabilities are handles, one module each: `hub.accounts()`
//! (the sign-in policy and accounts), `hub.sessions()`, `hub.tokens()`, `hub.sign_on()`
//! (identity providers), `hub.servers()`, `hub.access()` (the one gate to a server),
//! `hub.groups()`, `hub.shares()` (who else may reach a server), `hub.quotas()`,
//! `hub.catalogue()`, `hub.environments()`, `hub.history()`, `hub.usage()`, `hub.culler()`,
//! `hub.homes()`, `hub.datasets()`, `hub.backups()`, `hub.audit()`, `hub.replicas()` (the other
//! hub processes on the same database), `hub.services()` (registered external services). They
//! take and return the service's own types (`model`), never database rows.

pub mod access;
pub mod accounts;
pub mod audit;
mod background;
pub mod backups;
pub mod catalogue;
pub mod culler;
pub mod datasets;
pub mod environments;
mod error;
pub mod groups;
pub mod health;
pub mod history;
pub mod homes;
mod hub;
pub mod model;
pub mod node_pins;
pub mod progress;
pub mod quotas;
pub mod replicas;
pub mod roles;
pub mod servers;
pub mod services;
pub mod sessions;
pub mod settings;
pub mod shares;
pub mod single_user;
pub mod sso;
mod state;
pub mod tokens;
pub mod tunnels;
pub mod usage;
pub mod views;
pub mod words;

pub use access::{Actor, Need, Reach, ServerRef};
pub use error::ServiceError;
pub use hub::{Hub, HubParts};
pub use settings::{AccountSettings, PasswordLogin, QuotaSettings, ServerSettings, SignupPolicy};

/// Who is asking: an authenticated, active user, and how they proved it.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user's id.
    pub user_id: labhub_core::UserId,
    /// The user's name.
    pub name: labhub_core::UserName,
    /// Whether they act as a site admin: the account is one and the credential carries all
    /// of its powers (a token narrowed by scopes never does).
    pub admin: bool,
    /// How they authenticated.
    pub via: AuthVia,
    /// What they may do, expanded: the account's roles, narrowed by the token's scopes.
    pub scopes: std::sync::Arc<labhub_core::ScopeSet>,
    /// Whether the credential carries every power of its account (a session, a token with
    /// `inherit`): the hub's own checks written for owners and admins hold for it as they are;
    /// a narrowed token is admitted only where its scopes say.
    pub full: bool,
}

/// Who presented a credential at the API: a user, or a registered service (which is no
/// account, so it can only be admitted by scopes).
#[derive(Debug, Clone)]
pub enum Requester {
    /// A user's session or token.
    User(Principal),
    /// A service's API token.
    Service(services::ServicePrincipal),
}

impl Requester {
    /// The actor the service's calls take.
    pub fn actor(&self) -> Actor<'_> {
        match self {
            Requester::User(p) => Actor::User(p),
            Requester::Service(s) => Actor::Service(s),
        }
    }

    /// What it may do, expanded.
    pub fn scopes(&self) -> &labhub_core::ScopeSet {
        match self {
            Requester::User(p) => &p.scopes,
            Requester::Service(s) => &s.scopes,
        }
    }
}

/// How a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    /// A browser session cookie (subject to CSRF and `Origin` checks).
    Session { session_id: labhub_core::SessionId },
    /// An API token.
    Token { token_id: labhub_core::TokenId },
    /// No request: the hub deciding again, with the account's own powers, about a connection
    /// it let in earlier (a visitor's WebSocket, after a change of shares or roles).
    Recheck,
    /// A token of JupyterHub's single-user contract (a server's own, or an OAuth access token
    /// the hub issued to a server or service), narrowed to the scopes it was issued with.
    SingleUser,
}

/// The actor recorded in the audit log for actions that no user took (CLI, the hub itself).
pub const SYSTEM_ACTOR: &str = "system";
