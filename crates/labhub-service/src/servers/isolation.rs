//! Servers start only while their isolation is in force. The maintenance loop asks the runtime
//! every [`ISOLATION_CHECK_INTERVAL`] (which also puts back firewall rules a reload removed), a
//! start asks when nothing is known yet, and a start that fails for want of isolation says so
//! too; what was found last is what starts and the admins' banner go by.

use std::sync::Arc;

use labhub_core::spawner::{Isolation, SpawnError, Spawner};

use super::Servers;
use crate::ServiceError;
use crate::health::{ISOLATION_CHECK_INTERVAL, IsolationState};

impl Servers<'_> {
    /// Asks the runtime whether servers' isolation is in force, repairing what it can, and
    /// records the answer: `Ok(false)` when it cannot be enforced (starts are then refused).
    pub async fn check_isolation(&self) -> Result<bool, ServiceError> {
        let spawner = self.spawner()?.clone();
        self.check_with(&spawner).await
    }

    async fn check_with(&self, spawner: &Arc<dyn Spawner>) -> Result<bool, ServiceError> {
        match spawner.check_isolation().await {
            Ok(isolation) => {
                metrics::gauge!("labhub_isolation_failing").set(0.0);
                let state = match isolation {
                    Isolation::Full => IsolationState::Enforced,
                    Isolation::ServersOnly => IsolationState::Off,
                };
                if self.hub.isolation_health().in_force(state) {
                    tracing::info!("servers can be isolated again; starts resume");
                }
                Ok(true)
            }
            Err(SpawnError::Isolation(reason)) => {
                self.isolation_failed(reason);
                Ok(false)
            }
            Err(e) => Err(ServiceError::Unavailable(format!("the container runtime could not be asked: {e}"))),
        }
    }

    /// Refuses a start while servers cannot be isolated; checks first when nobody has yet.
    pub(crate) async fn require_isolation(&self, spawner: &Arc<dyn Spawner>) -> Result<(), ServiceError> {
        if self.hub.isolation_health().state() == IsolationState::Unchecked {
            self.check_with(spawner).await?;
        }
        self.isolation_refusal().map_or(Ok(()), |message| Err(ServiceError::Unavailable(message)))
    }

    /// Why no server may start now, if that is so (for the start form, before anyone tries).
    pub fn isolation_refusal(&self) -> Option<String> {
        match self.hub.isolation_health().state() {
            IsolationState::Failing { reason, .. } => Some(format!(
                "Servers cannot start right now: the hub cannot keep them isolated from each other, the host and \
                 the site's networks ({reason}). An admin must fix this; the hub checks again every {} seconds.",
                ISOLATION_CHECK_INTERVAL.as_secs()
            )),
            IsolationState::Unchecked | IsolationState::Enforced | IsolationState::Off => None,
        }
    }

    /// Records that isolation cannot be enforced (a check, or a start that found out).
    pub(crate) fn isolation_failed(&self, reason: String) {
        metrics::gauge!("labhub_isolation_failing").set(1.0);
        if self.hub.isolation_health().failing(self.hub.now(), reason.clone()) {
            tracing::error!(%reason, "servers cannot be isolated; no server starts until this is fixed");
        }
    }
}
