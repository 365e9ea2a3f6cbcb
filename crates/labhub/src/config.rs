//! The configuration: a TOML file (`--config`, `LABHUB_CONFIG`) with `LABHUB_*` environment
//! overrides (`__` separates sections: `LABHUB_SESSION__IDLE_TIMEOUT=2h`) and `DATABASE_URL`.
//! Every key has a documented default; an unknown key or a bad value stops the hub with an
//! error that names the key. Secrets print as `[redacted]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use labhub_core::{Secret, UserName};
use labhub_service::SignupPolicy;
use serde::{Deserialize, Serialize};
use url::Url;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port the hub listens on.
    pub bind: SocketAddr,
    /// The address people use to reach the hub; defaults to `http://<bind>/`
    /// (`localhost` for an unspecified bind address). An https URL makes cookies `Secure`.
    pub public_url: Option<Url>,
    /// Where the hub keeps its secret key, its embedded database and its logs.
    pub data_dir: PathBuf,
    /// The hub's secret key (64 hex characters). Unset: generated once into `<data_dir>/secret_key`.
    pub secret_key: Option<Secret<String>>,
    /// `text` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// The database.
    pub database: DatabaseConfig,
    /// Browser sessions.
    pub session: SessionConfig,
    /// Accounts and sign-in.
    pub auth: AuthConfig,
    /// HTTP limits and behaviour.
    pub http: HttpConfig,
    /// Users' servers.
    pub servers: ServersConfig,
    /// The Docker engine users' servers run on.
    pub docker: labhub_spawner::DockerConfig,
    /// The proxy to users' servers.
    pub proxy: ProxyConfig,
    /// The site default quota: for users in no group, and for groups until one is set.
    pub quota: QuotaConfig,
    /// The built-in idle culler.
    pub culler: CullerConfig,
    /// Sampling resource use and measuring storage.
    pub usage: UsageConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            public_url: None,
            data_dir: PathBuf::from("labhub-data"),
            secret_key: None,
            log_format: LogFormat::Text,
            database: DatabaseConfig::default(),
            session: SessionConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            servers: ServersConfig::default(),
            docker: labhub_spawner::DockerConfig::default(),
            proxy: ProxyConfig::default(),
            quota: QuotaConfig::default(),
            culler: CullerConfig::default(),
            usage: UsageConfig::default(),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// A `postgres://` URL (or `DATABASE_URL`). Unset: the hub runs its own embedded Postgres
    /// under `<data_dir>/postgres`.
    pub url: Option<Secret<String>>,
    /// Folder with the Postgres server binaries for the embedded database (or `LABHUB_PG_BIN`).
    /// Unset: the newest `/usr/lib/postgresql/<v>/bin`, `pg_config --bindir`, or `PATH`.
    pub pg_bin: Option<PathBuf>,
    /// Most database connections.
    pub max_connections: u32,
    /// How long a request waits for a connection before the hub answers 503.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, pg_bin: None, max_connections: 16, acquire_timeout: Duration::from_secs(3) }
    }
}

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
    /// Names that are always admins. With no admin at all, the first (or `admin`) is created
    /// at start with a random password written to `<data_dir>/initial-admin-password`.
    pub admin_users: Vec<UserName>,
    /// Self-service sign-up: `closed`, `approval` (an admin approves) or `open`.
    pub signup: SignupPolicy,
    /// Offer the password form (turn off when only identity providers sign people in).
    pub password_login: bool,
    /// Shortest password accepted.
    pub min_password_length: usize,
    /// Failed sign-ins allowed per account name within `failed_login_window`.
    pub max_failed_logins_per_account: usize,
    /// Failed sign-ins allowed per client address within `failed_login_window`.
    pub max_failed_logins_per_address: usize,
    /// The window in which failed sign-ins are counted.
    #[serde(with = "humantime_serde")]
    pub failed_login_window: Duration,
    /// Longest lifetime of an API token; unset allows tokens that never expire.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Option<Duration>,
    /// Identity providers (`[[auth.providers]]`, see docs/sign-in.md).
    pub providers: Vec<labhub_auth::oidc::ProviderConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let d = labhub_service::AccountSettings::default();
        Self {
            admin_users: Vec::new(),
            signup: SignupPolicy::Closed,
            password_login: true,
            min_password_length: d.password_min_len,
            max_failed_logins_per_account: d.throttle.per_account,
            max_failed_logins_per_address: d.throttle.per_address,
            failed_login_window: d.throttle.window,
            max_token_lifetime: None,
            providers: Vec::new(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body for pages and the API, in bytes (the proxy streams without limit).
    pub max_body_bytes: usize,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted reverse proxy).
    pub trust_forwarded_for: bool,
    /// Serve Prometheus metrics at `/hub/metrics`.
    pub metrics: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { max_body_bytes: 1 << 20, trust_forwarded_for: false, metrics: true }
    }
}

