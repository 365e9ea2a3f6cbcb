//! The users' network, and keeping its containers away from the host.
//!
//! Servers join one bridge network with inter-container traffic off
//! (`com.docker.network.bridge.enable_icc=false`): Docker then drops forwarded traffic
//! between two containers of the bridge, so no server can reach another, and its isolation
//! chains keep them off every other Docker network. Nothing is published; the hub reaches a
//! server at its address on the bridge.
//!
//! What ICC does not cover is the host itself: packets from a container to any address of
//! the host (the bridge's gateway, the host's LAN address, where Postgres or the hub might
//! listen) are not forwarded but delivered locally, through the `INPUT` chain. So when
//! `isolate_host` is on, one rule on that chain rejects every *new* connection arriving on
//! the bridge's interface. Replies to connections the hub opened to a server are
//! `ESTABLISHED`, not `NEW`, and still pass; so do DNS lookups, which Docker's embedded
//! resolver answers inside the container's own network namespace. The bridge interface is
//! named by us (`lh-` and a hash of the network name, within Linux's 15 characters) so the
//! rule can name it before any container exists. The rule is checked with `iptables -C`
//! before it is inserted, so repeating it is harmless. Without `iptables` or the right to
//! run it (the hub not root), the spawner logs one warning and carries on: servers still
//! cannot reach each other, but can reach the host's services.
//!
//! The network is IPv4 only (IPv6 off), so no `ip6tables` rule is needed.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{NetworkCreateRequest, NetworkInspect};
use bollard::query_parameters::InspectNetworkOptions;
use labhub_core::spawner::SpawnError;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::config::{DockerConfig, NetworkName};
use crate::error::{is_status, runtime_error};
use crate::naming::LABEL_HUB;

const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";

/// The interface name we give the network's bridge: `lh-` and 12 hex digits (15 characters).
pub(crate) fn bridge_name(network: &NetworkName) -> String {
    let digest = hex::encode(Sha256::digest(network.as_str().as_bytes()));
    format!("lh-{}", &digest[..12])
}

/// Makes sure the network exists with the isolation we require; returns its bridge interface.
pub(crate) async fn ensure_network(docker: &Docker, config: &DockerConfig) -> Result<String, SpawnError> {
    let name = config.network.as_str();
    match docker.inspect_network(name, None::<InspectNetworkOptions>).await {
        Ok(net) => return checked_bridge(&net, config),
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(runtime_error(&format!("inspecting network {name}"), e)),
    }
    let request = NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("bridge".into()),
        internal: Some(!config.internet_access),
        enable_ipv6: Some(false),
        attachable: Some(false),
        options: Some(HashMap::from([
            (OPT_ICC.to_string(), "false".to_string()),
            (OPT_BRIDGE_NAME.to_string(), bridge_name(&config.network)),
        ])),
        labels: Some(HashMap::from([(LABEL_HUB.to_string(), config.hub_id.to_string())])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => tracing::info!(network = name, "created the users' network"),
        // Another hub process created it in the meantime: check theirs like any other.
        Err(e) if is_status(&e, 409) => {}
        Err(e) => return Err(runtime_error(&format!("creating network {name}"), e)),
    }
    let net = docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
        .map_err(|e| runtime_error(&format!("inspecting network {name}"), e))?;
    checked_bridge(&net, config)
}

/// Refuses a network that would let servers talk to each other or reach the internet
/// against the configuration; returns the bridge interface name.
fn checked_bridge(net: &NetworkInspect, config: &DockerConfig) -> Result<String, SpawnError> {
    let name = config.network.as_str();
    let fix = format!("remove it (docker network rm {name}) and labhub creates it correctly");
    if net.driver.as_deref() != Some("bridge") {
        return Err(SpawnError::Runtime(format!("network {name} exists but is not a bridge network; {fix}")));
    }
    let options = net.options.clone().unwrap_or_default();
    if options.get(OPT_ICC).map(String::as_str) != Some("false") {
        return Err(SpawnError::Runtime(format!(
            "network {name} exists but lets containers talk to each other (enable_icc is not false); {fix}"
        )));
    }
    if net.internal.unwrap_or(false) == config.internet_access {
        let want = if config.internet_access { "with" } else { "without" };
        return Err(SpawnError::Runtime(format!(
            "network {name} exists but internet_access asks for servers {want} internet access; {fix}"
        )));
    }
    Ok(match options.get(OPT_BRIDGE_NAME) {
        Some(bridge) => bridge.clone(),
        // Docker's own naming for user-defined bridges.
        None => format!("br-{}", net.id.as_deref().unwrap_or_default().get(..12).unwrap_or_default()),
    })
}

/// Why the host-isolation rule could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct IptablesUnavailable(String);

fn isolation_rule(bridge: &str) -> Vec<String> {
    [
        "INPUT",
        "-i",
        bridge,
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-m",
        "comment",
        "--comment",
        "labhub: user servers may not open connections to the host",
        "-j",
        "REJECT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn iptables(op: &str, rule: &[String]) -> Result<std::process::Output, IptablesUnavailable> {
    // `-w`: wait for the xtables lock instead of failing while Docker edits its own rules.
    Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(rule)
        .output()
        .await
        .map_err(|e| IptablesUnavailable(format!("cannot run iptables: {e}")))
}

/// Adds the host-isolation rule for `bridge` unless it is there already.
pub(crate) async fn ensure_host_isolation(bridge: &str) -> Result<(), IptablesUnavailable> {
    let rule = isolation_rule(bridge);
    let check = iptables("-C", &rule).await?;
    match check.status.code() {
        Some(0) => return Ok(()),
        // 1: the rule is not there. Anything else: iptables itself failed.
        Some(1) => {}
        _ => return Err(IptablesUnavailable(String::from_utf8_lossy(&check.stderr).trim().to_string())),
    }
    let insert = iptables("-I", &rule).await?;
    if insert.status.success() {
        tracing::info!(bridge, "servers on this bridge can no longer open connections to the host");
        Ok(())
    } else {
        Err(IptablesUnavailable(String::from_utf8_lossy(&insert.stderr).trim().to_string()))
    }
}

/// Deletes the host-isolation rule for `bridge` (every copy of it).
pub(crate) async fn remove_host_isolation(bridge: &str) -> Result<(), IptablesUnavailable> {
    let rule = isolation_rule(bridge);
    while iptables("-C", &rule).await?.status.success() {
        let delete = iptables("-D", &rule).await?;
        if !delete.status.success() {
            return Err(IptablesUnavailable(String::from_utf8_lossy(&delete.stderr).trim().to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_linux_interface_names() {
        let a = bridge_name(&NetworkName::parse("labhub-users").unwrap());
        let b = bridge_name(&NetworkName::parse("labhub-users2").unwrap());
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("lh-"));
        assert_ne!(a, b);
    }

    #[test]
    fn an_existing_network_must_isolate() {
        let config = DockerConfig::default();
        let good = NetworkInspect {
            id: Some("0123456789abcdef".into()),
            driver: Some("bridge".into()),
            internal: Some(false),
            options: Some(HashMap::from([(OPT_ICC.to_string(), "false".to_string())])),
            ..Default::default()
        };
        assert_eq!(checked_bridge(&good, &config).unwrap(), "br-0123456789ab");
        let mut icc = good.clone();
        icc.options = None;
        assert!(checked_bridge(&icc, &config).is_err());
        let mut internal = good.clone();
        internal.internal = Some(true);
        assert!(checked_bridge(&internal, &config).is_err());
        let mut overlay = good;
        overlay.driver = Some("overlay".into());
        assert!(checked_bridge(&overlay, &config).is_err());
    }
}
