//! Every session recorded (a server start that came up: the exact image id, the environment
//! build, resources, start and stop), relaunching one exactly, and the image collector that
//! keeps what sessions and the catalogue still need.

use std::collections::HashSet;

use labhub_core::{BuildId, GroupName, ServerName, UserName};
use labhub_db::environments as envs;
use labhub_db::history::{self, ServerSession};
use serde::Serialize;
use time::OffsetDateTime;

use crate::access::Actor;
use crate::model::{StartOutcome, StartRequest};
use crate::{Hub, ServiceError};

impl Hub {
    /// Sessions: what ran, relaunching it, and collecting images nobody needs.
    pub fn history(&self) -> History<'_> {
        History { hub: self }
    }
}

/// The history capability.
#[derive(Clone, Copy)]
pub struct History<'h> {
    hub: &'h Hub,
}

/// The resources a session ran with.
#[derive(Debug, Clone, Serialize)]
pub struct SessionResources {
    pub cpu_millis: i32,
    pub memory_bytes: i64,
    pub gpus: i32,
}

/// One session as people and the API see it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub id: i64,
    pub user: String,
    /// The server's name (`""`: the default server).
    pub server: String,
    /// The catalogue entry it was started from (`null` once removed).
    pub image: Option<String>,
    /// The reference the runtime was given.
    pub image_ref: String,
    /// The content id the container ran (`sha256:…`).
    pub image_id: String,
    /// The image's repository digest (`name@sha256:…`), when it had one.
    pub repo_digest: Option<String>,
    /// The environment and build it ran, when it was one.
    pub environment: Option<String>,
    pub build: Option<BuildId>,
    pub resources: SessionResources,
    pub group: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub stopped: Option<OffsetDateTime>,
    pub stop_reason: Option<String>,
}

impl From<ServerSession> for SessionView {
    fn from(s: ServerSession) -> Self {
        Self {
            id: s.session_id,
            user: s.user_name,
            server: s.server_name,
            image: s.image_name,
            image_ref: s.image_ref,
            image_id: s.image_digest,
            repo_digest: s.repo_digest,
            environment: s.environment,
            build: s.build_id,
            resources: SessionResources { cpu_millis: s.cpu_millis, memory_bytes: s.memory_bytes, gpus: s.gpus },
            group: s.group_name,
            started: s.started_at,
            stopped: s.stopped_at,
            stop_reason: s.stop_reason,
        }
    }
}

/// What the image collector did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CollectReport {
    /// The images removed, with their tags.
    pub removed: Vec<RemovedImage>,
    /// Bytes the removed images took (layers they shared with kept images are not freed).
    pub freed_bytes: u64,
    /// Images kept: serving or pinned builds, sessions of the last days, running servers.
    pub kept: usize,
    /// Uploaded sources removed: their environments are gone.
    pub uploads_removed: u64,
}

/// How long an upload is kept whatever refers to it: new files are kept just before the
/// build that names them is recorded, and the collector must not take them in between.
const UPLOAD_GRACE: time::Duration = time::Duration::hours(1);

/// One removed image.
#[derive(Debug, Clone, Serialize)]
pub struct RemovedImage {
    pub id: String,
    pub tags: Vec<String>,
    pub size_bytes: u64,
}