/// `[servers]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServersConfig {
    /// Named servers a user may have besides the default one (0 turns them off).
    pub named_server_limit: u32,
    /// How long a server may take to answer before its start is given up and cleaned up.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// Starts in flight at once, hub-wide; past it starts are answered 429 with `Retry-After`.
    pub concurrent_spawn_limit: usize,
    /// How long the API waits for a start before answering 202 instead of 201.
    #[serde(with = "humantime_serde")]
    pub slow_spawn_timeout: Duration,
    /// How long the API waits for a stop before answering 202 instead of 204.
    #[serde(with = "humantime_serde")]
    pub slow_stop_timeout: Duration,
    /// Build missing catalogue images from their recipes when the hub starts.
    pub build_missing_images_at_boot: bool,
}

impl Default for ServersConfig {
    fn default() -> Self {
        let d = labhub_service::ServerSettings::default();
        Self {
            named_server_limit: d.named_server_limit,
            start_timeout: d.start_timeout,
            concurrent_spawn_limit: d.concurrent_spawn_limit,
            slow_spawn_timeout: d.slow_spawn_timeout,
            slow_stop_timeout: d.slow_stop_timeout,
            build_missing_images_at_boot: d.build_missing_images_at_boot,
        }
    }
}

/// `[proxy]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// How long to wait for a server's TCP connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a server may stay silent before its response headers (at least 60 s: RStudio
    /// long-polls). Response bodies (downloads, event streams) have no timeout.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Concurrent requests and WebSockets per server; past it, 503 with `Retry-After`.
    pub max_connections_per_server: usize,
    /// Concurrent requests and WebSockets over all servers.
    pub max_connections_total: usize,
    /// Largest request line plus headers accepted.
    pub max_request_header_bytes: usize,
    /// Serve each user's servers from a host of their own, `{user}.{public_url's host}`, so a
    /// notebook's JavaScript never shares an origin with the hub or other users (needs wildcard
    /// DNS and a wildcard TLS certificate for `*.{host}`).
    pub user_subdomains: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let d = labhub_proxy::ProxySettings::new([""]);
        Self {
            connect_timeout: d.connect_timeout,
            read_timeout: d.read_timeout,
            max_connections_per_server: d.max_connections_per_server,
            max_connections_total: d.max_connections_total,
            max_request_header_bytes: d.max_request_header_bytes,
            user_subdomains: false,
        }
    }
}

/// Cores in the file ("2", 0.5), millicores in memory.
mod cores {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(millis: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&labhub_core::resources::format_cpu(*millis))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let a = labhub_core::resources::Amount::deserialize(d)?;
        a.cpu_millis().map_err(serde::de::Error::custom)
    }
}

/// An optional number of cores; unset means no limit.
mod opt_cores {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(millis: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match millis {
            Some(m) => super::cores::serialize(&u32::try_from(*m).unwrap_or(u32::MAX), s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::cores::deserialize(d).map(|m| Some(u64::from(m)))
    }
}

/// Bytes in memory; "8G" (or a number of bytes) in the file.
mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&labhub_service::words::memory_text(*bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let a = labhub_core::resources::Amount::deserialize(d)?;
        a.memory_bytes().map_err(serde::de::Error::custom)
    }
}

/// An optional size; unset means no limit.
mod opt_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::bytes::deserialize(d).map(Some)
    }
}

