//! The Docker spawner's settings, as read from the hub's configuration file.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ranges::PrivateRange;

/// A hub id that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a hub id: use 1 to {max} characters from a-z, 0-9, '.', '-', starting with a letter or digit",
    max = HubId::MAX_LEN
)]
pub struct HubIdError(pub String);

/// A network name that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a Docker network name: use 1 to 64 characters from a-z, A-Z, 0-9, '.', '_', '-', starting with a letter or digit"
)]
pub struct NetworkNameError(pub String);

labhub_core::name_type!(
    /// Names this hub's containers, volumes and network, so several hubs can share one engine.
    ///
    /// No `_` and no upper case: `_` separates the parts of a container name and upper case marks
    /// a hashed name (see `naming`), so neither may appear in the prefix.
    HubId, error = HubIdError
);

impl HubId {
    /// The longest hub id accepted; it prefixes every container and volume name.
    pub const MAX_LEN: usize = 32;

    /// Validates a hub id.
    pub fn parse(raw: &str) -> Result<Self, HubIdError> {
        let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
        let bytes = raw.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes.iter().all(|&b| ok_char(b));
        if valid { Ok(Self(raw.to_string())) } else { Err(HubIdError(raw.to_string())) }
    }
}

labhub_core::name_type!(
    /// The name of the Docker network users' servers join.
    NetworkName, error = NetworkNameError
);

impl NetworkName {
    /// Validates a network name against Docker's object-name grammar.
    pub fn parse(raw: &str) -> Result<Self, NetworkNameError> {
        let bytes = raw.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 64
            && bytes[0].is_ascii_alphanumeric()
            && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if valid { Ok(Self(raw.to_string())) } else { Err(NetworkNameError(raw.to_string())) }
    }
}

/// When the spawner may pull an image that is not on the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull only when the image is absent locally.
    #[default]
    IfMissing,
    /// Never pull: an absent image is an error (air-gapped sites).
    Never,
}

/// Where servers run: containers on this engine, or services of the Swarm it manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeMode {
    /// One container per server on this engine (`DockerSpawner`).
    #[default]
    Engine,
    /// One Swarm service with one task per server (`SwarmSpawner`); the engine is a manager.
    Swarm,
}

/// Where servers' homes live in Swarm mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwarmHomes {
    /// Local volumes: on one node only, so a multi-node swarm is refused.
    #[default]
    Local,
    /// A volume per home declared with NFS options in the service's mount spec
    /// (`swarm_nfs_addr`, `swarm_nfs_export`), so a home follows its owner to any node.
    Nfs,
    /// Local volumes, each user pinned to one node (recorded in Postgres, chosen at their
    /// first start among the manager and `swarm_nodes`), so their servers run where their
    /// files are.
    Pinned,
}

/// How images reach the nodes that run servers in Swarm mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwarmImages {
    /// labhub copies each image it runs from the manager to every node of `swarm_nodes`
    /// (`docker save` / `docker load` by content id) before the service is created.
    #[default]
    Copy,
    /// The nodes pull from a registry: services are created with an image's registry digest
    /// (`repo@sha256:…`), in `swarm_registry` (pushed there first) when that is set.
    Registry,
}

/// A Swarm node besides the manager that may run servers (`[[docker.swarm_nodes]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmNodeConfig {
    /// Its host name as Swarm knows it (`docker node ls`), used in `node.hostname==`.
    pub hostname: labhub_core::NodeName,
    /// Its engine's API (`unix:///…`, `tcp://…`): where images are copied to and where its
    /// servers' addresses are looked up.
    pub docker_host: String,
    /// `labhub swarm guard` runs on this node, keeping servers apart there with labhub's rules
    /// (the hub enforces them on its own node only); until this is set, the swarm is refused.
    #[serde(default)]
    pub isolated_by_admin: bool,
}

