//! Users' servers: starting (one at a time per server, a bounded number hub-wide), stopping,
//! reconciling with the runtime at boot, noticing servers that die, recording activity.
//!
//! Postgres is the truth; the route table and the progress logs are caches rebuilt from it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use futures::StreamExt;
use labhub_core::spawner::{ImageBuilder, ServerSpec, ServerStatus, SpawnError, Spawner};
use labhub_core::{ImageKind, ServerName, ServerState, UserName};
use labhub_db::images::Image;
use labhub_db::servers::{self, Server};
use labhub_db::users;
use labhub_proxy::{Route, RouteKey, RouteTable};
use serde_json::json;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::audit::Actor;
use crate::progress::{ProgressEvent, ProgressLog};
use crate::{Hub, ServerSettings, ServiceError};

/// The hub's runtime side: where servers run, how traffic reaches them, what is in flight.
pub(crate) struct ServerRuntime {
    pub(crate) spawner: Option<Arc<dyn Spawner>>,
    pub(crate) builder: Option<Arc<dyn ImageBuilder>>,
    pub(crate) routes: RouteTable,
    pub(crate) settings: ServerSettings,
    /// Starts in flight (and recently finished, so late watchers see the outcome), by server id.
    spawns: DashMap<i64, Arc<Spawn>>,
    spawn_slots: Arc<Semaphore>,
    /// Image builds in flight or finished, by image reference.
    pub(crate) builds: DashMap<String, Arc<ProgressLog>>,
    /// Containers labelled for this hub that match no server row, found at the last reconcile.
    pub(crate) strangers: std::sync::Mutex<Vec<String>>,
}

impl ServerRuntime {
    pub(crate) fn new(
        spawner: Option<Arc<dyn Spawner>>,
        builder: Option<Arc<dyn ImageBuilder>>,
        routes: RouteTable,
        settings: ServerSettings,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(settings.concurrent_spawn_limit.max(1)));
        Self {
            spawner,
            builder,
            routes,
            settings,
            spawns: DashMap::new(),
            spawn_slots: slots,
            builds: DashMap::new(),
            strangers: std::sync::Mutex::new(Vec::new()),
        }
    }
}

/// One start in flight.
struct Spawn {
    spawn_id: Uuid,
    progress: Arc<ProgressLog>,
    /// Set when someone asks to stop the server while it is still starting.
    cancelled: AtomicBool,
}

/// What a start request asks for.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// The catalogue image's name; the first enabled image when not given.
    pub image: Option<String>,
    /// The group to start under (and charge); when not given and the owner is in several,
    /// the most generous group whose limits admit the request.
    pub group: Option<labhub_core::GroupName>,
    /// A CPU limit in millicores; the image's own, within the group's limit, when not given.
    pub cpu_millis: Option<u32>,
    /// A memory limit in bytes; the image's own, within the group's limit, when not given.
    pub memory_bytes: Option<u64>,
    /// GPUs to request; none when not given.
    pub gpus: Option<u32>,
}

/// What a start request led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// A new start is under way.
    Started,
    /// The server was already starting (a double click): nothing new happened.
    AlreadyPending,
    /// The server was already running: nothing new happened.
    AlreadyRunning,
}

/// What a stop request led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It is stopped.
    Stopped,
    /// It is being stopped.
    Stopping,
}

/// Why a server stops, in words for its owner.
#[derive(Debug, Clone)]
pub enum StopReason {
    /// Its owner, an admin or a lead of its group asked.
    Requested { by: String, owner: bool },
    /// The culler: no proxied activity for longer than its group's idle timeout.
    Idle(Duration),
    /// The culler: it ran for its group's maximum lifetime.
    Lifetime(Duration),
    /// The hub stopped it for another reason, with why.
    Hub(String),
}

