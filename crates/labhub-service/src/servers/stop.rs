//! Stopping a server: on request (its owner, an admin, a lead of its group) or for the hub's
//! own reasons (culling, a deleted account). Its storage is kept.

use std::sync::atomic::Ordering;

use labhub_core::{GroupRole, ServerName, ServerState, UserName};
use labhub_db::{servers, users};
use labhub_proxy::RouteKey;
use serde_json::json;
use uuid::Uuid;

use super::Servers;
use crate::ServiceError;
use crate::access::Actor;
use crate::model::{StopOutcome, StopReason, server_label};

/// What the culler saw of a server when it decided: its start and its last activity.
pub(crate) type Seen = (Option<Uuid>, Option<time::OffsetDateTime>);

impl Servers<'_> {
    /// Stops one of a user's servers (whoever may reach it, or a lead of the group it runs
    /// under); its storage is kept.
    pub async fn stop(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<StopOutcome, ServiceError> {
        let user = self.hub.user_row(owner).await?;
        if self.require_reach(actor, &user, server, crate::access::Need::Stop).is_err() {
            self.require_lead_of_server(actor, &user, server).await?;
        }
        let by_owner = actor.is(user.user_id);
        let reason = StopReason::Requested { by: actor.name().to_string(), owner: by_owner };
        let outcome = self.stop_for(owner, server, reason.clone()).await?;
        if !by_owner {
            let after = match outcome {
                StopOutcome::Stopped => "stopped",
                StopOutcome::Stopping => "stopping",
            };
            let detail = json!({ "before": "active", "after": after, "reason": reason.text() });
            self.hub.audit().record(self.hub.db(), actor, "server.stop", &server_label(owner, server), detail).await?;
        }
        Ok(outcome)
    }

    /// Refuses unless the actor leads the group the server's latest start was charged to, with
    /// a credential carrying all of their powers: a token narrowed by scopes stops only what
    /// its scopes reach (the server gate), never through this fallback.
    async fn require_lead_of_server(
        &self,
        actor: Actor<'_>,
        user: &users::User,
        server: Option<&ServerName>,
    ) -> Result<(), ServiceError> {
        let refused =
            || ServiceError::Forbidden("you may only stop your own servers and those of groups you lead".into());
        let Actor::User(p) = actor else { return Err(refused()) };
        if !p.full {
            return Err(refused());
        }
        let db = self.hub.db();
        let row = servers::get(db, user.user_id, server.map_or("", ServerName::as_str)).await?;
        let group_id = match &row {
            Some(r) => labhub_db::quotas::server_group(db, r.server_id).await?,
            None => None,
        };
        match group_id {
            Some(g) if labhub_db::groups::role_of(db, g, p.user_id).await? == Some(GroupRole::Lead) => Ok(()),
            _ => Err(refused()),
        }
    }

    /// Stops a server for a reason; shared by people's requests and the hub's own.
    pub(crate) async fn stop_for(
        &self,
        owner: &UserName,
        server: Option<&ServerName>,
        reason: StopReason,
    ) -> Result<StopOutcome, ServiceError> {
        self.stop_unless_changed(owner, server, reason, None).await
    }

    /// [`Servers::stop_for`], except that with `seen` (a spawn id and last activity read
    /// earlier) a server restarted or used since is left running (a `Conflict`). The check is
    /// made under the row's lock, so a decision taken on a snapshot (the culler's) cannot stop
    /// the wrong run.
    pub(crate) async fn stop_unless_changed(
        &self,
        owner: &UserName,
        server: Option<&ServerName>,
        reason: StopReason,
        seen: Option<Seen>,
    ) -> Result<StopOutcome, ServiceError> {
        let user = self.hub.user_row(owner).await?;
        let name = server.map_or("", ServerName::as_str);
        let mut tx = self.hub.begin().await?;
        let row = servers::get_or_create_locked(&mut tx, user.user_id, name, self.hub.now()).await?;
        if let Some((spawn_id, last_activity)) = seen
            && (row.spawn_id != spawn_id || row.last_activity > last_activity)
        {
            return Err(ServiceError::Conflict(format!(
                "{} was restarted or used meanwhile; left running",
                server_label(owner, server)
            )));
        }
        if seen.is_some() && row.state != ServerState::Running {
            // Another replica's culler (or someone) stopped it first: never two stops.
            return Err(ServiceError::Conflict(format!("{} is no longer running", server_label(owner, server))));
        }
        match row.state {
            ServerState::Stopped => return Ok(StopOutcome::Stopped),
            ServerState::Stopping => return Ok(StopOutcome::Stopping),
            ServerState::Pending => {
                // This replica's record of the server's start, if it runs this one.
                let here = self
                    .state()
                    .spawns
                    .get(&row.server_id)
                    .map(|s| s.value().clone())
                    .filter(|s| Some(s.spawn_id) == row.spawn_id);
                match here {
                    Some(s) => s.cancelled.store(true, Ordering::SeqCst),
                    // Another replica runs the start: leaving `pending` makes its end refuse to
                    // go live (it then removes the container and marks the row stopped).
                    None => {
                        servers::mark_stopping(&mut *tx, row.server_id).await?;
                        tx.commit().await?;
                    }
                }
                return Ok(StopOutcome::Stopping);
            }
            ServerState::Running => {}
        }
        servers::mark_stopping(&mut *tx, row.server_id).await?;
        tx.commit().await?;
        self.hub.routes().remove(&RouteKey::new(owner.clone(), server.cloned()));
        let hub = self.hub.clone();
        let label = server_label(owner, server);
        let task = tokio::spawn(async move {
            let result = match hub.servers().spawner() {
                Ok(s) => s.stop(&row.spawner_state).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &result {
                tracing::warn!(server = %label, error = %e, "stopping failed; marking it stopped anyway");
            }
            if let Ok(mut tx) = hub.begin().await {
                let now = hub.now();
                let text = reason.text();
                if servers::mark_stopped(&mut *tx, row.server_id, row.spawn_id, &text, now).await.is_ok() {
                    let _ = tx.commit().await;
                }
            }
        });
        match tokio::time::timeout(self.state().settings.slow_stop_timeout, task).await {
            Ok(_) => Ok(StopOutcome::Stopped),
            Err(_) => Ok(StopOutcome::Stopping),
        }
    }
}
