//! Finding servers again: one server's status, every container of this hub for reconciling
//! at boot, and the live resource use of the running ones. (Exit events are `crate::events`.)

use std::net::{IpAddr, SocketAddr};

use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::StatsOptions;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use futures::stream::{self, StreamExt, TryStreamExt};
use labhub_core::ImageKind;
use labhub_core::spawner::{ObservedServer, ServerStatus, ServerUsage, SpawnError, SpawnerState};

use super::{DockerSpawner, DockerState};
use crate::error::{is_status, runtime_error};
use crate::naming::{LABEL_KIND, LABEL_PORT, LABEL_VOLUME, owner_from_labels};
use crate::plan::exit_reason;
use crate::usage;

/// Stats requests in flight at once in `usage` (each takes about a second on the engine).
const STATS_CONCURRENCY: usize = 8;

impl DockerSpawner {
    /// `Spawner::poll`: running with its address, or stopped with the reason (gone, exit code).
    pub(super) async fn poll_server(&self, state: &SpawnerState) -> Result<ServerStatus, SpawnError> {
        let s = DockerState::from_json(state)?;
        let c = match self.docker.inspect_container(&s.container_id, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) if is_status(&e, 404) => {
                return Ok(ServerStatus::Stopped { reason: "its container is gone".into() });
            }
            Err(e) => return Err(runtime_error("inspecting the container", e)),
        };
        let st = c.state.clone().unwrap_or_default();
        if st.running.unwrap_or(false) {
            let ip = self.ip_of(&c).or(s.ip).ok_or_else(|| {
                SpawnError::Runtime(format!(
                    "container {} runs but has no address on the users' network",
                    s.container_name
                ))
            })?;
            Ok(ServerStatus::Running { endpoint: SocketAddr::new(ip, s.port) })
        } else {
            Ok(ServerStatus::Stopped {
                reason: exit_reason(st.exit_code.unwrap_or(-1), st.oom_killed.unwrap_or(false)),
            })
        }
    }

    /// `Spawner::list`: every container carrying this hub's label, in any state, read back
    /// from its labels; containers whose labels do not name a server are logged and skipped.
    pub(super) async fn list_servers(&self) -> Result<Vec<ObservedServer>, SpawnError> {
        let options = ListContainersOptions { all: true, filters: Some(self.hub_filter()), ..Default::default() };
        let containers =
            self.docker.list_containers(Some(options)).await.map_err(|e| runtime_error("listing containers", e))?;
        let mut found = Vec::with_capacity(containers.len());
        for c in containers {
            let labels = c.labels.clone().unwrap_or_default();
            let id = c.id.clone().unwrap_or_default();
            let Some((owner, server)) = owner_from_labels(&labels) else {
                tracing::warn!(container = %id, "a container with this hub's label has no valid user/server labels");
                continue;
            };
            let (Some(kind), Some(port)) = (
                labels.get(LABEL_KIND).and_then(|k| ImageKind::parse(k)),
                labels.get(LABEL_PORT).and_then(|p| p.parse::<u16>().ok()),
            ) else {
                tracing::warn!(container = %id, "a container with this hub's label has no kind/port labels");
                continue;
            };
            let ip = c
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(self.config.network.as_str()))
                .and_then(|e| e.ip_address.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            // Paused by a backup's read (maybe another replica's, in progress): it still runs,
            // and is resumed by that read or by `resume_paused`.
            let running =
                matches!(c.state, Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::PAUSED));
            let status = match (running, ip) {
                (true, Some(ip)) => ServerStatus::Running { endpoint: SocketAddr::new(ip, port) },
                (true, None) => ServerStatus::Stopped { reason: "running but off the users' network".into() },
                (false, _) => ServerStatus::Stopped {
                    reason: format!("container {}", c.status.clone().unwrap_or_else(|| "not running".into())),
                },
            };
            let name = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string());
            let state = DockerState {
                container_id: id,
                container_name: name.unwrap_or_default(),
                volume: labels.get(LABEL_VOLUME).cloned().unwrap_or_default(),
                ip,
                port,
                kind,
            };
            found.push(ObservedServer { owner, server, state: state.to_json(), status });
        }
        Ok(found)
    }

    /// `Spawner::usage`: CPU and memory of every running container of this hub; a container
    /// that cannot be measured (it just stopped) is left out.
    pub(super) async fn live_usage(&self) -> Result<Vec<ServerUsage>, SpawnError> {
        let mut filters = self.hub_filter();
        filters.insert("status".into(), vec!["running".into()]);
        let options = ListContainersOptions { filters: Some(filters), ..Default::default() };
        let containers =
            self.docker.list_containers(Some(options)).await.map_err(|e| runtime_error("listing containers", e))?;
        let found: Vec<ServerUsage> = stream::iter(containers)
            .map(|c| async move {
                let (owner, server) = owner_from_labels(c.labels.as_ref()?)?;
                let id = c.id?;
                // Not one-shot: the engine then waits for a second sample, which the CPU
                // delta needs (a one-shot answer has no previous sample to compare with).
                let options = StatsOptions { stream: false, one_shot: false };
                let stats = self.docker.stats(&id, Some(options)).try_next().await.ok().flatten()?;
                Some(ServerUsage {
                    owner,
                    server,
                    cpu_millis: usage::cpu_millis(&stats),
                    memory_bytes: usage::memory_bytes(&stats),
                })
            })
            .buffer_unordered(STATS_CONCURRENCY)
            .filter_map(futures::future::ready)
            .collect()
            .await;
        Ok(found)
    }
}
