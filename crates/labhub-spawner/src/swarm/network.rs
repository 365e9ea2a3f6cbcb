//! The overlay servers join in Swarm mode, and keeping its tasks apart.
//!
//! One labhub-owned overlay, attachable, IPv4 only, on `swarm_subnet` (a /16 by default:
//! Swarm's default /24 runs out at about a hundred services), with IPsec between nodes when
//! `swarm_encrypted`. What keeps tasks apart on a node (measured on Docker 20.10):
//! - **Each other**: an overlay has no "inter-container traffic off" switch, so two tasks
//!   on it reach each other. The overlay's bridge (`br0`) lives in a namespace of its own
//!   (`/var/run/docker/netns/1-<network id>`); an nftables `bridge` table there drops every
//!   IPv4/IPv6 frame the bridge would forward between its ports (tasks, the VXLAN port), so
//!   no task reaches another, on this node or beyond. The namespace exists only while a
//!   task of the network runs on the node, so the table is put in place after every start
//!   (before the server counts as ready) and by every isolation check. It is enforced on the
//!   node the hub runs on (the gateway mode's only node); other nodes are not covered.
//! - **The host, link-local and private ranges**: a task leaves its node through the node's
//!   `docker_gwbridge` (ICC off there), so the engine mode's firewall rules (`firewall`) are
//!   applied to that interface. They cover every Swarm task of the node, not only labhub's.
//! - The hub reaches a task at its `docker_gwbridge` address: a
//!   process on the host cannot reach an overlay address at all (no route; only containers
//!   attached to the overlay can), and the gateway bridge answers new connections from the
//!   host while the rules above refuse those from the task.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest, NetworkInspect};
use bollard::query_parameters::InspectNetworkOptions;
use labhub_core::spawner::SpawnError;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::config::DockerConfig;
use crate::error::{is_status, runtime_error};
use crate::firewall::Firewall;
use crate::naming::LABEL_HUB;

/// The bridge a Swarm node's tasks leave it through.
pub(crate) const GATEWAY_BRIDGE: &str = "docker_gwbridge";
/// Where Docker keeps the network namespaces of overlays (its default exec root).
const NETNS_DIR: &str = "/var/run/docker/netns";
/// Longest wait for a new overlay's allocation (see `allocated`).
const ALLOCATION_WAIT: Duration = Duration::from_secs(5);
/// The overlay option that turns on IPsec between nodes.
const OPT_ENCRYPTED: &str = "encrypted";
/// The nftables table of ours in the overlay's namespace: nothing forwarded between tasks.
/// Its chain runs at the bridge family's `filter` priority (-200), ahead of `br_netfilter`'s
/// forward hook (priority 0, registered when the namespace's first bridge appears). At 0 it
/// would tie with that hook, and a chain made before `br0` (the guard can come between the
/// namespace's creation and its bridge's) is then ordered after it: that hook hands IP frames
/// to iptables and resumes past priority 0, so the chain is never consulted and tasks reach
/// each other (seen on a second node). The table is deleted and made anew in one transaction
/// (atomic: no frame passes in between), so a chain left at another priority is replaced,
/// not refused.
const OVERLAY_RULES: &str = "add table bridge labhub
delete table bridge labhub
add table bridge labhub
add chain bridge labhub forward { type filter hook forward priority filter; policy accept; }
add rule bridge labhub forward ether type { ip, ip6 } counter drop comment \"labhub: servers may not reach each other\"
";

/// Checks that `raw` is an IPv4 subnet of a /16 or larger; why not, in words for an admin.
pub fn check_swarm_subnet(raw: &str) -> Result<(), String> {
    let Some((addr, prefix)) = raw.split_once('/') else {
        return Err(format!("'{raw}' is not a subnet: write it as address/prefix, e.g. 10.213.0.0/16"));
    };
    if addr.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(format!("'{raw}' is not an IPv4 subnet"));
    }
    match prefix.parse::<u8>() {
        Ok(p) if (8..=16).contains(&p) => Ok(()),
        _ => Err(format!(
            "'{raw}' must be a /16 or larger (/8 to /16): Swarm gives every service's task an address of it"
        )),
    }
}

