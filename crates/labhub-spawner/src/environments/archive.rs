//! Moving an image between engines: `docker save` into a file, `docker load` from a stream.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use labhub_core::spawner::SpawnError;
use tokio::io::AsyncWriteExt;

use crate::DockerSpawner;
use crate::error::{engine_message, runtime_error};

impl DockerSpawner {
    /// Writes the image `id` as the engine saves it (a `docker save` archive) to `to`; the bytes written.
    pub async fn save_image(&self, id: &str, to: &mut tokio::fs::File) -> Result<u64, SpawnError> {
        let mut saved = self.docker().export_image(id);
        let mut written = 0u64;
        while let Some(chunk) = saved.next().await {
            let chunk = chunk.map_err(|e| runtime_error(&format!("saving {id}"), engine_message(&e)))?;
            to.write_all(&chunk).await.map_err(|e| runtime_error("writing the image", e))?;
            written += chunk.len() as u64;
        }
        to.flush().await.map_err(|e| runtime_error("writing the image", e))?;
        Ok(written)
    }

    /// Loads a `docker save` archive; returns the ids of the images it held.
    pub async fn load_image(
        &self,
        archive: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<Vec<String>, SpawnError> {
        let options = bollard::query_parameters::ImportImageOptions { quiet: true, ..Default::default() };
        let mut loading = self.docker().import_image_stream(options, archive, None);
        let mut ids = Vec::new();
        while let Some(info) = loading.next().await {
            let info = info.map_err(|e| runtime_error("loading the image", engine_message(&e)))?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(runtime_error("loading the image", e));
            }
            for line in info.stream.iter().flat_map(|s| s.lines()) {
                if let Some(id) = line.trim().strip_prefix("Loaded image ID: ") {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }
}
