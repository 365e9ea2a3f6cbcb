//! Environments: catalogue entries the hub builds itself from a source (a git repository at
//! a ref, or an uploaded archive of the same files), with every build's provenance and
//! history. The catalogue entry serves the newest good build unless an admin pins one; a
//! failed build changes nothing that runs.
//!
//! Who: admins build for the lab (and may name the base), a group's leads for their group,
//! members for themselves when one of their groups lets them (personal environments). A
//! group's environment starts only for its members, a personal one only for its owner.

mod build;
mod remove;
mod settings;
mod snapshot;
mod standing;
mod transfer;
mod upload;

pub(crate) use build::EnvironmentsState;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use labhub_core::environment::BuildSource;
use labhub_core::{BuildId, GroupId, GroupName, GroupRole, UserId};
use labhub_db::environments::{self as store, Holder};
use labhub_db::{ResultExt, groups, images};
use serde::Serialize;
use time::OffsetDateTime;

pub use settings::EnvironmentSettings;
pub use transfer::{ExportManifest, MANIFEST_FORMAT};
pub use upload::UPLOAD_SOURCE;

use crate::access::Actor;
use crate::model::CatalogueImage;
use crate::progress::{ProgressEvent, ProgressLog};
use crate::{Hub, ServiceError};

impl Hub {
    /// Environments built from sources.
    pub fn environments(&self) -> Environments<'_> {
        Environments { hub: self }
    }
}

/// The environments capability.
#[derive(Clone, Copy)]
pub struct Environments<'h> {
    hub: &'h Hub,
}

/// Whose an environment is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Whose {
    /// The lab's (admins build it).
    Lab,
    /// A group's (its leads build it; its members start it).
    Group(String),
    /// One member's own.
    Personal(String),
}

/// One build, with its provenance.
#[derive(Debug, Clone, Serialize)]
pub struct BuildView {
    pub id: BuildId,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// `building`, `ready` or `failed`.
    pub status: String,
    pub commit: Option<String>,
    pub recipe_hash: Option<String>,
    pub base_image_id: Option<String>,
    pub image_id: Option<String>,
    pub tag: String,
    pub builder_version: String,
    pub built_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished: Option<OffsetDateTime>,
    pub error: Option<String>,
    /// The earlier build whose image this one reused (nothing had changed) instead of building.
    pub reused_from: Option<BuildId>,
}

impl From<store::Build> for BuildView {
    fn from(b: store::Build) -> Self {
        Self {
            id: b.build_id,
            git_ref: b.git_ref,
            status: b.status,
            commit: b.commit,
            recipe_hash: b.recipe_hash,
            base_image_id: b.base_image_id,
            image_id: b.image_id,
            tag: b.tag,
            builder_version: b.builder_version,
            built_by: b.built_by_name,
            started: b.started_at,
            finished: b.finished_at,
            error: b.error,
            reused_from: b.reused_build_id,
        }
    }
}

/// An environment as people and the API see it.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentView {
    /// Its catalogue name (what a start names).
    pub name: String,
    pub source: String,
    /// The ref a rebuild uses unless it names another.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub holder: Whose,
    /// Saved from a running server (a snapshot): no source to rebuild, no home folder in it.
    pub snapshot: bool,
    /// Built from uploaded files (`source` reads `upload`; `ref` and `commit` are the
    /// upload's `sha256:`), not from git.
    pub uploaded: bool,
    /// The latest build's status: `building`, `ready` or `failed`.
    pub status: String,
    /// The image a start runs now (the pinned build's, else the newest good build's).
    pub image_id: Option<String>,
    /// The commit of that build.
    pub commit: Option<String>,
    /// The build a start runs now.
    pub serving: Option<BuildId>,
    /// The build an admin pinned, if any.
    pub pinned: Option<BuildId>,
    /// Every build, newest first.
    pub builds: Vec<BuildView>,
}