/// An optional length of time: "1h", or "never" for none.
mod duration_or_never {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("never"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let raw = String::deserialize(d)?;
        if raw.trim().eq_ignore_ascii_case("never") {
            return Ok(None);
        }
        humantime::parse_duration(raw.trim())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e}; write a duration such as \"1h\" or \"never\"")))
    }
}

/// `[quota]`: the site default. Users in no group get it; a group follows it until an admin
/// or a lead sets the group's own (the admin's ceiling starts at it too).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Largest CPU limit of one server, in cores.
    #[serde(with = "cores")]
    pub max_cpu: u32,
    /// Largest memory limit of one server ("8G").
    #[serde(with = "bytes")]
    pub max_memory: u64,
    /// Most GPUs one server may request.
    pub max_gpus: u32,
    /// Catalogue images that may be started (by name); empty: every enabled image.
    pub images: Vec<String>,
    /// Servers one user may run at once.
    pub max_servers_per_member: u32,
    /// CPU all servers of users in no group may reserve together, in cores; unset: no budget.
    #[serde(with = "opt_cores", skip_serializing_if = "Option::is_none")]
    pub budget_cpu: Option<u64>,
    /// Memory all servers of users in no group may reserve together; unset: no budget.
    #[serde(with = "opt_bytes", skip_serializing_if = "Option::is_none")]
    pub budget_memory: Option<u64>,
    /// The size a user's storage may reach before their starts are refused; unset: no limit.
    #[serde(with = "opt_bytes", skip_serializing_if = "Option::is_none")]
    pub storage: Option<u64>,
    /// The home page warns once storage reaches this percentage of the limit.
    pub storage_warning_percent: u8,
    /// A server without proxied activity for this long is stopped ("never" to keep them).
    #[serde(with = "duration_or_never")]
    pub idle_timeout: Option<Duration>,
    /// A server running this long is stopped, active or not ("never" to keep them).
    #[serde(with = "duration_or_never")]
    pub max_lifetime: Option<Duration>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        let d = labhub_service::QuotaSettings::default();
        let q = d.site_default;
        Self {
            max_cpu: q.max_cpu_millis,
            max_memory: q.max_memory_bytes,
            max_gpus: q.max_gpus,
            images: Vec::new(),
            max_servers_per_member: q.max_servers_per_member,
            budget_cpu: q.budget_cpu_millis,
            budget_memory: q.budget_memory_bytes,
            storage: q.storage_bytes,
            storage_warning_percent: d.storage_warning_percent,
            idle_timeout: q.idle_timeout,
            max_lifetime: q.max_lifetime,
        }
    }
}

/// `[culler]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CullerConfig {
    /// Stop idle servers and servers past their lifetime (turn off to use an external culler).
    pub enabled: bool,
    /// How often to look for them.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for CullerConfig {
    fn default() -> Self {
        Self { enabled: true, interval: labhub_service::QuotaSettings::default().cull_interval }
    }
}

/// `[usage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// How often to sample running servers' CPU and memory use (`docker stats`).
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// How often to measure users' storage.
    #[serde(with = "humantime_serde")]
    pub storage_interval: Duration,
    /// How long samples are kept (the usage view shows up to a week).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for UsageConfig {
    fn default() -> Self {
        let d = labhub_service::QuotaSettings::default();
        Self { sample_interval: d.usage_interval, storage_interval: d.storage_interval, retention: d.usage_retention }
    }
}

