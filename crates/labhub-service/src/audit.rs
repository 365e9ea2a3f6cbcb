//! Recording who did what.

use labhub_db::PgExecutor;
use labhub_db::audit;
use serde_json::Value;

use crate::{Hub, Principal, SYSTEM_ACTOR, ServiceError};

/// Who is acting: a signed-in user, or the hub itself (its CLI, its timers).
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// A user, through the web or the API.
    User(&'a Principal),
    /// The operator at the command line, or the hub's own background work.
    System,
}

impl Actor<'_> {
    /// The name written to the audit log.
    pub fn name(&self) -> &str {
        match self {
            Actor::User(p) => p.name.as_str(),
            Actor::System => SYSTEM_ACTOR,
        }
    }

    /// Whether the actor has site-wide admin rights.
    pub fn is_admin(&self) -> bool {
        match self {
            Actor::User(p) => p.admin,
            Actor::System => true,
        }
    }

    /// Refuses unless the actor is an admin.
    pub fn require_admin(&self) -> Result<(), ServiceError> {
        if self.is_admin() { Ok(()) } else { Err(ServiceError::Forbidden("this needs an admin".into())) }
    }

    /// Refuses unless the actor is `user_id` or an admin.
    pub fn require_self_or_admin(&self, user_id: i64) -> Result<(), ServiceError> {
        match self {
            Actor::User(p) if p.user_id == user_id || p.admin => Ok(()),
            Actor::System => Ok(()),
            Actor::User(_) => Err(ServiceError::Forbidden("you may only do this for your own account".into())),
        }
    }
}

impl Hub {
    /// Appends an audit record, in the caller's transaction when given one.
    pub async fn audit(
        &self,
        db: impl PgExecutor<'_>,
        actor: Actor<'_>,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<(), ServiceError> {
        tracing::info!(actor = actor.name(), action, target, "audit");
        audit::record(db, self.now(), actor.name(), action, target, &detail).await?;
        Ok(())
    }

    /// One page of the audit log (admins only).
    pub async fn audit_log(
        &self,
        actor: Actor<'_>,
        filter: &audit::AuditFilter,
    ) -> Result<(Vec<audit::AuditEntry>, i64), ServiceError> {
        actor.require_admin()?;
        Ok(audit::list(self.db(), filter).await?)
    }
}
