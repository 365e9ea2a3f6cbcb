//! Saving a running server as an image (`Spawner::commit_server`): the engine's commit, with
//! the server paused, of the container's own files only.
//!
//! The engine merges the container's configuration into the committed image's: whatever the
//! body does not name, it copies from the container — its environment (which holds the
//! server's token) and labels (which name its owner to this hub) among them. So the body names
//! the base image's configuration and blanks every variable and label the server added: a
//! container made from the image carries no secret and is no server of this hub until a start
//! labels it. The image does carry this hub's label, as built environments' images do, so the
//! image collector finds it.

use std::collections::{BTreeMap, HashMap};

use bollard::models::ContainerConfig;
use bollard::query_parameters::{CommitContainerOptions, InspectContainerOptions};
use labhub_core::ImageRef;
use labhub_core::spawner::{ImageInfo, SpawnError, SpawnerState};

use super::images::split_reference;
use super::{DockerSpawner, DockerState};
use crate::error::{is_status, runtime_error};
use crate::naming::LABEL_HUB;

impl DockerSpawner {
    /// `Spawner::commit_server`.
    pub(super) async fn commit_running(
        &self,
        state: &SpawnerState,
        tag: &ImageRef,
        labels: &BTreeMap<String, String>,
        max_bytes: u64,
    ) -> Result<ImageInfo, SpawnError> {
        let s = DockerState::from_json(state)?;
        self.commit_container(&s.container_id, tag, labels, max_bytes).await
    }

    /// Commits the running container `container` of this engine (a server's, or a Swarm
    /// task's on this node) as `tag`, refused past `max_bytes` of its own layer.
    pub(crate) async fn commit_container(
        &self,
        container: &str,
        tag: &ImageRef,
        labels: &BTreeMap<String, String>,
        max_bytes: u64,
    ) -> Result<ImageInfo, SpawnError> {
        let options = InspectContainerOptions { size: true };
        let c = match self.docker.inspect_container(container, Some(options)).await {
            Ok(c) => c,
            Err(e) if is_status(&e, 404) => return Err(SpawnError::Invalid("the server's container is gone".into())),
            Err(e) => return Err(runtime_error("inspecting the container", e)),
        };
        if !c.state.as_ref().and_then(|st| st.running).unwrap_or(false) {
            return Err(SpawnError::Invalid("the server is not running".into()));
        }
        let size = c.size_rw.and_then(|b| u64::try_from(b).ok()).unwrap_or(0);
        if size > max_bytes {
            return Err(SpawnError::TooLarge { size, limit: max_bytes });
        }
        let base_id = c.image.clone().ok_or_else(|| SpawnError::Runtime("the container names no image".into()))?;
        let base = self
            .docker
            .inspect_image(&base_id)
            .await
            .map_err(|e| runtime_error("inspecting the server's image", e))?
            .config
            .unwrap_or_default();
        let running = c.config.unwrap_or_default();
        let mut env = base.env.clone().unwrap_or_default();
        let base_keys: Vec<String> = env.iter().map(|kv| key_of(kv).to_string()).collect();
        for kv in running.env.iter().flatten() {
            let key = key_of(kv);
            if !base_keys.iter().any(|k| k == key) {
                env.push(format!("{key}="));
            }
        }
        let mut all_labels: HashMap<String, String> = base.labels.clone().unwrap_or_default();
        for key in running.labels.unwrap_or_default().into_keys() {
            all_labels.entry(key).or_default();
        }
        // The base's own provenance (when it is a built environment) would misdescribe this image.
        for (key, value) in all_labels.iter_mut() {
            if key.starts_with("io.labhub.") {
                value.clear();
            }
        }
        all_labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        // Like the images environment builds make: the image collector finds it by this.
        all_labels.insert(LABEL_HUB.into(), self.config.hub_id.to_string());
        let config = ContainerConfig {
            user: base.user.clone(),
            env: Some(env),
            cmd: base.cmd.clone(),
            entrypoint: base.entrypoint.clone(),
            working_dir: base.working_dir.clone(),
            exposed_ports: base.exposed_ports.clone(),
            labels: Some(all_labels),
            ..Default::default()
        };
        let (repo, tag_part) = split_reference(tag);
        let options = CommitContainerOptions {
            container: Some(container.to_string()),
            repo: Some(repo.to_string()),
            tag: Some(tag_part.to_string()),
            comment: Some("saved by labhub from a running server".into()),
            pause: true,
            ..Default::default()
        };
        let made = self
            .docker
            .commit_container(options, config)
            .await
            .map_err(|e| runtime_error("saving the server as an image", e))?;
        tracing::info!(%container, image = %made.id, %tag, "saved a server as an image");
        self.image_info(tag)
            .await?
            .ok_or_else(|| SpawnError::Runtime(format!("the image {tag} is not there after the commit")))
    }
}

/// `KEY` of `KEY=value`.
fn key_of(kv: &str) -> &str {
    kv.split_once('=').map_or(kv, |(k, _)| k)
}