impl StopReason {
    /// The reason as its owner reads it on the home page.
    pub fn text(&self) -> String {
        match self {
            StopReason::Requested { owner: true, .. } => "stopped by you".into(),
            StopReason::Requested { by, owner: false } => format!("stopped by {by}"),
            StopReason::Idle(limit) => {
                format!("stopped after {} without activity", crate::quotas::format_duration(*limit))
            }
            StopReason::Lifetime(limit) => format!(
                "stopped after running for {}, the longest a server may run",
                crate::quotas::format_duration(*limit)
            ),
            StopReason::Hub(why) => why.clone(),
        }
    }
}

/// Fills a custom command's placeholders: `{base_url}` (the server's URL prefix) and `{port}`.
fn expand_command(words: &[String], base_url: &str, port: u16) -> Vec<String> {
    words.iter().map(|w| w.replace("{base_url}", base_url).replace("{port}", &port.to_string())).collect()
}

/// The URL prefix a server is reached under: `/user/alice/` or `/user/alice/gpu/`.
pub fn route_prefix(user: &UserName, server: Option<&ServerName>) -> String {
    match server {
        Some(s) => format!("/user/{user}/{s}/"),
        None => format!("/user/{user}/"),
    }
}

/// `alice` or `alice/gpu`, as logs and the audit trail name a server.
pub(crate) fn server_label(user: &UserName, server: Option<&ServerName>) -> String {
    match server {
        Some(s) => format!("{user}/{s}"),
        None => user.to_string(),
    }
}

fn runtime_unavailable() -> ServiceError {
    ServiceError::Unavailable("servers cannot be started: the container runtime is not reachable from the hub".into())
}

impl Hub {
    fn runtime(&self) -> &ServerRuntime {
        &self.0.servers
    }

    fn spawner(&self) -> Result<&Arc<dyn Spawner>, ServiceError> {
        self.runtime().spawner.as_ref().ok_or_else(runtime_unavailable)
    }

    /// The route table the proxy reads.
    pub fn routes(&self) -> &RouteTable {
        &self.runtime().routes
    }

    /// The server settings in force.
    pub fn server_settings(&self) -> &ServerSettings {
        &self.runtime().settings
    }

