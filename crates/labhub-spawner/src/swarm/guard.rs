//! `labhub swarm guard`: labhub's isolation on a Swarm node other than the hub's, run on that
//! node (as root, or with NET_ADMIN and SYS_ADMIN, on its network and with its Docker
//! socket and `/var/run/docker/netns`). The hub enforces its rules where it runs; a task on
//! another node is kept apart only by rules on that node, so this puts the very same rules
//! there: the iptables rules on the node's `docker_gwbridge` (off the host, link-local and
//! private ranges), and the nftables table in the overlay's namespace (tasks may not reach
//! each other). The namespace appears with the node's first task of the overlay, so the
//! rules are put in place at every attachment to a network (the engine's `connect` event)
//! and looked at again every `interval`.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{EventsOptions, InspectNetworkOptions};
use futures::StreamExt;
use labhub_core::spawner::SpawnError;

use super::{SwarmSpawner, network};
use crate::config::DockerConfig;
use crate::error::{is_status, runtime_error};
use crate::spawner::DockerSpawner;

impl SwarmSpawner {
    /// Keeps servers apart on the node this process runs on, until the process ends; a
    /// failure is logged and tried again (see the module docs).
    pub async fn guard_node(config: DockerConfig, interval: Duration) -> Result<(), SpawnError> {
        let engine = DockerSpawner::connect(config.clone()).await?;
        let docker = engine.docker().clone();
        let filters = HashMap::from([
            ("type".to_string(), vec!["network".to_string()]),
            ("event".to_string(), vec!["connect".to_string()]),
        ]);
        let options = EventsOptions { since: None, until: None, filters: Some(filters) };
        let mut events = docker.events(Some(options.clone())).boxed();
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                event = events.next() => {
                    if event.is_none() {
                        // The engine went away (a restart): listen again after a pause.
                        tokio::time::sleep(interval).await;
                        events = docker.events(Some(options.clone())).boxed();
                    }
                }
            }
            if let Err(e) = guard_once(&docker, &config).await {
                tracing::warn!(error = %e, "could not keep servers apart on this node; trying again");
            }
        }
    }
}

/// Puts the node's rules in place once.
async fn guard_once(docker: &Docker, config: &DockerConfig) -> Result<(), SpawnError> {
    if config.isolate_host {
        // The hub's single-user API is on the hub's node, whose own rules let its tasks reach it.
        let added = network::enforce_gateway_rules(config, None).await?;
        if !added.is_empty() {
            tracing::info!(?added, "Swarm tasks of this node are kept off the host, link-local and private ranges");
        }
    }
    let name = config.swarm_network.as_str();
    let id = match docker.inspect_network(name, None::<InspectNetworkOptions>).await {
        Ok(net) => net.id.unwrap_or_default(),
        // A worker knows the overlay only while a task of it runs here.
        Err(e) if is_status(&e, 404) => return Ok(()),
        Err(e) => return Err(runtime_error(&format!("inspecting network {name}"), e)),
    };
    if network::isolate_overlay(&id).await? {
        tracing::debug!(network = name, "the overlay's tasks on this node are kept apart");
    }
    Ok(())
}
