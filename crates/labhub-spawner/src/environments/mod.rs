//! Building environments: a repository at a ref (or uploaded files), read with repo2docker's conventions, built
//! by the engine on a catalogue image. `source` fetches, `recipe` writes the build (pure),
//! this file drives the engine: on the users' network (so the isolation rules apply to the
//! build's steps too), without pulling, privileges or the engine's socket, within limits, with
//! every output line sent on as progress.

mod archive;
mod recipe;
mod source;

use std::collections::HashMap;

use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptions, RemoveImageOptions, TagImageOptionsBuilder,
};
use futures::StreamExt;
use labhub_core::environment::{BuildSource, BuiltImage, EnvBuildOutcome, EnvBuildSpec, EnvProvenance, ReusableBuild};
use labhub_core::spawner::{Progress, ProgressSender, SpawnError};

pub use archive::{SavedImage, inspect_saved, write_untagged};

use crate::DockerSpawner;
use crate::error::{engine_message, is_status, runtime_error};
use crate::naming::LABEL_HUB;

/// Image labels the builder adds (the service adds who, when, source and ref).
pub const LABEL_COMMIT: &str = "io.labhub.environment.commit";
/// The recipe's hash.
pub const LABEL_RECIPE_HASH: &str = recipe::RECIPE_HASH_LABEL;
/// The base image's content id.
pub const LABEL_BASE_IMAGE: &str = "io.labhub.environment.base-image-id";

/// The label the JupyterLab recipe sets when its image has R.
const LABEL_WITH_R: &str = "io.labhub.with-r";

fn send(progress: &ProgressSender, percent: u8, message: impl Into<String>) {
    let _ = progress.send(Progress { percent, message: message.into() });
}

/// Reads `Step 3/12 : …` into a percent between 10 and 95.
fn step_percent(line: &str) -> Option<u8> {
    let rest = line.strip_prefix("Step ")?;
    let (n, rest) = rest.split_once('/')?;
    let m = rest.split_whitespace().next()?;
    let (n, m): (u32, u32) = (n.parse().ok()?, m.parse().ok()?);
    (m > 0).then(|| (10 + 85 * n.min(m) / m) as u8)
}