    /// Starts one of a user's servers (the owner, or an admin). Returns at once; follow the
    /// progress with [`Hub::spawn_progress`] or wait with [`Hub::wait_for_start`].
    pub async fn start_server(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        request: StartRequest,
    ) -> Result<StartOutcome, ServiceError> {
        tracing::debug!(
            target: "labhub::timing",
            user = %owner,
            server = server.map_or("", ServerName::as_str),
            "start.accepted"
        );
        let spawner = self.spawner()?.clone();
        let user = self.user_by_name(owner).await?;
        actor.require_self_or_admin(user.user_id)?;
        if user.state != labhub_core::AccountState::Active {
            return Err(ServiceError::Conflict(format!("{owner}'s account is not active")));
        }
        let image = self.image_for_start(request.image.as_deref()).await?;
        let name = server.map_or("", ServerName::as_str);

        let mut tx = labhub_db::begin(self.db()).await?;
        // The user's row lock serialises their starts: a double click makes one server.
        users::by_name_for_update(&mut *tx, owner).await?;
        let row = servers::get_or_create_locked(&mut tx, user.user_id, name, self.now()).await?;
        match row.state {
            ServerState::Pending => return Ok(StartOutcome::AlreadyPending),
            ServerState::Running => return Ok(StartOutcome::AlreadyRunning),
            ServerState::Stopping => {
                return Err(ServiceError::Conflict(format!(
                    "{} is still stopping; start it again in a moment",
                    server_label(owner, server)
                )));
            }
            ServerState::Stopped => {}
        }
        if server.is_some() {
            let limit = self.runtime().settings.named_server_limit;
            let count = servers::count_named(&mut *tx, user.user_id).await?;
            // The row for this server already exists (just created or kept from before).
            if limit == 0 {
                return Err(ServiceError::Forbidden("named servers are turned off on this hub".into()));
            }
            if count > i64::from(limit) {
                return Err(ServiceError::Conflict(format!(
                    "you may have at most {limit} named servers; delete one you no longer need first"
                )));
            }
        }
        // The quota check and the pending row below share this transaction, and the check
        // locks the group it charges: concurrent starts cannot together pass a budget.
        let charge = self.charge_start(&mut tx, &user, name, &image, &request).await?;
        let permit = self.runtime().spawn_slots.clone().try_acquire_owned().map_err(|_| ServiceError::TooMany {
            message: "Many servers are starting right now. Try again in a few seconds.".into(),
            retry_after: Duration::from_secs(5),
        })?;
        let resources = charge.resources;
        let spawn_id = Uuid::new_v4();
        servers::mark_pending(
            &mut *tx,
            row.server_id,
            &servers::Pending {
                image_id: image.image_id,
                image_ref: image.reference.as_str(),
                kind: image.kind.as_str(),
                cpu_millis: resources.cpu_millis as i32,
                memory_bytes: resources.memory_bytes as i64,
                gpus: resources.gpus as i32,
                spawn_id,
            },
        )
        .await?;
        labhub_db::quotas::set_server_group(&mut *tx, row.server_id, charge.group_id).await?;
        if !matches!(actor, Actor::User(p) if p.user_id == user.user_id) {
            self.audit(
                &mut *tx,
                actor,
                "server.start",
                &server_label(owner, server),
                json!({ "before": "stopped", "after": "pending", "image": image.name, "reference": image.reference,
                        "resources": resources, "group": charge.group }),
            )
            .await?;
        }
        labhub_db::commit(tx).await?;
        self.views_changed();

        let progress = ProgressLog::new();
        progress.push(ProgressEvent::step(0, "Server requested"));
        let spawn = Arc::new(Spawn { spawn_id, progress, cancelled: AtomicBool::new(false) });
        self.runtime().spawns.insert(row.server_id, spawn.clone());
        let port = image.port.unwrap_or_else(|| image.kind.default_port());
        let base_url = route_prefix(owner, server);
        let spec = ServerSpec {
            user: owner.clone(),
            server: server.cloned(),
            image: image.reference.clone(),
            kind: image.kind,
            port,
            command: image.command.as_ref().map(|c| expand_command(c, &base_url, port)),
            resources,
            base_url,
            token: self.key().server_token(owner.as_str(), name, &spawn_id.to_string()),
            env: Default::default(),
            start_timeout: self.runtime().settings.start_timeout,
        };
        let hub = self.clone();
        tokio::spawn(async move {
            hub.run_spawn(spawner, row.server_id, spawn, spec, image).await;
            drop(permit);
        });
        Ok(StartOutcome::Started)
    }

    async fn image_for_start(&self, name: Option<&str>) -> Result<Image, ServiceError> {
        let image = match name {
            Some(n) => labhub_db::images::by_name(self.db(), n)
                .await?
                .ok_or_else(|| ServiceError::Invalid(format!("there is no image '{n}' in the catalogue")))?,
            None => labhub_db::images::list(self.db()).await?.into_iter().find(|i| i.enabled).ok_or_else(|| {
                ServiceError::Conflict("the image catalogue has no enabled image; ask an admin".into())
            })?,
        };
        if !image.enabled {
            return Err(ServiceError::Invalid(format!("the image '{}' is disabled; choose another", image.name)));
        }
        Ok(image)
    }

