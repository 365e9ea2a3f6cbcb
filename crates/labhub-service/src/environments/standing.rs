//! Who may do what with an environment: see it, build it, delete it, make one for a group or
//! for themselves. One standing per actor and environment, read by each decision.

use labhub_core::{GroupId, GroupName, GroupRole, UserId};
use labhub_db::environments::{self as store, Holder};
use labhub_db::groups;

use super::Environments;
use crate::ServiceError;
use crate::access::Actor;

/// How an actor stands to one environment ([`Environments::standing`]).
pub(super) enum Standing {
    /// The hub itself or an admin.
    Full,
    /// A registered service: no environment is one's.
    Service,
    /// A lead of the group it belongs to.
    Lead,
    /// A member of its group, or anyone for the lab's.
    Member,
    /// The member whose personal environment (or saved server) it is.
    Owner(UserId),
    /// Anyone else: it is not theirs to see.
    Outsider,
}

impl Environments<'_> {
    pub(super) async fn visible(&self, actor: Actor<'_>, name: &str) -> Result<store::Environment, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("there is no environment '{name}'"));
        let env = store::by_name(self.hub.db(), name).await?.ok_or_else(not_found)?;
        if self.may_see(actor, &env).await? { Ok(env) } else { Err(not_found()) }
    }

    /// How `actor` stands to `env`: what seeing, building and deleting it each decide on.
    pub(super) async fn standing(&self, actor: Actor<'_>, env: &store::Environment) -> Result<Standing, ServiceError> {
        let p = match actor {
            Actor::System => return Ok(Standing::Full),
            Actor::Service(_) => return Ok(Standing::Service),
            Actor::User(p) if p.admin => return Ok(Standing::Full),
            Actor::User(p) => p,
        };
        Ok(match (env.group_id, env.owner_id) {
            // The lab's: every account may use it.
            (None, None) => Standing::Member,
            (Some(g), _) => match groups::role_of(self.hub.db(), g, p.user_id).await? {
                Some(GroupRole::Lead) => Standing::Lead,
                Some(_) => Standing::Member,
                None => Standing::Outsider,
            },
            (_, Some(owner)) if owner == p.user_id => Standing::Owner(owner),
            (_, Some(_)) => Standing::Outsider,
        })
    }

    pub(super) async fn may_see(&self, actor: Actor<'_>, env: &store::Environment) -> Result<bool, ServiceError> {
        Ok(!matches!(self.standing(actor, env).await?, Standing::Service | Standing::Outsider))
    }

    /// Refuses unless the actor may build this environment again (or pin it, `admin_only`).
    pub(super) async fn require_builder(&self, actor: Actor<'_>, env: &store::Environment) -> Result<(), ServiceError> {
        let allowed = match self.standing(actor, env).await? {
            Standing::Full | Standing::Lead => true,
            Standing::Service => return Err(ServiceError::Forbidden("services do not build environments".into())),
            Standing::Owner(owner) => self.member_build_group(owner).await?.is_some(),
            Standing::Member | Standing::Outsider => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!("you may not build the environment '{}'", env.name)))
        }
    }

    /// The first group of the user's that lets members build personal environments.
    pub(super) async fn member_build_group(&self, user: UserId) -> Result<Option<GroupId>, ServiceError> {
        for m in groups::of_user(self.hub.db(), user).await? {
            if store::members_may_build(self.hub.db(), m.group.group_id).await? {
                return Ok(Some(m.group.group_id));
            }
        }
        Ok(None)
    }

    /// Whose a new environment is, and whose quota limits its builds; refuses those who may not.
    pub(super) async fn holder_for(
        &self,
        actor: Actor<'_>,
        group: Option<&GroupName>,
    ) -> Result<(Holder, Option<GroupId>), ServiceError> {
        if let Actor::Service(_) = actor {
            return Err(ServiceError::Forbidden("services do not build environments".into()));
        }
        if let Some(name) = group {
            let g = groups::by_name(self.hub.db(), name)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("there is no group {name}")))?;
            if let Actor::User(p) = actor
                && !p.admin
                && groups::role_of(self.hub.db(), g.group_id, p.user_id).await? != Some(GroupRole::Lead)
            {
                return Err(ServiceError::Forbidden(format!("only the group {name}'s leads and admins build for it")));
            }
            return Ok((Holder::Group(g.group_id), Some(g.group_id)));
        }
        match actor {
            Actor::System => Ok((Holder::Lab, None)),
            Actor::User(p) if p.admin => Ok((Holder::Lab, None)),
            Actor::User(p) => match self.member_build_group(p.user_id).await? {
                Some(g) => Ok((Holder::Owner(p.user_id), Some(g))),
                None => Err(ServiceError::Forbidden(
                    "none of your groups lets members build their own environments; ask a lead".into(),
                )),
            },
            Actor::Service(_) => Err(ServiceError::Forbidden("services do not build environments".into())),
        }
    }
}
