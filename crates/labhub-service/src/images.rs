//! The image catalogue: what members may start, kept by admins; and local builds from recipes
//! for images that cannot be pulled.

use std::sync::Arc;

use labhub_core::spawner::ImageInfo;
use labhub_core::{ImageKind, ImageRef};
use labhub_db::ResultExt;
use labhub_db::images::{self, Image, ImageFields};
use serde_json::json;

use crate::audit::Actor;
use crate::progress::{ProgressEvent, ProgressLog};
use crate::{Hub, ServiceError};

/// The entry a fresh hub starts with, so its one start command leads to a working JupyterLab.
pub const DEFAULT_IMAGE_NAME: &str = "jupyterlab";
/// The reference of the image the built-in `jupyterlab` recipe builds.
pub const DEFAULT_IMAGE_REF: &str = "labhub/jupyterlab:1";

/// A catalogue entry with what the runtime knows of it.
#[derive(Debug, Clone)]
pub struct ImageStatus {
    /// The entry.
    pub image: Image,
    /// The local copy, if there is one.
    pub local: Option<ImageInfo>,
    /// A build in flight or just finished, if any.
    pub build: Option<ProgressEvent>,
}

fn check_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(
            "an image name must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'".into(),
        ))
    }
}

fn check_fields(f: &ImageFields, recipes: &[String]) -> Result<(), ServiceError> {
    if f.display_name.trim().is_empty() || f.display_name.chars().count() > 100 {
        return Err(ServiceError::Invalid("the display name must be 1-100 characters".into()));
    }
    if f.description.chars().count() > 1000 {
        return Err(ServiceError::Invalid("the description must be at most 1000 characters".into()));
    }
    if f.cpu_millis == 0 || f.memory_bytes < 64 << 20 {
        return Err(ServiceError::Invalid("give at least some CPU and at least 64 MiB of memory".into()));
    }
    match f.kind {
        ImageKind::Custom => {
            if f.port.is_none() || f.command.as_ref().is_none_or(|c| c.is_empty()) {
                return Err(ServiceError::Invalid("a custom image needs a port and a command".into()));
            }
        }
        ImageKind::Jupyter | ImageKind::Rstudio => {
            if f.port.is_some() {
                return Err(ServiceError::Invalid(format!(
                    "a {} image listens on port {}; only custom images take a port",
                    f.kind.as_str(),
                    f.kind.default_port()
                )));
            }
        }
    }
    if let Some(r) = &f.recipe
        && !recipes.contains(r)
    {
        return Err(ServiceError::Invalid(format!(
            "there is no built-in recipe '{r}' (known: {})",
            recipes.join(", ")
        )));
    }
    Ok(())
}

impl Hub {
    /// The built-in recipes this hub can build.
    pub fn recipe_names(&self) -> Vec<String> {
        self.0.servers.builder.as_ref().map(|b| b.recipes()).unwrap_or_default()
    }

    /// The catalogue, each entry with its local copy and build state (anyone signed in).
    pub async fn images(&self) -> Result<Vec<ImageStatus>, ServiceError> {
        let list = images::list(self.db()).await?;
        let mut out = Vec::with_capacity(list.len());
        for image in list {
            let local = match &self.0.servers.spawner {
                Some(s) => s.inspect_image(&image.reference).await.ok().flatten(),
                None => None,
            };
            let build = self.0.servers.builds.get(image.reference.as_str()).and_then(|b| b.last());
            out.push(ImageStatus { image, local, build });
        }
        Ok(out)
    }

