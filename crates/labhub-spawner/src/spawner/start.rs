//! Starting a server: image, network and volume first, then the container, which is removed
//! again on any failure and when the start is abandoned (its future dropped).

use std::net::SocketAddr;

use bollard::Docker;
use bollard::models::ImageInspect;
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, RemoveContainerOptions, StartContainerOptions,
};
use labhub_core::spawner::{ProgressSender, ServerSpec, SpawnError, Started};
use labhub_core::{MountSource, ServerName, Storage};

use super::{DockerSpawner, DockerState, send};
use crate::error::{is_status, runtime_error};
use crate::naming::ServerNames;
use crate::plan::{ContainerPlan, ImageFacts, PlanContext, ResolvedMount, container_plan};

impl DockerSpawner {
    /// `Spawner::start`: every step up to a server that answers, with progress; on failure
    /// the container is removed and the volume kept.
    pub(super) async fn start_server(
        &self,
        spec: &ServerSpec,
        progress: ProgressSender,
    ) -> Result<Started, SpawnError> {
        let names = ServerNames::new(&self.config.hub_id, spec.owner, spec.server.as_ref(), self.volume_of(&spec.home));
        tracing::info!(user = %spec.user, server = ?spec.server, image = %spec.image, container = %names.container, "starting a server");
        tracing::debug!(
            target: "labhub::timing",
            user = %spec.user,
            server = spec.server.as_ref().map_or("", ServerName::as_str),
            "spawn.begin"
        );

        send(&progress, 2, format!("checking image {}", spec.image));
        let image = self.ensure_image(&spec.image, &progress).await?;
        let facts = image_facts(spec, &image)?;

        send(&progress, 42, "preparing the network");
        self.prepare_network().await?;
        send(&progress, 45, "preparing your storage");
        if let Storage::Volume(_) = &spec.home {
            // An adopted legacy home must be there already: the hub decided whose it is.
            self.ensure_storage(&spec.home, None).await?;
        } else {
            self.ensure_storage(&spec.home, Some(&spec.user)).await?;
        }
        let extra = self.resolve_mounts(spec, &progress).await?;
        let ctx = PlanContext {
            hub: &self.config.hub_id,
            names: &names,
            network: self.config.network.as_str(),
            pids_limit: self.config.pids_limit,
            image: &facts,
            extra: &extra,
        };
        let plan = container_plan(spec, &ctx)?;

        send(&progress, 55, "creating the container");
        self.clear_stale(spec, &names.container).await?;
        let options = CreateContainerOptions { name: Some(names.container.clone()), ..Default::default() };
        tracing::debug!(
            target: "labhub::timing",
            user = %spec.user,
            server = spec.server.as_ref().map_or("", ServerName::as_str),
            "spawn.create_container"
        );
        let created = match self.docker.create_container(Some(options), plan.body.clone()).await {
            Ok(c) => c,
            // Another start of the same server won the race for the name.
            Err(e) if is_status(&e, 409) => return Err(already_running(spec, &names.container)),
            Err(e) => return Err(runtime_error("creating the container", e)),
        };
        let id = created.id;
        let mut guard = ContainerGuard { docker: self.docker.clone(), id: Some(id.clone()) };

        match self.run_container(&id, spec, &plan, &progress).await {
            Ok(endpoint) => {
                guard.disarm();
                tracing::debug!(
                    target: "labhub::timing",
                    user = %spec.user,
                    server = spec.server.as_ref().map_or("", ServerName::as_str),
                    "spawn.server_answers"
                );
                send(&progress, 90, "the server answers");
                tracing::info!(container = %names.container, %endpoint, "server ready");
                let state = DockerState {
                    container_id: id,
                    container_name: names.container,
                    volume: names.volume,
                    ip: Some(endpoint.ip()),
                    port: spec.port,
                    kind: spec.kind,
                };
                Ok(Started { endpoint, state: state.to_json(), image_digest: facts.id, repo_digest: facts.repo_digest })
            }
            Err(e) => {
                tracing::info!(container = %names.container, error = %e, "start failed; removing the container");
                if let Err(remove) = self.remove_container(&id).await {
                    tracing::warn!(container = %id, error = %remove, "could not remove the failed container");
                } else {
                    guard.disarm();
                }
                Err(e)
            }
        }
    }

