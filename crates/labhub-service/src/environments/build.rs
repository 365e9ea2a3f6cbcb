//! Running one build: its record, its limits, the builder in a task of its own, the live log
//! and what is kept of it, and — only on success — the catalogue entry moved to the new image.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use dashmap::DashMap;
use labhub_core::environment::{BuildLimits, EnvBuildSpec, LocalSources, ReusableBuild};
use labhub_core::spawner::Progress;
use labhub_core::{BuildId, EnvironmentId, GroupId, ImageRef};
use labhub_db::environments::{self as store, Finished, NewBuild};
use labhub_db::images;

use super::{EnvironmentSettings, Environments};
use crate::access::Actor;
use crate::progress::{ProgressEvent, ProgressLog};
use crate::{Hub, ServiceError};

/// The builder's version, recorded with every build.
pub(crate) const BUILDER_VERSION: &str = concat!("labhub ", env!("CARGO_PKG_VERSION"));
/// The most lines of a build's output kept after it ended.
const KEPT_LINES: usize = 2000;

/// What the environments capability keeps in memory: builds in flight and their logs.
pub(crate) struct EnvironmentsState {
    pub(crate) settings: EnvironmentSettings,
    /// The live log of each build in flight.
    pub(crate) logs: DashMap<BuildId, Arc<ProgressLog>>,
    /// The build in flight of each environment (one at a time).
    pub(crate) building: DashMap<EnvironmentId, BuildId>,
}

impl EnvironmentsState {
    pub(crate) fn new(settings: EnvironmentSettings) -> Self {
        Self { settings, logs: DashMap::new(), building: DashMap::new() }
    }
}

/// A stored log's lines read back as progress events, ending with how the build ended.
pub(super) fn replay(build: &store::Build, log: &str) -> Vec<ProgressEvent> {
    let mut events: Vec<ProgressEvent> = log
        .lines()
        .map(|line| {
            let (percent, message) = line.split_once(' ').unwrap_or(("0", line));
            ProgressEvent::step(percent.parse().unwrap_or(0), message)
        })
        .collect();
    events.push(match build.status.as_str() {
        "ready" => ProgressEvent::ready(built_message(build.image_id.as_deref().unwrap_or("")), None),
        "failed" => ProgressEvent::failed(build.error.clone().unwrap_or_else(|| "the build failed".into())),
        _ => ProgressEvent::step(99, "still building (on another replica of the hub)"),
    });
    events
}

fn built_message(image_id: &str) -> String {
    format!("Built {}", crate::catalogue::short_id(image_id))
}