impl DockerSpawner {
    /// Builds an environment (the `ImageBuilder::build_environment` contract).
    pub async fn build_environment_image(&self, spec: &EnvBuildSpec, progress: ProgressSender) -> EnvBuildOutcome {
        let mut provenance = EnvProvenance::default();
        let result =
            match tokio::time::timeout(spec.limits.timeout, self.run_build(spec, &progress, &mut provenance)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "the build took longer than its limit of {} s and was stopped",
                    spec.limits.timeout.as_secs()
                )),
            };
        EnvBuildOutcome { provenance, result }
    }

    async fn run_build(
        &self,
        spec: &EnvBuildSpec,
        progress: &ProgressSender,
        provenance: &mut EnvProvenance,
    ) -> Result<(), String> {
        let fetched;
        let (commit, archive): (&str, &[u8]) = match &spec.source {
            BuildSource::Git { repository, git_ref, local } => {
                send(progress, 1, format!("Fetching {repository} at {git_ref}"));
                fetched = source::fetch(repository, git_ref, local).await?;
                send(progress, 5, format!("{git_ref} is commit {}", fetched.commit));
                (&fetched.commit, &fetched.archive)
            }
            BuildSource::Upload { sha256, tar } => {
                send(progress, 5, format!("Reading the uploaded files ({sha256})"));
                (sha256, tar)
            }
        };
        provenance.commit = Some(commit.to_string());
        let files = recipe::read_archive(archive)?;
        if files.is_empty() {
            return Err(match &spec.source {
                BuildSource::Git { repository, git_ref, .. } => format!("{repository} has no files at {git_ref}"),
                BuildSource::Upload { .. } => "the upload has no files".to_string(),
            });
        }
        let base = self.base_of(spec).await?;
        provenance.base_image_id = Some(base.id.clone());
        let indexes = recipe::Indexes {
            pip_index_url: spec.indexes.pip_index_url.clone(),
            pip_cert: match &spec.indexes.pip_cert {
                Some(path) => Some(std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?),
                None => None,
            },
            debian_mirror: spec.indexes.debian_mirror.clone(),
        };
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_COMMIT.into(), commit.to_string());
        labels.insert(LABEL_BASE_IMAGE.into(), base.id.clone());
        labels.insert(LABEL_HUB.into(), self.config().hub_id.to_string());
        let plan = recipe::plan(&files, &base, &spec.catalogue, &indexes, &labels)?;
        provenance.recipe_hash = Some(plan.recipe_hash.clone());
        if let Some(reused) = self.reuse(spec, provenance, progress).await? {
            provenance.image_id = Some(reused.image_id.clone());
            provenance.reused = Some(reused.build);
            return Ok(());
        }
        for image in &plan.from {
            // The engine would pull a missing image; a build never does.
            match self.docker().inspect_image(image).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {
                    return Err(format!(
                        "{image} is not on this machine (builds never pull); ask an admin to build or load it"
                    ));
                }
                Err(e) => return Err(format!("inspecting {image}: {}", engine_message(&e))),
            }
        }
        self.prepare_network().await.map_err(|e| e.to_string())?;
        let memory = i32::try_from(spec.limits.memory_bytes).unwrap_or(i32::MAX);
        let options = BuildImageOptionsBuilder::new()
            .dockerfile(&plan.dockerfile)
            .t(spec.tag.as_str())
            .rm(true)
            .forcerm(true)
            .memory(memory)
            .memswap(memory)
            .cpuperiod(100_000)
            .cpuquota(i32::try_from(u64::from(spec.limits.cpu_millis) * 100).unwrap_or(i32::MAX))
            .networkmode(self.config().network.as_str())
            .build();
        send(
            progress,
            8,
            if plan.own_dockerfile { "Building the repository's Dockerfile" } else { "Building the recipe" },
        );
        let mut stream = self.docker().build_image(options, None, Some(bollard::body_full(plan.context.into())));
        let mut percent = 10u8;
        let mut built: Option<String> = None;
        let mut last_lines: Vec<String> = Vec::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(e) => return Err(failure(&engine_message(&e), &last_lines)),
            };
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(failure(&detail, &last_lines));
            }
            if let Some(id) = info.aux.and_then(|a| a.id) {
                built = Some(id);
            }
            for line in info.stream.iter().flat_map(|s| s.lines()).map(str::trim_end).filter(|l| !l.is_empty()) {
                if let Some(p) = step_percent(line) {
                    percent = p;
                }
                last_lines.push(line.to_string());
                if last_lines.len() > 12 {
                    last_lines.remove(0);
                }
                send(progress, percent, line);
            }
        }
        let id = match built {
            Some(id) => id,
            None => self
                .docker()
                .inspect_image(spec.tag.as_str())
                .await
                .ok()
                .and_then(|i| i.id)
                .ok_or_else(|| failure("the engine reported no image", &last_lines))?,
        };
        provenance.image_id = Some(id);
        Ok(())
    }

    /// The earlier build this one equals (commit, recipe, base; the service offers only
    /// builds of this builder version), when its image is still there: tagged with this
    /// build's tag, so the catalogue entry moves to it without the engine building anything.
    async fn reuse<'s>(
        &self,
        spec: &'s EnvBuildSpec,
        provenance: &EnvProvenance,
        progress: &ProgressSender,
    ) -> Result<Option<&'s ReusableBuild>, String> {
        let same = |b: &&ReusableBuild| {
            provenance.commit.as_deref() == Some(b.commit.as_str())
                && provenance.recipe_hash.as_deref() == Some(b.recipe_hash.as_str())
                && provenance.base_image_id.as_deref() == Some(b.base_image_id.as_str())
        };
        for earlier in spec.reusable.iter().filter(same) {
            match self.docker().inspect_image(&earlier.image_id).await {
                Ok(_) => {}
                // Collected since: look further, else build.
                Err(e) if is_status(&e, 404) => continue,
                Err(e) => return Err(format!("inspecting {}: {}", earlier.image_id, engine_message(&e))),
            }
            let (repo, tag) = spec.tag.as_str().rsplit_once(':').unwrap_or((spec.tag.as_str(), "latest"));
            let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
            self.docker()
                .tag_image(&earlier.image_id, Some(options))
                .await
                .map_err(|e| format!("tagging {} as {}: {}", earlier.image_id, spec.tag, engine_message(&e)))?;
            send(
                progress,
                95,
                format!(
                    "Unchanged since build {} (same commit, recipe, base and builder): reusing its image {} without building",
                    earlier.build, earlier.image_id
                ),
            );
            return Ok(Some(earlier));
        }
        Ok(None)
    }

    /// The images this hub built (labelled with its id).
    pub async fn environment_images(&self) -> Result<Vec<BuiltImage>, SpawnError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={}", self.config().hub_id)])]);
        let options = ListImagesOptions { filters: Some(filters), ..Default::default() };
        let list = self.docker().list_images(Some(options)).await.map_err(|e| runtime_error("listing images", e))?;
        Ok(list
            .into_iter()
            .map(|i| BuiltImage {
                id: i.id,
                size_bytes: u64::try_from(i.size).unwrap_or(0),
                tags: i.repo_tags.into_iter().filter(|t| t != "<none>:<none>").collect(),
            })
            .collect())
    }

    /// Removes one of them with its tags, unless a container uses it.
    pub async fn remove_environment_image(&self, id: &str) -> Result<bool, SpawnError> {
        let image = match self.docker().inspect_image(id).await {
            Ok(i) => i,
            Err(e) if is_status(&e, 404) => return Ok(false),
            Err(e) => return Err(runtime_error(&format!("inspecting {id}"), e)),
        };
        let ours = image.config.and_then(|c| c.labels).and_then(|l| l.get(LABEL_HUB).cloned());
        if ours.as_deref() != Some(self.config().hub_id.as_str()) {
            return Err(SpawnError::Invalid(format!("{id} was not built by this hub")));
        }
        // Without force the engine refuses an image a container uses, and an id with several
        // tags; the tags go first, each refused alike while a container runs the image.
        for tag in image.repo_tags.unwrap_or_default() {
            match self.docker().remove_image(&tag, None::<RemoveImageOptions>, None).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 409) => return Ok(false),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(runtime_error(&format!("removing {tag}"), e)),
            }
        }
        match self.docker().remove_image(id, None::<RemoveImageOptions>, None).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(runtime_error(&format!("removing {id}"), e)),
        }
    }

    /// What the base offers: its id, user, entrypoint and work directory.
    async fn base_of(&self, spec: &EnvBuildSpec) -> Result<recipe::Base, String> {
        let image = self.docker().inspect_image(spec.base.as_str()).await.map_err(|e| {
            if is_status(&e, 404) {
                format!("the base image {} is not on this machine yet; try again when it is built", spec.base)
            } else {
                format!("inspecting the base image {}: {}", spec.base, engine_message(&e))
            }
        })?;
        let config = image.config.unwrap_or_default();
        Ok(recipe::Base {
            id: image.id.ok_or("the base image has no id")?,
            user: config.user.unwrap_or_default(),
            entrypoint: config.entrypoint.unwrap_or_default(),
            workdir: config.working_dir.filter(|w| !w.is_empty()),
            has_r: config.labels.as_ref().and_then(|l| l.get(LABEL_WITH_R)).is_some_and(|v| v == "true"),
        })
    }
}

/// A failed build's message: the engine's reason, then the last lines it printed.
fn failure(reason: &str, last_lines: &[String]) -> String {
    if last_lines.is_empty() {
        reason.trim().to_string()
    } else {
        format!("{}; the build's last lines:\n{}", reason.trim(), last_lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_steps_give_the_percent() {
        assert_eq!(step_percent("Step 1/5 : FROM sha256:x"), Some(27));
        assert_eq!(step_percent("Step 5/5 : USER 1000"), Some(95));
        assert_eq!(step_percent(" ---> Running in abc"), None);
    }
}
