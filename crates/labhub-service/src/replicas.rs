//! Several hub processes ("replicas") on one database, none of them special.
//!
//! - **Who is there**: each process registers in `hub_replicas` and beats every
//!   [`HEARTBEAT`]; one silent for [`SILENT_AFTER`] is dead, and a live one (whoever takes the
//!   job's lock) fails the starts it left pending — its own task would have finished them.
//! - **Caches of Postgres**: the route table and the recognised credentials. A statement
//!   trigger announces every change of a server's state or address (`labhub_servers`, its id
//!   only) and every ended session or token or changed account right (`labhub_credentials`,
//!   nothing else); [`Hub::follow_replicas`] listens and reloads that server's route or forgets
//!   the recognised credentials, closes the WebSockets opened with a session or token that
//!   ended, and asks the one gate again about every visitor's open WebSocket (an account
//!   disabled or demoted on another replica): see [`crate::tunnels`]. The table is reloaded
//!   whole, and open WebSockets decided again, when listening starts, after every reconnect
//!   (what was announced meanwhile is lost) and every `servers.route_reload_interval`.
//! - **Background work once**: jobs take a Postgres advisory lock ([`Replicas::lock`]); a
//!   replica that does not get it skips that pass.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use labhub_core::{ImageKind, ServerId, ServerName, ServerState};
use labhub_db::replicas::{self as store, Heard, Job, JobLock};
use labhub_db::servers::{self, ServerWithOwner};
use labhub_proxy::{Route, RouteKey};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::access::Actor;
use crate::progress::ProgressEvent;
use crate::{Hub, ServiceError};

/// How often a replica says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a replica may be silent before the others take it for dead.
pub const SILENT_AFTER: Duration = Duration::from_secs(15);
/// Registrations of replicas silent this long are removed from the list.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How soon a failed listen or reload is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// This process, as the other replicas see it.
pub(crate) struct ReplicaState {
    pub(crate) id: Uuid,
    host: String,
    started_at: OffsetDateTime,
}

impl ReplicaState {
    pub(crate) fn new(started_at: OffsetDateTime) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown host".into());
        Self { id: Uuid::new_v4(), host: format!("{host} (pid {})", std::process::id()), started_at }
    }
}

/// One hub process, for the admin page.
#[derive(Debug, Clone)]
pub struct ReplicaView {
    /// Its id, new at every start of the process.
    pub id: Uuid,
    /// Its host name and process id.
    pub host: String,
    /// The labhub version it runs.
    pub version: String,
    /// When the process started.
    pub started_at: OffsetDateTime,
    /// When it last said it was alive.
    pub last_heartbeat: OffsetDateTime,
    /// Heard from within [`SILENT_AFTER`].
    pub alive: bool,
    /// The process answering this request.
    pub this: bool,
}