/// Settings of the Docker spawner (`[docker]` in the hub's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// Prefixes container, volume and network names and fills the `io.labhub.hub` label.
    pub hub_id: HubId,
    /// The bridge network users' servers join; created (inter-container traffic off) when missing.
    pub network: NetworkName,
    /// One volume per named server instead of one per user.
    pub volume_per_server: bool,
    /// Most processes (and threads) a server may run; stops fork bombs.
    pub pids_limit: u32,
    /// Whether an absent image may be pulled.
    pub pull_policy: PullPolicy,
    /// Longest time a pull (or, with `swarm_registry`, a push) may take before the start fails.
    #[serde(with = "humantime_serde")]
    pub pull_timeout: Duration,
    /// Keep servers off the host itself, link-local addresses (the cloud metadata service) and
    /// private ranges (iptables rules on the network's bridge); servers are refused while the
    /// rules cannot be enforced.
    pub isolate_host: bool,
    /// Private ranges servers may reach all the same (a site's package mirror, a shared
    /// database); link-local addresses are never allowed.
    pub allow_private: Vec<PrivateRange>,
    /// The name servers servers' DNS may reach (port 53) when they sit in a refused range;
    /// `None` (the default): the host's own, from `/etc/resolv.conf` (or systemd-resolved's
    /// upstream list when that names only a loopback stub), which Docker's resolver asks from
    /// the container's namespace. Port 53 of any other private or link-local address is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<std::net::Ipv4Addr>>,
    /// The iptables command: a name looked up on `PATH`, or a path (`iptables-legacy` where
    /// Docker uses the legacy backend).
    pub iptables: PathBuf,
    /// Let servers reach the internet; off makes the network `internal`.
    pub internet_access: bool,
    /// The longest pause between asking a starting server whether it answers yet (the
    /// first pauses are shorter: 10 ms, doubling up to this).
    #[serde(with = "humantime_serde")]
    pub readiness_interval: Duration,
    /// The port of the hub's single-user API on the users' network's gateway (what servers of
    /// JupyterHub's contract call); unset: not served. The one port of the host servers may reach.
    pub hub_api_port: Option<u16>,
    /// Containers on this engine (default) or services on its Swarm.
    pub mode: RuntimeMode,
    /// Swarm mode: the attachable overlay network servers join; created when missing.
    pub swarm_network: NetworkName,
    /// Swarm mode: the overlay's subnet (a /16 or larger: Swarm's default /24 runs out at
    /// about a hundred services).
    pub swarm_subnet: String,
    /// Swarm mode: encrypt the overlay's VXLAN traffic between nodes (IPsec).
    pub swarm_encrypted: bool,
    /// Swarm mode: where homes live.
    pub swarm_homes: SwarmHomes,
    /// Swarm mode with NFS homes: the NFS server's address.
    pub swarm_nfs_addr: String,
    /// Swarm mode with NFS homes: the exported folder holding one folder per home volume.
    pub swarm_nfs_export: String,
    /// Swarm mode: placement constraints every server gets (`node.labels.lab==yes`).
    pub swarm_constraints: Vec<String>,
    /// Swarm mode: the constraint a server with GPUs gets besides the generic resource.
    pub swarm_gpu_constraint: String,
    /// Swarm mode: the generic resource kind nodes advertise their GPUs as.
    pub swarm_gpu_resource: String,
    /// Swarm mode: how images reach the other nodes.
    pub swarm_images: SwarmImages,
    /// Swarm mode with `swarm_images = "registry"`: the lab's registry, where labhub pushes
    /// every image it runs so the nodes pull them from there; unset, images are run by the
    /// digest they came with, and those from no registry are refused.
    pub swarm_registry: Option<labhub_core::RegistryPath>,
    /// Swarm mode: the nodes besides the manager that may run servers.
    pub swarm_nodes: Vec<SwarmNodeConfig>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            hub_id: HubId("labhub".to_string()),
            network: NetworkName("labhub-users".to_string()),
            volume_per_server: false,
            pids_limit: 1024,
            pull_policy: PullPolicy::IfMissing,
            pull_timeout: Duration::from_secs(120),
            isolate_host: true,
            allow_private: Vec::new(),
            dns_servers: None,
            iptables: PathBuf::from("iptables"),
            internet_access: true,
            readiness_interval: Duration::from_millis(250),
            hub_api_port: None,
            mode: RuntimeMode::Engine,
            swarm_network: NetworkName("labhub-swarm".to_string()),
            swarm_subnet: "10.213.0.0/16".to_string(),
            swarm_encrypted: false,
            swarm_homes: SwarmHomes::Local,
            swarm_nfs_addr: String::new(),
            swarm_nfs_export: String::new(),
            swarm_constraints: Vec::new(),
            swarm_gpu_constraint: "node.labels.gpu==true".to_string(),
            swarm_gpu_resource: "NVIDIA-GPU".to_string(),
            swarm_images: SwarmImages::Copy,
            swarm_registry: None,
            swarm_nodes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_durations_round_trip() {
        let c: DockerConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, DockerConfig::default());
        let c: DockerConfig = serde_json::from_str(
            r#"{"hub_id": "lab2", "pull_timeout": "5m", "readiness_interval": "100ms", "pull_policy": "never"}"#,
        )
        .unwrap();
        assert_eq!(c.hub_id.as_str(), "lab2");
        assert_eq!(c.pull_timeout, Duration::from_secs(300));
        assert_eq!(c.readiness_interval, Duration::from_millis(100));
        assert_eq!(c.pull_policy, PullPolicy::Never);
        let back: DockerConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_fields_and_bad_names_are_refused() {
        assert!(serde_json::from_str::<DockerConfig>(r#"{"hubid": "x"}"#).is_err());
        for bad in ["", "Lab", "a_b", "-a", "a/b", &"a".repeat(33)] {
            assert!(HubId::parse(bad).is_err(), "{bad}");
        }
        for good in ["labhub", "lab-2.prod", "0"] {
            assert!(HubId::parse(good).is_ok(), "{good}");
        }
        assert!(NetworkName::parse("labhub_users-1.x").is_ok());
        assert!(NetworkName::parse("_x").is_err());
        assert!(NetworkName::parse("a b").is_err());
    }

    #[test]
    fn names_are_plain_strings_checked_when_read() {
        let id = HubId::parse("lab2").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""lab2""#);
        assert_eq!((id.to_string(), format!("{id:?}")), ("lab2".to_string(), r#""lab2""#.to_string()));
        let e = serde_json::from_str::<DockerConfig>(r#"{"hub_id": "Lab"}"#).unwrap_err().to_string();
        assert!(e.contains("'Lab' is not a hub id: use 1 to 32 characters"), "{e}");
        let e = serde_json::from_str::<NetworkName>(r#""a b""#).unwrap_err().to_string();
        assert!(e.contains("'a b' is not a Docker network name"), "{e}");
    }
}
