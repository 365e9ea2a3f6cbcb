//! The image catalogue: what members may start, kept by admins; and local builds from recipes
//! for images that cannot be pulled.

use std::sync::Arc;

use labhub_core::spawner::ImageInfo;
use labhub_core::{Contract, ImageFields, ImageKind, ImageRef};
use labhub_db::ResultExt;
use labhub_db::images;
use serde_json::json;

use crate::access::Actor;
use crate::model::CatalogueImage;
use crate::progress::{ProgressEvent, ProgressLog};
use crate::state::CatalogueState;
use crate::{Hub, ServiceError};

/// The entry a fresh hub starts with, so its one start command leads to a working JupyterLab.
pub const DEFAULT_IMAGE_NAME: &str = "jupyterlab";
/// The reference of the image the built-in `jupyterlab` recipe builds.
pub const DEFAULT_IMAGE_REF: &str = "labhub/jupyterlab:1";

/// A catalogue entry with what the runtime knows of it.
#[derive(Debug, Clone)]
pub struct ImageStatus {
    /// The entry.
    pub image: CatalogueImage,
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
    if f.contract == Contract::Jupyterhub && f.kind != ImageKind::Jupyter {
        return Err(ServiceError::Invalid("only a jupyter image can speak JupyterHub's single-user contract".into()));
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
    /// The image catalogue and its builds.
    pub fn catalogue(&self) -> Catalogue<'_> {
        Catalogue::new(self)
    }
}

/// The image catalogue.
#[derive(Clone, Copy)]
pub struct Catalogue<'h> {
    hub: &'h Hub,
}

