//! The account-related settings the service enforces (read from the configuration file).

use std::time::Duration;

use labhub_auth::ThrottleSettings;
use labhub_core::UserName;
use serde::{Deserialize, Serialize};

/// Who may create an account by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignupPolicy {
    /// Only admins create accounts.
    #[default]
    Closed,
    /// Anyone may sign up; the account waits for an admin's approval.
    Approval,
    /// Anyone may sign up and use the account at once.
    Open,
}

/// Account and session rules.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// A session ends after this long without use.
    pub session_idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub session_absolute: Duration,
    /// Self-service sign-up.
    pub signup: SignupPolicy,
    /// Names that are always admins.
    pub admin_users: Vec<UserName>,
    /// Shortest password accepted.
    pub password_min_len: usize,
    /// Failed-login limits.
    pub throttle: ThrottleSettings,
    /// Whether the password form is offered at all (off when only providers sign people in).
    pub password_login: bool,
    /// Longest lifetime a user may give an API token; `None` allows tokens that never expire.
    pub max_token_lifetime: Option<Duration>,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(8 * 3600),
            session_absolute: Duration::from_secs(14 * 24 * 3600),
            signup: SignupPolicy::Closed,
            admin_users: Vec::new(),
            password_min_len: 8,
            throttle: ThrottleSettings::default(),
            password_login: true,
            max_token_lifetime: None,
        }
    }
}

/// Rules for users' servers.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Named servers a user may have besides their default one (0 turns named servers off).
    pub named_server_limit: u32,
    /// How long a server may take to answer before its start is given up.
    pub start_timeout: Duration,
    /// Starts in flight at once, hub-wide; past it a start is answered 429 with `Retry-After`.
    pub concurrent_spawn_limit: usize,
    /// How long the API waits for a start before answering 202 (pending) instead of 201.
    pub slow_spawn_timeout: Duration,
    /// How long the API waits for a stop before answering 202 instead of 204.
    pub slow_stop_timeout: Duration,
    /// Build a missing catalogue image from its recipe when the hub starts (instead of at the first start).
    pub build_missing_images_at_boot: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            named_server_limit: 3,
            start_timeout: Duration::from_secs(120),
            concurrent_spawn_limit: 20,
            slow_spawn_timeout: Duration::from_secs(10),
            slow_stop_timeout: Duration::from_secs(10),
            build_missing_images_at_boot: true,
        }
    }
}
