//! `[servers]`: starting and stopping users' servers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Config;

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
    /// How often proxied activity is written to the database (the API shows it at once either way).
    #[serde(with = "humantime_serde")]
    pub activity_flush_interval: Duration,
    /// The hub's API as servers of JupyterHub's contract reach it (`JUPYTERHUB_API_URL`);
    /// unset: `{public_url}hub/api`.
    pub hub_api_url: Option<url::Url>,
    /// How often each hub process reloads its route table whole from the database (changes
    /// reach it at once through `LISTEN/NOTIFY`; this is the safety net).
    #[serde(with = "humantime_serde")]
    pub route_reload_interval: Duration,
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
            activity_flush_interval: d.activity_flush_interval,
            hub_api_url: None,
            route_reload_interval: d.route_reload_interval,
        }
    }
}

impl Config {
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
            activity_flush_interval: s.activity_flush_interval,
            hub_api_url: match &s.hub_api_url {
                Some(u) => u.to_string(),
                None => format!("{}hub/api", self.public_url()),
            },
            route_reload_interval: s.route_reload_interval,
        }
    }
}