/// Makes sure the overlay exists as configured; returns its id.
pub(crate) async fn ensure_overlay(docker: &Docker, config: &DockerConfig) -> Result<String, SpawnError> {
    let name = config.swarm_network.as_str();
    match allocated(docker, name).await {
        Ok(net) => return checked_overlay(&net, config),
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(runtime_error(&format!("inspecting network {name}"), e)),
    }
    check_swarm_subnet(&config.swarm_subnet).map_err(SpawnError::Invalid)?;
    let mut options = HashMap::new();
    if config.swarm_encrypted {
        options.insert(OPT_ENCRYPTED.to_string(), String::new());
    }
    let request = NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("overlay".into()),
        attachable: Some(true),
        // The hub reaches tasks through docker_gwbridge, which an internal overlay's tasks
        // do not join (`internet_access = false` is refused in Swarm mode).
        internal: Some(false),
        enable_ipv6: Some(false),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig { subnet: Some(config.swarm_subnet.clone()), ..Default::default() }]),
            ..Default::default()
        }),
        options: Some(options),
        labels: Some(HashMap::from([(LABEL_HUB.to_string(), config.hub_id.to_string())])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => tracing::info!(network = name, subnet = %config.swarm_subnet, "created the servers' overlay"),
        Err(e) if is_status(&e, 409) => {}
        Err(e) => return Err(runtime_error(&format!("creating the overlay {name}"), e)),
    }
    let net = allocated(docker, name).await.map_err(|e| runtime_error(&format!("inspecting network {name}"), e))?;
    checked_overlay(&net, config)
}

