//! Reading storage as it was at one instant, while servers may be writing to it.
//!
//! The engine has no snapshots of a plain volume, so the servers that could write pause
//! instead: every running container of this hub that mounts the volume is frozen (the
//! cgroup freezer stops its processes between two instructions; connections stay open and
//! nothing is lost) before the read begins, and resumed when the stream ends or is dropped.
//! What the read returns is then what a power cut at that instant would have left: every
//! write completed before the pause, none after. A server that starts using the volume
//! during the read could write into it, so the stream then ends with an error instead of
//! passing as consistent. Servers a hub left paused (it died mid-read) are resumed by
//! `resume_paused`, which the service calls only while it holds the backup run lock (so never
//! during another replica's read).

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use labhub_core::Storage;
use labhub_core::spawner::SpawnError;

use super::DockerSpawner;
use crate::error::{is_status, runtime_error};

/// Containers this guard paused; resumed (in the background) when it is dropped.
struct Paused {
    docker: Docker,
    ids: Vec<String>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let (docker, ids) = (self.docker.clone(), std::mem::take(&mut self.ids));
        let resume = async move {
            for id in ids {
                resume(&docker, &id).await;
            }
        };
        // Without a runtime (the process ending), `resume_paused` does, from whichever
        // process next holds the backup run lock.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(resume);
        }
    }
}

/// Resumes a paused container; one that is gone or already runs is fine.
pub(super) async fn resume(docker: &Docker, id: &str) {
    match docker.unpause_container(id).await {
        Ok(()) => tracing::debug!(container = %id, "resumed a server paused for a backup"),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
        Err(e) => tracing::warn!(container = %id, error = %e, "could not resume a server paused for a backup"),
    }
}

/// Ids of the containers matching `filters` in one of `states`.
async fn containers(
    docker: &Docker,
    mut filters: HashMap<String, Vec<String>>,
    states: &[&str],
) -> Result<Vec<String>, SpawnError> {
    filters.insert("status".into(), states.iter().map(|s| s.to_string()).collect());
    let options = ListContainersOptions { filters: Some(filters), ..Default::default() };
    let found = docker.list_containers(Some(options)).await.map_err(|e| runtime_error("listing containers", e))?;
    Ok(found.into_iter().filter_map(|c| c.id).collect())
}

impl DockerSpawner {
    /// `Spawner::resume_paused`: every paused container of this hub, resumed.
    pub(super) async fn resume_all_paused(&self) -> Result<usize, SpawnError> {
        let ids = containers(&self.docker, self.hub_filter(), &["paused"]).await?;
        for id in &ids {
            tracing::warn!(container = %id, "resuming a server left paused by a backup read that never finished");
            resume(&self.docker, id).await;
        }
        Ok(ids.len())
    }

    /// `Spawner::snapshot`: the files of `storage`, read while the servers using it are paused.
    pub(super) async fn snapshot_files(
        &self,
        storage: &Storage,
    ) -> Result<BoxStream<'static, Result<Bytes, SpawnError>>, SpawnError> {
        let volume = self.volume_of(storage);
        let mut filters = self.hub_filter();
        filters.insert("volume".into(), vec![volume.clone()]);
        let mut paused = Paused { docker: self.docker.clone(), ids: Vec::new() };
        for id in containers(&self.docker, filters.clone(), &["running"]).await? {
            match self.docker.pause_container(&id).await {
                Ok(()) => paused.ids.push(id),
                // It stopped in the meantime: it writes nothing more.
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(runtime_error("pausing a server for a consistent read", e)),
            }
        }
        let files = self.archive_files(storage).await?;
        let docker = self.docker.clone();
        // After the last byte, and only then, the paused servers resume (dropping the stream
        // earlier resumes them too).
        let tail = futures::stream::once(async move {
            let now = containers(&docker, filters, &["running", "paused"]).await?;
            let started = now.iter().any(|id| !paused.ids.contains(id));
            drop(paused);
            if started {
                Err(SpawnError::Runtime(format!(
                    "a server began using {volume} during the read, so the copy may hold its writes; take it again"
                )))
            } else {
                Ok(())
            }
        })
        .filter_map(|checked: Result<(), SpawnError>| futures::future::ready(checked.err().map(Err)));
        Ok(files.chain(tail).boxed())
    }
}
