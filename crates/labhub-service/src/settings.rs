//! The account-related settings the service enforces (read from the configuration file).

use std::time::Duration;

use labhub_auth::ThrottleSettings;
use labhub_auth::oidc::ProviderId;
use labhub_core::UserName;
use serde::{Deserialize, Serialize};

/// One entry of `admin_users`: `alice` is the account alice when it signs in with its
/// password (a local account); `github:bob` is the account bob when it is signed into through
/// the provider `github`. A bare name never makes an identity provider's user an admin, or lets
/// one past a provider's allow-list: anyone may hold any name at a public forge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AdminName {
    /// The provider the account must be signed into through; `None` for its password.
    pub provider: Option<ProviderId>,
    /// The account's name.
    pub name: UserName,
}

/// An `admin_users` entry that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{entry}' is not an admin_users entry ({why}); write a name, or provider:name")]
pub struct AdminNameError {
    entry: String,
    why: String,
}

impl AdminName {
    /// Reads `name` or `provider:name` (account names cannot hold `:`).
    pub fn parse(raw: &str) -> Result<Self, AdminNameError> {
        let refused = |why: String| AdminNameError { entry: raw.to_string(), why };
        let (provider, name) = match raw.split_once(':') {
            Some((p, n)) => (Some(ProviderId::parse(p).map_err(|e| refused(e.to_string()))?), n),
            None => (None, raw),
        };
        let name = UserName::parse(name).map_err(|e| refused(e.to_string()))?;
        Ok(Self { provider, name })
    }

    /// Whether this entry names the account `name` signed into `via` a provider (`None`: its
    /// password).
    pub fn matches(&self, name: &UserName, via: Option<&str>) -> bool {
        &self.name == name && self.provider.as_ref().map(ProviderId::as_str) == via
    }
}

impl TryFrom<String> for AdminName {
    type Error = AdminNameError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<AdminName> for String {
    fn from(a: AdminName) -> Self {
        match a.provider {
            Some(p) => format!("{p}:{}", a.name),
            None => a.name.to_string(),
        }
    }
}

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

/// Which accounts the sign-in form's password signs in: `off`, `local`, `ldap` (the
/// directory) or `local+ldap`. `true` and `false` read as `local` and `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PasswordLoginValue", into = "String")]
pub enum PasswordLogin {
    /// No password form: identity providers only.
    Off,
    /// Local accounts' passwords.
    Local,
    /// The directory's passwords only.
    Directory,
    /// Local accounts that have a password (break-glass admins) by it; everyone else through
    /// the directory.
    LocalAndDirectory,
}

/// How `password_login` may be written.
#[derive(Deserialize)]
#[serde(untagged)]
enum PasswordLoginValue {
    Bool(bool),
    Word(String),
}

impl TryFrom<PasswordLoginValue> for PasswordLogin {
    type Error = String;
    fn try_from(v: PasswordLoginValue) -> Result<Self, String> {
        Ok(match v {
            PasswordLoginValue::Bool(true) => Self::Local,
            PasswordLoginValue::Bool(false) => Self::Off,
            PasswordLoginValue::Word(w) => match w.as_str() {
                "off" => Self::Off,
                "local" => Self::Local,
                "ldap" => Self::Directory,
                "local+ldap" => Self::LocalAndDirectory,
                other => {
                    return Err(format!("'{other}' is not one of \"off\", \"local\", \"ldap\", \"local+ldap\""));
                }
            },
        })
    }
}

impl From<PasswordLogin> for String {
    fn from(p: PasswordLogin) -> String {
        p.as_str().to_string()
    }
}

impl PasswordLogin {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Local => "local",
            Self::Directory => "ldap",
            Self::LocalAndDirectory => "local+ldap",
        }
    }

    /// Whether the password form is offered.
    pub fn form(self) -> bool {
        self != Self::Off
    }

    /// Whether local accounts' passwords are checked.
    pub fn local(self) -> bool {
        matches!(self, Self::Local | Self::LocalAndDirectory)
    }

    /// Whether the directory checks passwords.
    pub fn directory(self) -> bool {
        matches!(self, Self::Directory | Self::LocalAndDirectory)
    }
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
    /// Accounts that are always admins, each as it signs in (see [`AdminName`]).
    pub admin_users: Vec<AdminName>,
    /// Shortest password accepted.
    pub password_min_len: usize,
    /// Failed-login limits.
    pub throttle: ThrottleSettings,
    /// Which accounts the password form signs in (off when only providers sign people in).
    pub password_login: PasswordLogin,
    /// Longest lifetime a user may give an API token; `None` allows tokens that never expire.
    pub max_token_lifetime: Option<Duration>,
}

impl AccountSettings {
    /// Whether `admin_users` makes the account `name` an admin when signed into `via` a
    /// provider (`None`: with its password).
    pub fn lists_admin(&self, name: &UserName, via: Option<&str>) -> bool {
        self.admin_users.iter().any(|a| a.matches(name, via))
    }

    /// Whether any `admin_users` entry names the account `name`, however it signs in.
    pub fn names_admin(&self, name: &UserName) -> bool {
        self.admin_users.iter().any(|a| &a.name == name)
    }
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
            password_login: PasswordLogin::Local,
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
    /// How often proxied activity (and token use) is written to the database.
    pub activity_flush_interval: Duration,
    /// The hub's API as servers of JupyterHub's contract reach it (`JUPYTERHUB_API_URL`).
    pub hub_api_url: String,
    /// How often the route table is reloaded whole from Postgres, besides the changes other
    /// hub processes announce (a safety net for an announcement lost in between).
    pub route_reload_interval: Duration,
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
            activity_flush_interval: Duration::from_secs(10),
            hub_api_url: "http://127.0.0.1:8000/hub/api".into(),
            route_reload_interval: Duration::from_secs(60),
        }
    }
}

/// Quotas and the hub's periodic work on running servers (culling, sampling, measuring).
#[derive(Debug, Clone)]
pub struct QuotaSettings {
    /// The limits of users in no group, and of groups whose quota or ceiling was never set.
    pub site_default: labhub_core::Quota,
    /// The home page warns once storage reaches this percentage of the limit.
    pub storage_warning_percent: u8,
    /// Whether the built-in culler runs (servers then show when it will stop them).
    pub culling: bool,
    /// How often the culler looks for idle and expired servers.
    pub cull_interval: Duration,
    /// How often live resource use is sampled for the usage view.
    pub usage_interval: Duration,
    /// How often users' storage is measured.
    pub storage_interval: Duration,
    /// How long usage samples are kept.
    pub usage_retention: Duration,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            site_default: labhub_core::Quota {
                max_cpu_millis: 4000,
                max_memory_bytes: 8 << 30,
                max_gpus: 0,
                images: labhub_core::ImageAllowance::All,
                max_servers_per_member: 4,
                budget_cpu_millis: None,
                budget_memory_bytes: None,
                storage_bytes: None,
                idle_timeout: Some(Duration::from_secs(3600)),
                max_lifetime: None,
                cull_busy: false,
                build_timeout: None,
            },
            storage_warning_percent: 90,
            culling: true,
            cull_interval: Duration::from_secs(60),
            usage_interval: Duration::from_secs(60),
            storage_interval: Duration::from_secs(600),
            usage_retention: Duration::from_secs(8 * 86400),
        }
    }
}
