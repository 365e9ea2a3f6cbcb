//! Quotas as data: the limits a group (or the site default) sets on its members' servers.
//! What they allow and how a refusal reads is the service's quota policy.

use std::time::Duration;

/// Which catalogue images may be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageAllowance {
    /// Every enabled catalogue image.
    All,
    /// Only these catalogue images (by name).
    Only(Vec<String>),
}

impl ImageAllowance {
    /// Whether the image called `name` is allowed.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            ImageAllowance::All => true,
            ImageAllowance::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// A set of limits: a group's quota or ceiling, or the site default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// Largest CPU limit of one server, in millicores.
    pub max_cpu_millis: u32,
    /// Largest memory limit of one server, in bytes.
    pub max_memory_bytes: u64,
    /// Most GPUs one server may request.
    pub max_gpus: u32,
    /// Which catalogue images may be started.
    pub images: ImageAllowance,
    /// Servers one member may run at once under this group.
    pub max_servers_per_member: u32,
    /// The CPU all active servers charged to the group may reserve together; `None`: no limit.
    pub budget_cpu_millis: Option<u64>,
    /// The memory all active servers charged to the group may reserve together; `None`: no limit.
    pub budget_memory_bytes: Option<u64>,
    /// The size a member's storage may reach before their starts are refused; `None`: no limit.
    pub storage_bytes: Option<u64>,
    /// A server without proxied activity for this long is stopped; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// A server running this long is stopped, active or not; `None`: never.
    pub max_lifetime: Option<Duration>,
    /// Whether the idle timeout also stops a Jupyter server whose kernel is busy or that has a
    /// terminal open (by default such a server counts as in use).
    pub cull_busy: bool,
    /// The longest one environment build may take; `None`: the site's `environments.build_timeout`,
    /// which is also the most any group gets.
    pub build_timeout: Option<Duration>,
}
