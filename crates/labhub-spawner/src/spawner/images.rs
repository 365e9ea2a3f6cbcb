//! Images: finding the one a start needs (pulling it when absent and allowed), and what the
//! engine knows of a catalogue image.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::ImageInspect;
use bollard::query_parameters::CreateImageOptions;
use futures::stream::StreamExt;
use labhub_core::ImageRef;
use labhub_core::spawner::{ImageInfo, ProgressSender, SpawnError};

use super::{DockerSpawner, send};
use crate::config::PullPolicy;
use crate::error::{engine_message, is_status, runtime_error};

impl DockerSpawner {
    /// The image's inspect data, pulling it first when absent and the policy allows.
    pub(crate) async fn ensure_image(
        &self,
        image: &ImageRef,
        progress: &ProgressSender,
    ) -> Result<ImageInspect, SpawnError> {
        match self.docker.inspect_image(image.as_str()).await {
            Ok(found) => return Ok(found),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(runtime_error(&format!("inspecting image {image}"), e)),
        }
        let missing = |detail: String| SpawnError::ImageMissing { image: image.to_string(), detail };
        if self.config.pull_policy == PullPolicy::Never {
            return Err(missing("pulling is turned off (pull_policy = never)".into()));
        }
        send(progress, 5, format!("pulling image {image}"));
        let timeout = self.config.pull_timeout;
        match tokio::time::timeout(timeout, self.pull(image, progress)).await {
            Err(_) => return Err(missing(format!("the pull took longer than {}", seconds(timeout)))),
            Ok(Err(e)) => return Err(missing(engine_message(&e))),
            Ok(Ok(())) => {}
        }
        self.docker
            .inspect_image(image.as_str())
            .await
            .map_err(|e| missing(format!("not there after the pull: {}", engine_message(&e))))
    }

    /// Pulls `image`, mapping the layers' download progress to 5–40 %.
    async fn pull(&self, image: &ImageRef, progress: &ProgressSender) -> Result<(), DockerError> {
        let (from_image, tag) = split_reference(image);
        let options =
            CreateImageOptions { from_image: Some(from_image.into()), tag: Some(tag.into()), ..Default::default() };
        let mut pulled = self.docker.create_image(Some(options), None, None);
        let mut layers: HashMap<String, (i64, i64)> = HashMap::new();
        let mut last_percent = 5;
        while let Some(info) = pulled.next().await {
            let info = info?;
            let (Some(id), Some(detail)) = (info.id, info.progress_detail) else { continue };
            if info.status.as_deref() != Some("Downloading") {
                continue;
            }
            if let (Some(current), Some(total)) = (detail.current, detail.total)
                && total > 0
            {
                layers.insert(id, (current.min(total), total));
            }
            let (done, total) = layers.values().fold((0i64, 0i64), |(d, t), (c, n)| (d + c, t + n));
            if total > 0 {
                let percent = 5 + (35 * done / total).clamp(0, 35) as u8;
                if percent > last_percent {
                    last_percent = percent;
                    send(progress, percent, format!("pulling image {image}: {} of {} MiB", done >> 20, total >> 20));
                }
            }
        }
        Ok(())
    }

    /// `Spawner::inspect_image`: content id, size and age, `None` when absent; never pulls.
    pub(super) async fn image_info(&self, image: &ImageRef) -> Result<Option<ImageInfo>, SpawnError> {
        match self.docker.inspect_image(image.as_str()).await {
            Ok(i) => Ok(Some(ImageInfo {
                digest: i.id.unwrap_or_default(),
                size_bytes: i.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                created: i.created,
            })),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(runtime_error(&format!("inspecting image {image}"), e)),
        }
    }
}

/// `name[:tag]` / `name@digest` → what the pull API wants: the name, and a tag or digest
/// (never empty: an empty tag would pull every tag of the repository).
pub(super) fn split_reference(image: &ImageRef) -> (&str, &str) {
    let name = image.repository();
    let rest = match image.as_str().split_once('@') {
        Some((_, digest)) => digest,
        None => image.as_str()[name.len()..].strip_prefix(':').unwrap_or("latest"),
    };
    (name, rest)
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(reference: &str) -> ImageRef {
        ImageRef::parse(reference).unwrap()
    }

    #[test]
    fn references_split_for_the_pull_api() {
        assert_eq!(split_reference(&r("labhub/jupyterlab:1")), ("labhub/jupyterlab", "1"));
        assert_eq!(split_reference(&r("jupyter/base")), ("jupyter/base", "latest"));
        assert_eq!(split_reference(&r("127.0.0.1:9/labhub-missing:1")), ("127.0.0.1:9/labhub-missing", "1"));
        assert_eq!(split_reference(&r("localhost:5000/img")), ("localhost:5000/img", "latest"));
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(split_reference(&r(&format!("rocker/rstudio:4.4@{d}"))), ("rocker/rstudio", d));
        assert_eq!(split_reference(&r(&format!("host:5/img@{d}"))), ("host:5/img", d));
    }
}