impl<'h> Catalogue<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    fn state(&self) -> &'h CatalogueState {
        &self.hub.0.catalogue
    }

    /// The built-in recipes this hub can build.
    pub fn recipe_names(&self) -> Vec<String> {
        self.state().builder.as_ref().map(|b| b.recipes()).unwrap_or_default()
    }

    /// The catalogue, each entry with its local copy and build state (anyone signed in).
    pub async fn list(&self) -> Result<Vec<ImageStatus>, ServiceError> {
        let list = images::list(self.hub.db()).await?;
        let mut out = Vec::with_capacity(list.len());
        for image in list {
            let reference = &image.fields.reference;
            let local = match &self.hub.0.spawner {
                Some(s) => s.inspect_image(reference).await.ok().flatten(),
                None => None,
            };
            let build = self.state().builds.get(reference.as_str()).and_then(|b| b.last());
            out.push(ImageStatus { image: image.into(), local, build });
        }
        Ok(out)
    }

    /// One catalogue entry.
    pub async fn get(&self, name: &str) -> Result<CatalogueImage, ServiceError> {
        images::by_name(self.hub.db(), name)
            .await?
            .map(CatalogueImage::from)
            .ok_or_else(|| ServiceError::NotFound(format!("there is no image '{name}'")))
    }

    /// The entry a start asks for: by name, or the first enabled one; refused when disabled.
    pub(crate) async fn for_start(&self, name: Option<&str>) -> Result<CatalogueImage, ServiceError> {
        let image: CatalogueImage = match name {
            Some(n) => images::by_name(self.hub.db(), n)
                .await?
                .ok_or_else(|| ServiceError::Invalid(format!("there is no image '{n}' in the catalogue")))?
                .into(),
            None => images::list(self.hub.db())
                .await?
                .into_iter()
                .find(|i| i.fields.enabled)
                .ok_or_else(|| ServiceError::Conflict("the image catalogue has no enabled image; ask an admin".into()))?
                .into(),
        };
        if !image.fields.enabled {
            return Err(ServiceError::Invalid(format!("the image '{}' is disabled; choose another", image.name)));
        }
        Ok(image)
    }

    /// Adds a catalogue entry (admins).
    pub async fn add(&self, actor: Actor<'_>, name: &str, fields: ImageFields) -> Result<CatalogueImage, ServiceError> {
        actor.require_admin()?;
        check_name(name)?;
        check_fields(&fields, &self.recipe_names())?;
        let mut tx = self.hub.begin().await?;
        let image: CatalogueImage = images::insert(&mut *tx, name, &fields, self.hub.now())
            .await
            .on_constraint(images::NAME_KEY, || {
                ServiceError::Conflict(format!("there is already an image named '{name}'"))
            })?
            .into();
        self.hub.audit().record(&mut *tx, actor, "image.create", name, json!({ "after": describe(&image) })).await?;
        tx.commit().await?;
        Ok(image)
    }

    /// Changes a catalogue entry (admins); running servers keep what they started with.
    pub async fn update(
        &self,
        actor: Actor<'_>,
        name: &str,
        fields: ImageFields,
    ) -> Result<CatalogueImage, ServiceError> {
        actor.require_admin()?;
        check_fields(&fields, &self.recipe_names())?;
        let before = self.get(name).await?;
        let mut tx = self.hub.begin().await?;
        let image: CatalogueImage = images::update(&mut *tx, name, &fields, self.hub.now())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("there is no image '{name}'")))?
            .into();
        self.hub
            .audit()
            .record(
                &mut *tx,
                actor,
                "image.update",
                name,
                json!({ "before": describe(&before), "after": describe(&image) }),
            )
            .await?;
        tx.commit().await?;
        Ok(image)
    }

    /// Removes a catalogue entry (admins); running servers keep running.
    pub async fn remove(&self, actor: Actor<'_>, name: &str) -> Result<(), ServiceError> {
        actor.require_admin()?;
        let before = self.get(name).await?;
        let mut tx = self.hub.begin().await?;
        images::delete(&mut *tx, name).await?;
        self.hub.audit().record(&mut *tx, actor, "image.delete", name, json!({ "before": describe(&before) })).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts the JupyterLab entry in an empty catalogue, so a fresh hub can start servers at once.
    pub async fn ensure_default(&self) -> Result<(), ServiceError> {
        if images::count(self.hub.db()).await? > 0 {
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
            contract: Contract::Labhub,
            placement: Vec::new(),
        };
        self.add(Actor::System, DEFAULT_IMAGE_NAME, fields).await.map(|_| ())
    }

    /// Starts building a catalogue entry from its recipe (admins), or joins a build in flight.
    pub async fn build(&self, actor: Actor<'_>, name: &str) -> Result<Arc<ProgressLog>, ServiceError> {
        actor.require_admin()?;
        let image = self.get(name).await?;
        if image.fields.recipe.is_none() {
            return Err(ServiceError::Conflict(format!(
                "'{name}' has no recipe: load or pull it on the machine instead"
            )));
        }
        let log = self.start_build(&image)?;
        let detail = json!({ "reference": image.fields.reference });
        self.hub.audit().record(self.hub.db(), actor, "image.build", name, detail).await?;
        Ok(log)
    }

    /// The progress of an image's latest build.
    pub fn build_progress(&self, reference: &ImageRef) -> Option<Arc<ProgressLog>> {
        self.state().builds.get(reference.as_str()).map(|b| b.clone())
    }

    /// Builds every recipe image the catalogue needs that is missing here (at boot, in the background).
    pub async fn build_missing(&self) -> Result<(), ServiceError> {
        for status in self.list().await? {
            let f = &status.image.fields;
            if f.enabled && f.recipe.is_some() && status.local.is_none() {
                tracing::info!(image = %f.reference, "image missing: building it from its recipe");
                self.start_build(&status.image)?;
            }
        }
        Ok(())
    }

    /// Starts a build unless one for the same reference is in flight; returns its progress.
    pub(crate) fn start_build(&self, image: &CatalogueImage) -> Result<Arc<ProgressLog>, ServiceError> {
        let builder = self.state().builder.clone().ok_or_else(|| {
            ServiceError::Unavailable("images cannot be built: the container runtime is not reachable".into())
        })?;
        let recipe = image
            .fields
            .recipe
            .clone()
            .ok_or_else(|| ServiceError::Conflict(format!("'{}' has no recipe", image.name)))?;
        let key = image.fields.reference.as_str().to_string();
        let log = {
            let mut entry = self.state().builds.entry(key.clone()).or_insert_with(ProgressLog::new);
            if !entry.finished() && entry.last().is_some() {
                return Ok(entry.clone());
            }
            let fresh = ProgressLog::new();
            *entry = fresh.clone();
            fresh
        };
        let reference = image.fields.reference.clone();
        log.push(ProgressEvent::step(0, format!("Building {reference} from the '{recipe}' recipe")));
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

fn describe(i: &CatalogueImage) -> serde_json::Value {
    let f = &i.fields;
    json!({
        "display_name": f.display_name,
        "reference": f.reference,
        "kind": f.kind,
        "port": f.port,
        "command": f.command,
        "cpu_millis": f.cpu_millis,
        "memory_bytes": f.memory_bytes,
        "enabled": f.enabled,
        "recipe": f.recipe,
        "contract": f.contract,
        "placement": f.placement,
    })
}
