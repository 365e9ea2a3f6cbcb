//! Finding services again: one server's status, stopping, every service of this hub for
//! reconciling at boot, and a server's output.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptions, ListServicesOptions};
use labhub_core::ImageKind;
use labhub_core::spawner::{ObservedServer, ServerStatus, SpawnError, SpawnerState};

use super::tasks::Phase;
use super::{SwarmSpawner, SwarmState};
use crate::error::{is_status, runtime_error};
use crate::naming::{LABEL_HUB, LABEL_KIND, LABEL_PORT, LABEL_VOLUME, owner_from_labels};

/// Longest wait, after a service is removed, for its task's container to be gone (Swarm
/// stops it with the 5 s grace period of the spec, then removes it).
const REMOVAL_WAIT: Duration = Duration::from_secs(20);
/// The engine's label naming a task container's service.
const LABEL_SERVICE_ID: &str = "com.docker.swarm.service.id";

impl SwarmSpawner {
    /// `Spawner::poll`: running with its address, or stopped with the task's reason.
    pub(super) async fn poll_service(&self, state: &SpawnerState) -> Result<ServerStatus, SpawnError> {
        let s = SwarmState::from_json(state)?;
        match self.docker.inspect_service(&s.service_id, None).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(ServerStatus::Stopped { reason: "its service is gone".into() }),
            Err(e) => return Err(runtime_error("inspecting the service", e)),
        }
        self.status_of(&s.service_id, s.port, s.ip).await
    }

    async fn status_of(
        &self,
        service_id: &str,
        port: u16,
        known: Option<std::net::IpAddr>,
    ) -> Result<ServerStatus, SpawnError> {
        let Some(task) = self.newest_task(service_id).await? else {
            return Ok(ServerStatus::Stopped { reason: "its service has no task".into() });
        };
        match task.phase() {
            Phase::Running => {
                let ip = self.task_address(&task).await?.or(known).ok_or_else(|| {
                    SpawnError::Runtime(format!("service {service_id} runs but the hub has no address for it"))
                })?;
                Ok(ServerStatus::Running { endpoint: SocketAddr::new(ip, port) })
            }
            Phase::Ended(reason) => Ok(ServerStatus::Stopped { reason }),
            Phase::Progress { message, .. } => Ok(ServerStatus::Stopped { reason: format!("not running ({message})") }),
        }
    }

    /// `Spawner::stop`: removes the service (Swarm stops its task: a grace period, then a
    /// kill) and waits for its container to be gone, so the home is free; the volume stays.
    pub(super) async fn stop_service(&self, state: &SpawnerState) -> Result<(), SpawnError> {
        let s = SwarmState::from_json(state)?;
        self.remove_service(&s.service_id).await
    }

    /// Removes a service and waits for its task's container to go; absent is success.
    pub(super) async fn remove_service(&self, id: &str) -> Result<(), SpawnError> {
        match self.docker.delete_service(id).await {
            Ok(()) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(runtime_error(&format!("removing service {id}"), e)),
        }
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_SERVICE_ID}={id}")])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let deadline = tokio::time::Instant::now() + REMOVAL_WAIT;
        let mut pause = Duration::from_millis(20);
        loop {
            let left = self
                .docker
                .list_containers(Some(options.clone()))
                .await
                .map_err(|e| runtime_error("listing the service's containers", e))?;
            if left.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SpawnError::Runtime(format!(
                    "service {id} was removed but its container is still there after {} s",
                    REMOVAL_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// `Spawner::list`: every service carrying this hub's label, read back from its labels,
    /// running (with its address) or not; services whose labels do not name a server are
    /// logged and skipped.
    pub(super) async fn list_services(&self) -> Result<Vec<ObservedServer>, SpawnError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={}", self.config.hub_id)])]);
        let options = ListServicesOptions { filters: Some(filters), ..Default::default() };
        let services =
            self.docker.list_services(Some(options)).await.map_err(|e| runtime_error("listing services", e))?;
        let mut found = Vec::with_capacity(services.len());
        for svc in services {
            let id = svc.id.clone().unwrap_or_default();
            let spec = svc.spec.unwrap_or_default();
            let labels = spec.labels.unwrap_or_default();
            let Some((owner, server)) = owner_from_labels(&labels) else {
                tracing::warn!(service = %id, "a service with this hub's label has no valid user/server labels");
                continue;
            };
            let (Some(kind), Some(port)) = (
                labels.get(LABEL_KIND).and_then(|k| ImageKind::parse(k)),
                labels.get(LABEL_PORT).and_then(|p| p.parse::<u16>().ok()),
            ) else {
                tracing::warn!(service = %id, "a service with this hub's label has no kind/port labels");
                continue;
            };
            let status = self.status_of(&id, port, None).await?;
            let state = SwarmState {
                service_id: id,
                service_name: spec.name.unwrap_or_default(),
                volume: labels.get(LABEL_VOLUME).cloned().unwrap_or_default(),
                ip: match &status {
                    ServerStatus::Running { endpoint } => Some(endpoint.ip()),
                    ServerStatus::Stopped { .. } => None,
                },
                port,
                kind,
            };
            found.push(ObservedServer { owner, server, state: state.to_json(), status });
        }
        Ok(found)
    }

    /// `Spawner::logs`: the newest task's last `tail` lines (its container on this node),
    /// empty when it is gone.
    pub(super) async fn service_logs(&self, state: &SpawnerState, tail: usize) -> Result<String, SpawnError> {
        let s = SwarmState::from_json(state)?;
        let task = match self.docker.inspect_service(&s.service_id, None).await {
            Ok(_) => self.newest_task(&s.service_id).await?,
            Err(e) if is_status(&e, 404) => None,
            Err(e) => return Err(runtime_error("reading the server's logs", e)),
        };
        let container = task.map(|t| t.status.container_status.container_id).unwrap_or_default();
        if container.is_empty() {
            return Ok(String::new());
        }
        Ok(self.engine.log_tail(&container, tail).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let s = SwarmState {
            service_id: "abc".into(),
            service_name: "labhub_U1".into(),
            volume: "labhub-home_U1".into(),
            ip: Some("172.18.0.3".parse().unwrap()),
            port: 8888,
            kind: ImageKind::Jupyter,
        };
        assert_eq!(SwarmState::from_json(&s.to_json()).unwrap(), s);
        let docker_state = serde_json::json!({"container_id": "x", "container_name": "y", "volume": "v", "ip": null, "port": 1, "kind": "jupyter"});
        assert!(SwarmState::from_json(&docker_state).is_err());
    }
}