/// A configuration that could not be loaded, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads the file (if any), then the environment, then checks what serde cannot.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!("the configuration file {} does not exist", path.display())));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "database.url".into()))
            .merge(Env::raw().only(&["LABHUB_PG_BIN"]).map(|_| "database.pg_bin".into()))
            .merge(Env::prefixed("LABHUB_").ignore(&["CONFIG", "PG_BIN", "LOG"]).split("__"));
        let config: Config = fig.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("invalid configuration: '{key}' {why}")));
        if let Some(u) = &self.public_url {
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return bad("public_url", "must be an http:// or https:// URL with a host");
            }
            if u.path() != "/" {
                return bad("public_url", "must not have a path: labhub is served at the root of its host");
            }
        }
        if let Some(k) = &self.secret_key
            && hex::decode(k.expose()).map_or(true, |b| b.len() < 32)
        {
            return bad("secret_key", "must be at least 64 hex characters (32 bytes)");
        }
        if self.session.cookie_name.is_empty()
            || !self.session.cookie_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return bad("session.cookie_name", "may only use letters, digits, '-' and '_'");
        }
        if self.session.idle_timeout.is_zero() || self.session.absolute_timeout.is_zero() {
            return bad("session", "timeouts must be longer than zero");
        }
        if self.auth.min_password_length < 8 {
            return bad("auth.min_password_length", "must be at least 8");
        }
        if self.auth.max_failed_logins_per_account == 0 || self.auth.max_failed_logins_per_address == 0 {
            return bad("auth", "failed-login limits must be at least 1");
        }
        for (i, p) in self.auth.providers.iter().enumerate() {
            if let Err(problem) = p.check() {
                return bad(&format!("auth.providers[{i}].{}", problem.key), &problem.why);
            }
            if self.auth.providers[..i].iter().any(|q| q.id == p.id) {
                return bad(&format!("auth.providers[{i}].id"), &format!("repeats the id '{}'", p.id));
            }
        }
        if !self.auth.password_login && self.auth.providers.is_empty() {
            return bad("auth.password_login", "can only be false when [[auth.providers]] lets people sign in");
        }
        if self.http.max_body_bytes < 1024 {
            return bad("http.max_body_bytes", "must be at least 1024");
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        if self.proxy.read_timeout < Duration::from_secs(60) {
            return bad("proxy.read_timeout", "must be at least 60s (RStudio's long polls last about a minute)");
        }
        if self.proxy.max_connections_per_server == 0 || self.proxy.max_connections_total == 0 {
            return bad("proxy", "connection limits must be at least 1");
        }
        if self.proxy.user_subdomains {
            let named =
                self.public_url.as_ref().and_then(|u| u.host()).is_some_and(|h| matches!(h, url::Host::Domain(_)));
            if !named {
                return bad(
                    "proxy.user_subdomains",
                    "needs public_url with a host name (users' servers get its subdomains)",
                );
            }
        }
        if self.servers.concurrent_spawn_limit == 0 {
            return bad("servers.concurrent_spawn_limit", "must be at least 1");
        }
        if self.quota.max_cpu == 0 {
            return bad("quota.max_cpu", "must be more than 0");
        }
        if self.quota.max_memory < 64 << 20 {
            return bad("quota.max_memory", "must be at least 64M");
        }
        if !(1..=100).contains(&self.quota.storage_warning_percent) {
            return bad("quota.storage_warning_percent", "must be between 1 and 100");
        }
        if self.quota.idle_timeout.is_some_and(|d| d.as_secs() == 0)
            || self.quota.max_lifetime.is_some_and(|d| d.as_secs() == 0)
        {
            return bad("quota", "timeouts must be at least 1s (write \"never\" for none)");
        }
        if self.culler.interval.as_secs() == 0 {
            return bad("culler.interval", "must be at least 1s");
        }
        if self.usage.sample_interval.as_secs() == 0 || self.usage.storage_interval.as_secs() == 0 {
            return bad("usage", "intervals must be at least 1s");
        }
        if self.usage.retention < Duration::from_secs(3600) {
            return bad("usage.retention", "must be at least 1h");
        }
        Ok(())
    }

    /// The public URL, derived from the bind address when not set.
    pub fn public_url(&self) -> Url {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let host = if self.bind.ip().is_unspecified() { "localhost".to_string() } else { self.bind.ip().to_string() };
        let host = if self.bind.is_ipv6() && host != "localhost" { format!("[{host}]") } else { host };
        Url::parse(&format!("http://{host}:{}/", self.bind.port())).expect("a valid URL")
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
                per_address: self.auth.max_failed_logins_per_address,
                window: self.auth.failed_login_window,
            },
            password_login: self.auth.password_login,
            max_token_lifetime: self.auth.max_token_lifetime,
        }
    }

    /// The server rules for the service.
    pub fn server_settings(&self) -> labhub_service::ServerSettings {
        let s = &self.servers;
        labhub_service::ServerSettings {
            named_server_limit: s.named_server_limit,
            start_timeout: s.start_timeout,
            concurrent_spawn_limit: s.concurrent_spawn_limit,
            slow_spawn_timeout: s.slow_spawn_timeout,
            slow_stop_timeout: s.slow_stop_timeout,
            build_missing_images_at_boot: s.build_missing_images_at_boot,
        }
    }

    /// The site default quota and the culler's and sampler's timing, for the service.
    pub fn quota_settings(&self) -> labhub_service::QuotaSettings {
        let q = &self.quota;
        let images = if q.images.is_empty() {
            labhub_core::ImageAllowance::All
        } else {
            labhub_core::ImageAllowance::Only(q.images.clone())
        };
        labhub_service::QuotaSettings {
            site_default: labhub_core::Quota {
                max_cpu_millis: q.max_cpu,
                max_memory_bytes: q.max_memory,
                max_gpus: q.max_gpus,
                images,
                max_servers_per_member: q.max_servers_per_member,
                budget_cpu_millis: q.budget_cpu,
                budget_memory_bytes: q.budget_memory,
                storage_bytes: q.storage,
                idle_timeout: q.idle_timeout,
                max_lifetime: q.max_lifetime,
            },
            storage_warning_percent: q.storage_warning_percent,
            cull_interval: self.culler.interval,
            usage_interval: self.usage.sample_interval,
            storage_interval: self.usage.storage_interval,
            usage_retention: self.usage.retention,
        }
    }

    /// The cookie names in effect: the hub's session and users' hosts' sessions. With origin
    /// isolation over https both carry the `__Host-` prefix, which browsers accept only from
    /// the very host (Secure, `Path=/`, no `Domain`), so a user's host cannot plant a session
    /// cookie for the hub or for another user's host.
    pub fn cookie_names(&self) -> (String, String) {
        let hub = self.session.cookie_name.clone();
        let user_host = labhub_web::USER_HOST_COOKIE.to_string();
        if self.proxy.user_subdomains && self.public_url().scheme() == "https" {
            (format!("__Host-{hub}"), format!("__Host-{user_host}"))
        } else {
            (hub, user_host)
        }
    }

    /// The proxy's settings.
    pub fn proxy_settings(&self) -> labhub_proxy::ProxySettings {
        let p = &self.proxy;
        labhub_proxy::ProxySettings {
            connect_timeout: p.connect_timeout,
            read_timeout: p.read_timeout,
            max_connections_per_server: p.max_connections_per_server,
            max_connections_total: p.max_connections_total,
            max_request_header_bytes: p.max_request_header_bytes,
            ..labhub_proxy::ProxySettings::new(<[String; 2]>::from(self.cookie_names()))
        }
    }

    /// The effective configuration as TOML, secrets redacted (`labhub config check`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not print the configuration: {e}\n"))
    }
}