impl Hub {
    /// The hub processes sharing this database.
    pub fn replicas(&self) -> Replicas<'_> {
        Replicas { hub: self }
    }

    /// Keeps this process's caches of Postgres current: the route table and the recognised
    /// credentials (see the module's doc). Runs until `shutdown` resolves.
    pub async fn follow_replicas(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let replicas = self.replicas();
        let mut missed = true;
        let mut listener = None;
        let mut reload = tokio::time::interval(self.server_settings().route_reload_interval);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reload.reset();
        loop {
            // Listening first, then loading: no change can fall between the two.
            if listener.is_none() {
                match store::listen(self.db()).await {
                    Ok(l) => {
                        listener = Some(l);
                        missed = true;
                    }
                    Err(e) => tracing::debug!(error = %e, "not listening for other replicas' changes yet"),
                }
            }
            if missed {
                replicas.forget_credentials();
                missed = replicas.reload_routes().await.is_err();
                // What ended while no one listened (or since the last reload) closes now.
                if !missed && let Err(e) = self.tunnels().credentials_changed().await {
                    tracing::debug!(error = %e, "open WebSockets not decided again this time");
                    missed = true;
                }
            }
            let Some(l) = listener.as_mut() else {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(RETRY), if missed => {}
                _ = reload.tick() => missed = true,
                heard = store::next(l) => match heard {
                    Ok(Some(Some(Heard::Server(id)))) => missed |= replicas.refresh_route(id).await.is_err(),
                    Ok(Some(Some(Heard::Credentials))) => {
                        replicas.forget_credentials();
                        // A session or token ended, an account disabled or demoted, here or
                        // elsewhere: the WebSockets opened with them close too.
                        if let Err(e) = self.tunnels().credentials_changed().await {
                            tracing::warn!(error = %e, "could not decide open WebSockets again");
                            missed = true;
                        }
                    }
                    Ok(Some(None)) => {}
                    // The connection was lost: listen again on a new one, then reload.
                    Ok(None) => listener = None,
                    Err(e) => {
                        tracing::debug!(error = %e, "lost the replicas' change channel");
                        listener = None;
                    }
                },
            }
        }
    }

    /// Registers this process and beats every [`HEARTBEAT`]; at each beat, fails the starts of
    /// replicas gone silent (one replica at a time). Removes the registration when `shutdown`
    /// resolves.
    pub async fn run_heartbeat(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.replicas().beat().await {
                tracing::warn!(error = %e, "could not record this replica's heartbeat");
                continue;
            }
            if let Err(e) = self.replicas().fail_orphaned_starts().await {
                tracing::debug!(error = %e, "the starts of silent replicas not looked at this time");
            }
        }
        let _ = store::forget(self.db(), self.0.replica.id).await;
    }
}

/// The hub processes sharing this database.
#[derive(Clone, Copy)]
pub struct Replicas<'h> {
    hub: &'h Hub,
}

