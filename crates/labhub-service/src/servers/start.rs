//! Starting a server: the start's transaction (the user's row lock, the server row, the quota
//! charge, a hub-wide slot), then the spawn in a task of its own, followed through its
//! progress log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use labhub_core::spawner::{Progress, ProgressSender, ServerSpec, SpawnError, Spawner, Started};
use labhub_core::{AccountState, Contract, ServerId, ServerName, ServerState, UserName};
use labhub_db::{servers, users};
use labhub_proxy::{Route, RouteKey};
use serde_json::json;
use uuid::Uuid;

use super::Servers;
use crate::access::Actor;
use crate::model::{CatalogueImage, StartOutcome, StartRequest, StartTicket, route_prefix, server_label};
use crate::progress::{ProgressEvent, ProgressLog};
use crate::state::Spawn;
use crate::{Hub, ServiceError};

/// Fills a custom command's placeholders: `{base_url}` (the server's URL prefix) and `{port}`.
fn expand_command(words: &[String], base_url: &str, port: u16) -> Vec<String> {
    words.iter().map(|w| w.replace("{base_url}", base_url).replace("{port}", &port.to_string())).collect()
}

/// An image id to run exactly: `sha256:` and 64 hex digits (the engine takes it as a reference).
fn exact_image(id: &str) -> Result<labhub_core::ImageRef, ServiceError> {
    let hex = id.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ServiceError::Invalid(format!("'{id}' is not an image id (sha256:…)")));
    }
    labhub_core::ImageRef::parse(id).map_err(|e| ServiceError::Invalid(e.to_string()))
}

