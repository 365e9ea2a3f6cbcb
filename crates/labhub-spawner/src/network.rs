//! The users' network, and keeping its containers away from the host.
//!
//! Servers join one bridge network with inter-container traffic off
//! (`com.docker.network.bridge.enable_icc=false`): Docker then drops forwarded traffic
//! between two containers of the bridge, so no server can reach another, and its isolation
//! chains keep them off every other Docker network. Nothing is published; the hub reaches a
//! server at its address on the bridge.
//!
//! What ICC does not cover — the host itself, link-local addresses, the site's private
//! networks — the firewall rules of `firewall` do, on the bridge's interface. We name that
//! interface (`lh-` and a hash of the network name, within Linux's 15 characters) so the rules
//! can name it before any container exists.
//!
//! The network is IPv4 only, and an existing one with IPv6 on is refused. Docker gives the
//! containers of an IPv4-only network no IPv6 at all (it turns IPv6 off on their interface),
//! so there is nothing to filter; on an IPv6 network it adds `ip6tables` rules only when its
//! experimental IPv6 firewalling is on, so neither ICC nor our rules would hold for IPv6.
//! Refusing is the one answer that is closed on every engine.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bollard::Docker;
use bollard::models::{NetworkCreateRequest, NetworkInspect};
use bollard::query_parameters::InspectNetworkOptions;
use labhub_core::spawner::SpawnError;
use sha2::{Digest, Sha256};

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

/// The users' network as the host sees it.
#[derive(Debug, Clone)]
pub(crate) struct UsersNetwork {
    /// Its bridge interface.
    pub bridge: String,
    /// The host's address on it (where the hub's single-user API listens), if the engine says.
    pub gateway: Option<Ipv4Addr>,
}

fn users_network(net: &NetworkInspect, config: &DockerConfig) -> Result<UsersNetwork, SpawnError> {
    let bridge = checked_bridge(net, config)?;
    let gateway = net
        .ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .and_then(|c| c.iter().find_map(|c| c.gateway.as_deref()?.parse::<Ipv4Addr>().ok()));
    Ok(UsersNetwork { bridge, gateway })
}

/// Makes sure the network exists with the isolation we require; returns its bridge interface
/// and gateway.
pub(crate) async fn ensure_network(docker: &Docker, config: &DockerConfig) -> Result<UsersNetwork, SpawnError> {
    let name = config.network.as_str();
    match docker.inspect_network(name, None::<InspectNetworkOptions>).await {
        Ok(net) => return users_network(&net, config),
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
    users_network(&net, config)
}

/// Refuses a network that would let servers talk to each other, use IPv6 or reach the
/// internet against the configuration; returns the bridge interface name.
fn checked_bridge(net: &NetworkInspect, config: &DockerConfig) -> Result<String, SpawnError> {
    let name = config.network.as_str();
    let fix = format!("remove it (docker network rm {name}) and labhub creates it correctly");
    if net.driver.as_deref() != Some("bridge") {
        return Err(SpawnError::Isolation(format!("network {name} exists but is not a bridge network; {fix}")));
    }
    let options = net.options.clone().unwrap_or_default();
    if options.get(OPT_ICC).map(String::as_str) != Some("false") {
        return Err(SpawnError::Isolation(format!(
            "network {name} exists but lets containers talk to each other (enable_icc is not false); {fix}"
        )));
    }
    if net.enable_ipv6.unwrap_or(false) {
        return Err(SpawnError::Isolation(format!(
            "network {name} exists with IPv6 on, which the hub's firewall rules and Docker's separation of \
             containers do not cover; {fix} (IPv4 only)"
        )));
    }
    if net.internal.unwrap_or(false) == config.internet_access {
        let want = if config.internet_access { "with" } else { "without" };
        let why = format!("network {name} exists but internet_access asks for servers {want} internet access; {fix}");
        // Only a network more open than asked for is a matter of isolation.
        return Err(if config.internet_access { SpawnError::Runtime(why) } else { SpawnError::Isolation(why) });
    }
    Ok(match options.get(OPT_BRIDGE_NAME) {
        Some(bridge) => bridge.clone(),
        // Docker's own naming for user-defined bridges.
        None => format!("br-{}", net.id.as_deref().unwrap_or_default().get(..12).unwrap_or_default()),
    })
}

/// Listens at `gateway:port` (`port` 0: any free one) for the hub's single-user API: the
/// listener and the address it got.
pub(crate) async fn listen_on_gateway(
    gateway: std::net::Ipv4Addr,
    port: u16,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddrV4), SpawnError> {
    let listener = tokio::net::TcpListener::bind((gateway, port))
        .await
        .map_err(|e| SpawnError::Runtime(format!("cannot listen on {gateway}:{port}: {e}")))?;
    match listener.local_addr() {
        Ok(std::net::SocketAddr::V4(bound)) => Ok((listener, bound)),
        _ => Err(SpawnError::Runtime(format!("{gateway}:{port} has no IPv4 local address"))),
    }
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
        let mut ipv6 = good.clone();
        ipv6.enable_ipv6 = Some(true);
        let refused = checked_bridge(&ipv6, &config).unwrap_err();
        assert!(matches!(&refused, SpawnError::Isolation(m) if m.contains("IPv6 on")), "{refused}");
        let mut overlay = good;
        overlay.driver = Some("overlay".into());
        assert!(checked_bridge(&overlay, &config).is_err());
    }
}
