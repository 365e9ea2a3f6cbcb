//! Snapshots: a running server's container saved as a personal environment of its owner, to
//! start again later like any environment. Only the container's own files are saved: the
//! engine commits no volume or mount, so the home folder (and datasets) are never part of it.
//! Each member holds at most `environments.snapshots_per_member`, each at most
//! `environments.snapshot_max_size` of changes; a snapshot is never rebuilt.

use std::collections::BTreeMap;

use labhub_core::spawner::SpawnError;
use labhub_core::{ImageRef, ServerName, ServerState, UserName};
use labhub_db::environments::{self as store, Finished, Holder, NewBuild};
use labhub_db::{ResultExt, history, images, servers, users};

use super::build::BUILDER_VERSION;
use super::{EnvironmentView, Environments};
use crate::ServiceError;
use crate::access::{Actor, Need, ServerRef};
use crate::model::{CatalogueImage, server_label};
use crate::quotas::Refusal;

impl Environments<'_> {
    /// Saves `owner`'s running server as their personal environment `name` (its owner and
    /// admins); the server pauses for the moment of the commit and runs on.
    pub async fn snapshot(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        name: &str,
    ) -> Result<EnvironmentView, ServiceError> {
        super::check_name(name)?;
        let user = self.hub.user_row(owner).await?;
        self.hub.access().require(
            actor,
            ServerRef { owner: user.user_id, owner_name: &user.name, server },
            Need::Own,
        )?;
        let label = server_label(owner, server);
        let server_key = server.map_or("", ServerName::as_str);
        let row = servers::get(self.hub.db(), user.user_id, server_key)
            .await?
            .filter(|r| r.state == ServerState::Running)
            .ok_or_else(|| {
                ServiceError::Conflict(format!("{label} is not running: start it to save its environment"))
            })?;
        let spawner = self.hub.servers().spawner()?.clone();
        let settings = self.settings();
        let ran: CatalogueImage = images::list(self.hub.db())
            .await?
            .into_iter()
            .find(|i| Some(i.image_id) == row.image_id)
            .ok_or_else(|| ServiceError::Conflict(format!("the catalogue entry {label} runs is gone")))?
            .into();
        let session = history::open_session(self.hub.db(), user.user_id, server_key).await?;
        let source = match session {
            Some(n) => format!("snapshot of {label} (session {n})"),
            None => format!("snapshot of {label}"),
        };
        let base_image_id = row.image_digest.clone().unwrap_or_default();

        let mut fields = ran.fields.clone();
        fields.display_name = name.to_string();
        fields.description = format!("Saved from {label}");
        fields.enabled = false;
        fields.recipe = None;
        let now = self.hub.now();
        let mut tx = self.hub.begin().await?;
        // Counted under the account's row lock: two saves at once cannot both pass the count.
        users::by_name_for_update(&mut *tx, owner).await?;
        let held = u64::try_from(store::count_snapshots(&mut *tx, user.user_id).await?).unwrap_or(0);
        if held >= u64::from(settings.snapshots_per_member) {
            return Err(Refusal::Snapshots { held, limit: settings.snapshots_per_member }.into_error());
        }
        let image: CatalogueImage = images::insert(&mut *tx, name, &fields, now)
            .await
            .on_constraint(images::NAME_KEY, || {
                ServiceError::Conflict(format!("there is already a catalogue image named '{name}'"))
            })?
            .into();
        let env_id = store::insert(&mut *tx, image.id, &source, "-", Holder::Owner(user.user_id), None, now).await?;
        store::mark_snapshot(&mut *tx, env_id).await?;
        let build = store::insert_build(
            &mut *tx,
            &NewBuild {
                environment_id: env_id,
                git_ref: "-",
                tag: "",
                builder_version: BUILDER_VERSION,
                built_by: match actor {
                    Actor::User(p) => Some(p.user_id),
                    Actor::Service(_) | Actor::System => None,
                },
                built_by_name: actor.name(),
                started_at: now,
            },
        )
        .await?;
        let tag = ImageRef::parse(&format!("{}/{name}:b{build}", settings.repository))
            .map_err(|e| ServiceError::Internal(format!("a snapshot's tag: {e}")))?;
        store::set_tag(&mut *tx, build, tag.as_str()).await?;
        let detail = serde_json::json!({ "build": build, "source": source, "base_image_id": base_image_id });
        self.hub.audit().record(&mut *tx, actor, "environment.snapshot", name, detail).await?;
        tx.commit().await?;

        let mut labels = BTreeMap::new();
        labels.insert("io.labhub.environment".into(), name.to_string());
        labels.insert("io.labhub.environment.build".into(), build.to_string());
        labels.insert("io.labhub.environment.source".into(), source.clone());
        labels.insert("io.labhub.environment.built-by".into(), actor.name().to_string());
        labels.insert("io.labhub.environment.built-at".into(), super::transfer::rfc3339(now));
        labels.insert("io.labhub.environment.builder".into(), BUILDER_VERSION.into());
        labels.insert("io.labhub.environment.base-image".into(), base_image_id.clone());
        let committed = spawner.commit_server(&row.spawner_state, &tag, &labels, settings.snapshot_max_bytes).await;
        let info = match committed {
            Ok(info) => info,
            Err(e) => {
                // Nothing half-made: the catalogue entry goes, and with it the environment
                // and its build (and the snapshot does not count against the quota).
                images::delete(self.hub.db(), name).await?;
                return Err(match e {
                    SpawnError::TooLarge { size, limit } => Refusal::SnapshotSize { size, limit }.into_error(),
                    SpawnError::Invalid(m) => ServiceError::Conflict(format!("{label} cannot be saved: {m}")),
                    other => ServiceError::Unavailable(format!("{label} could not be saved: {other}")),
                });
            }
        };
        let finished = Finished {
            ready: true,
            commit: None,
            recipe_hash: None,
            base_image_id: Some(&base_image_id),
            image_id: Some(&info.digest),
            reused: None,
            error: None,
            log: "",
            finished_at: self.hub.now(),
        };
        store::finish_build(self.hub.db(), build, &finished).await?;
        self.serve_current(name).await?;
        tracing::info!(environment = name, server = %label, image = %info.digest, "saved a server's environment");
        self.get(actor, name).await
    }
}
