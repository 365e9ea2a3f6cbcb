//! `NodePins`: the Swarm node each user's homes live on (`swarm_homes = "pinned"`).
//!
//! A user's first start asks the runtime where to pin them ([`Spawner::place`], which knows
//! the nodes; the hub gives it how many users each holds) and records the answer; every later
//! start runs there, so their files are where their server is. Moving someone is an admin's
//! act (`labhub user pin`), refused while one of their servers is up: the running task would
//! be on the old node, its next start on the new one. Their files do not move with the pin.

use std::collections::BTreeMap;
use std::sync::Arc;

use labhub_core::spawner::Spawner;
use labhub_core::{NodeName, ServerState, UserId, UserName};
use labhub_db::{node_pins, servers, users};
use serde_json::json;

use crate::hub::no_user;
use crate::{Actor, Hub, ServiceError};

impl Hub {
    /// The users' pins to Swarm nodes.
    pub fn node_pins(&self) -> NodePins<'_> {
        NodePins { hub: self }
    }
}

/// The users' pins to Swarm nodes.
#[derive(Clone, Copy)]
pub struct NodePins<'h> {
    hub: &'h Hub,
}

impl<'h> NodePins<'h> {
    /// The node a start of `user`'s must run on: their pin, or a new one the runtime chooses
    /// for a server of `contract`; `None` when the runtime does not pin homes.
    pub(crate) async fn for_start(
        &self,
        user: UserId,
        spawner: &Arc<dyn Spawner>,
        contract: labhub_core::Contract,
    ) -> Result<Option<NodeName>, ServiceError> {
        if let Some(node) = node_pins::get(self.hub.db(), user).await? {
            return Ok(Some(node));
        }
        let pinned: BTreeMap<NodeName, u64> = node_pins::counts(self.hub.db()).await?.into_iter().collect();
        let Some(chosen) =
            spawner.place(&pinned, contract).await.map_err(|e| ServiceError::Unavailable(e.to_string()))?
        else {
            return Ok(None);
        };
        let mut tx = self.hub.begin().await?;
        // Two first starts at once (two servers, two replicas) agree on the first one's node.
        let node = node_pins::pin_if_absent(&mut tx, user, &chosen, self.hub.now()).await?;
        tx.commit().await?;
        tracing::info!(user = %user, node = %node, "pinned a user's homes to a node");
        Ok(Some(node))
    }

    /// The node `name` is pinned to, if any.
    pub async fn of(&self, actor: Actor<'_>, name: &UserName) -> Result<Option<NodeName>, ServiceError> {
        actor.require_admin()?;
        let user = self.hub.user_row(name).await?;
        Ok(node_pins::get(self.hub.db(), user.user_id).await?)
    }

    /// Pins `name` to `node` (audited); refused while a server of theirs is up. Returns the
    /// node they were pinned to before.
    pub async fn pin(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        node: &NodeName,
    ) -> Result<Option<NodeName>, ServiceError> {
        actor.require_admin()?;
        let mut tx = self.hub.begin().await?;
        let user = users::by_name_for_update(&mut *tx, name).await?.ok_or_else(|| no_user(name))?;
        // A start marks its row pending under the same row lock order (user, then server),
        // so no start slips between this check and the new pin.
        let up =
            servers::list_for_user(&mut *tx, user.user_id).await?.into_iter().find(|s| s.state != ServerState::Stopped);
        if let Some(server) = up {
            let which =
                if server.name.is_empty() { "default server".to_string() } else { format!("server {}", server.name) };
            return Err(ServiceError::Conflict(format!(
                "{name}'s {which} is {}: stop it first (a running server stays on the node it runs on)",
                server.state.as_str()
            )));
        }
        let before = node_pins::set(&mut tx, user.user_id, node, self.hub.now()).await?;
        let detail = json!({ "before": before.as_ref().map(NodeName::as_str), "after": node.as_str() });
        self.hub.audit().record(&mut *tx, actor, "user.pin", name.as_str(), detail).await?;
        tx.commit().await?;
        Ok(before)
    }
}
