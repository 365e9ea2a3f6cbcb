//! Stopping a server and removing its container; both treat "already gone" as done.

use bollard::query_parameters::{RemoveContainerOptions, StopContainerOptions};
use labhub_core::spawner::{SpawnError, SpawnerState};

use super::{DockerSpawner, DockerState};
use crate::error::{is_status, runtime_error};

/// How long `stop` lets a server shut down cleanly before the engine kills it.
const STOP_GRACE_SECS: i32 = 5;

impl DockerSpawner {
    /// `Spawner::stop`: stops the container (a grace period, then a kill) and removes it; the
    /// volume stays. A container that is not running or is gone already is no error.
    pub(super) async fn stop_server(&self, state: &SpawnerState) -> Result<(), SpawnError> {
        let s = DockerState::from_json(state)?;
        let options = StopContainerOptions { t: Some(STOP_GRACE_SECS), signal: None };
        match self.docker.stop_container(&s.container_id, Some(options)).await {
            // 304: it was not running.
            Ok(()) => {}
            Err(e) if is_status(&e, 304) || is_status(&e, 404) => {}
            Err(e) => return Err(runtime_error(&format!("stopping container {}", s.container_name), e)),
        }
        self.remove_container(&s.container_id).await
    }

    /// Force-removes a container; absent is success.
    pub(super) async fn remove_container(&self, id: &str) -> Result<(), SpawnError> {
        let options = RemoveContainerOptions { force: true, ..Default::default() };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 404: gone already; 409: the engine is removing it right now.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(runtime_error(&format!("removing container {id}"), e)),
        }
    }
}
