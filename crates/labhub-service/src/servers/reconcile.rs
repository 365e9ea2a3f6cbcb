//! Keeping Postgres and the runtime in step: reconciling at boot, noticing servers that end
//! behind the hub's back, and writing the proxy's activity stamps.

use std::sync::Arc;

use labhub_core::spawner::{ObservedServer, ServerExit, ServerStatus, Spawner};
use labhub_core::{Contract, ImageKind, Owner, ServerId, ServerName, ServerState};
use labhub_db::{servers, users};
use labhub_proxy::{Route, RouteKey};
use time::OffsetDateTime;

use super::Servers;
use crate::ServiceError;
use crate::model::server_label;

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

impl Servers<'_> {
    /// Matches the database with what the runtime holds: running servers get their routes back,
    /// vanished ones are marked stopped, strangers are reported. Never stops a user's server.
    pub async fn reconcile(&self) -> Result<ReconcileReport, ServiceError> {
        let spawner = self.spawner()?.clone();
        // One replica at a time; another one reconciling now leaves this one its routes.
        let Some(lock) = self.hub.replicas().lock(labhub_db::replicas::Job::Reconcile).await? else {
            self.hub.replicas().reload_routes().await?;
            return Ok(ReconcileReport::default());
        };
        let observed = spawner.list().await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let rows = servers::list_active(self.hub.db()).await?;
        let mut report = ReconcileReport::default();
        let mut matched = vec![false; observed.len()];
        for row in rows {
            let server = ServerName::parse_optional(&row.server.name).ok().flatten();
            // Servers made before ids are known by their owner's name: the account that has the
            // name now is the one that started it (deleting an account stops its servers first).
            let owns = |o: &ObservedServer| match &o.owner {
                Owner::User(id) => *id == row.server.user_id,
                Owner::LegacyName(name) => *name == row.owner,
                Owner::Group(_) => false,
            };
            let found = observed.iter().enumerate().find(|(_, o)| owns(o) && o.server == server);
            let label = server_label(&row.owner, server.as_ref());
            if row.server.state != ServerState::Running
                && self.hub.replicas().started_elsewhere(row.server.server_id).await?
            {
                // A live replica's start or stop in flight: its own task finishes it.
                if let Some((i, _)) = found {
                    matched[i] = true;
                }
                continue;
            }
            let status = found.map(|(i, o)| {
                matched[i] = true;
                o
            });
            let Some(o) = status else {
                self.mark_stopped(row.server.server_id, "its container disappeared while the hub was away").await?;
                report.vanished.push(label);
                continue;
            };
            match &o.status {
                ServerStatus::Running { endpoint } => {
                    let spawn_id = row.server.spawn_id.unwrap_or_default();
                    if row.server.state == ServerState::Pending {
                        let mut tx = self.hub.begin().await?;
                        let digest = row.server.image_digest.as_deref().unwrap_or("");
                        let id = row.server.server_id;
                        servers::mark_running(
                            &mut *tx,
                            id,
                            spawn_id,
                            &endpoint.to_string(),
                            &o.state,
                            // The start that would have learnt the repository digest did not finish here.
                            servers::RanImage { digest, repo_digest: None },
                            self.hub.now(),
                        )
                        .await?;
                        tx.commit().await?;
                    }
                    let kind = row.server.kind.as_deref().and_then(ImageKind::parse).unwrap_or(ImageKind::Jupyter);
                    let token =
                        self.hub.key().server_token(row.owner.as_str(), &row.server.name, &spawn_id.to_string());
                    let key = RouteKey::new(row.owner.clone(), server.clone());
                    let contract = Contract::parse(&row.server.contract).unwrap_or_default();
                    let route = Route::new(key, row.server.user_id, *endpoint, token, kind).speaking(contract);
                    match self.hub.routes().insert(route) {
                        Ok(()) => report.adopted.push(label),
                        Err(e) => tracing::warn!(server = %label, error = %e, "could not route to an adopted server"),
                    }
                }
                ServerStatus::Stopped { reason } => {
                    let _ = spawner.stop(&o.state).await;
                    self.mark_stopped(row.server.server_id, &format!("{reason} while the hub was away")).await?;
                    report.vanished.push(label);
                }
            }
        }
        for (i, o) in observed.iter().enumerate() {
            if !matched[i] {
                let owner = match &o.owner {
                    Owner::User(id) => format!("account {id}"),
                    Owner::Group(id) => format!("group {id}"),
                    Owner::LegacyName(name) => name.to_string(),
                };
                report.strangers.push(match &o.server {
                    Some(s) => format!("{owner}/{s}"),
                    None => owner,
                });
            }
        }
        if !report.strangers.is_empty() {
            tracing::warn!(containers = ?report.strangers, "containers labelled for this hub match no running server; left untouched");
        }
        *self.state().strangers.lock().unwrap_or_else(|e| e.into_inner()) = report.strangers.clone();
        lock.release().await?;
        tracing::info!(
            adopted = report.adopted.len(),
            vanished = report.vanished.len(),
            strangers = report.strangers.len(),
            "reconciled servers"
        );
        Ok(report)
    }

    /// Marks a server stopped whatever start it belongs to.
    async fn mark_stopped(&self, server: ServerId, why: &str) -> Result<(), ServiceError> {
        let mut tx = self.hub.begin().await?;
        servers::mark_stopped(&mut *tx, server, None, why, self.hub.now()).await?;
        tx.commit().await
    }

    /// Containers of this hub's that match no server (from the last reconcile), for admins.
    pub fn stranger_containers(&self) -> Vec<String> {
        self.state().strangers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a server's exit the runtime reported: if it is still the running start of its
    /// row, its route goes and the row is stopped with the reason.
    pub(crate) async fn on_exit(&self, spawner: &Arc<dyn Spawner>, exit: ServerExit) -> Result<(), ServiceError> {
        let user = match &exit.owner {
            Owner::User(id) => users::by_id(self.hub.db(), *id).await?,
            Owner::LegacyName(name) => users::by_name(self.hub.db(), name).await?,
            Owner::Group(_) => None,
        };
        let Some(user) = user else { return Ok(()) };
        let name = exit.server.as_ref().map_or("", ServerName::as_str);
        let Some(row) = servers::get(self.hub.db(), user.user_id, name).await? else { return Ok(()) };
        if row.state != ServerState::Running {
            return Ok(());
        }
        // The event may be about an older container of the same server: ask about this one.
        if let Ok(ServerStatus::Running { .. }) = spawner.poll(&row.spawner_state).await {
            return Ok(());
        }
        self.hub.routes().remove(&RouteKey::new(user.name.clone(), exit.server.clone()));
        let _ = spawner.stop(&row.spawner_state).await;
        let mut tx = self.hub.begin().await?;
        let ended = servers::mark_stopped(&mut *tx, row.server_id, row.spawn_id, &exit.reason, self.hub.now()).await?;
        tx.commit().await?;
        if ended {
            tracing::warn!(server = %server_label(&user.name, exit.server.as_ref()), reason = %exit.reason, "server ended");
        }
        Ok(())
    }

    /// Writes the proxy's activity stamps to Postgres.
    pub async fn flush_activity(&self) -> Result<(), ServiceError> {
        let seen: Vec<(String, String, OffsetDateTime)> = self
            .hub
            .routes()
            .take_activity()
            .into_iter()
            .map(|(k, at)| (k.user.to_string(), k.server.map(|s| s.to_string()).unwrap_or_default(), at))
            .collect();
        servers::touch_activity(self.hub.db(), &seen).await?;
        if !seen.is_empty() {
            self.hub.views_changed();
        }
        Ok(())
    }
}
