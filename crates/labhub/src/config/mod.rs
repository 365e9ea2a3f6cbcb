//! The configuration: a TOML file (`--config`, `LABHUB_CONFIG`) with `LABHUB_*` environment
//! overrides (`__` separates sections: `LABHUB_SESSION__IDLE_TIMEOUT=2h`) and `DATABASE_URL`.
//! Every key has a documented default; an unknown key or a bad value stops the hub with an
//! error that names the key. Secrets print as `[redacted]`.

mod auth;
mod backups;
mod database;
mod environments;
mod proxy;
mod quotas;
mod servers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use labhub_auth::ldap::LDAP_ID;
use labhub_core::Secret;
use serde::{Deserialize, Serialize};
use url::Url;

pub use auth::{AuthConfig, SessionConfig};
pub use backups::BackupsConfig;
pub use database::DatabaseConfig;
pub use environments::EnvironmentsConfig;
pub use proxy::{HttpConfig, ProxyConfig};
pub use quotas::{CullerConfig, QuotaConfig, UsageConfig};
pub use servers::ServersConfig;

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
    /// Threads of the hub's runtime, and as many HTTP threads; unset, one per core of each.
    /// Replicas sharing a machine each take their share of its cores.
    pub worker_threads: Option<std::num::NonZeroUsize>,
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
    /// Backups of homes and shared folders.
    pub backups: BackupsConfig,
    /// Building environments from repositories.
    pub environments: EnvironmentsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            public_url: None,
            data_dir: PathBuf::from("labhub-data"),
            secret_key: None,
            log_format: LogFormat::Text,
            worker_threads: None,
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
            backups: BackupsConfig::default(),
            environments: EnvironmentsConfig::default(),
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
        if labhub_core::resources::parse_memory(&self.environments.snapshot_max_size).is_err() {
            return bad("environments.snapshot_max_size", "must be a size such as \"20GiB\"");
        }
        if labhub_core::resources::parse_memory(&self.environments.max_upload).is_err() {
            return bad("environments.max_upload", "must be a size such as \"32MiB\"");
        }
        if self.auth.min_password_length < 8 {
            return bad("auth.min_password_length", "must be at least 8");
        }
        let a = &self.auth;
        if [
            a.max_failed_logins_per_account,
            a.max_failed_logins_per_account_and_address,
            a.max_failed_accounts_per_address,
            a.max_failed_logins_per_device,
            a.max_signups_per_address,
        ]
        .contains(&0)
        {
            return bad("auth", "failed-login and sign-up limits must be at least 1");
        }
        if a.failed_login_window.is_zero() {
            return bad("auth.failed_login_window", "must be longer than zero");
        }
        if a.hashing_concurrency == 0 {
            return bad("auth.hashing_concurrency", "must be at least 1");
        }
        for (i, p) in self.auth.providers.iter().enumerate() {
            if let Err(problem) = p.check() {
                return bad(&format!("auth.providers[{i}].{}", problem.key), &problem.why);
            }
            if self.auth.providers[..i].iter().any(|q| q.id == p.id) {
                return bad(&format!("auth.providers[{i}].id"), &format!("repeats the id '{}'", p.id));
            }
        }
        self.validate_ldap()?;
        for (i, a) in self.auth.admin_users.iter().enumerate() {
            let ldap = self.auth.ldap.is_some() && a.provider.as_ref().is_some_and(|p| p.as_str() == LDAP_ID);
            if let Some(p) = &a.provider
                && !ldap
                && !self.auth.providers.iter().any(|q| &q.id == p)
            {
                return bad(
                    &format!("auth.admin_users[{i}]"),
                    &format!(
                        "names the provider '{p}', which is not one of [[auth.providers]] (nor ldap with [auth.ldap])"
                    ),
                );
            }
        }
        if !self.password_login().form() && self.auth.providers.is_empty() {
            return bad("auth.password_login", "can only be off when [[auth.providers]] lets people sign in");
        }
        if self.http.max_body_bytes < 1024 {
            return bad("http.max_body_bytes", "must be at least 1024");
        }
        if self.http.request_head_timeout.is_zero() || self.http.request_head_timeout > Duration::from_secs(300) {
            return bad("http.request_head_timeout", "must be longer than zero and at most 5m");
        }
        if self.http.keep_alive_timeout.is_zero() {
            return bad("http.keep_alive_timeout", "must be longer than zero");
        }
        if self.http.max_connections == Some(0) {
            return bad(
                "http.max_connections",
                "must be at least 1 (leave it unset to derive it from the open-file limit)",
            );
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
        if self.docker.iptables.as_os_str().is_empty() {
            return bad("docker.iptables", "must name the iptables command (\"iptables\" finds it on PATH)");
        }
        if self.docker.swarm_homes == labhub_spawner::SwarmHomes::Nfs
            && (self.docker.swarm_nfs_addr.is_empty() || !self.docker.swarm_nfs_export.starts_with('/'))
        {
            return bad(
                "docker.swarm_homes",
                "\"nfs\" needs swarm_nfs_addr (the NFS server) and swarm_nfs_export (an absolute exported path)",
            );
        }
        if let Some(registry) = &self.docker.swarm_registry {
            if self.docker.swarm_images != labhub_spawner::SwarmImages::Registry {
                return bad(
                    "docker.swarm_registry",
                    "is where images are pushed with swarm_images = \"registry\" only",
                );
            }
            if registry.is_loopback() && !self.docker.swarm_nodes.is_empty() {
                return bad("docker.swarm_registry", "is a loopback address, which every other node takes for its own");
            }
        }
        for (i, node) in self.docker.swarm_nodes.iter().enumerate() {
            // An engine's API is root on its node: only a socket the hub alone opens (one
            // forwarded over SSH, say), never a TCP port anyone on the network could reach.
            if !node.docker_host.starts_with("unix:///") {
                return bad(
                    "docker.swarm_nodes",
                    &format!(
                        "{}: docker_host must be a unix:///path socket (forward the node's engine over SSH;                          an engine's TCP API is root on that node)",
                        node.hostname
                    ),
                );
            }
            if self.docker.swarm_nodes[..i].iter().any(|n| n.hostname == node.hostname) {
                return bad("docker.swarm_nodes", &format!("lists {} twice", node.hostname));
            }
        }
        if self.docker.mode == labhub_spawner::RuntimeMode::Swarm && !self.docker.internet_access {
            return bad("docker.internet_access", "= false is not supported with mode = \"swarm\"");
        }
        if let Err(why) = labhub_spawner::check_swarm_subnet(&self.docker.swarm_subnet) {
            return bad("docker.swarm_subnet", &why);
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
        if self.servers.activity_flush_interval.is_zero() {
            return bad("servers.activity_flush_interval", "must be more than 0s");
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
        if let Some(dir) = &self.backups.dir
            && !dir.is_absolute()
        {
            return bad("backups.dir", "must be an absolute path (where the archives go)");
        }
        Ok(())
    }

    /// `[auth.ldap]` and `password_login` fit together.
    fn validate_ldap(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("invalid configuration: '{key}' {why}")));
        if self.password_login().directory() && self.auth.ldap.is_none() {
            return bad("auth.password_login", "uses the directory (ldap), which needs [auth.ldap]");
        }
        let Some(ldap) = &self.auth.ldap else { return Ok(()) };
        if let Err(problem) = ldap.check() {
            return bad(&format!("auth.ldap.{}", problem.key), &problem.why);
        }
        if !self.password_login().directory() {
            return bad("auth.password_login", "leaves [auth.ldap] unused: write \"ldap\" or \"local+ldap\"");
        }
        if let Some(i) = self.auth.providers.iter().position(|p| p.id.as_str() == LDAP_ID) {
            return bad(
                &format!("auth.providers[{i}].id"),
                "'ldap' names the directory's identities while [auth.ldap] is set",
            );
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
mod tests;
