//! What the swarm must be for the hub to run servers on it: this engine a manager, and a
//! multi-node swarm only when homes follow their owners and the hub can reach other nodes.

use bollard::Docker;
use bollard::models::LocalNodeState;
use labhub_core::spawner::SpawnError;

use crate::config::{DockerConfig, SwarmHomes};
use crate::error::runtime_error;

/// Refuses an engine that cannot create services.
pub(crate) async fn check_manager(docker: &Docker) -> Result<(), SpawnError> {
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
    Ok(())
}

/// Refuses a multi-node swarm where a task on another node would get an empty home or be
/// out of the hub's reach (and its isolation); says what to configure. Servers pinned to
/// one node (a `node.hostname==`/`node.id==` constraint) pass.
pub(crate) async fn check_cluster(docker: &Docker, config: &DockerConfig) -> Result<(), SpawnError> {
    let info = docker.info().await.map_err(|e| runtime_error("asking the engine about its swarm", e))?;
    let nodes = info.swarm.and_then(|s| s.nodes).unwrap_or(1);
    refuse_multi_node(nodes, config)
}

fn refuse_multi_node(nodes: i64, config: &DockerConfig) -> Result<(), SpawnError> {
    if nodes <= 1 {
        return Ok(());
    }
    let pinned = config.swarm_constraints.iter().any(|c| {
        let c = c.replace(' ', "");
        c.starts_with("node.hostname==") || c.starts_with("node.id==")
    });
    if config.swarm_homes == SwarmHomes::Local && !pinned {
        return Err(SpawnError::Invalid(format!(
            "this swarm has {nodes} nodes, and a home on a local volume exists on one node only (a task placed on \
             another would start with an empty home): set [docker] swarm_homes = \"nfs\" with swarm_nfs_addr and \
             swarm_nfs_export, or pin servers to one node with swarm_constraints (e.g. \"node.hostname==lab1\")"
        )));
    }
    if !pinned {
        return Err(SpawnError::Invalid(format!(
            "this swarm has {nodes} nodes, and the hub reaches servers through this node's docker_gwbridge and \
             keeps them apart on this node only: pin servers to the hub's node with swarm_constraints (e.g. \
             \"node.hostname==lab1\"); servers on several nodes are not supported yet"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_nodes_need_homes_that_follow_and_an_overlay_hub() {
        let mut config = DockerConfig::default();
        assert!(refuse_multi_node(1, &config).is_ok());
        let e = refuse_multi_node(3, &config).unwrap_err().to_string();
        assert!(e.contains("3 nodes") && e.contains("swarm_homes = \"nfs\""), "{e}");
        config.swarm_homes = SwarmHomes::Nfs;
        let e = refuse_multi_node(2, &config).unwrap_err().to_string();
        assert!(e.contains("pin servers to the hub's node"), "{e}");
        config.swarm_homes = SwarmHomes::Local;
        config.swarm_constraints = vec!["node.hostname == lab1".into()];
        assert!(refuse_multi_node(2, &config).is_ok());
    }
}