impl Replicas<'_> {
    /// This process's id.
    pub fn id(&self) -> Uuid {
        self.hub.0.replica.id
    }

    /// Every registered replica, the most recently heard first (admins).
    pub async fn list(&self, actor: Actor<'_>) -> Result<Vec<ReplicaView>, ServiceError> {
        actor.require_admin()?;
        let now = self.hub.now();
        let me = self.id();
        Ok(store::list(self.hub.db())
            .await?
            .into_iter()
            .map(|r| ReplicaView {
                alive: now - r.last_heartbeat < SILENT_AFTER,
                this: r.replica_id == me,
                id: r.replica_id,
                host: r.host,
                version: r.version,
                started_at: r.started_at,
                last_heartbeat: r.last_heartbeat,
            })
            .collect())
    }

    /// Records that this process is alive (registering it the first time).
    pub async fn beat(&self) -> Result<(), ServiceError> {
        let state = &self.hub.0.replica;
        let me = store::Replica {
            replica_id: state.id,
            host: state.host.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: state.started_at,
            last_heartbeat: self.hub.now(),
        };
        store::heartbeat(self.hub.db(), &me).await?;
        Ok(())
    }

    /// Takes the lock of a job that one replica at a time runs; `None`: another one runs it now.
    pub(crate) async fn lock(&self, job: Job) -> Result<Option<JobLock>, ServiceError> {
        Ok(store::try_lock(self.hub.db(), job).await?)
    }

    /// Fails the starts that replicas silent for [`SILENT_AFTER`] left pending or stopping:
    /// whatever container they made is removed and the row is stopped with the reason, and
    /// the start's stored progress ends with it (so whoever follows it sees why). Returns how
    /// many.
    pub async fn fail_orphaned_starts(&self) -> Result<usize, ServiceError> {
        let Some(lock) = self.lock(Job::Orphans).await? else { return Ok(0) };
        let now = self.hub.now();
        let orphans = store::orphaned_starts(self.hub.db(), now - SILENT_AFTER).await?;
        let reason = "the hub process starting it stopped answering";
        for o in &orphans {
            if let Ok(spawner) = self.hub.servers().spawner()
                && o.spawner_state.as_object().is_some_and(|m| !m.is_empty())
            {
                let _ = spawner.stop(&o.spawner_state).await;
            }
            let mut tx = self.hub.begin().await?;
            let ended = servers::mark_stopped(&mut *tx, o.server_id, Some(o.spawn_id), reason, now).await?;
            if ended {
                let seq = store::next_seq(&mut *tx, o.server_id, o.spawn_id).await?;
                let event = ProgressEvent::failed(format!("Spawn failed: {reason}."));
                let json = serde_json::to_value(&event).unwrap_or_default();
                store::add_event(&mut *tx, o.server_id, o.spawn_id, seq, &json, now).await?;
                tracing::warn!(server = %o.server_id, "failed a start whose hub process went silent");
            }
            tx.commit().await?;
        }
        store::forget_silent_since(self.hub.db(), now - FORGET_AFTER).await?;
        lock.release().await?;
        Ok(orphans.len())
    }

    /// Whether another live replica runs this server's start (so this one must not touch it).
    pub(crate) async fn started_elsewhere(&self, server: ServerId) -> Result<bool, ServiceError> {
        let after = self.hub.now() - SILENT_AFTER;
        Ok(store::started_elsewhere(self.hub.db(), server, self.id(), after).await?)
    }

    /// Forgets every recognised session and token: the next request with one asks Postgres.
    fn forget_credentials(&self) {
        self.hub.sessions().forget_all();
        self.hub.tokens().forget_all();
    }

    /// Makes the route table what Postgres says runs: a route for every running server, none
    /// for any other. Returns how many routes there are.
    pub async fn reload_routes(&self) -> Result<usize, ServiceError> {
        let rows = servers::list_active(self.hub.db()).await?;
        let routes = self.hub.routes();
        let mut live = HashSet::new();
        for row in &rows {
            if let Some(route) = self.route_of(row) {
                live.insert(route.key.clone());
                if let Err(e) = routes.insert(route) {
                    tracing::warn!(server = %row.server.server_id, error = %e, "could not route to a running server");
                }
            }
        }
        let stale: Vec<RouteKey> = routes.keys().into_iter().filter(|k| !live.contains(k)).collect();
        if !stale.is_empty() {
            // A start that finished after the list was read is routed by now: read again
            // before taking any route away.
            let again = servers::list_active(self.hub.db()).await?;
            let now_live: HashSet<RouteKey> = again.iter().filter_map(|r| self.route_of(r)).map(|r| r.key).collect();
            for key in stale.iter().filter(|k| !now_live.contains(*k)) {
                routes.remove(key);
            }
        }
        Ok(routes.len())
    }

    /// Makes one server's route what its row says (announced by whichever replica changed it).
    async fn refresh_route(&self, id: ServerId) -> Result<(), ServiceError> {
        let Some(row) = labhub_db::servers::by_id_with_owner(self.hub.db(), id).await? else { return Ok(()) };
        match self.route_of(&row) {
            Some(route) => {
                if let Err(e) = self.hub.routes().insert(route) {
                    tracing::warn!(server = %id, error = %e, "could not route to a running server");
                }
            }
            None => {
                let server = ServerName::parse_optional(&row.server.name).ok().flatten();
                self.hub.routes().remove(&RouteKey::new(row.owner.clone(), server));
            }
        }
        Ok(())
    }

    /// The route to a running server as its row records it (the same one its start made).
    fn route_of(&self, row: &ServerWithOwner) -> Option<Route> {
        let s = &row.server;
        if s.state != ServerState::Running {
            return None;
        }
        let endpoint = s.endpoint.as_deref()?.parse().ok()?;
        let server = ServerName::parse_optional(&s.name).ok()?;
        let spawn_id = s.spawn_id.unwrap_or_default();
        let kind = s.kind.as_deref().and_then(ImageKind::parse).unwrap_or(ImageKind::Jupyter);
        let token = self.hub.key().server_token(row.owner.as_str(), &s.name, &spawn_id.to_string());
        let contract = labhub_core::Contract::parse(&s.contract).unwrap_or_default();
        Some(Route::new(RouteKey::new(row.owner.clone(), server), s.user_id, endpoint, token, kind).speaking(contract))
    }
}
