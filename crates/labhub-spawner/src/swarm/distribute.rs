//! Images on every node (`swarm_images = "copy"`): before a service is created, the image it
//! runs (by content id) is copied from the manager's engine to the engine of each node that
//! may run it, unless that node has it: `docker save` of the id on the manager streamed into
//! `docker load` on the node, and the node's answer for that id checked afterwards. Saved by
//! id, the archive names no tag, so the node holds the image untagged; the service names the
//! id, so every node runs the same bytes (an image id is the hash of its configuration, which
//! lists its layers' hashes, which the loading engine checks).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;
use bollard::query_parameters::ImportImageOptions;
use futures::{StreamExt, TryStreamExt};
use labhub_core::NodeName;
use labhub_core::spawner::SpawnError;

use crate::error::{is_status, runtime_error};

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// The node had the image already.
    Present,
    /// The image was copied: this many bytes of archive.
    Bytes(u64),
}

/// Copies image `id` (`sha256:…`) from `from` to `node`'s engine `to` unless it has it.
pub async fn copy_image(from: &Docker, to: &Docker, node: &NodeName, id: &str) -> Result<Copied, SpawnError> {
    if has_image(to, node, id).await? {
        return Ok(Copied::Present);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let archive = from.export_image(id).inspect_ok(move |chunk| {
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    });
    let options = ImportImageOptions { quiet: true, ..Default::default() };
    let mut answers = to.import_image_stream(options, archive, None).boxed();
    while let Some(answer) = answers.next().await {
        let info = answer.map_err(|e| runtime_error(&format!("copying image {id} to node {node}"), e))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            return Err(SpawnError::Runtime(format!("node {node} could not load image {id}: {e}")));
        }
    }
    if !has_image(to, node, id).await? {
        return Err(SpawnError::Runtime(format!(
            "node {node} loaded the archive of image {id} but does not hold that id"
        )));
    }
    Ok(Copied::Bytes(sent.load(Ordering::Relaxed)))
}

/// Whether the node's engine holds exactly image `id`.
async fn has_image(docker: &Docker, node: &NodeName, id: &str) -> Result<bool, SpawnError> {
    match docker.inspect_image(id).await {
        Ok(image) => Ok(image.id.as_deref() == Some(id)),
        Err(e) if is_status(&e, 404) => Ok(false),
        Err(e) => Err(runtime_error(&format!("asking node {node} for image {id}"), e)),
    }
}
