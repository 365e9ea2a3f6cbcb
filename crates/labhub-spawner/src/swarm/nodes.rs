//! The swarm's nodes: this engine a manager; a multi-node swarm only when homes stay with
//! their owners and the hub can reach where servers run; the other nodes' engines
//! (`swarm_nodes`), where images are copied and their servers' addresses looked up.

use bollard::Docker;
use bollard::models::{LocalNodeState, NodeSpecAvailabilityEnum, NodeState};
use labhub_core::NodeName;
use labhub_core::spawner::SpawnError;

use crate::config::{DockerConfig, SwarmHomes};
use crate::error::runtime_error;

/// Refuses an engine that cannot create services; returns its node's id and host name.
pub(crate) async fn check_manager(docker: &Docker) -> Result<(String, NodeName), SpawnError> {
    let info = docker.info().await.map_err(|e| runtime_error("asking the engine about its swarm", e))?;
    let swarm = info.swarm.unwrap_or_default();
    if swarm.local_node_state != Some(LocalNodeState::ACTIVE) {
        return Err(SpawnError::Invalid(
            "[docker] mode = \"swarm\" but this engine is not in a swarm: run `docker swarm init` (or join one as a \
             manager), or set mode = \"engine\""
                .into(),
        ));
    }
    if !swarm.control_available.unwrap_or(false) {
        return Err(SpawnError::Invalid(
            "[docker] mode = \"swarm\" but this engine is a worker: point DOCKER_HOST at a manager".into(),
        ));
    }
    let id = swarm.node_id.unwrap_or_default();
    let node = docker.inspect_node(&id).await.map_err(|e| runtime_error("inspecting this manager's node", e))?;
    let raw = node.description.and_then(|d| d.hostname).unwrap_or_default();
    let hostname = NodeName::parse(&raw)
        .map_err(|e| SpawnError::Invalid(format!("this manager's host name {raw:?} cannot be used: {e}")))?;
    Ok((id, hostname))
}

/// The swarm's nodes that are up and take tasks, by host name.
pub(crate) async fn ready_nodes(docker: &Docker) -> Result<Vec<NodeName>, SpawnError> {
    let nodes = docker.list_nodes(None).await.map_err(|e| runtime_error("listing the swarm's nodes", e))?;
    Ok(nodes
        .into_iter()
        .filter(|n| n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY))
        .filter(|n| n.spec.as_ref().and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::ACTIVE))
        .filter_map(|n| NodeName::parse(&n.description?.hostname?).ok())
        .collect())
}

/// The host name of the node with id `id`.
pub(crate) async fn hostname_of(docker: &Docker, id: &str) -> Result<Option<NodeName>, SpawnError> {
    let node = docker.inspect_node(id).await.map_err(|e| runtime_error(&format!("inspecting node {id}"), e))?;
    Ok(node.description.and_then(|d| d.hostname).and_then(|h| NodeName::parse(&h).ok()))
}

/// Connects to the engine of `node` as `swarm_nodes` names it.
pub(crate) async fn engine_of(config: &DockerConfig, node: &NodeName) -> Result<Docker, SpawnError> {
    let entry = config.swarm_nodes.iter().find(|n| &n.hostname == node).ok_or_else(|| {
        SpawnError::Invalid(format!("node {node} is not in [[docker.swarm_nodes]]: the hub cannot reach its engine"))
    })?;
    let fail = |e: bollard::errors::Error| {
        runtime_error(&format!("reaching node {node}'s engine at {}", entry.docker_host), e)
    };
    Docker::connect_with_host(&entry.docker_host).map_err(fail)?.negotiate_version().await.map_err(fail)
}

/// Refuses a multi-node swarm where a task could get an empty home, run where the hub does
/// not reach it, or lack its image; says everything to configure at once. Servers pinned to
/// one node by `swarm_constraints` pass.
pub(crate) async fn check_cluster(docker: &Docker, config: &DockerConfig) -> Result<(), SpawnError> {
    let nodes = docker.list_nodes(None).await.map_err(|e| runtime_error("listing the swarm's nodes", e))?;
    let names: Vec<NodeName> =
        nodes.into_iter().filter_map(|n| NodeName::parse(&n.description?.hostname?).ok()).collect();
    refuse_multi_node(&names, config)
}

