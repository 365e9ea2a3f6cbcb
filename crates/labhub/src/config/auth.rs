//! `[session]` and `[auth]`: browser sessions, accounts and sign-in.

use std::time::Duration;

use labhub_service::SignupPolicy;
use serde::{Deserialize, Serialize};

use super::Config;

/// `[session]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// The session cookie's name.
    pub cookie_name: String,
    /// A session ends after this long without use.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however much it is used.
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "labhub-session".into(),
            idle_timeout: Duration::from_secs(8 * 3600),
            absolute_timeout: Duration::from_secs(14 * 86400),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accounts that are always admins: `alice` is the local account alice (signing in with
    /// its password), `github:bob` the account bob signed into through the provider `github`.
    /// With no admin at all, the first local name (or `admin`) is created at start with a
    /// random password written to `<data_dir>/initial-admin-password`.
    pub admin_users: Vec<labhub_service::settings::AdminName>,
    /// Self-service sign-up: `closed`, `approval` (an admin approves) or `open`.
    pub signup: SignupPolicy,
    /// Which accounts the password form signs in: `"local"`, `"ldap"` (the directory),
    /// `"local+ldap"` (local accounts with a password, e.g. break-glass admins, and the
    /// directory for everyone else) or `"off"` (identity providers only). Unset: `local+ldap`
    /// with `[auth.ldap]`, else `local`.
    pub password_login: Option<labhub_service::PasswordLogin>,
    /// Shortest password accepted.
    pub min_password_length: usize,
    /// Failed sign-ins per account from browsers that never signed in to it, all addresses
    /// together, within `failed_login_window`; past it, each further attempt waits longer.
    pub max_failed_logins_per_account: usize,
    /// The same, from one address (a campus NAT may carry many people).
    pub max_failed_logins_per_account_and_address: usize,
    /// Accounts one address may fail to sign in to within the window (one password tried on
    /// many accounts).
    pub max_failed_accounts_per_address: usize,
    /// Failed sign-ins of a browser at an account it signed in to before (its own budget).
    pub max_failed_logins_per_device: usize,
    /// Sign-ups from one address within the window.
    pub max_signups_per_address: usize,
    /// The window in which failed sign-ins and sign-ups are counted.
    #[serde(with = "humantime_serde")]
    pub failed_login_window: Duration,
    /// Password hashes computed at once (each takes a core and 19 MiB); default: one per core.
    pub hashing_concurrency: usize,
    /// Password checks waiting for a hashing slot; past it, 503 with `Retry-After`.
    pub hashing_queue: usize,
    /// Longest lifetime of an API token; unset allows tokens that never expire.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Option<Duration>,
    /// Identity providers (`[[auth.providers]]`, see docs/sign-in.md).
    pub providers: Vec<labhub_auth::oidc::ProviderConfig>,
    /// An LDAP directory or Active Directory that checks passwords (`[auth.ldap]`, see
    /// docs/sign-in.md).
    pub ldap: Option<labhub_auth::ldap::LdapConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let d = labhub_service::AccountSettings::default();
        let hashing = labhub_auth::HashingLimits::for_this_machine();
        Self {
            admin_users: Vec::new(),
            signup: SignupPolicy::Closed,
            password_login: None,
            min_password_length: d.password_min_len,
            max_failed_logins_per_account: d.throttle.per_account,
            max_failed_logins_per_account_and_address: d.throttle.per_account_and_address,
            max_failed_accounts_per_address: d.throttle.accounts_per_address,
            max_failed_logins_per_device: d.throttle.per_device,
            max_signups_per_address: d.throttle.signups_per_address,
            failed_login_window: d.throttle.window,
            hashing_concurrency: hashing.concurrent,
            hashing_queue: hashing.queued,
            max_token_lifetime: None,
            providers: Vec::new(),
            ldap: None,
        }
    }
}

impl Config {
    /// How many password hashes may run and wait at once.
    pub fn hashing_limits(&self) -> labhub_auth::HashingLimits {
        labhub_auth::HashingLimits { concurrent: self.auth.hashing_concurrency, queued: self.auth.hashing_queue }
    }

    /// Which accounts the password form signs in, the default filled in.
    pub fn password_login(&self) -> labhub_service::PasswordLogin {
        use labhub_service::PasswordLogin;
        self.auth.password_login.unwrap_or(if self.auth.ldap.is_some() {
            PasswordLogin::LocalAndDirectory
        } else {
            PasswordLogin::Local
        })
    }

    /// The account rules for the service.
    pub fn account_settings(&self) -> labhub_service::AccountSettings {
        labhub_service::AccountSettings {
            session_idle: self.session.idle_timeout,
            session_absolute: self.session.absolute_timeout,
            signup: self.auth.signup,
            admin_users: self.auth.admin_users.clone(),
            password_min_len: self.auth.min_password_length,
            throttle: labhub_auth::ThrottleSettings {
                per_account: self.auth.max_failed_logins_per_account,
                per_account_and_address: self.auth.max_failed_logins_per_account_and_address,
                accounts_per_address: self.auth.max_failed_accounts_per_address,
                per_device: self.auth.max_failed_logins_per_device,
                signups_per_address: self.auth.max_signups_per_address,
                window: self.auth.failed_login_window,
            },
            password_login: self.password_login(),
            max_token_lifetime: self.auth.max_token_lifetime,
        }
    }
}