/// What creating an environment asks for.
#[derive(Debug, Clone)]
pub struct NewEnvironment {
    pub name: String,
    pub source: String,
    pub git_ref: Option<String>,
    /// For a group (its leads and admins).
    pub group: Option<GroupName>,
    /// The catalogue entry to build on (admins); the lab's JupyterLab by default.
    pub base: Option<String>,
}

/// What creating an environment from an upload asks for (besides the archive).
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub name: String,
    /// For a group (its leads and admins).
    pub group: Option<GroupName>,
    /// The catalogue entry to build on (admins); the lab's JupyterLab by default.
    pub base: Option<String>,
}

/// An upload as it arrives: a tar or tar.gz of a repository's files.
pub type UploadStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Where a new environment's files come from.
enum Origin<'a> {
    Git { source: &'a str, git_ref: &'a str },
    Upload { sent: &'a [u8], sha256: &'a str },
}

/// A build's log: live while it runs (and for a while after), else what was kept of it.
pub enum BuildLog {
    Live(Arc<ProgressLog>),
    Stored(Vec<ProgressEvent>),
}

/// The default ref when none is given.
const DEFAULT_REF: &str = "HEAD";

impl<'h> Environments<'h> {
    fn settings(&self) -> &'h EnvironmentSettings {
        &self.hub.0.environments.settings
    }

    /// Every environment the actor may see: admins all, others the lab's, their groups' and their own.
    pub async fn list(&self, actor: Actor<'_>) -> Result<Vec<EnvironmentView>, ServiceError> {
        let all = store::list(self.hub.db()).await?;
        let mut out = Vec::new();
        for env in all {
            if self.may_see(actor, &env).await? {
                out.push(self.view(env).await?);
            }
        }
        Ok(out)
    }

    /// One environment (404 to those who may not see it).
    pub async fn get(&self, actor: Actor<'_>, name: &str) -> Result<EnvironmentView, ServiceError> {
        let env = self.visible(actor, name).await?;
        self.view(env).await
    }

    async fn view(&self, env: store::Environment) -> Result<EnvironmentView, ServiceError> {
        let builds: Vec<BuildView> =
            store::builds(self.hub.db(), env.environment_id).await?.into_iter().map(BuildView::from).collect();
        let serving = serving_build(&builds, env.pinned_build_id);
        let holder = match (&env.group_name, &env.owner_name) {
            (Some(g), _) => Whose::Group(g.clone()),
            (_, Some(o)) => Whose::Personal(o.clone()),
            _ => Whose::Lab,
        };
        Ok(EnvironmentView {
            status: builds.first().map_or_else(|| "failed".to_string(), |b| b.status.clone()),
            image_id: serving.and_then(|b| b.image_id.clone()),
            commit: serving.and_then(|b| b.commit.clone()),
            serving: serving.map(|b| b.id),
            pinned: env.pinned_build_id,
            name: env.name,
            source: env.source,
            git_ref: env.git_ref,
            holder,
            snapshot: env.snapshot,
            uploaded: env.uploaded,
            builds,
        })
    }

    /// Creates an environment and starts its first build; returns the build's id.
    pub async fn create(
        &self,
        actor: Actor<'_>,
        new: NewEnvironment,
    ) -> Result<(EnvironmentView, BuildId), ServiceError> {
        check_name(&new.name)?;
        check_source(&new.source)?;
        let holder = self.holder_for(actor, new.group.as_ref()).await?;
        let git_ref = new.git_ref.clone().unwrap_or_else(|| DEFAULT_REF.to_string());
        let origin = Origin::Git { source: &new.source, git_ref: &git_ref };
        self.insert(actor, &new.name, holder, new.base.as_deref(), origin).await
    }

    /// Creates an environment from an uploaded tar or tar.gz of a repository's files and starts
    /// its first build. Who may is checked before the upload is read, and the archive before
    /// anything is recorded.
    pub async fn create_from_upload(
        &self,
        actor: Actor<'_>,
        new: NewUpload,
        upload: UploadStream,
    ) -> Result<(EnvironmentView, BuildId), ServiceError> {
        check_name(&new.name)?;
        let holder = self.holder_for(actor, new.group.as_ref()).await?;
        if new.base.is_some() && !actor.is_admin() {
            return Err(ServiceError::Forbidden("only an admin names the base an environment builds on".into()));
        }
        let sent = upload::read(upload, self.settings().max_upload_bytes).await?;
        let checked = upload::check(&sent).await?;
        let origin = Origin::Upload { sent: &sent, sha256: &checked.sha256 };
        self.insert(actor, &new.name, holder, new.base.as_deref(), origin).await
    }

    /// Records a new environment (its catalogue entry, whose it is, where from) and starts its first build.
    async fn insert(
        &self,
        actor: Actor<'_>,
        name: &str,
        (holder, limits_group): (Holder, Option<GroupId>),
        base: Option<&str>,
        origin: Origin<'_>,
    ) -> Result<(EnvironmentView, BuildId), ServiceError> {
        if base.is_some() && !actor.is_admin() {
            return Err(ServiceError::Forbidden("only an admin names the base an environment builds on".into()));
        }
        let base_name = base.map_or_else(|| self.settings().base.clone(), str::to_string);
        let base_image = self
            .hub
            .catalogue()
            .get(&base_name)
            .await
            .map_err(|_| ServiceError::Invalid(format!("there is no catalogue image '{base_name}' to build on")))?;
        let (source, git_ref) = match origin {
            Origin::Git { source, git_ref } => (source, git_ref),
            Origin::Upload { sha256, .. } => (UPLOAD_SOURCE, sha256),
        };
        let mut fields = base_image.fields.clone();
        fields.display_name = name.to_string();
        fields.description = match origin {
            Origin::Git { .. } => format!("Built from {source} at {git_ref}"),
            Origin::Upload { .. } => format!("Built from uploaded files ({git_ref})"),
        };
        fields.enabled = false;
        fields.recipe = None;
        let now = self.hub.now();
        let mut tx = self.hub.begin().await?;
        let image: CatalogueImage = images::insert(&mut *tx, name, &fields, now)
            .await
            .on_constraint(images::NAME_KEY, || {
                ServiceError::Conflict(format!("there is already a catalogue image named '{name}'"))
            })?
            .into();
        let id = store::insert(&mut *tx, image.id, source, git_ref, holder, base, now).await?;
        if let Origin::Upload { sent, sha256 } = origin {
            store::insert_upload(&mut *tx, sha256, sent, actor.user_id(), now).await?;
            store::mark_uploaded(&mut *tx, id).await?;
        }
        let detail = serde_json::json!({ "source": source, "ref": git_ref, "base": base_name });
        self.hub.audit().record(&mut *tx, actor, "environment.create", name, detail).await?;
        tx.commit().await?;
        let env = store::by_name(self.hub.db(), name)
            .await?
            .filter(|e| e.environment_id == id)
            .ok_or_else(|| ServiceError::Internal("a new environment vanished".into()))?;
        let source = self.source_of(actor, &env, git_ref).await?;
        let build = self.start_build(actor, &env, source, limits_group).await?;
        Ok((self.view(env).await?, build))
    }

    /// Builds an environment again, at `git_ref` (its ref by default, which this then becomes;
    /// an uploaded environment's refs are its uploads' `sha256:`).
    pub async fn rebuild(
        &self,
        actor: Actor<'_>,
        name: &str,
        git_ref: Option<String>,
    ) -> Result<BuildId, ServiceError> {
        let env = self.rebuildable(actor, name).await?;
        let git_ref = git_ref.unwrap_or_else(|| env.git_ref.clone());
        let source = self.source_of(actor, &env, &git_ref).await?;
        if git_ref != env.git_ref {
            store::set_ref(self.hub.db(), env.environment_id, &git_ref).await?;
        }
        let limits_group = self.limits_group(&env).await?;
        self.start_build(actor, &env, source, limits_group).await
    }

    /// Builds an uploaded environment again from new files (a tar or tar.gz), which later
    /// rebuilds then use. Who may is checked before the upload is read.
    pub async fn rebuild_from_upload(
        &self,
        actor: Actor<'_>,
        name: &str,
        upload: UploadStream,
    ) -> Result<BuildId, ServiceError> {
        let env = self.rebuildable(actor, name).await?;
        if !env.uploaded {
            return Err(ServiceError::Invalid(format!(
                "'{name}' is built from the git repository {}: push the files there and build it again",
                env.source
            )));
        }
        let sent = upload::read(upload, self.settings().max_upload_bytes).await?;
        let checked = upload::check(&sent).await?;
        let sha256 = checked.sha256.clone();
        // Kept before the build is recorded, so no record names an upload that is not there;
        // the environment's ref moves only once the build started.
        store::insert_upload(self.hub.db(), &sha256, &sent, actor.user_id(), self.hub.now()).await?;
        let limits_group = self.limits_group(&env).await?;
        let source = BuildSource::Upload { sha256: checked.sha256, tar: checked.tar };
        let build = self.start_build(actor, &env, source, limits_group).await?;
        store::set_ref(self.hub.db(), env.environment_id, &sha256).await?;
        Ok(build)
    }

    /// An environment the actor may build again; refused for snapshots.
    async fn rebuildable(&self, actor: Actor<'_>, name: &str) -> Result<store::Environment, ServiceError> {
        let env = self.visible(actor, name).await?;
        if env.snapshot {
            return Err(ServiceError::Invalid(format!(
                "'{name}' was saved from a running server: it has no source to rebuild"
            )));
        }
        self.require_builder(actor, &env).await?;
        Ok(env)
    }

    /// Whose quota limits the environment's builds.
    async fn limits_group(&self, env: &store::Environment) -> Result<Option<GroupId>, ServiceError> {
        Ok(match (env.group_id, env.owner_id) {
            (Some(g), _) => Some(g),
            (_, Some(owner)) => self.member_build_group(owner).await?,
            _ => None,
        })
    }

    /// Pins the build a start runs (admins), or unpins with `None` (the newest good build again).
    pub async fn pin(
        &self,
        actor: Actor<'_>,
        name: &str,
        build: Option<BuildId>,
    ) -> Result<EnvironmentView, ServiceError> {
        actor.require_admin()?;
        let env = self.visible(actor, name).await?;
        if let Some(b) = build {
            let found = store::build_with_log(self.hub.db(), b).await?;
            let ok = found.as_ref().is_some_and(|(b, _)| b.environment_id == env.environment_id && b.status == "ready");
            if !ok {
                return Err(ServiceError::Invalid(format!("'{name}' has no good build {b} to pin")));
            }
        }
        let mut tx = self.hub.begin().await?;
        store::set_pin(&mut *tx, env.environment_id, build).await?;
        let detail = serde_json::json!({ "before": env.pinned_build_id, "after": build });
        self.hub.audit().record(&mut *tx, actor, "environment.pin", name, detail).await?;
        tx.commit().await?;
        self.serve_current(name).await?;
        self.get(actor, name).await
    }

    /// Points the catalogue entry at the build that should serve (pinned, else newest good).
    async fn serve_current(&self, name: &str) -> Result<(), ServiceError> {
        let env = store::by_name(self.hub.db(), name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("there is no environment '{name}'")))?;
        let builds: Vec<BuildView> =
            store::builds(self.hub.db(), env.environment_id).await?.into_iter().map(BuildView::from).collect();
        let Some(serving) = serving_build(&builds, env.pinned_build_id) else { return Ok(()) };
        let image = self.hub.catalogue().get(name).await?;
        let mut fields = image.fields.clone();
        fields.reference = labhub_core::ImageRef::parse(&serving.tag)
            .map_err(|e| ServiceError::Internal(format!("a build's tag: {e}")))?;
        fields.enabled = true;
        if fields != image.fields {
            images::update(self.hub.db(), name, &fields, self.hub.now()).await?;
            self.hub.views_changed();
        }
        Ok(())
    }

    /// A build's log, live or kept.
    pub async fn log(&self, actor: Actor<'_>, name: &str, build: BuildId) -> Result<BuildLog, ServiceError> {
        let env = self.visible(actor, name).await?;
        let (b, log) = store::build_with_log(self.hub.db(), build)
            .await?
            .filter(|(b, _)| b.environment_id == env.environment_id)
            .ok_or_else(|| ServiceError::NotFound(format!("'{name}' has no build {build}")))?;
        if let Some(live) = self.hub.0.environments.logs.get(&build) {
            return Ok(BuildLog::Live(live.clone()));
        }
        Ok(BuildLog::Stored(build::replay(&b, &log)))
    }

    /// Whether `user` may start the catalogue entry `image` (a group's environment: its
    /// members; a personal one: its owner; anything else: yes).
    pub(crate) async fn require_startable(&self, user: UserId, image: &CatalogueImage) -> Result<(), ServiceError> {
        let Some(env) = store::by_image(self.hub.db(), image.id).await? else { return Ok(()) };
        let allowed = match (env.group_id, env.owner_id) {
            (None, None) => true,
            (Some(g), _) => groups::role_of(self.hub.db(), g, user).await?.is_some(),
            (_, Some(owner)) => owner == user,
        };
        if allowed {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!("the environment '{}' is not yours to start", env.name)))
        }
    }

    /// Lets a group's members build personal environments (admins and the group's leads).
    pub async fn set_members_may_build(
        &self,
        actor: Actor<'_>,
        group: &GroupName,
        allowed: bool,
    ) -> Result<(), ServiceError> {
        let g = groups::by_name(self.hub.db(), group)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("there is no group {group}")))?;
        if let Actor::Service(_) = actor {
            return Err(ServiceError::Forbidden(format!("only the group {group}'s leads and admins decide this")));
        }
        if let Actor::User(p) = actor
            && !p.admin
            && groups::role_of(self.hub.db(), g.group_id, p.user_id).await? != Some(GroupRole::Lead)
        {
            return Err(ServiceError::Forbidden(format!("only the group {group}'s leads and admins decide this")));
        }
        let mut tx = self.hub.begin().await?;
        store::set_members_may_build(&mut *tx, g.group_id, allowed).await?;
        let detail = serde_json::json!({ "members_build_environments": allowed });
        self.hub.audit().record(&mut *tx, actor, "group.environments", group.as_str(), detail).await?;
        tx.commit().await
    }

    /// Marks builds a stopped hub left unfinished as failed (at boot).
    pub async fn fail_unfinished(&self) -> Result<u64, ServiceError> {
        Ok(store::fail_unfinished(self.hub.db(), self.hub.now()).await?)
    }
}

/// The build a start runs: the pinned one, else the newest good one.
fn serving_build(builds: &[BuildView], pinned: Option<BuildId>) -> Option<&BuildView> {
    match pinned {
        Some(p) => builds.iter().find(|b| b.id == p),
        None => builds.iter().find(|b| b.status == "ready"),
    }
}

fn check_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        // The API's `/hub/api/environments/collect` (the image collector) is not an environment.
        && name != "collect";
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(
            "an environment's name must be 1-63 characters of a-z, 0-9 and '-' (and not 'collect')".into(),
        ))
    }
}

fn check_source(source: &str) -> Result<(), ServiceError> {
    if source == UPLOAD_SOURCE {
        return Err(ServiceError::Invalid(
            "to build from uploaded files, send them as a tar or tar.gz body instead of JSON".into(),
        ));
    }
    if source.is_empty() || source.len() > 2000 || source.starts_with('-') || source.chars().any(char::is_control) {
        return Err(ServiceError::Invalid(
            "the source must be a git repository's URL (https://…) or, where allowed, an absolute path".into(),
        ));
    }
    Ok(())
}