/// The network as the manager holds it, once its allocator has run: a moment after its
/// creation a swarm network is listed with no driver yet (seen under load on Docker 20.10).
async fn allocated(docker: &Docker, name: &str) -> Result<NetworkInspect, bollard::errors::Error> {
    let mut pause = Duration::from_millis(10);
    let deadline = tokio::time::Instant::now() + ALLOCATION_WAIT;
    loop {
        let net = docker.inspect_network(name, None::<InspectNetworkOptions>).await?;
        if net.driver.as_deref().is_some_and(|d| !d.is_empty()) || tokio::time::Instant::now() >= deadline {
            return Ok(net);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Refuses an overlay that is not the one configured; returns its id.
fn checked_overlay(net: &NetworkInspect, config: &DockerConfig) -> Result<String, SpawnError> {
    let name = config.swarm_network.as_str();
    let fix = format!("remove it (docker network rm {name}) and labhub creates it as configured");
    if net.driver.as_deref() != Some("overlay") || !net.attachable.unwrap_or(false) {
        return Err(SpawnError::Isolation(format!(
            "network {name} exists but is not an attachable overlay (driver {}, attachable {}); {fix}",
            net.driver.as_deref().unwrap_or("unknown"),
            net.attachable.unwrap_or(false)
        )));
    }
    if net.enable_ipv6.unwrap_or(false) {
        return Err(SpawnError::Isolation(format!("network {name} exists with IPv6 on; {fix}")));
    }
    let encrypted = net.options.as_ref().is_some_and(|o| o.contains_key(OPT_ENCRYPTED));
    if config.swarm_encrypted && !encrypted {
        return Err(SpawnError::Isolation(format!(
            "network {name} exists unencrypted but swarm_encrypted is on; {fix}"
        )));
    }
    net.id.clone().ok_or_else(|| SpawnError::Runtime(format!("network {name} has no id")))
}

/// Keeps tasks off the host and the ranges they may not reach (the firewall rules on
/// `docker_gwbridge`), but for the hub's single-user API at `hub_api` when given; returns the
/// rules added.
pub(crate) async fn enforce_gateway_rules(
    config: &DockerConfig,
    hub_api: Option<SocketAddrV4>,
) -> Result<Vec<String>, SpawnError> {
    Firewall::new(config, GATEWAY_BRIDGE, hub_api).enforce().await.map_err(|e| SpawnError::Isolation(e.to_string()))
}

/// This node's `docker_gwbridge` gateway: the host's address where its tasks reach it. The
/// engine makes that bridge with the node's first task; before it, the hub makes it as the
/// engine would (and as Docker's documentation makes it by hand: ICC off, masquerading on),
/// so its single-user API has an address from the start.
pub(crate) async fn gateway_address(docker: &Docker) -> Result<Ipv4Addr, SpawnError> {
    let inspect = || docker.inspect_network(GATEWAY_BRIDGE, None::<InspectNetworkOptions>);
    let net = match inspect().await {
        Err(e) if is_status(&e, 404) => {
            let options = HashMap::from([
                ("com.docker.network.bridge.name".to_string(), GATEWAY_BRIDGE.to_string()),
                ("com.docker.network.bridge.enable_icc".to_string(), "false".to_string()),
                ("com.docker.network.bridge.enable_ip_masquerade".to_string(), "true".to_string()),
            ]);
            let request = NetworkCreateRequest {
                name: GATEWAY_BRIDGE.to_string(),
                driver: Some("bridge".into()),
                options: Some(options),
                ..Default::default()
            };
            match docker.create_network(request).await {
                Ok(_) => tracing::info!("created docker_gwbridge, as the engine would with the node's first task"),
                // Made meanwhile by the engine or another hub: as good.
                Err(e) if is_status(&e, 409) => {}
                Err(e) => return Err(runtime_error("creating docker_gwbridge", e)),
            }
            inspect().await
        }
        other => other,
    };
    let net = net.map_err(|e| runtime_error("inspecting docker_gwbridge", e))?;
    net.ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .iter()
        .find_map(|c| c.gateway.as_deref()?.parse().ok())
        .ok_or_else(|| SpawnError::Runtime("docker_gwbridge has no IPv4 gateway".into()))
}

/// The namespace of the overlay's bridge on this node, while a task of it runs here.
fn overlay_namespace(network_id: &str) -> Option<PathBuf> {
    let path = PathBuf::from(NETNS_DIR).join(format!("1-{}", network_id.get(..10)?));
    path.exists().then_some(path)
}

/// Puts the rules that keep the overlay's tasks apart in place on this node (idempotent: the
/// table is made anew in one transaction). `false` when no task of the overlay runs
/// here (there is nothing to keep apart).
pub(crate) async fn isolate_overlay(network_id: &str) -> Result<bool, SpawnError> {
    let Some(ns) = overlay_namespace(network_id) else { return Ok(false) };
    let fail = |why: String| {
        SpawnError::Isolation(format!("cannot keep the overlay's servers apart (nftables in {}): {why}", ns.display()))
    };
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("running nsenter nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // An nsenter that cannot enter (the namespace's file made but not mounted yet, or
        // torn down) exits without reading: its status and stderr below say why, not the
        // broken pipe.
        if let Err(e) = stdin.write_all(OVERLAY_RULES.as_bytes()).await {
            tracing::debug!(error = %e, "nsenter did not take the overlay's rules");
        }
    }
    let out = child.wait_with_output().await.map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if namespace_gone(&why) {
            // The overlay's last task here just left: the engine unmounted the namespace and
            // its file is about to go; or its first is arriving: the engine makes the file,
            // then mounts the namespace on it. Nothing runs in it to keep apart; a task's start
            // fills its namespace before the server counts as ready (on other nodes, the
            // guard's next look does).
            return Ok(false);
        }
        return Err(fail(why));
    }
    Ok(true)
}

/// Whether nsenter failed because the file no longer holds a namespace (`setns` answers
/// EINVAL for anything else), as opposed to lacking the right to enter it.
fn namespace_gone(nsenter_stderr: &str) -> bool {
    nsenter_stderr.contains("reassociate to namespace") && nsenter_stderr.contains("Invalid argument")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_torn_down_is_nothing_to_isolate_but_a_refused_entry_is_an_error() {
        assert!(namespace_gone("nsenter: reassociate to namespace 'ns/net' failed: Invalid argument"));
        assert!(!namespace_gone("nsenter: reassociate to namespace 'ns/net' failed: Operation not permitted"));
        assert!(!namespace_gone("Error: Could not process rule: No such file or directory"));
    }

    #[test]
    fn subnets_must_be_large_ipv4_ranges() {
        assert!(check_swarm_subnet("10.213.0.0/16").is_ok());
        assert!(check_swarm_subnet("10.0.0.0/8").is_ok());
        assert!(check_swarm_subnet("10.0.0.0/24").unwrap_err().contains("a /16 or larger"));
        assert!(check_swarm_subnet("fd00::/16").is_err());
        assert!(check_swarm_subnet("10.0.0.0").is_err());
    }

    #[test]
    fn an_existing_overlay_must_be_as_configured() {
        let mut config = DockerConfig::default();
        let good = NetworkInspect {
            id: Some("pbdjmxcmoa74odzhmf9gwaqdq".into()),
            driver: Some("overlay".into()),
            attachable: Some(true),
            ..Default::default()
        };
        assert_eq!(checked_overlay(&good, &config).unwrap(), "pbdjmxcmoa74odzhmf9gwaqdq");
        let mut bridge = good.clone();
        bridge.driver = Some("bridge".into());
        assert!(matches!(checked_overlay(&bridge, &config), Err(SpawnError::Isolation(_))));
        config.swarm_encrypted = true;
        assert!(checked_overlay(&good, &config).unwrap_err().to_string().contains("unencrypted"));
        let mut encrypted = good;
        encrypted.options = Some(HashMap::from([(OPT_ENCRYPTED.to_string(), String::new())]));
        assert!(checked_overlay(&encrypted, &config).is_ok());
    }
}