impl History<'_> {
    /// A page of a user's sessions, newest first, and how many there are (the user or admins).
    pub async fn of_user(
        &self,
        actor: Actor<'_>,
        user: &UserName,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<SessionView>, i64), ServiceError> {
        let row = self.hub.user_row(user).await?;
        actor.require_self_or_admin(row.user_id)?;
        let (rows, total) = history::page(self.hub.db(), Some(row.user_id), offset, limit).await?;
        Ok((rows.into_iter().map(SessionView::from).collect(), total))
    }

    /// A page of everyone's sessions (admins).
    pub async fn all(
        &self,
        actor: Actor<'_>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<SessionView>, i64), ServiceError> {
        actor.require_admin()?;
        let (rows, total) = history::page(self.hub.db(), None, offset, limit).await?;
        Ok((rows.into_iter().map(SessionView::from).collect(), total))
    }

    /// One of a user's sessions (the user or admins).
    pub async fn session(&self, actor: Actor<'_>, user: &UserName, session: i64) -> Result<SessionView, ServiceError> {
        self.row(actor, user, session).await.map(SessionView::from)
    }

    async fn row(&self, actor: Actor<'_>, user: &UserName, session: i64) -> Result<ServerSession, ServiceError> {
        let row = self.hub.user_row(user).await?;
        actor.require_self_or_admin(row.user_id)?;
        let not_found = || ServiceError::NotFound(format!("{user} has no session {session}"));
        history::get(self.hub.db(), session).await?.filter(|s| s.user_id == row.user_id).ok_or_else(not_found)
    }

    /// Starts the session's server again on exactly the image id it ran, with its resources
    /// and group, whatever the catalogue entry serves now (whoever may reach the server).
    pub async fn relaunch(
        &self,
        actor: Actor<'_>,
        user: &UserName,
        session: i64,
    ) -> Result<StartOutcome, ServiceError> {
        let s = self.row(actor, user, session).await?;
        let image = s.image_name.clone().ok_or_else(|| {
            ServiceError::Conflict("the catalogue entry this session ran is gone; an admin can add it again".into())
        })?;
        let server = match s.server_name.as_str() {
            "" => None,
            name => Some(ServerName::parse(name)?),
        };
        let request = StartRequest {
            image: Some(image),
            group: s.group_name.as_deref().map(GroupName::parse).transpose()?,
            cpu_millis: u32::try_from(s.cpu_millis).ok(),
            memory_bytes: u64::try_from(s.memory_bytes).ok(),
            gpus: u32::try_from(s.gpus).ok(),
            exact_image: Some(s.image_digest),
        };
        self.hub.servers().start(actor, user, server.as_ref(), request).await
    }

    /// Removes the images this hub built that nothing needs any more: not serving or pinned
    /// for an environment, not run by a session of the last `environments.keep_session_images`,
    /// not used by a container (admins).
    pub async fn collect_images(&self, actor: Actor<'_>) -> Result<CollectReport, ServiceError> {
        actor.require_admin()?;
        let builder = self.hub.0.catalogue.builder.clone().ok_or_else(|| {
            ServiceError::Unavailable("images cannot be collected: the container runtime is not reachable".into())
        })?;
        let Some(collecting) = self.hub.replicas().lock(labhub_db::replicas::Job::ImageCollector).await? else {
            return Err(ServiceError::Conflict("another hub process is collecting images right now".into()));
        };
        let keep_for = self.hub.0.environments.settings.keep_session_images;
        let since = self.hub.now() - keep_for;
        let mut keep: HashSet<String> = history::images_since(self.hub.db(), since).await?.into_iter().collect();
        for env in envs::list(self.hub.db()).await? {
            let builds = envs::builds(self.hub.db(), env.environment_id).await?;
            let serving = match env.pinned_build_id {
                Some(p) => builds.iter().find(|b| b.build_id == p),
                None => builds.iter().find(|b| b.status == "ready"),
            };
            keep.extend(serving.and_then(|b| b.image_id.clone()));
            if let Some(p) = env.pinned_build_id {
                keep.extend(builds.iter().find(|b| b.build_id == p).and_then(|b| b.image_id.clone()));
            }
        }
        let mut report = CollectReport::default();
        for image in builder.built_images().await.map_err(|e| ServiceError::Unavailable(e.to_string()))? {
            if keep.contains(&image.id) {
                report.kept += 1;
                continue;
            }
            match builder.remove_built_image(&image.id).await {
                Ok(true) => {
                    report.freed_bytes += image.size_bytes;
                    report.removed.push(RemovedImage { id: image.id, tags: image.tags, size_bytes: image.size_bytes });
                }
                Ok(false) => report.kept += 1,
                Err(e) => {
                    tracing::warn!(image = %image.id, error = %e, "could not remove an environment image");
                    report.kept += 1;
                }
            }
        }
        report.uploads_removed = envs::delete_unused_uploads(self.hub.db(), self.hub.now() - UPLOAD_GRACE).await?;
        let detail = serde_json::json!({
            "removed": report.removed.len(),
            "freed_bytes": report.freed_bytes,
            "uploads_removed": report.uploads_removed,
        });
        self.hub.audit().record(self.hub.db(), actor, "environment.collect", "images", detail).await?;
        collecting.release().await?;
        Ok(report)
    }
}
