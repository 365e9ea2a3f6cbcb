//! Moving an environment to another hub (or the same one, years later): the provenance
//! manifest written beside the image's archive, and recording an image loaded from one. The
//! image's bytes travel through the binary (the engine saves and loads them); the hub checks
//! that what was loaded is the image the manifest names.

use labhub_core::{ImageFields, ImageKind, ImageRef};
use labhub_db::environments::{self as store, Finished, Holder, NewBuild};
use labhub_db::{ResultExt, history, images};
use serde::{Deserialize, Serialize};

use super::{EnvironmentView, Environments};
use crate::ServiceError;
use crate::access::Actor;
use crate::model::CatalogueImage;

/// The manifest's format, so a later labhub knows what it reads.
pub const MANIFEST_FORMAT: &str = "labhub-environment/1";

/// What an exported environment carries besides its image: how to run it and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportManifest {
    pub format: String,
    /// Its name in the catalogue it came from.
    pub name: String,
    /// The image's content id; an import checks the archive's image against it.
    pub image_id: String,
    pub display_name: String,
    pub description: String,
    pub kind: String,
    pub port: Option<u16>,
    pub command: Option<Vec<String>>,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    /// Provenance, when the image was built from a source.
    pub source: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub recipe_hash: Option<String>,
    pub base_image_id: Option<String>,
    pub builder_version: Option<String>,
    pub built_by: Option<String>,
    pub built_at: Option<String>,
    /// The session it was exported from, if one was named.
    pub session: Option<i64>,
}

pub(super) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

impl Environments<'_> {
    /// The manifest of what `what` names: an environment (the build it serves) or, as a number,
    /// a session (the exact image it ran). Admins.
    pub async fn export_manifest(&self, actor: Actor<'_>, what: &str) -> Result<ExportManifest, ServiceError> {
        actor.require_admin()?;
        let (name, image_id, session) = match what.parse::<i64>() {
            Ok(id) => {
                let s = history::get(self.hub.db(), id)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound(format!("there is no session {id}")))?;
                let name =
                    s.environment.clone().or(s.image_name.clone()).ok_or_else(|| {
                        ServiceError::Conflict(format!("the catalogue entry session {id} ran is gone"))
                    })?;
                (name, s.image_digest, Some(id))
            }
            Err(_) => {
                let env = self.get(actor, what).await?;
                let id = env
                    .image_id
                    .ok_or_else(|| ServiceError::Conflict(format!("'{what}' has no good build to export")))?;
                (env.name, id, None)
            }
        };
        let image = self.hub.catalogue().get(&name).await?;
        let build = match store::by_name(self.hub.db(), &name).await? {
            Some(env) => store::builds(self.hub.db(), env.environment_id)
                .await?
                .into_iter()
                .find(|b| b.image_id.as_deref() == Some(image_id.as_str()))
                .map(|b| (env, b)),
            None => None,
        };
        let f = &image.fields;
        Ok(ExportManifest {
            format: MANIFEST_FORMAT.into(),
            name,
            image_id,
            display_name: f.display_name.clone(),
            description: f.description.clone(),
            kind: f.kind.as_str().into(),
            port: f.port,
            command: f.command.clone(),
            cpu_millis: f.cpu_millis,
            memory_bytes: f.memory_bytes,
            source: build.as_ref().map(|(e, _)| e.source.clone()),
            git_ref: build.as_ref().map(|(_, b)| b.git_ref.clone()),
            commit: build.as_ref().and_then(|(_, b)| b.commit.clone()),
            recipe_hash: build.as_ref().and_then(|(_, b)| b.recipe_hash.clone()),
            base_image_id: build.as_ref().and_then(|(_, b)| b.base_image_id.clone()),
            builder_version: build.as_ref().map(|(_, b)| b.builder_version.clone()),
            built_by: build.as_ref().map(|(_, b)| b.built_by_name.clone()),
            built_at: build.as_ref().map(|(_, b)| rfc3339(b.started_at)),
            session,
        })
    }

    /// Records an image loaded from an export as a lab environment named `name` (the
    /// manifest's by default), with the manifest's provenance and one good build that serves
    /// the image by its id. The caller loaded the image and checked its id. Admins.
    pub async fn import(
        &self,
        actor: Actor<'_>,
        manifest: &ExportManifest,
        name: Option<&str>,
    ) -> Result<EnvironmentView, ServiceError> {
        actor.require_admin()?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ServiceError::Invalid(format!(
                "this is a '{}' manifest; this labhub reads '{MANIFEST_FORMAT}'",
                manifest.format
            )));
        }
        let name = name.unwrap_or(&manifest.name).to_string();
        super::check_name(&name)?;
        let reference = ImageRef::parse(&manifest.image_id)
            .ok()
            .filter(|_| manifest.image_id.starts_with("sha256:"))
            .ok_or_else(|| ServiceError::Invalid(format!("'{}' is not an image id", manifest.image_id)))?;
        let kind = ImageKind::parse(&manifest.kind)
            .ok_or_else(|| ServiceError::Invalid(format!("'{}' is not a kind of server", manifest.kind)))?;
        let fields = ImageFields {
            display_name: manifest.display_name.clone(),
            description: manifest.description.clone(),
            reference,
            kind,
            port: manifest.port,
            command: manifest.command.clone(),
            cpu_millis: manifest.cpu_millis,
            memory_bytes: manifest.memory_bytes,
            enabled: true,
            recipe: None,
            contract: labhub_core::Contract::Labhub,
            placement: Vec::new(),
        };
        let now = self.hub.now();
        let source = manifest.source.clone().unwrap_or_else(|| "(imported)".into());
        let git_ref = manifest.git_ref.clone().unwrap_or_else(|| "-".into());
        let mut tx = self.hub.begin().await?;
        let image: CatalogueImage = images::insert(&mut *tx, &name, &fields, now)
            .await
            .on_constraint(images::NAME_KEY, || {
                ServiceError::Conflict(format!(
                    "there is already a catalogue image named '{name}'; import it under another --name"
                ))
            })?
            .into();
        let env_id = store::insert(&mut *tx, image.id, &source, &git_ref, Holder::Lab, None, now).await?;
        let built_by = format!("{} (imported by {})", manifest.built_by.as_deref().unwrap_or("?"), actor.name());
        let build = store::insert_build(
            &mut *tx,
            &NewBuild {
                environment_id: env_id,
                git_ref: &git_ref,
                tag: &manifest.image_id,
                builder_version: manifest.builder_version.as_deref().unwrap_or("?"),
                built_by: None,
                built_by_name: &built_by,
                started_at: now,
            },
        )
        .await?;
        let finished = Finished {
            ready: true,
            commit: manifest.commit.as_deref(),
            recipe_hash: manifest.recipe_hash.as_deref(),
            base_image_id: manifest.base_image_id.as_deref(),
            image_id: Some(&manifest.image_id),
            reused: None,
            error: None,
            log: "",
            finished_at: now,
        };
        store::finish_build(&mut *tx, build, &finished).await?;
        let detail = serde_json::json!({ "image_id": manifest.image_id, "source": source, "commit": manifest.commit });
        self.hub.audit().record(&mut *tx, actor, "environment.import", &name, detail).await?;
        tx.commit().await?;
        self.get(actor, &name).await
    }
}