impl Servers<'_> {
    /// Starts one of a user's servers (whoever may reach it). Returns at once with a ticket to
    /// follow the start ([`StartTicket::progress`]), or says it was already starting or running.
    pub async fn start(
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
        let user = self.hub.user_row(owner).await?;
        self.require_reach(actor, &user, server, crate::access::Need::Start)?;
        if user.state != AccountState::Active {
            return Err(ServiceError::Conflict(format!("{owner}'s account is not active")));
        }
        self.require_isolation(&spawner).await?;
        let image = self.hub.catalogue().for_start(request.image.as_deref()).await?;
        self.hub.environments().require_startable(user.user_id, &image).await?;
        let run_image = match &request.exact_image {
            Some(id) => exact_image(id)?,
            None => image.fields.reference.clone(),
        };
        let name = server.map_or("", ServerName::as_str);
        let quotas = self.hub.quotas();
        // Measured before the transaction: it may ask the runtime, which must not happen
        // while the start holds row locks.
        let storage = quotas.storage_before_start(&user, server).await?;
        // Read before the transaction (a failure then leaves no pending row without a start)
        // and not inside it: a start must hold one pooled connection at a time, or a crowd of
        // starts holding transactions would wait on each other for the rest.
        let home = self.hub.homes().of(user.user_id, server).await?;
        let mounts = self.hub.datasets().mounts_for(user.user_id).await?;
        // Asks the runtime (a first start chooses the node), so also before the transaction.
        let node = self.hub.node_pins().for_start(user.user_id, &spawner, image.fields.contract).await?;

        let mut tx = self.hub.begin().await?;
        // The user's row lock serialises their starts: a double click makes one server.
        users::by_name_for_update(&mut *tx, owner).await?;
        // An admin's `labhub user pin` takes the same lock: the pin read under it is current.
        let node = match node {
            Some(read) => Some(labhub_db::node_pins::get(&mut *tx, user.user_id).await?.unwrap_or(read)),
            None => None,
        };
        let row = servers::get_or_create_locked(&mut tx, user.user_id, name, self.hub.now()).await?;
        match row.state {
            ServerState::Pending => return Ok(StartOutcome::AlreadyPending(row.server_id)),
            ServerState::Running => return Ok(StartOutcome::AlreadyRunning(row.server_id)),
            ServerState::Stopping => {
                return Err(ServiceError::Conflict(format!(
                    "{} is still stopping; start it again in a moment",
                    server_label(owner, server)
                )));
            }
            ServerState::Stopped => {}
        }
        if labhub_db::homes::is_restoring(&mut *tx, user.user_id).await? {
            return Err(ServiceError::Conflict(format!(
                "files are being restored into {owner}'s home; start the server when that is done"
            )));
        }
        if server.is_some() {
            let limit = self.state().settings.named_server_limit;
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
        let charge = quotas.charge(&mut tx, &user, &image, &request, storage).await?;
        let permit = self.state().spawn_slots.clone().try_acquire_owned().map_err(|_| ServiceError::TooMany {
            message: "Many servers are starting right now. Try again in a few seconds.".into(),
            retry_after: Duration::from_secs(5),
        })?;
        let resources = charge.resources;
        let spawn_id = Uuid::new_v4();
        let pending = servers::Pending {
            image_id: image.id,
            image_ref: run_image.as_str(),
            kind: image.fields.kind.as_str(),
            cpu_millis: resources.cpu_millis as i32,
            memory_bytes: resources.memory_bytes as i64,
            gpus: resources.gpus as i32,
            spawn_id,
            contract: image.fields.contract.as_str(),
        };
        servers::mark_pending(&mut *tx, row.server_id, &pending).await?;
        let f = &image.fields;
        let port = f.port.unwrap_or_else(|| f.kind.default_port());
        let env = match f.contract {
            Contract::Jupyterhub => {
                self.hub.single_user().register(&mut tx, row.server_id, owner, server, port).await?
            }
            Contract::Labhub => Default::default(),
        };
        // Which replica runs this start (the others fail it if this one goes silent), and
        // the stored progress of the server's earlier starts goes.
        labhub_db::replicas::claim_start(&mut *tx, row.server_id, self.hub.replicas().id()).await?;
        labhub_db::replicas::clear_events(&mut *tx, row.server_id).await?;
        let group_id = charge.group.as_ref().map(|g| g.0);
        // The nodes the group's servers may run on, after the catalogue entry's.
        let mut placement = image.fields.placement.clone();
        if let Some(id) = group_id {
            placement.extend(labhub_db::groups::placement(&mut *tx, id).await?);
        }
        labhub_db::quotas::set_server_group(&mut *tx, row.server_id, group_id).await?;
        if !actor.is(user.user_id) {
            let detail = json!({ "before": "stopped", "after": "pending", "image": image.name,
                                 "reference": image.fields.reference, "resources": resources,
                                 "group": charge.group.map(|g| g.1) });
            self.hub.audit().record(&mut *tx, actor, "server.start", &server_label(owner, server), detail).await?;
        }
        tx.commit().await?;

        let progress = ProgressLog::new();
        progress.push(ProgressEvent::step(0, "Server requested"));
        let spawn = Arc::new(Spawn { spawn_id, progress: progress.clone(), cancelled: AtomicBool::new(false) });
        self.state().spawns.insert(row.server_id, spawn.clone());
        tokio::spawn(super::progress::store(self.hub.clone(), row.server_id, spawn_id, progress.clone()));
        let base_url = route_prefix(owner, server);
        let spec = ServerSpec {
            owner: user.user_id,
            user: owner.clone(),
            home,
            mounts,
            server: server.cloned(),
            image: run_image,
            kind: f.kind,
            port,
            command: f.command.as_ref().map(|c| expand_command(c, &base_url, port)),
            resources,
            base_url,
            token: self.hub.key().server_token(owner.as_str(), name, &spawn_id.to_string()),
            env,
            contract: f.contract,
            placement,
            start_timeout: self.state().settings.start_timeout,
            node,
        };
        let hub = self.hub.clone();
        let server_id = row.server_id;
        tokio::spawn(async move {
            run_spawn(&hub, spawner, server_id, spawn, spec, image).await;
            drop(permit);
        });
        Ok(StartOutcome::Started(StartTicket { server_id, progress }))
    }

    /// Waits up to `timeout` for a start to finish; returns its last event.
    pub async fn wait_for_start(&self, ticket: &StartTicket, timeout: Duration) -> Option<ProgressEvent> {
        let mut rx = ticket.progress.subscribe();
        let finished = rx.wait_for(|events| events.last().is_some_and(ProgressEvent::is_final));
        let _ = tokio::time::timeout(timeout, finished).await;
        ticket.progress.last()
    }
}

