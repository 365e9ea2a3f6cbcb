//! Starting a server as a service: image, overlay and storage first, then the service, whose
//! task's states are the start's progress until the server answers. The service is removed
//! again on any failure and when the start is abandoned (its future dropped).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::InspectNetworkOptions;
use labhub_core::spawner::{ProgressSender, ServerSpec, SpawnError, Started};
use labhub_core::{ServerName, Storage};

use super::tasks::{self, Phase, Task};
use super::{SwarmSpawner, SwarmState, distribute, network, nodes, registry, spec};
use crate::config::{SwarmHomes, SwarmImages};
use crate::error::{is_status, runtime_error};
use crate::naming::ServerNames;
use crate::plan::{PlanContext, container_plan};
use crate::spawner::readiness::answers;
use crate::spawner::send;
use crate::spawner::start::image_facts;

/// Log lines quoted in a failed start's error.
const FAILURE_LOG_LINES: usize = 20;
/// The first pause between looks at the task; it doubles up to `readiness_interval`.
const FIRST_PAUSE: Duration = Duration::from_millis(10);

impl SwarmSpawner {
    /// `Spawner::start`: every step up to a server that answers, with the task's states as
    /// progress; on failure the service is removed and the volume kept.
    pub(super) async fn start_service(
        &self,
        spec: &ServerSpec,
        progress: ProgressSender,
    ) -> Result<Started, SpawnError> {
        let names =
            ServerNames::new(&self.config.hub_id, spec.owner, spec.server.as_ref(), self.engine.volume_of(&spec.home));
        let server = spec.server.as_ref().map_or("", ServerName::as_str);
        tracing::info!(user = %spec.user, server, image = %spec.image, service = %names.container, "starting a service");
        tracing::debug!(target: "labhub::timing", user = %spec.user, server, "spawn.begin");

        send(&progress, 2, format!("checking image {}", spec.image));
        let image = self.engine.ensure_image(&spec.image, &progress).await?;
        let facts = image_facts(spec, &image)?;

        send(&progress, 42, "preparing the overlay network");
        let network_id = self.prepare(false).await?;
        send(&progress, 45, "preparing your storage");
        // NFS homes are made by whichever node runs the task, from the mount's options; a
        // home pinned to another node by that node's engine, from the mount's labels.
        let here = spec.node.as_ref().is_none_or(|n| *n == self.manager.1);
        if self.config.swarm_homes == SwarmHomes::Local || (self.config.swarm_homes == SwarmHomes::Pinned && here) {
            let made_for = (!matches!(spec.home, Storage::Volume(_))).then_some(&spec.user);
            self.engine.ensure_storage(&spec.home, made_for).await?;
        }
        let extra = self.engine.resolve_mounts(spec, &progress).await?;
        let ctx = PlanContext {
            hub: &self.config.hub_id,
            names: &names,
            network: self.config.swarm_network.as_str(),
            pids_limit: self.config.pids_limit,
            image: &facts,
            extra: &extra,
        };
        let plan = container_plan(spec, &ctx)?;
        let image_name = self.image_for_nodes(spec, &facts, &progress).await?;
        let service = spec::service_spec(spec, &plan, &names.container, &image_name, &self.config, &self.manager)?;

        send(&progress, 48, "creating the service");
        self.clear_stale(spec, &names.container).await?;
        tracing::debug!(target: "labhub::timing", user = %spec.user, server, "spawn.create_container");
        let created = match self.docker.create_service(service, None).await {
            Ok(c) => c,
            Err(e) if is_status(&e, 409) => return Err(already_running(spec, &names.container)),
            Err(e) => return Err(runtime_error("creating the service", e)),
        };
        let id = created.id.ok_or_else(|| SpawnError::Runtime("the manager created a service without an id".into()))?;
        let mut guard = ServiceGuard { docker: self.docker.clone(), id: Some(id.clone()) };

        match self.run_task(&id, &network_id, spec, &plan.readiness, &progress).await {
            Ok(endpoint) => {
                guard.disarm();
                tracing::debug!(target: "labhub::timing", user = %spec.user, server, "spawn.server_answers");
                send(&progress, 90, "the server answers");
                tracing::info!(service = %names.container, %endpoint, "server ready");
                let state = SwarmState {
                    service_id: id,
                    service_name: names.container,
                    volume: names.volume,
                    ip: Some(endpoint.ip()),
                    port: spec.port,
                    kind: spec.kind,
                };
                // A digest the service names is where the bytes came from, for a relaunch.
                let repo_digest = if image_name.contains("@sha256:") { Some(image_name) } else { facts.repo_digest };
                Ok(Started { endpoint, state: state.to_json(), image_digest: facts.id, repo_digest })
            }
            Err(e) => {
                tracing::info!(service = %names.container, error = %e, "start failed; removing the service");
                match self.remove_service(&id).await {
                    Ok(()) => guard.disarm(),
                    Err(remove) => {
                        tracing::warn!(service = %id, error = %remove, "could not remove the failed service")
                    }
                }
                Err(e)
            }
        }
    }