    async fn run_spawn(
        &self,
        spawner: Arc<dyn Spawner>,
        server_id: i64,
        spawn: Arc<Spawn>,
        spec: ServerSpec,
        image: Image,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<labhub_core::spawner::Progress>();
        let log = spawn.progress.clone();
        let forward = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                log.push(ProgressEvent::step(p.percent, p.message));
            }
        });
        let label = server_label(&spec.user, spec.server.as_ref());
        let mut result = self.start_with_image(&spawner, &spec, &image, tx.clone()).await;
        if let Err(SpawnError::ImageMissing { .. }) = &result
            && image.recipe.is_some()
        {
            result = match self.build_and_wait(&image, &tx).await {
                Ok(()) => spawner.start(&spec, tx.clone()).await,
                Err(e) => Err(e),
            };
        }
        drop(tx);
        let _ = forward.await;
        let now = self.now();
        match result {
            Ok(started) => {
                let cancelled = spawn.cancelled.load(Ordering::SeqCst);
                let recorded = !cancelled
                    && servers::mark_running(
                        self.db(),
                        server_id,
                        spawn.spawn_id,
                        &started.endpoint.to_string(),
                        &started.state,
                        &started.image_digest,
                        now,
                    )
                    .await
                    .unwrap_or(false);
                self.views_changed();
                if !recorded {
                    // Stopped while starting, or the database refused: leave nothing running.
                    let _ = spawner.stop(&started.state).await;
                    let why = if cancelled { "stopped while it was starting" } else { "the hub could not record it" };
                    let _ = servers::mark_stopped(self.db(), server_id, Some(spawn.spawn_id), why, now).await;
                    self.views_changed();
                    spawn.progress.push(ProgressEvent::failed(format!("The server was {why}.")));
                    return;
                }
                let route = Route::new(
                    RouteKey::new(spec.user.clone(), spec.server.clone()),
                    started.endpoint,
                    spec.token.clone(),
                    spec.kind,
                );
                if let Err(e) = self.routes().insert(route) {
                    let _ = spawner.stop(&started.state).await;
                    let _ =
                        servers::mark_stopped(self.db(), server_id, Some(spawn.spawn_id), &e.to_string(), now).await;
                    self.views_changed();
                    spawn.progress.push(ProgressEvent::failed(format!("Spawn failed: {e}")));
                    return;
                }
                tracing::debug!(
                    target: "labhub::timing",
                    user = %spec.user,
                    server = spec.server.as_ref().map_or("", ServerName::as_str),
                    "start.route_ready"
                );
                tracing::info!(server = %label, endpoint = %started.endpoint, "server ready");
                metrics::counter!("labhub_spawns_total", "result" => "ok").increment(1);
                spawn
                    .progress
                    .push(ProgressEvent::ready(format!("Server ready at {}", spec.base_url), Some(spec.base_url)));
            }
            Err(e) => {
                tracing::warn!(server = %label, error = %e, "server failed to start");
                metrics::counter!("labhub_spawns_total", "result" => "failed").increment(1);
                let _ = servers::mark_stopped(self.db(), server_id, Some(spawn.spawn_id), &e.to_string(), now).await;
                self.views_changed();
                spawn.progress.push(ProgressEvent::failed(format!("Spawn failed: {e}")));
            }
        }
    }

    /// Starts with the image, building it first when it is absent and only a recipe can make it.
    async fn start_with_image(
        &self,
        spawner: &Arc<dyn Spawner>,
        spec: &ServerSpec,
        image: &Image,
        tx: labhub_core::spawner::ProgressSender,
    ) -> Result<labhub_core::spawner::Started, SpawnError> {
        if self.runtime().builds.get(image.reference.as_str()).is_some_and(|b| !b.finished()) {
            // A build is under way: wait for it rather than trying to pull meanwhile.
            self.build_and_wait(image, &tx).await?;
        }
        spawner.start(spec, tx).await
    }

    /// Builds an image from its recipe (or joins a build in flight), mirroring its progress into
    /// the start's progress, scaled to the first half of the bar.
    async fn build_and_wait(&self, image: &Image, tx: &labhub_core::spawner::ProgressSender) -> Result<(), SpawnError> {
        let log = self.start_build(image).map_err(|e| SpawnError::Invalid(e.to_string()))?;
        let mut rx = log.subscribe();
        let mut seen = 0;
        loop {
            let (events, done) = {
                let all = rx.borrow_and_update();
                (all[seen..].to_vec(), all.last().is_some_and(ProgressEvent::is_final))
            };
            seen += events.len();
            for e in &events {
                if e.failed {
                    return Err(SpawnError::ImageMissing {
                        image: image.reference.to_string(),
                        detail: e.message.clone(),
                    });
                }
                let _ = tx.send(labhub_core::spawner::Progress {
                    percent: 5 + e.progress / 2,
                    message: format!("Building image {}: {}", image.display_name, e.message),
                });
            }
            if done {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                return Err(SpawnError::Runtime("the image build ended without a result".into()));
            }
        }
    }

    /// The progress of the latest start of a server, if one happened since the hub started.
    pub fn spawn_progress(&self, server_id: i64) -> Option<Arc<ProgressLog>> {
        self.runtime().spawns.get(&server_id).map(|s| s.progress.clone())
    }

    /// Waits up to `timeout` for a start to finish; returns the last event.
    pub async fn wait_for_start(&self, server_id: i64, timeout: Duration) -> Option<ProgressEvent> {
        let log = self.spawn_progress(server_id)?;
        let mut rx = log.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|events| events.last().is_some_and(ProgressEvent::is_final)))
            .await;
        log.last()
    }

    /// Stops one of a user's servers (the owner, an admin, or a lead of the group it runs
    /// under); its storage is kept.
    pub async fn stop_server(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<StopOutcome, ServiceError> {
        let user = self.user_by_name(owner).await?;
        if actor.require_self_or_admin(user.user_id).is_err() {
            self.require_lead_of_server(actor, &user, server).await?;
        }
        let by_owner = matches!(actor, Actor::User(p) if p.user_id == user.user_id);
        let reason = StopReason::Requested { by: actor.name().to_string(), owner: by_owner };
        let outcome = self.stop_as(owner, server, reason.clone()).await?;
        if !by_owner {
            let after = match outcome {
                StopOutcome::Stopped => "stopped",
                StopOutcome::Stopping => "stopping",
            };
            self.audit(
                self.db(),
                actor,
                "server.stop",
                &server_label(owner, server),
                json!({ "before": "active", "after": after, "reason": reason.text() }),
            )
            .await?;
        }
        Ok(outcome)
    }

    /// Refuses unless the actor leads the group the server's latest start was charged to.
    async fn require_lead_of_server(
        &self,
        actor: Actor<'_>,
        user: &users::User,
        server: Option<&ServerName>,
    ) -> Result<(), ServiceError> {
        let refused =
            || ServiceError::Forbidden("you may only stop your own servers and those of groups you lead".into());
        let Actor::User(p) = actor else { return Err(refused()) };
        let row = servers::get(self.db(), user.user_id, server.map_or("", ServerName::as_str)).await?;
        let group_id = match &row {
            Some(r) => labhub_db::quotas::server_group(self.db(), r.server_id).await?,
            None => None,
        };
        match group_id {
            Some(g)
                if labhub_db::groups::role_of(self.db(), g, p.user_id).await? == Some(labhub_core::GroupRole::Lead) =>
            {
                Ok(())
            }
            _ => Err(refused()),
        }
    }

    /// Stops a server for a reason; shared by people's requests and the hub's own (culling).
    pub(crate) async fn stop_as(
        &self,
        owner: &UserName,
        server: Option<&ServerName>,
        reason: StopReason,
    ) -> Result<StopOutcome, ServiceError> {
        self.stop_unless_changed(owner, server, reason, None).await
    }

    /// [`Hub::stop_as`], except that with `seen` (a spawn id and last activity read earlier)
    /// a server restarted or used since is left running: `Ok(None)`. The check is made under
    /// the row's lock, so a decision taken on a snapshot (the culler's) cannot stop the wrong run.
    pub(crate) async fn stop_unless_changed(
        &self,
        owner: &UserName,
        server: Option<&ServerName>,
        reason: StopReason,
        seen: Option<(Option<Uuid>, Option<time::OffsetDateTime>)>,
    ) -> Result<StopOutcome, ServiceError> {
        let user = self.user_by_name(owner).await?;
        let name = server.map_or("", ServerName::as_str);
        let mut tx = labhub_db::begin(self.db()).await?;
        let row = servers::get_or_create_locked(&mut tx, user.user_id, name, self.now()).await?;
        if let Some((spawn_id, last_activity)) = seen
            && (row.spawn_id != spawn_id || row.last_activity > last_activity)
        {
            return Err(ServiceError::Conflict(format!(
                "{} was restarted or used meanwhile; left running",
                server_label(owner, server)
            )));
        }
        match row.state {
            ServerState::Stopped => return Ok(StopOutcome::Stopped),
            ServerState::Stopping => return Ok(StopOutcome::Stopping),
            ServerState::Pending => {
                if let Some(s) = self.runtime().spawns.get(&row.server_id) {
                    s.cancelled.store(true, Ordering::SeqCst);
                }
                return Ok(StopOutcome::Stopping);
            }
            ServerState::Running => {}
        }
        servers::mark_stopping(&mut *tx, row.server_id).await?;
        labhub_db::commit(tx).await?;
        self.views_changed();
        self.routes().remove(&RouteKey::new(owner.clone(), server.cloned()));
        let hub = self.clone();
        let label = server_label(owner, server);
        let task = tokio::spawn(async move {
            let result = match hub.spawner() {
                Ok(s) => s.stop(&row.spawner_state).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &result {
                tracing::warn!(server = %label, error = %e, "stopping failed; marking it stopped anyway");
            }
            let _ = servers::mark_stopped(hub.db(), row.server_id, row.spawn_id, &reason.text(), hub.now()).await;
            hub.views_changed();
        });
        match tokio::time::timeout(self.runtime().settings.slow_stop_timeout, task).await {
            Ok(_) => Ok(StopOutcome::Stopped),
            Err(_) => Ok(StopOutcome::Stopping),
        }
    }

    /// Forgets a stopped named server (its storage stays unless an admin removes it).
    pub async fn delete_named_server(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: &ServerName,
    ) -> Result<(), ServiceError> {
        let user = self.user_by_name(owner).await?;
        actor.require_self_or_admin(user.user_id)?;
        let row = servers::get(self.db(), user.user_id, server.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{owner} has no server named {server}")))?;
        if row.state != ServerState::Stopped {
            return Err(ServiceError::Conflict(format!("{owner}/{server} is not stopped; stop it first")));
        }
        servers::delete(self.db(), row.server_id).await?;
        self.views_changed();
        self.runtime().spawns.remove(&row.server_id);
        Ok(())
    }

    /// A user's servers (the owner, or an admin).
    pub async fn servers_of(&self, actor: Actor<'_>, owner: &UserName) -> Result<Vec<Server>, ServiceError> {
        let user = self.user_by_name(owner).await?;
        actor.require_self_or_admin(user.user_id)?;
        Ok(servers::list_for_user(self.db(), user.user_id).await?)
    }

    /// The servers of many users at once, by user id (for user lists; the caller checked rights).
    pub async fn servers_of_users(&self, user_ids: &[i64]) -> Result<HashMap<i64, Vec<Server>>, ServiceError> {
        let mut map: HashMap<i64, Vec<Server>> = HashMap::new();
        for s in servers::list_for_users(self.db(), user_ids).await? {
            map.entry(s.user_id).or_default().push(s);
        }
        Ok(map)
    }

    /// Every server that is not stopped, with its owner (admins).
    pub async fn active_servers(&self, actor: Actor<'_>) -> Result<Vec<servers::ServerWithOwner>, ServiceError> {
        actor.require_admin()?;
        Ok(servers::list_active(self.db()).await?)
    }

    /// The last lines a server printed (admins).
    pub async fn server_logs(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        tail: usize,
    ) -> Result<String, ServiceError> {
        actor.require_admin()?;
        let user = self.user_by_name(owner).await?;
        let row = servers::get(self.db(), user.user_id, server.map_or("", ServerName::as_str))
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{} has no such server", owner)))?;
        if row.state == ServerState::Stopped {
            return Err(ServiceError::Conflict("the server is not running; its container is gone".into()));
        }
        self.spawner()?.logs(&row.spawner_state, tail).await.map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    /// Deletes a user's storage for good (admins; the caller confirmed). Refused while a server uses it.
    pub async fn remove_storage(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<bool, ServiceError> {
        actor.require_admin()?;
        let user = self.user_by_name(owner).await?;
        let active =
            servers::list_for_user(self.db(), user.user_id).await?.into_iter().any(|s| s.state != ServerState::Stopped);
        if active {
            return Err(ServiceError::Conflict(format!(
                "{owner} has a server running; stop it before removing their storage"
            )));
        }
        let removed =
            self.spawner()?.remove_storage(owner, server).await.map_err(|e| ServiceError::Conflict(e.to_string()))?;
        self.audit(self.db(), actor, "storage.remove", &server_label(owner, server), json!({ "removed": removed }))
            .await?;
        Ok(removed)
    }

    /// Matches the database with what the runtime holds: running servers get their routes back,
    /// vanished ones are marked stopped, strangers are reported. Never stops a user's server.
    pub async fn reconcile(&self) -> Result<ReconcileReport, ServiceError> {
        let spawner = self.spawner()?.clone();
        let observed = spawner.list().await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let rows = servers::list_active(self.db()).await?;
        let mut report = ReconcileReport::default();
        let mut matched = vec![false; observed.len()];
        for row in rows {
            let server = ServerName::parse_optional(&row.server.name).ok().flatten();
            let found = observed.iter().enumerate().find(|(_, o)| o.user == row.owner && o.server == server);
            let now = self.now();
            let label = server_label(&row.owner, server.as_ref());
            match found {
                Some((i, o)) => {
                    matched[i] = true;
                    match &o.status {
                        ServerStatus::Running { endpoint } => {
                            let spawn_id = row.server.spawn_id.unwrap_or_default();
                            if row.server.state == ServerState::Pending {
                                servers::mark_running(
                                    self.db(),
                                    row.server.server_id,
                                    spawn_id,
                                    &endpoint.to_string(),
                                    &o.state,
                                    row.server.image_digest.as_deref().unwrap_or(""),
                                    now,
                                )
                                .await?;
                                self.views_changed();
                            }
                            let kind =
                                row.server.kind.as_deref().and_then(ImageKind::parse).unwrap_or(ImageKind::Jupyter);
                            let token =
                                self.key().server_token(row.owner.as_str(), &row.server.name, &spawn_id.to_string());
                            let route =
                                Route::new(RouteKey::new(row.owner.clone(), server.clone()), *endpoint, token, kind);
                            match self.routes().insert(route) {
                                Ok(()) => report.adopted.push(label),
                                Err(e) => {
                                    tracing::warn!(server = %label, error = %e, "could not route to an adopted server")
                                }
                            }
                        }
                        ServerStatus::Stopped { reason } => {
                            let _ = spawner.stop(&o.state).await;
                            let why = format!("{reason} while the hub was away");
                            servers::mark_stopped(self.db(), row.server.server_id, None, &why, now).await?;
                            self.views_changed();
                            report.vanished.push(label);
                        }
                    }
                }
                None => {
                    servers::mark_stopped(
                        self.db(),
                        row.server.server_id,
                        None,
                        "its container disappeared while the hub was away",
                        now,
                    )
                    .await?;
                    self.views_changed();
                    report.vanished.push(label);
                }
            }
        }
        for (i, o) in observed.iter().enumerate() {
            if !matched[i] {
                report.strangers.push(server_label(&o.user, o.server.as_ref()));
            }
        }
        if !report.strangers.is_empty() {
            tracing::warn!(containers = ?report.strangers, "containers labelled for this hub match no running server; left untouched");
        }
        *self.runtime().strangers.lock().unwrap_or_else(|e| e.into_inner()) = report.strangers.clone();
        tracing::info!(
            adopted = report.adopted.len(),
            vanished = report.vanished.len(),
            strangers = report.strangers.len(),
            "reconciled servers"
        );
        Ok(report)
    }

    /// Containers of this hub's that match no server (from the last reconcile), for admins.
    pub fn stranger_containers(&self) -> Vec<String> {
        self.runtime().strangers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Watches the runtime for servers that end behind the hub's back and marks them stopped
    /// with the reason. Runs until `shutdown` resolves; reconnects when the stream breaks.
    pub async fn watch_exits(self, shutdown: impl std::future::Future<Output = ()>) {
        let Ok(spawner) = self.spawner().cloned() else { return };
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                _ = &mut shutdown => return,
                s = spawner.exits() => s,
            };
            match stream {
                Ok(mut events) => loop {
                    let next = tokio::select! {
                        _ = &mut shutdown => return,
                        e = events.next() => e,
                    };
                    let Some(exit) = next else { break };
                    if let Err(e) = self.on_exit(&spawner, exit).await {
                        tracing::warn!(error = %e, "could not record a server's exit");
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot watch the container runtime; retrying"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    async fn on_exit(
        &self,
        spawner: &Arc<dyn Spawner>,
        exit: labhub_core::spawner::ServerExit,
    ) -> Result<(), ServiceError> {
        let Some(user) = users::by_name(self.db(), &exit.user).await? else { return Ok(()) };
        let name = exit.server.as_ref().map_or("", ServerName::as_str);
        let Some(row) = servers::get(self.db(), user.user_id, name).await? else { return Ok(()) };
        if row.state != ServerState::Running {
            return Ok(());
        }
        // The event may be about an older container of the same server: ask about this one.
        if let Ok(ServerStatus::Running { .. }) = spawner.poll(&row.spawner_state).await {
            return Ok(());
        }
        self.routes().remove(&RouteKey::new(exit.user.clone(), exit.server.clone()));
        let _ = spawner.stop(&row.spawner_state).await;
        let ended = servers::mark_stopped(self.db(), row.server_id, row.spawn_id, &exit.reason, self.now()).await?;
        self.views_changed();
        if ended {
            tracing::warn!(server = %server_label(&exit.user, exit.server.as_ref()), reason = %exit.reason, "server ended");
        }
        Ok(())
    }

    /// Writes the proxy's activity counts to Postgres.
    pub async fn flush_activity(&self) -> Result<(), ServiceError> {
        let seen: Vec<(String, String, time::OffsetDateTime)> = self
            .routes()
            .take_activity()
            .into_iter()
            .map(|(k, at)| (k.user.to_string(), k.server.map(|s| s.to_string()).unwrap_or_default(), at))
            .collect();
        servers::touch_activity(self.db(), &seen).await?;
        if !seen.is_empty() {
            self.views_changed();
        }
        Ok(())
    }
}

/// What a reconcile found.
#[derive(Debug, Default, Clone)]
pub struct ReconcileReport {
    /// Running servers whose routes came back.
    pub adopted: Vec<String>,
    /// Servers the database thought active whose containers were gone or exited.
    pub vanished: Vec<String>,
    /// Containers of this hub that match no active server.
    pub strangers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_commands_get_the_prefix_and_port() {
        let words = vec!["srv".to_string(), "--root={base_url}".to_string(), "-p".to_string(), "{port}".to_string()];
        assert_eq!(expand_command(&words, "/user/a/", 9000), ["srv", "--root=/user/a/", "-p", "9000"]);
        let alice = UserName::parse("alice").unwrap();
        assert_eq!(route_prefix(&alice, None), "/user/alice/");
        assert_eq!(route_prefix(&alice, Some(&ServerName::parse("gpu").unwrap())), "/user/alice/gpu/");
    }
}