impl Environments<'_> {
    /// Records a build and starts it in a task; refused while the environment has one in flight.
    pub(super) async fn start_build(
        &self,
        actor: Actor<'_>,
        env: &store::Environment,
        git_ref: &str,
        limits_group: Option<GroupId>,
    ) -> Result<BuildId, ServiceError> {
        let builder = self.hub.0.catalogue.builder.clone().ok_or_else(|| {
            ServiceError::Unavailable("environments cannot be built: the container runtime is not reachable".into())
        })?;
        let settings = self.settings();
        let base_name = env.base.clone().unwrap_or_else(|| settings.base.clone());
        let base = self.hub.catalogue().get(&base_name).await?.fields.reference;
        let catalogue: Vec<ImageRef> = images::list(self.hub.db())
            .await?
            .into_iter()
            .filter(|i| i.fields.enabled)
            .map(|i| i.fields.reference)
            .collect();
        let quota = self.hub.quotas().limits_of(limits_group).await?;
        // Good builds by this builder version: the builder reuses one equal to this build.
        let reusable = store::builds(self.hub.db(), env.environment_id)
            .await?
            .into_iter()
            .filter(|b| b.status == "ready" && b.builder_version == BUILDER_VERSION)
            .filter_map(|b| {
                Some(ReusableBuild {
                    build: b.build_id,
                    commit: b.commit?,
                    recipe_hash: b.recipe_hash?,
                    base_image_id: b.base_image_id?,
                    image_id: b.image_id?,
                })
            })
            .collect();
        let now = self.hub.now();
        let mut tx = self.hub.begin().await?;
        let build_id = store::insert_build(
            &mut *tx,
            &NewBuild {
                environment_id: env.environment_id,
                git_ref,
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
        let tag = ImageRef::parse(&format!("{}/{}:b{build_id}", settings.repository, env.name))
            .map_err(|e| ServiceError::Internal(format!("a build's tag: {e}")))?;
        store::set_tag(&mut *tx, build_id, tag.as_str()).await?;
        let detail = serde_json::json!({ "build": build_id, "ref": git_ref, "source": env.source });
        self.hub.audit().record(&mut *tx, actor, "environment.build", &env.name, detail).await?;
        // Taken before the commit: a second request for the same environment meanwhile is refused.
        let taken = match self.hub.0.environments.building.entry(env.environment_id) {
            dashmap::Entry::Occupied(e) => Some(*e.get()),
            dashmap::Entry::Vacant(v) => {
                v.insert(build_id);
                None
            }
        };
        if let Some(running) = taken {
            return Err(ServiceError::Conflict(format!(
                "'{}' is being built (build {running}); wait for it to end",
                env.name
            )));
        }
        if let Err(e) = tx.commit().await {
            self.hub.0.environments.building.remove(&env.environment_id);
            return Err(e);
        }

        let mut labels = BTreeMap::new();
        labels.insert("io.labhub.environment".into(), env.name.clone());
        labels.insert("io.labhub.environment.build".into(), build_id.to_string());
        labels.insert("io.labhub.environment.source".into(), env.source.clone());
        labels.insert("io.labhub.environment.ref".into(), git_ref.to_string());
        labels.insert("io.labhub.environment.built-by".into(), actor.name().to_string());
        labels.insert("io.labhub.environment.built-at".into(), rfc3339(now));
        labels.insert("io.labhub.environment.builder".into(), BUILDER_VERSION.into());
        let spec = EnvBuildSpec {
            source: env.source.clone(),
            git_ref: git_ref.to_string(),
            // Whose the environment is decides, not who presses build: a group's or a member's
            // source was written by them, so an admin's rebuild must not read a host folder
            // for it that they could not.
            local: if actor.is_admin() && env.group_name.is_none() && env.owner_name.is_none() {
                LocalSources::Anywhere
            } else {
                LocalSources::Under(settings.local_sources.clone())
            },
            base,
            catalogue,
            tag,
            labels,
            indexes: settings.indexes.clone(),
            limits: BuildLimits {
                cpu_millis: quota.max_cpu_millis,
                memory_bytes: quota.max_memory_bytes,
                // The group's limit, never past the site's.
                timeout: quota.build_timeout.map_or(settings.build_timeout, |t| t.min(settings.build_timeout)),
            },
            reusable,
        };
        let log = ProgressLog::new();
        log.push(ProgressEvent::step(0, format!("Build {build_id} of '{}' requested", env.name)));
        self.hub.0.environments.logs.insert(build_id, log.clone());
        let hub = self.hub.clone();
        let (name, env_id) = (env.name.clone(), env.environment_id);
        tokio::spawn(async move {
            run(&hub, builder, spec, &name, env_id, build_id, log).await;
        });
        Ok(build_id)
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Runs a build to its end and records it. Its record is written before its log's final
/// event, so whoever finds the live log gone finds the record finished.
async fn run(
    hub: &Hub,
    builder: Arc<dyn labhub_core::spawner::ImageBuilder>,
    spec: EnvBuildSpec,
    name: &str,
    env_id: EnvironmentId,
    build_id: BuildId,
    log: Arc<ProgressLog>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let forward_log = log.clone();
    let forward = tokio::spawn(async move {
        let mut kept: VecDeque<String> = VecDeque::new();
        while let Some(p) = rx.recv().await {
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(format!("{} {}", p.percent, p.message));
            forward_log.push(ProgressEvent::step(p.percent, p.message));
        }
        kept.into_iter().collect::<Vec<_>>().join("\n")
    });
    let outcome = builder.build_environment(&spec, tx).await;
    let kept = forward.await.unwrap_or_default();
    let p = &outcome.provenance;
    let error = outcome.result.as_ref().err().map(|e| format!("Building '{name}' failed: {e}"));
    let finished = Finished {
        ready: outcome.result.is_ok(),
        commit: p.commit.as_deref(),
        recipe_hash: p.recipe_hash.as_deref(),
        base_image_id: p.base_image_id.as_deref(),
        image_id: p.image_id.as_deref(),
        reused: p.reused,
        error: error.as_deref(),
        log: &kept,
        finished_at: hub.now(),
    };
    let recorded = store::finish_build(hub.db(), build_id, &finished).await;
    let served = match (&recorded, &outcome.result) {
        (Ok(()), Ok(())) => hub.environments().serve_current(name).await.map_err(|e| e.to_string()),
        (Err(e), _) => Err(e.to_string()),
        _ => Ok(()),
    };
    match (served, error) {
        (Err(e), _) => {
            tracing::warn!(environment = name, build = %build_id, error = %e, "could not record an environment build");
            log.push(ProgressEvent::failed(format!("The build ended but could not be recorded: {e}")));
        }
        (Ok(()), Some(e)) => {
            tracing::info!(environment = name, build = %build_id, error = %e, "environment build failed");
            log.push(ProgressEvent::failed(e));
        }
        (Ok(()), None) => {
            tracing::info!(environment = name, build = %build_id, "environment built");
            log.push(ProgressEvent::ready(built_message(p.image_id.as_deref().unwrap_or("")), None));
        }
    }
    hub.0.environments.building.remove(&env_id);
    hub.0.environments.logs.remove(&build_id);
}