    /// The folders to mount besides the home, their sources made (a group's folder) or checked
    /// (a dataset). A missing optional source is left out with a line in the progress, never a
    /// failed start.
    pub(crate) async fn resolve_mounts(
        &self,
        spec: &ServerSpec,
        progress: &ProgressSender,
    ) -> Result<Vec<ResolvedMount>, SpawnError> {
        let mut resolved = Vec::with_capacity(spec.mounts.len());
        for m in &spec.mounts {
            let found = match &m.source {
                MountSource::Storage(storage) => self.ensure_storage(storage, None).await.map(|v| (v, false)),
                MountSource::Volume(name) => self.check_mount_source(&m.source).await.map(|()| (name.clone(), false)),
                MountSource::HostPath(path) => self.check_mount_source(&m.source).await.map(|()| (path.clone(), true)),
            };
            match found {
                Ok((source, host_path)) => {
                    resolved.push(ResolvedMount { source, host_path, at: m.at.clone(), read_only: m.read_only })
                }
                Err(e) if m.optional => {
                    tracing::warn!(user = %spec.user, at = %m.at, error = %e, "a folder to mount is missing; left out");
                    send(progress, 46, format!("~/{} is not available right now and is left out ({e})", m.at));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(resolved)
    }

    /// Removes an exited container left under this server's name; refuses to touch a running one.
    async fn clear_stale(&self, spec: &ServerSpec, name: &str) -> Result<(), SpawnError> {
        let existing = match self.docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(runtime_error(&format!("inspecting container {name}"), e)),
        };
        if existing.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            return Err(already_running(spec, name));
        }
        let id = existing.id.unwrap_or_else(|| name.to_string());
        tracing::info!(container = name, "removing a stopped container left from an earlier run");
        self.remove_container(&id).await
    }

    /// Everything of a start after the container exists; the caller removes it on failure.
    async fn run_container(
        &self,
        id: &str,
        spec: &ServerSpec,
        plan: &ContainerPlan,
        progress: &ProgressSender,
    ) -> Result<SocketAddr, SpawnError> {
        send(progress, 65, "starting the container");
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| runtime_error("starting the container", e))?;
        tracing::debug!(
            target: "labhub::timing",
            user = %spec.user,
            server = spec.server.as_ref().map_or("", ServerName::as_str),
            "spawn.container_running"
        );
        send(progress, 70, "waiting for the server to answer");
        self.wait_ready(id, spec, &plan.readiness, progress).await
    }
}

/// What the plan needs to know of the image: its content id, user and home.
pub(crate) fn image_facts(spec: &ServerSpec, image: &ImageInspect) -> Result<ImageFacts, SpawnError> {
    Ok(ImageFacts {
        id: image.id.clone().ok_or_else(|| SpawnError::Runtime(format!("image {} has no id", spec.image)))?,
        repo_digest: repo_digest(image, &spec.image),
        user: image.config.as_ref().and_then(|c| c.user.clone()).filter(|u| !u.is_empty()),
        home: image
            .config
            .as_ref()
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find_map(|kv| kv.strip_prefix("HOME=").map(str::to_string))),
    })
}

/// The image's repository digest, when a registry gave it one: the one in the repository
/// `named` names, if any (the same bytes may have come from, or gone to, several), else the
/// first.
fn repo_digest(image: &ImageInspect, named: &labhub_core::ImageRef) -> Option<String> {
    let digests: Vec<&String> = image.repo_digests.as_ref()?.iter().filter(|d| d.contains("@sha256:")).collect();
    digest_in_repository(image, named.repository()).or(digests.first().copied()).cloned()
}

/// The image's digest in repository `repo` (`host/path/name`), as the engine recorded it from
/// a push or pull.
pub(crate) fn digest_in_repository<'a>(image: &'a ImageInspect, repo: &str) -> Option<&'a String> {
    image.repo_digests.as_ref()?.iter().find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
}

fn already_running(spec: &ServerSpec, name: &str) -> SpawnError {
    let which = spec.server.as_ref().map_or_else(|| "default server".to_string(), |s| format!("server {s}"));
    SpawnError::Invalid(format!("{}'s {which} is already running (container {name}); stop it first", spec.user))
}

/// Removes a container if the start that made it is abandoned (its future dropped).
struct ContainerGuard {
    docker: Docker,
    id: Option<String>,
}

impl ContainerGuard {
    fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let docker = self.docker.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let options = RemoveContainerOptions { force: true, ..Default::default() };
                if let Err(e) = docker.remove_container(&id, Some(options)).await {
                    tracing::warn!(container = %id, error = %e, "could not remove the container of an abandoned start");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repo_digest_is_the_registrys_when_there_is_one() {
        let pulled = ImageInspect {
            repo_digests: Some(vec!["quay.io/jupyter/base-notebook@sha256:0123".into()]),
            ..Default::default()
        };
        let named = |r: &str| labhub_core::ImageRef::parse(r).unwrap();
        let base = named("quay.io/jupyter/base-notebook:2026-01");
        assert_eq!(repo_digest(&pulled, &base).as_deref(), Some("quay.io/jupyter/base-notebook@sha256:0123"));
        let empty = ImageInspect { repo_digests: Some(vec![]), ..Default::default() };
        assert_eq!(repo_digest(&empty, &base), None);
        assert_eq!(repo_digest(&ImageInspect::default(), &base), None, "built here");
        let both = ImageInspect {
            repo_digests: Some(vec![
                "mirror.lab:5000/base-notebook@sha256:0123".into(),
                pulled.repo_digests.unwrap()[0].clone(),
            ]),
            ..Default::default()
        };
        assert_eq!(
            repo_digest(&both, &base).as_deref(),
            Some("quay.io/jupyter/base-notebook@sha256:0123"),
            "the catalogue's own"
        );
        let mirror = named("mirror.lab:5000/base-notebook");
        assert_eq!(repo_digest(&both, &mirror).as_deref(), Some("mirror.lab:5000/base-notebook@sha256:0123"));
    }
}