    /// One catalogue entry.
    pub async fn image(&self, name: &str) -> Result<Image, ServiceError> {
        images::by_name(self.db(), name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("there is no image '{name}'")))
    }

    /// Adds a catalogue entry (admins).
    pub async fn add_image(&self, actor: Actor<'_>, name: &str, fields: ImageFields) -> Result<Image, ServiceError> {
        actor.require_admin()?;
        check_name(name)?;
        check_fields(&fields, &self.recipe_names())?;
        let mut tx = labhub_db::begin(self.db()).await?;
        let image =
            images::insert(&mut *tx, name, &fields, self.now()).await.on_constraint(images::NAME_KEY, || {
                ServiceError::Conflict(format!("there is already an image named '{name}'"))
            })?;
        self.audit(&mut *tx, actor, "image.create", name, json!({ "after": describe(&image) })).await?;
        labhub_db::commit(tx).await?;
        Ok(image)
    }

    /// Changes a catalogue entry (admins); running servers keep what they started with.
    pub async fn update_image(&self, actor: Actor<'_>, name: &str, fields: ImageFields) -> Result<Image, ServiceError> {
        actor.require_admin()?;
        check_fields(&fields, &self.recipe_names())?;
        let before = self.image(name).await?;
        let mut tx = labhub_db::begin(self.db()).await?;
        let image = images::update(&mut *tx, name, &fields, self.now())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("there is no image '{name}'")))?;
        self.audit(
            &mut *tx,
            actor,
            "image.update",
            name,
            json!({ "before": describe(&before), "after": describe(&image) }),
        )
        .await?;
        labhub_db::commit(tx).await?;
        Ok(image)
    }

    /// Removes a catalogue entry (admins); running servers keep running.
    pub async fn remove_image(&self, actor: Actor<'_>, name: &str) -> Result<(), ServiceError> {
        actor.require_admin()?;
        let before = self.image(name).await?;
        let mut tx = labhub_db::begin(self.db()).await?;
        images::delete(&mut *tx, name).await?;
        self.audit(&mut *tx, actor, "image.delete", name, json!({ "before": describe(&before) })).await?;
        labhub_db::commit(tx).await?;
        Ok(())
    }

    /// Puts the JupyterLab entry in an empty catalogue, so a fresh hub can start servers at once.
    pub async fn ensure_default_catalogue(&self) -> Result<(), ServiceError> {
        if images::count(self.db()).await? > 0 {
            return Ok(());
        }
        let recipe =
            self.recipe_names().contains(&DEFAULT_IMAGE_NAME.to_string()).then(|| DEFAULT_IMAGE_NAME.to_string());
        let fields = ImageFields {
            display_name: "JupyterLab".into(),
            description: "Python 3 with JupyterLab and an IPython kernel.".into(),
            reference: ImageRef::parse(DEFAULT_IMAGE_REF).expect("a valid reference"),
            kind: ImageKind::Jupyter,
            port: None,
            command: None,
            cpu_millis: 1000,
            memory_bytes: 2 << 30,
            enabled: true,
            recipe,
        };
        self.add_image(Actor::System, DEFAULT_IMAGE_NAME, fields).await.map(|_| ())
    }

    /// Starts building a catalogue entry from its recipe (admins), or joins a build in flight.
    pub async fn build_image(&self, actor: Actor<'_>, name: &str) -> Result<Arc<ProgressLog>, ServiceError> {
        actor.require_admin()?;
        let image = self.image(name).await?;
        if image.recipe.is_none() {
            return Err(ServiceError::Conflict(format!(
                "'{name}' has no recipe: load or pull it on the machine instead"
            )));
        }
        let log = self.start_build(&image)?;
        self.audit(self.db(), actor, "image.build", name, json!({ "reference": image.reference })).await?;
        Ok(log)
    }

    /// The progress of an image's latest build.
    pub fn build_progress(&self, reference: &ImageRef) -> Option<Arc<ProgressLog>> {
        self.0.servers.builds.get(reference.as_str()).map(|b| b.clone())
    }

    /// Builds every recipe image the catalogue needs that is missing here (at boot, in the background).
    pub async fn build_missing_images(&self) -> Result<(), ServiceError> {
        for status in self.images().await? {
            if status.image.enabled && status.image.recipe.is_some() && status.local.is_none() {
                tracing::info!(image = %status.image.reference, "image missing: building it from its recipe");
                self.start_build(&status.image)?;
            }
        }
        Ok(())
    }

    /// Starts a build unless one for the same reference is in flight; returns its progress.
    pub(crate) fn start_build(&self, image: &Image) -> Result<Arc<ProgressLog>, ServiceError> {
        let builder = self.0.servers.builder.clone().ok_or_else(|| {
            ServiceError::Unavailable("images cannot be built: the container runtime is not reachable".into())
        })?;
        let recipe =
            image.recipe.clone().ok_or_else(|| ServiceError::Conflict(format!("'{}' has no recipe", image.name)))?;
        let key = image.reference.as_str().to_string();
        let log = {
            let mut entry = self.0.servers.builds.entry(key.clone()).or_insert_with(ProgressLog::new);
            if !entry.finished() && entry.last().is_some() {
                return Ok(entry.clone());
            }
            let fresh = ProgressLog::new();
            *entry = fresh.clone();
            fresh
        };
        log.push(ProgressEvent::step(0, format!("Building {} from the '{recipe}' recipe", image.reference)));
        let reference = image.reference.clone();
        let log2 = log.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<labhub_core::spawner::Progress>();
            let forward_log = log2.clone();
            let forward = tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    forward_log.push(ProgressEvent::step(p.percent, p.message));
                }
            });
            let result = builder.build(&recipe, &reference, tx).await;
            let _ = forward.await;
            match result {
                Ok(id) => {
                    tracing::info!(image = %reference, id = %id, "image built");
                    log2.push(ProgressEvent::ready(format!("Built {reference} ({})", short_id(&id)), None));
                }
                Err(e) => {
                    tracing::warn!(image = %reference, error = %e, "image build failed");
                    log2.push(ProgressEvent::failed(format!("Building {reference} failed: {e}")));
                }
            }
        });
        Ok(log)
    }
}

/// The first 12 hex digits of an image id, as Docker shows them.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

fn describe(i: &Image) -> serde_json::Value {
    json!({
        "display_name": i.display_name,
        "reference": i.reference,
        "kind": i.kind,
        "port": i.port,
        "command": i.command,
        "cpu_millis": i.cpu_millis,
        "memory_bytes": i.memory_bytes,
        "enabled": i.enabled,
        "recipe": i.recipe,
    })
}
