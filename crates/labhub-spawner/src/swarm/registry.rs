//! Images through the lab's registry (`swarm_images = "registry"` with `swarm_registry`):
//! every image a server runs — built or imported here, an environment, a snapshot, or pulled
//! from elsewhere, so the nodes need reach only the lab's registry — is tagged
//! `{swarm_registry}/{name}:sha256-{hex of its content id}` on the manager's engine and pushed;
//! the service then names the digest the registry gave it (`repo@sha256:…`), which every node
//! pulls alike. The tag is kept on the manager, so the engine remembers the digest and a later
//! start pushes nothing; an environment's collector removes it with the image's other tags.
//!
//! A dropped or timed-out push leaves at most a tag on the manager and partial uploads in the
//! registry, which the next push of the same image completes. Pushes of one image may run at
//! once: the registry stores each layer and manifest by digest.

use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use futures::StreamExt;
use labhub_core::spawner::{ProgressSender, SpawnError};
use labhub_core::{ImageRef, RegistryPath};

use crate::error::runtime_error;
use crate::spawner::send;
use crate::spawner::start::digest_in_repository;

/// The registry digest of image `id` (`sha256:…`, known as `image`) under `registry`,
/// pushing it there first unless the manager's engine already holds one; a push may take
/// `timeout`.
pub(super) async fn publish(
    docker: &Docker,
    registry: &RegistryPath,
    image: &ImageRef,
    id: &str,
    timeout: Duration,
    progress: &ProgressSender,
) -> Result<String, SpawnError> {
    let target = registry
        .reference_for(image, id)
        .map_err(|e| SpawnError::Runtime(format!("naming image {image} in {registry}: {e}")))?;
    let (repo, tag) = target.as_str().rsplit_once(':').expect("reference_for writes a tag");
    if let Some(digest) = digest_in(docker, id, repo).await? {
        return Ok(digest);
    }
    send(progress, 46, format!("pushing image {image} to the registry {registry}"));
    docker
        .tag_image(id, Some(TagImageOptions { repo: Some(repo.to_string()), tag: Some(tag.to_string()) }))
        .await
        .map_err(|e| runtime_error(&format!("tagging image {image} as {target}"), e))?;
    tokio::time::timeout(timeout, push(docker, repo, tag, image, progress))
        .await
        .map_err(|_| SpawnError::Runtime(format!("the push of {target} took longer than {} s", timeout.as_secs())))??;
    digest_in(docker, id, repo)
        .await?
        .ok_or_else(|| SpawnError::Runtime(format!("the push of {target} ended without a registry digest for it")))
}

/// Pushes `repo:tag`, each layer the registry holds a line of progress.
async fn push(
    docker: &Docker,
    repo: &str,
    tag: &str,
    image: &ImageRef,
    progress: &ProgressSender,
) -> Result<(), SpawnError> {
    // The engine of API 1.41 wants an `X-Registry-Auth` header on every push, even an
    // anonymous one: empty credentials.
    let options = PushImageOptions { tag: Some(tag.to_string()), ..Default::default() };
    let mut push = docker.push_image(repo, Some(options), Some(DockerCredentials::default()));
    let mut pushed = 0;
    while let Some(step) = push.next().await {
        let info = step.map_err(|e| runtime_error(&format!("pushing {repo}:{tag}"), e))?;
        if let Some(message) = info.error_detail.and_then(|d| d.message) {
            return Err(SpawnError::Runtime(format!("the registry refused {repo}:{tag}: {message}")));
        }
        let status = info.status.unwrap_or_default();
        // "Mounted from <repository>": a layer the registry had under another name.
        if status == "Pushed" || status == "Layer already exists" || status.starts_with("Mounted from") {
            pushed += 1;
            send(progress, 46, format!("pushing image {image}: {pushed} layers in the registry"));
        }
    }
    Ok(())
}

/// The digest of image `id` in repository `repo`, asked of the manager's engine.
async fn digest_in(docker: &Docker, id: &str, repo: &str) -> Result<Option<String>, SpawnError> {
    let inspected = docker.inspect_image(id).await.map_err(|e| runtime_error(&format!("inspecting image {id}"), e))?;
    Ok(digest_in_repository(&inspected, repo).cloned())
}