    /// Follows the task until its server answers: each new state is progress, an ended task
    /// an error with its message, a server that does not answer in time a timeout.
    async fn run_task(
        &self,
        service_id: &str,
        network_id: &str,
        spec: &ServerSpec,
        readiness: &crate::plan::Readiness,
        progress: &ProgressSender,
    ) -> Result<SocketAddr, SpawnError> {
        let started = Instant::now();
        let mut said = String::new();
        let mut isolated = false;
        let mut last_error = String::from("no task yet");
        let mut pause = FIRST_PAUSE.min(self.config.readiness_interval);
        loop {
            let task = self.newest_task(service_id).await?;
            match task.as_ref().map(Task::phase) {
                Some(Phase::Progress { percent, message }) if message != said => {
                    send(progress, percent, message.clone());
                    said = message;
                }
                None | Some(Phase::Progress { .. }) => {}
                Some(Phase::Ended(reason)) => {
                    let container = task.map(|t| t.status.container_status.container_id).unwrap_or_default();
                    let log_tail = if container.is_empty() {
                        String::new()
                    } else {
                        self.engine.log_tail(&container, FAILURE_LOG_LINES).await
                    };
                    return Err(SpawnError::Exited { reason, log_tail });
                }
                Some(Phase::Running) => {
                    if !isolated {
                        tracing::debug!(target: "labhub::timing", user = %spec.user, "spawn.container_running");
                        send(progress, 70, "waiting for the server to answer");
                        // The overlay's namespace may have appeared with this very task.
                        network::isolate_overlay(network_id).await?;
                        isolated = true;
                    }
                    let task = task.as_ref().expect("a phase comes from a task");
                    if let Some(ip) = self.task_address(task).await? {
                        let addr = SocketAddr::new(ip, spec.port);
                        match answers(addr, readiness).await {
                            Ok(()) => return Ok(addr),
                            Err(e) => last_error = e,
                        }
                    }
                }
            }
            if started.elapsed() >= spec.start_timeout {
                tracing::info!(service = service_id, last_error = %last_error, "server did not answer in time");
                let container = task.map(|t| t.status.container_status.container_id).unwrap_or_default();
                let log_tail = if container.is_empty() {
                    format!("(no container yet: {said})")
                } else {
                    self.engine.log_tail(&container, FAILURE_LOG_LINES).await
                };
                return Err(SpawnError::Timeout { seconds: spec.start_timeout.as_secs(), log_tail });
            }
            tokio::time::sleep(pause.min(spec.start_timeout.saturating_sub(started.elapsed()))).await;
            pause = (pause * 2).min(self.config.readiness_interval);
        }
    }

    /// The service's newest task, if the scheduler made one yet.
    pub(super) async fn newest_task(&self, service_id: &str) -> Result<Option<Task>, SpawnError> {
        let filters = serde_json::json!({ "service": [service_id] });
        Ok(tasks::list(&self.addr, &filters).await?.into_iter().next())
    }