/// Runs one start to its end: the image (built first when only a recipe can make it), the
/// spawner, then the running row and the route — or, on any failure, nothing left running and
/// the row stopped with the reason.
async fn run_spawn(
    hub: &Hub,
    spawner: Arc<dyn Spawner>,
    server_id: ServerId,
    spawn: Arc<Spawn>,
    spec: ServerSpec,
    image: CatalogueImage,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let log = spawn.progress.clone();
    let forward = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            log.push(ProgressEvent::step(p.percent, p.message));
        }
    });
    let label = server_label(&spec.user, spec.server.as_ref());
    // For the metrics only (JupyterHub's spawn histogram), never for a decision.
    let begun = std::time::Instant::now();
    let result = start_with_image(hub, &spawner, &spec, &image, tx).await;
    let _ = forward.await;
    let outcome = match result {
        Ok(started) => {
            let live = go_live(hub, server_id, &spawn, &spec, &started).await;
            if live.is_err() {
                // Stopped while starting, or the hub could not record or route it: leave
                // nothing running.
                let _ = spawner.stop(&started.state).await;
            }
            live
        }
        Err(e) => {
            if let SpawnError::Isolation(reason) = &e {
                hub.servers().isolation_failed(reason.clone());
            }
            tracing::warn!(server = %label, error = %e, "server failed to start");
            metrics::counter!("labhub_spawns_total", "result" => "failed").increment(1);
            Err(Failed::spawn(e))
        }
    };
    match outcome {
        Ok(()) => {
            tracing::info!(server = %label, "server ready");
            metrics::counter!("labhub_spawns_total", "result" => "ok").increment(1);
            metrics::histogram!("jupyterhub_server_spawn_duration_seconds", "status" => "success")
                .record(begun.elapsed().as_secs_f64());
            let url = spec.base_url.clone();
            spawn.progress.push(ProgressEvent::ready(format!("Server ready at {url}"), Some(url)));
        }
        Err(failed) => {
            metrics::histogram!("jupyterhub_server_spawn_duration_seconds", "status" => "failure")
                .record(begun.elapsed().as_secs_f64());
            if let Ok(mut tx) = hub.begin().await {
                let now = hub.now();
                if servers::mark_stopped(&mut *tx, server_id, Some(spawn.spawn_id), &failed.reason, now).await.is_ok() {
                    let _ = tx.commit().await;
                }
            }
            spawn.progress.push(ProgressEvent::failed(failed.message));
        }
    }
}

/// Why a start ended without a running server: what its row records, and what the member reads.
struct Failed {
    reason: String,
    message: String,
}

impl Failed {
    fn spawn(e: impl std::fmt::Display) -> Self {
        Self { reason: e.to_string(), message: format!("Spawn failed: {e}") }
    }
}

/// Records a started server as running and routes to it, or says why it could not.
async fn go_live(
    hub: &Hub,
    server_id: ServerId,
    spawn: &Spawn,
    spec: &ServerSpec,
    started: &Started,
) -> Result<(), Failed> {
    let cancelled = spawn.cancelled.load(Ordering::SeqCst);
    let recorded = if cancelled { Ok(false) } else { mark_running(hub, server_id, spawn.spawn_id, started).await };
    if !matches!(recorded, Ok(true)) {
        // Not pending any more: stopped meanwhile, through this replica or another.
        let why = if recorded.is_ok() { "stopped while it was starting" } else { "the hub could not record it" };
        return Err(Failed { reason: why.into(), message: format!("The server was {why}.") });
    }
    let key = RouteKey::new(spec.user.clone(), spec.server.clone());
    let route = Route::new(key, spec.owner, started.endpoint, spec.token.clone(), spec.kind).speaking(spec.contract);
    hub.routes().insert(route).map_err(Failed::spawn)?;
    tracing::debug!(
        target: "labhub::timing",
        user = %spec.user,
        server = spec.server.as_ref().map_or("", ServerName::as_str),
        "start.route_ready"
    );
    Ok(())
}

async fn mark_running(hub: &Hub, server_id: ServerId, spawn_id: Uuid, started: &Started) -> Result<bool, ServiceError> {
    let mut tx = hub.begin().await?;
    let endpoint = started.endpoint.to_string();
    let now = hub.now();
    let done = servers::mark_running(
        &mut *tx,
        server_id,
        spawn_id,
        &endpoint,
        &started.state,
        servers::RanImage { digest: &started.image_digest, repo_digest: started.repo_digest.as_deref() },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(done)
}

/// Starts with the image, building it first when it is absent and only a recipe can make it
/// (or when a build of it is under way: waiting beats trying to pull meanwhile).
async fn start_with_image(
    hub: &Hub,
    spawner: &Arc<dyn Spawner>,
    spec: &ServerSpec,
    image: &CatalogueImage,
    tx: ProgressSender,
) -> Result<Started, SpawnError> {
    let catalogue = hub.catalogue();
    if catalogue.build_progress(&image.fields.reference).is_some_and(|b| !b.finished()) {
        build_and_wait(hub, image, &tx).await?;
    }
    match spawner.start(spec, tx.clone()).await {
        Err(SpawnError::ImageMissing { .. }) if image.fields.recipe.is_some() => {
            build_and_wait(hub, image, &tx).await?;
            spawner.start(spec, tx).await
        }
        other => other,
    }
}

/// Builds an image from its recipe (or joins a build in flight), mirroring its progress into
/// the start's progress, scaled to the first half of the bar.
async fn build_and_wait(hub: &Hub, image: &CatalogueImage, tx: &ProgressSender) -> Result<(), SpawnError> {
    let log = hub.catalogue().start_build(image).map_err(|e| SpawnError::Invalid(e.to_string()))?;
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
                    image: image.fields.reference.to_string(),
                    detail: e.message.clone(),
                });
            }
            let _ = tx.send(Progress {
                percent: 5 + e.progress / 2,
                message: format!("Building image {}: {}", image.fields.display_name, e.message),
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
