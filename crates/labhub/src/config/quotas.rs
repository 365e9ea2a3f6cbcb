//! `[quota]`, `[culler]` and `[usage]`: the site default quota, the idle culler and usage
//! sampling, with amounts written as people write them ("0.5" cores, "8G", "never").

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Config;

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
    /// Whether the idle timeout also stops Jupyter servers with a busy kernel or an open terminal.
    pub cull_busy: bool,
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
            cull_busy: q.cull_busy,
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

impl Config {
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
                cull_busy: q.cull_busy,
                // `[environments] build_timeout` is the site's default and ceiling.
                build_timeout: None,
            },
            culling: self.culler.enabled,
            storage_warning_percent: q.storage_warning_percent,
            cull_interval: self.culler.interval,
            usage_interval: self.usage.sample_interval,
            storage_interval: self.usage.storage_interval,
            usage_retention: self.usage.retention,
        }
    }
}