    /// The image a service names: its content id, copied first to the node the server is
    /// pinned to (`swarm_images = "copy"`), or a registry digest (`"registry"`), which every
    /// node pulls alike: the one in `swarm_registry`, pushed there if need be (whatever
    /// registry the image came from, so the nodes need reach only that one), or else the one
    /// the image came with.
    async fn image_for_nodes(
        &self,
        spec: &ServerSpec,
        facts: &crate::plan::ImageFacts,
        progress: &ProgressSender,
    ) -> Result<String, SpawnError> {
        if self.config.swarm_images == SwarmImages::Registry {
            if let Some(path) = &self.config.swarm_registry {
                let timeout = self.config.pull_timeout;
                return registry::publish(&self.docker, path, &spec.image, &facts.id, timeout, progress).await;
            }
            return facts.repo_digest.clone().ok_or_else(|| {
                SpawnError::Invalid(format!(
                    "image {} came from no registry, and swarm_images = \"registry\" runs images from a registry \
                     only: set swarm_registry so labhub pushes such images there, or push it yourself and name \
                     it by its registry reference in the catalogue",
                    spec.image
                ))
            });
        }
        if let Some(node) = spec.node.as_ref().filter(|n| **n != self.manager.1) {
            send(progress, 46, format!("copying the image to node {node}"));
            let engine = nodes::engine_of(&self.config, node).await?;
            let copied = distribute::copy_image(&self.docker, &engine, node, &facts.id).await?;
            if let distribute::Copied::Bytes(bytes) = copied {
                tracing::info!(node = %node, image = %facts.id, bytes, "copied the image to the node");
            }
        }
        Ok(facts.id.clone())
    }

    /// Where the hub reaches a running task: its address on its node's `docker_gwbridge`
    /// (see `network`'s docs), asked of that node's engine when it is not the manager's.
    pub(super) async fn task_address(&self, task: &Task) -> Result<Option<IpAddr>, SpawnError> {
        let container = &task.status.container_status.container_id;
        if container.is_empty() {
            return Ok(None);
        }
        let remote = if task.node_id.is_empty() || task.node_id == self.manager.0 {
            None
        } else {
            nodes::hostname_of(&self.docker, &task.node_id).await?
        };
        let engine = match &remote {
            Some(node) => nodes::engine_of(&self.config, node).await?,
            None => self.docker.clone(),
        };
        let net = engine
            .inspect_network(network::GATEWAY_BRIDGE, None::<InspectNetworkOptions>)
            .await
            .map_err(|e| runtime_error("inspecting docker_gwbridge", e))?;
        Ok(net
            .containers
            .and_then(|c| c.get(container).cloned())
            .and_then(|c| c.ipv4_address)
            .and_then(|a| a.split('/').next()?.parse().ok()))
    }

    /// Removes a service of this server's name whose task no longer runs; refuses to touch
    /// one that runs.
    async fn clear_stale(&self, spec: &ServerSpec, name: &str) -> Result<(), SpawnError> {
        let existing = match self.docker.inspect_service(name, None).await {
            Ok(s) => s,
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(runtime_error(&format!("inspecting service {name}"), e)),
        };
        let id = existing.id.unwrap_or_else(|| name.to_string());
        if let Some(task) = self.newest_task(&id).await?
            && !matches!(task.phase(), Phase::Ended(_))
        {
            return Err(already_running(spec, name));
        }
        tracing::info!(service = name, "removing a stopped service left from an earlier run");
        self.remove_service(&id).await
    }
}

fn already_running(spec: &ServerSpec, name: &str) -> SpawnError {
    let which = spec.server.as_ref().map_or_else(|| "default server".to_string(), |s| format!("server {s}"));
    SpawnError::Invalid(format!("{}'s {which} is already running (service {name}); stop it first", spec.user))
}

/// Removes a service if the start that made it is abandoned (its future dropped).
struct ServiceGuard {
    docker: Docker,
    id: Option<String>,
}

impl ServiceGuard {
    fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let docker = self.docker.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = docker.delete_service(&id).await {
                    tracing::warn!(service = %id, error = %e, "could not remove the service of an abandoned start");
                }
            });
        }
    }
}