/// Turns figment's error into one sentence that names the key and where it came from.
fn describe(e: figment::Error) -> ConfigError {
    let mut out = Vec::new();
    for err in e {
        let key = err.path.join(".");
        let source = err.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
        let what = err.kind.to_string();
        let place = if key.is_empty() { String::from("at the top level") } else { format!("'{key}'") };
        let from = if source.is_empty() { String::new() } else { format!(" (from {source})") };
        out.push(format!("invalid configuration {place}: {what}{from}"));
    }
    ConfigError(out.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labhub.toml");
        std::fs::write(&p, toml).unwrap();
        Config::load(Some(&p))
    }

    #[test]
    fn origin_isolation_over_https_prefixes_and_strips_both_session_cookies() {
        let c = load_str("public_url = \"https://lab.example.org/\"\n[proxy]\nuser_subdomains = true\n").unwrap();
        let names = ["__Host-labhub-session", "__Host-labhub-user-session"];
        assert_eq!(c.proxy_settings().strip_cookies, names);
        let paths = load_str("public_url = \"https://lab.example.org/\"\n").unwrap();
        assert_eq!(paths.proxy_settings().strip_cookies, ["labhub-session", "labhub-user-session"]);
    }

    #[test]
    fn defaults_and_durations() {
        let c = load_str("[session]\nidle_timeout = \"2h\"\n").unwrap();
        assert_eq!(c.session.idle_timeout, Duration::from_secs(7200));
        assert_eq!(c.public_url().as_str(), "http://127.0.0.1:8000/");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = load_str("[session]\nidel_timeout = \"2h\"\n").unwrap_err().to_string();
        assert!(e.contains("'session") && e.contains("idel_timeout"), "{e}");
        let e = load_str("bind = \"nonsense\"\n").unwrap_err().to_string();
        assert!(e.contains("'bind'"), "{e}");
        let e = load_str("[auth]\nadmin_users = [\"Bad Name\"]\n").unwrap_err().to_string();
        assert!(e.contains("'auth.admin_users"), "{e}");
        let e = load_str("public_url = \"ftp://x\"\n").unwrap_err().to_string();
        assert!(e.contains("'public_url'"), "{e}");
    }

    #[test]
    fn providers_are_read_and_checked_by_key() {
        let c = load_str(
            "[[auth.providers]]\nid = \"lab\"\nkind = \"oidc\"\nissuer = \"https://id.example.org/realms/lab\"\nclient_id = \"labhub\"\nclient_secret = \"s3cret\"\ntimeout = \"5s\"\nallowed_groups = [\"staff\"]\n",
        )
        .unwrap();
        let p = &c.auth.providers[0];
        assert_eq!(p.id.as_str(), "lab");
        assert_eq!(p.timeout, Duration::from_secs(5));
        assert!(!c.to_toml().contains("s3cret"), "the client secret is redacted");
        let e =
            load_str("[[auth.providers]]\nid = \"lab\"\nkind = \"oidc\"\nclient_id = \"x\"\nclient_secret = \"y\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("'auth.providers[0].issuer'"), "{e}");
        let e = load_str(
            "[[auth.providers]]\nid = \"Lab!\"\nkind = \"github\"\nclient_id = \"x\"\nclient_secret = \"y\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("auth.providers") && e.contains("not a provider id"), "{e}");
        let twice = "[[auth.providers]]\nid = \"gh\"\nkind = \"github\"\nclient_id = \"x\"\nclient_secret = \"y\"\n";
        let e = load_str(&format!("{twice}{twice}")).unwrap_err().to_string();
        assert!(e.contains("'auth.providers[1].id'"), "{e}");
        let e = load_str("[auth]\npassword_login = false\n").unwrap_err().to_string();
        assert!(e.contains("'auth.password_login'"), "{e}");
    }

    #[test]
    fn the_site_quota_reads_amounts_as_people_write_them_and_prints_them_back() {
        let c = load_str(
            "[quota]\nmax_cpu = 0.5\nmax_memory = \"1.5G\"\nbudget_cpu = \"8\"\nstorage = \"10G\"\nidle_timeout = \"never\"\nmax_lifetime = \"8h\"\nimages = [\"jupyterlab\"]\n",
        )
        .unwrap();
        let q = c.quota_settings().site_default;
        assert_eq!(q.max_cpu_millis, 500);
        assert_eq!(q.max_memory_bytes, 3 << 29);
        assert_eq!(q.budget_cpu_millis, Some(8000));
        assert_eq!(q.budget_memory_bytes, None);
        assert_eq!(q.storage_bytes, Some(10 << 30));
        assert_eq!(q.idle_timeout, None);
        assert_eq!(q.max_lifetime, Some(Duration::from_secs(8 * 3600)));
        let printed = c.to_toml();
        assert!(
            printed.contains("max_memory = \"1536M\"") && printed.contains("idle_timeout = \"never\""),
            "{printed}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("again.toml");
        std::fs::write(&p, &printed).unwrap();
        assert_eq!(Config::load(Some(&p)).unwrap().quota_settings().site_default, q, "what is printed reads back");
        let e = load_str("[quota]\nmax_memory = \"lots\"\n").unwrap_err().to_string();
        assert!(e.contains("'quota.max_memory'"), "{e}");
        let e = load_str("[quota]\nidle_timeout = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("'quota.idle_timeout'") && e.contains("never"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let c = load_str("secret_key = \"0000000000000000000000000000000000000000000000000000000000000000\"\n[database]\nurl = \"postgres://u:hunter2@db/x\"\n").unwrap();
        let printed = c.to_toml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("[redacted]"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
