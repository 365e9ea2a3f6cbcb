//! Managing roles (admins and the CLI): defining them and giving them to users and groups.
//! Every change takes effect at once: the credential caches are emptied here, and Postgres
//! announces it to other hub processes.

use labhub_core::{GroupName, RoleName, ScopeSpec, ServiceName, UserName};
use labhub_db::{groups, roles, services};
use serde_json::json;

use super::Roles;
use crate::ServiceError;
use crate::access::Actor;

/// A role as JupyterHub's API shows it.
#[derive(Debug, Clone)]
pub struct RoleView {
    pub name: String,
    pub description: String,
    /// Its scopes as written.
    pub scopes: Vec<String>,
    /// Whether the hub defines it (it cannot be removed).
    pub builtin: bool,
}

impl From<roles::Role> for RoleView {
    fn from(r: roles::Role) -> Self {
        Self { name: r.name, description: r.description, scopes: r.scopes, builtin: r.builtin }
    }
}

/// Whom a role is given to.
#[derive(Debug, Clone)]
pub enum Assignee {
    User(UserName),
    Group(GroupName),
    /// A registered service: its token holds exactly its roles' scopes.
    Service(ServiceName),
}

impl Roles<'_> {
    /// Every role (admins).
    pub async fn list(&self, actor: Actor<'_>) -> Result<Vec<RoleView>, ServiceError> {
        actor.require_admin()?;
        Ok(roles::list(self.hub.db()).await?.into_iter().map(RoleView::from).collect())
    }

    /// Defines a role, or redefines one (admins); its scopes must parse.
    pub async fn put(
        &self,
        actor: Actor<'_>,
        name: &RoleName,
        description: &str,
        scopes: &[String],
    ) -> Result<RoleView, ServiceError> {
        actor.require_admin()?;
        ScopeSpec::parse_all(scopes).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let mut tx = self.hub.begin().await?;
        let role = roles::upsert(&mut *tx, name.as_str(), description, scopes, self.hub.now()).await?;
        let detail = json!({ "scopes": scopes });
        self.hub.audit().record(&mut *tx, actor, "role.put", name.as_str(), detail).await?;
        tx.commit().await?;
        self.hub.shares().changed().await;
        Ok(role.into())
    }

    /// Removes a role that is not built in (admins).
    pub async fn delete(&self, actor: Actor<'_>, name: &RoleName) -> Result<(), ServiceError> {
        actor.require_admin()?;
        let role = self.role(name).await?;
        if role.builtin {
            return Err(ServiceError::Conflict(format!("{name} is a built-in role; it cannot be removed")));
        }
        let mut tx = self.hub.begin().await?;
        roles::delete(&mut *tx, name.as_str()).await?;
        self.hub.audit().record(&mut *tx, actor, "role.delete", name.as_str(), json!({})).await?;
        tx.commit().await?;
        self.hub.shares().changed().await;
        Ok(())
    }

    /// Gives a role to a user, a group or a service (admins); `user` and `admin` are not given this way
    /// (every user holds `user`; `admin` is the account's admin flag).
    pub async fn assign(
        &self,
        actor: Actor<'_>,
        name: &RoleName,
        to: &Assignee,
        give: bool,
    ) -> Result<(), ServiceError> {
        actor.require_admin()?;
        if matches!(name.as_str(), "user" | "admin") {
            return Err(ServiceError::Invalid(format!(
                "{name} is not given by assignment: every user holds 'user', and 'admin' is the account's admin flag"
            )));
        }
        let role = self.role(name).await?;
        let mut tx = self.hub.begin().await?;
        let db = &mut *tx;
        let (target, changed) = match to {
            Assignee::User(user) => {
                let row = self.hub.user_row(user).await?;
                let changed = if give {
                    roles::assign_user(&mut *db, role.role_id, row.user_id).await?;
                    true
                } else {
                    roles::unassign_user(&mut *db, role.role_id, row.user_id).await?
                };
                (format!("user {user}"), changed)
            }
            Assignee::Group(group) => {
                let row = groups::by_name(&mut *db, group)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound(format!("no group named {group}")))?;
                let changed = if give {
                    roles::assign_group(&mut *db, role.role_id, row.group_id).await?;
                    true
                } else {
                    roles::unassign_group(&mut *db, role.role_id, row.group_id).await?
                };
                (format!("group {group}"), changed)
            }
            Assignee::Service(service) => {
                let row = services::by_name(&mut *db, service.as_str())
                    .await?
                    .ok_or_else(|| ServiceError::NotFound(format!("no service named {service}")))?;
                let changed = if give {
                    services::assign(&mut *db, role.role_id, row.service_id).await?;
                    true
                } else {
                    services::unassign(&mut *db, role.role_id, row.service_id).await?
                };
                (format!("service {service}"), changed)
            }
        };
        if changed {
            let action = if give { "role.assign" } else { "role.unassign" };
            self.hub.audit().record(&mut *tx, actor, action, name.as_str(), json!({ "to": target })).await?;
            tx.commit().await?;
            // Credentials are worked out again, and WebSockets the change ends are closed.
            self.hub.shares().changed().await;
        }
        Ok(())
    }

    async fn role(&self, name: &RoleName) -> Result<roles::Role, ServiceError> {
        roles::by_name(self.hub.db(), name.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no role named {name}")))
    }
}