fn refuse_multi_node(nodes: &[NodeName], config: &DockerConfig) -> Result<(), SpawnError> {
    if nodes.len() <= 1 {
        return Ok(());
    }
    let one_node = config.swarm_constraints.iter().any(|c| {
        let c = c.replace(' ', "");
        c.starts_with("node.hostname==") || c.starts_with("node.id==")
    });
    if one_node {
        return Ok(());
    }
    let mut missing = Vec::new();
    match config.swarm_homes {
        SwarmHomes::Local => missing.push(
            "homes: a local volume exists on one node only (a task placed on another would start with an empty \
             home): set [docker] swarm_homes = \"pinned\" (each user kept on one node, recorded by the hub) or \
             \"nfs\" with swarm_nfs_addr and swarm_nfs_export"
                .to_string(),
        ),
        SwarmHomes::Nfs => missing.push(
            "reach: with NFS homes a task may run on any node, but the hub reaches only the nodes it places \
             servers on: use swarm_homes = \"pinned\" with the nodes in [[docker.swarm_nodes]]"
                .to_string(),
        ),
        SwarmHomes::Pinned => {}
    }
    for listed in &config.swarm_nodes {
        if !listed.isolated_by_admin {
            missing.push(format!(
                "isolation: the hub keeps servers apart (from each other, the host and private ranges) on its own \
                 node only: apply labhub's rules on {} (README, \"Several nodes\") and set isolated_by_admin = true \
                 in its [[docker.swarm_nodes]] table",
                listed.hostname
            ));
        }
        if !nodes.contains(&listed.hostname) {
            missing.push(format!(
                "[[docker.swarm_nodes]] names {}, which is not a node of this swarm (its nodes: {})",
                listed.hostname,
                nodes.iter().map(NodeName::as_str).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(SpawnError::Invalid(format!(
        "this swarm has {} nodes; or pin every server to one node with swarm_constraints (e.g. \
         \"node.hostname=={}\"), or configure — {}",
        nodes.len(),
        nodes[0],
        missing.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SwarmNodeConfig;

    fn n(s: &str) -> NodeName {
        NodeName::parse(s).unwrap()
    }

    #[test]
    fn several_nodes_need_homes_that_stay_and_nodes_the_hub_reaches() {
        let mut config = DockerConfig::default();
        let nodes = [n("lab1"), n("lab2"), n("lab3")];
        assert!(refuse_multi_node(&nodes[..1], &config).is_ok());
        let e = refuse_multi_node(&nodes, &config).unwrap_err().to_string();
        assert!(e.contains("3 nodes") && e.contains("swarm_homes = \"pinned\"") && e.contains("\"nfs\""), "{e}");
        assert!(e.contains("node.hostname==lab1"), "{e}");
        config.swarm_homes = SwarmHomes::Nfs;
        let e = refuse_multi_node(&nodes, &config).unwrap_err().to_string();
        assert!(e.contains("reach:"), "{e}");
        config.swarm_homes = SwarmHomes::Pinned;
        assert!(refuse_multi_node(&nodes, &config).is_ok());
        let node = |name: &str, isolated_by_admin| SwarmNodeConfig {
            hostname: n(name),
            docker_host: format!("unix:///run/labhub/{name}.sock"),
            isolated_by_admin,
        };
        config.swarm_nodes = vec![node("lab2", false)];
        let e = refuse_multi_node(&nodes, &config).unwrap_err().to_string();
        assert!(e.contains("isolation:") && e.contains("rules on lab2") && e.contains("isolated_by_admin"), "{e}");
        config.swarm_nodes = vec![node("lab2", true), node("lab9", true)];
        let e = refuse_multi_node(&nodes, &config).unwrap_err().to_string();
        assert!(e.contains("names lab9, which is not a node") && !e.contains("homes:"), "{e}");
        config.swarm_nodes.pop();
        assert!(refuse_multi_node(&nodes, &config).is_ok());
        config.swarm_homes = SwarmHomes::Local;
        config.swarm_nodes.clear();
        config.swarm_constraints = vec!["node.hostname == lab1".into()];
        assert!(refuse_multi_node(&nodes, &config).is_ok());
    }
}
