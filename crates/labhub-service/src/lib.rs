//! What the hub does, without HTTP: accounts and the one sign-in policy, sessions and API
//! tokens (with a small cache that revocation empties at once), the audit trail, and,
//! as later modules, servers, quotas, reconciling and culling.
//!
//! Everything is reached through [`Hub`], a cheap-to-clone handle.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod culler;
mod error;
pub mod groups;
mod hub;
pub mod images;
pub mod progress;
pub mod quotas;
pub mod servers;
pub mod settings;
pub mod sso;
pub mod usage;
pub mod views;

pub use error::ServiceError;
pub use hub::{Hub, HubParts};
pub use settings::{AccountSettings, QuotaSettings, ServerSettings, SignupPolicy};

/// Who is asking: an authenticated, active user, and how they proved it.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub name: labhub_core::UserName,
    /// Whether they are a site admin.
    pub admin: bool,
    /// How they authenticated.
    pub via: AuthVia,
}

/// How a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    /// A browser session cookie (subject to CSRF and `Origin` checks).
    Session { session_id: i64 },
    /// An API token.
    Token { token_id: i64 },
}

/// The actor recorded in the audit log for actions that no user took (CLI, the hub itself).
pub const SYSTEM_ACTOR: &str = "system";
