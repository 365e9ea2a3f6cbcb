//! Deleting an environment: its catalogue entry, its record and its build history go; the
//! images stay for the sessions that ran them until the image collector frees them.

use labhub_db::environments as store;
use labhub_db::images;
use serde_json::json;

use super::Environments;
use super::standing::Standing;
use crate::ServiceError;
use crate::access::Actor;

impl Environments<'_> {
    /// Whether `actor` may delete the environment `name`: admins any, a group's leads the
    /// group's, a member their own (a personal environment or a saved server). 404 to those
    /// who may not see it.
    pub async fn may_remove(&self, actor: Actor<'_>, name: &str) -> Result<bool, ServiceError> {
        let env = self.visible(actor, name).await?;
        self.may_remove_env(actor, &env).await
    }

    async fn may_remove_env(&self, actor: Actor<'_>, env: &store::Environment) -> Result<bool, ServiceError> {
        Ok(matches!(self.standing(actor, env).await?, Standing::Full | Standing::Lead | Standing::Owner(_)))
    }

    /// Deletes the environment `name` (see [`Environments::may_remove`]). Refused while one of
    /// its builds runs, since that build would then tag an image nothing records. Running
    /// servers on it keep running; a saved server's count quota frees a place.
    pub async fn remove(&self, actor: Actor<'_>, name: &str) -> Result<(), ServiceError> {
        let env = self.visible(actor, name).await?;
        if !self.may_remove_env(actor, &env).await? {
            return Err(ServiceError::Forbidden(format!("you may not delete the environment '{name}'")));
        }
        let builds = store::builds(self.hub.db(), env.environment_id).await?;
        let mut tx = self.hub.begin().await?;
        // Under the row's lock: a build recorded from now on waits for this transaction, and
        // then finds no environment to build.
        if store::lock_and_building(&mut *tx, env.environment_id).await? {
            return Err(ServiceError::Conflict(format!(
                "'{name}' is being built; delete it once the build has finished"
            )));
        }
        images::delete(&mut *tx, name).await?;
        let detail = json!({ "source": env.source, "snapshot": env.snapshot, "builds": builds.len(),
                             "images": builds.iter().filter_map(|b| b.image_id.clone()).collect::<Vec<_>>() });
        self.hub.audit().record(&mut *tx, actor, "environment.delete", name, detail).await?;
        tx.commit().await
    }
}
