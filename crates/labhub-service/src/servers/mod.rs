//! Users' servers: starting (one at a time per server, a bounded number hub-wide, none while
//! they cannot be isolated), stopping, reconciling with the runtime at boot, noticing servers
//! that die, recording activity.
//!
//! Postgres is the truth; the route table and the progress logs are caches rebuilt from it.

mod isolation;
mod progress;
mod reconcile;
mod start;
mod stop;

use std::sync::Arc;

use labhub_core::spawner::Spawner;
use labhub_core::{ServerName, ServerState, UserName};
use labhub_db::servers;

pub use reconcile::ReconcileReport;

use crate::access::{Actor, Need, ServerRef};
use crate::model::{ServerView, server_label};
use crate::state::ServerRuntime;
use crate::{Hub, ServiceError};

fn runtime_unavailable() -> ServiceError {
    ServiceError::Unavailable("servers cannot be started: the container runtime is not reachable from the hub".into())
}

impl Hub {
    /// Users' servers: starting, stopping, following, reconciling.
    pub fn servers(&self) -> Servers<'_> {
        Servers::new(self)
    }
}

/// Users' servers.
#[derive(Clone, Copy)]
pub struct Servers<'h> {
    hub: &'h Hub,
}

impl<'h> Servers<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    fn state(&self) -> &'h ServerRuntime {
        &self.hub.0.servers
    }

    pub(crate) fn spawner(&self) -> Result<&'h Arc<dyn Spawner>, ServiceError> {
        self.hub.0.spawner.as_ref().ok_or_else(runtime_unavailable)
    }

    /// Refuses unless `actor` may do what `need` says with `owner`'s server (the one gate,
    /// [`crate::access`]).
    fn require_reach(
        &self,
        actor: Actor<'_>,
        owner: &labhub_db::users::User,
        server: Option<&ServerName>,
        need: Need,
    ) -> Result<(), ServiceError> {
        let to = ServerRef { owner: owner.user_id, owner_name: &owner.name, server };
        self.hub.access().require(actor, to, need).map(|_| ())
    }

    /// Whether `actor` may do what `need` says with one of `owner`'s servers (for pages that
    /// offer it only to those who may: the answer of the one gate).
    pub async fn may(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        need: Need,
    ) -> Result<bool, ServiceError> {
        let user = self.hub.user_row(owner).await?;
        Ok(self.require_reach(actor, &user, server, need).is_ok())
    }

    /// The server slots of a user that `actor` may see: for the owner and admins every one,
    /// the default first (listed even before its first start), then the named ones; for a
    /// visitor only those shared with them. Refused when none is.
    pub async fn of(&self, actor: Actor<'_>, owner: &UserName) -> Result<Vec<ServerView>, ServiceError> {
        let user = self.hub.user_row(owner).await?;
        let rows = servers::list_for_user(self.hub.db(), user.user_id).await?;
        // Owners and admins see every slot; a visitor only the servers shared with them (a
        // share of the default server says nothing about the owner's named ones).
        let views: Vec<ServerView> = ServerView::slots(owner, &rows)
            .into_iter()
            .filter(|v| self.require_reach(actor, &user, v.name.as_ref(), Need::Read).is_ok())
            .collect();
        if views.is_empty() {
            // Nothing of theirs is visible: the gate's own refusal, worded as it words it.
            self.require_reach(actor, &user, None, Need::Read)?;
        }
        self.fresh(views).await
    }

    /// Views with the hub's freshest activity and when the culler will stop each.
    async fn fresh(&self, mut views: Vec<ServerView>) -> Result<Vec<ServerView>, ServiceError> {
        let culler = self.hub.culler();
        culler.attach_policies(views.iter_mut()).await?;
        views.iter_mut().for_each(|v| culler.freshen(v));
        Ok(views)
    }

    /// One server slot; the default one always exists, a named one only once created.
    pub async fn get(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<ServerView, ServiceError> {
        let user = self.hub.user_row(owner).await?;
        self.require_reach(actor, &user, server, Need::Read)?;
        match servers::get(self.hub.db(), user.user_id, server.map_or("", ServerName::as_str)).await? {
            Some(row) => Ok(self.fresh(vec![ServerView::of(owner, &row)]).await?.remove(0)),
            None if server.is_none() => Ok(ServerView::never_started(owner)),
            None => Err(ServiceError::NotFound(format!("{} does not exist", server_label(owner, server)))),
        }
    }

    /// Every server that is not stopped, with its owner (admins).
    pub async fn active(&self, actor: Actor<'_>) -> Result<Vec<ServerView>, ServiceError> {
        actor.require_admin()?;
        let rows = servers::list_active(self.hub.db()).await?;
        self.fresh(rows.iter().map(|r| ServerView::of(&r.owner, &r.server)).collect()).await
    }

    /// The last lines a server printed (admins).
    pub async fn logs(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        tail: usize,
    ) -> Result<String, ServiceError> {
        actor.require_admin()?;
        let user = self.hub.user_row(owner).await?;
        let row = servers::get(self.hub.db(), user.user_id, server.map_or("", ServerName::as_str))
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{owner} has no such server")))?;
        if row.state == ServerState::Stopped {
            return Err(ServiceError::Conflict("the server is not running; its container is gone".into()));
        }
        self.spawner()?.logs(&row.spawner_state, tail).await.map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    /// Forgets a stopped named server (its storage stays unless an admin removes it).
    pub async fn delete_named(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: &ServerName,
    ) -> Result<(), ServiceError> {
        let user = self.hub.user_row(owner).await?;
        self.require_reach(actor, &user, Some(server), Need::Own)?;
        let row = servers::get(self.hub.db(), user.user_id, server.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{owner} has no server named {server}")))?;
        if row.state != ServerState::Stopped {
            return Err(ServiceError::Conflict(format!("{owner}/{server} is not stopped; stop it first")));
        }
        let mut tx = self.hub.begin().await?;
        servers::delete(&mut *tx, row.server_id).await?;
        tx.commit().await?;
        self.state().spawns.remove(&row.server_id);
        // Its shares went with it: a later server of the same name must not inherit them.
        self.hub.shares().changed().await;
        Ok(())
    }
}
