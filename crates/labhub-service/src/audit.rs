//! Recording who did what, and reading it back (admins).

use labhub_core::listing::AuditFilter;
use labhub_db::PgExecutor;
use labhub_db::audit;
use serde_json::Value;

use crate::access::Actor;
use crate::model::AuditRecord;
use crate::{Hub, ServiceError};

impl Hub {
    /// The audit trail.
    pub fn audit(&self) -> Audit<'_> {
        Audit::new(self)
    }
}

/// The audit trail.
#[derive(Clone, Copy)]
pub struct Audit<'h> {
    hub: &'h Hub,
}

impl<'h> Audit<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    /// Appends a record, in the caller's transaction when given one (so a refusal that rolls
    /// the transaction back leaves no record of a change that did not happen).
    pub(crate) async fn record(
        &self,
        db: impl PgExecutor<'_>,
        actor: Actor<'_>,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<(), ServiceError> {
        tracing::info!(actor = actor.name(), action, target, "audit");
        audit::record(db, self.hub.now(), actor.name(), action, target, &detail).await?;
        Ok(())
    }

    /// One page of the audit log and the total matching (admins).
    pub async fn log(&self, actor: Actor<'_>, filter: &AuditFilter) -> Result<(Vec<AuditRecord>, i64), ServiceError> {
        actor.require_admin()?;
        let (entries, total) = audit::list(self.hub.db(), filter).await?;
        Ok((entries.into_iter().map(AuditRecord::from).collect(), total))
    }
}
