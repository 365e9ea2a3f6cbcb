//! Groups and their leads: who may manage a group, and the changes admins and leads make to
//! its name and members. Every change is audited with the values before and after.
//!
//! Rights: admins (and the hub itself) may do everything. A lead may see the groups they
//! lead and add or remove their members (not other leads); naming leads, creating, renaming
//! and deleting groups is for admins. Everyone else may do nothing here.

use labhub_core::{GroupId, GroupName, GroupRole, Placement, Quota, Storage, UserId, UserName};
use labhub_db::ResultExt;
use labhub_db::groups::{self, Group};
use labhub_db::quotas::QuotaKind;
use labhub_db::users::{self, User};
use serde_json::json;

use crate::access::Actor;
use crate::hub::HubTx;
use crate::model::{self, GroupAccess, GroupDetail, Member, Membership, StorageFate};
use crate::quotas::describe;
use crate::{Hub, ServiceError};

fn no_group(name: &GroupName) -> ServiceError {
    ServiceError::NotFound(format!("there is no group named {name}"))
}

fn not_lead(name: &GroupName) -> ServiceError {
    ServiceError::Forbidden(format!("only an admin or a lead of {name} may do this"))
}

impl Hub {
    /// Groups, their members and leads.
    pub fn groups(&self) -> Groups<'_> {
        Groups::new(self)
    }
}

/// Groups.
#[derive(Clone, Copy)]
pub struct Groups<'h> {
    hub: &'h Hub,
}

impl<'h> Groups<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    /// What `actor` may do to a group: refuses members and leads of other groups.
    async fn access_in(
        &self,
        db: impl labhub_db::PgExecutor<'_>,
        actor: Actor<'_>,
        group: &Group,
    ) -> Result<GroupAccess, ServiceError> {
        match actor {
            Actor::System => Ok(GroupAccess::Admin),
            Actor::User(p) if p.admin => Ok(GroupAccess::Admin),
            Actor::User(p) => match groups::role_of(db, group.group_id, p.user_id).await? {
                Some(GroupRole::Lead) => Ok(GroupAccess::Lead),
                _ => Err(not_lead(&group.name)),
            },
            Actor::Service(_) => Err(not_lead(&group.name)),
        }
    }

    /// A group `actor` may manage, locked until the transaction ends, and what they may do to
    /// it. To anyone but an admin, a group that does not exist is refused like one they do not
    /// lead, so group names do not leak.
    pub(crate) async fn managed(
        &self,
        tx: &mut HubTx<'_>,
        actor: Actor<'_>,
        name: &GroupName,
    ) -> Result<(Group, GroupAccess), ServiceError> {
        let Some(group) = groups::by_name_for_update(&mut **tx, name).await? else {
            return Err(if actor.is_admin() { no_group(name) } else { not_lead(name) });
        };
        let access = self.access_in(&mut **tx, actor, &group).await?;
        Ok((group, access))
    }

    /// A group with its members and limits (admins, its leads).
    pub async fn get(&self, actor: Actor<'_>, name: &GroupName) -> Result<GroupDetail, ServiceError> {
        let Some(group) = groups::by_name(self.hub.db(), name).await? else {
            return Err(if actor.is_admin() { no_group(name) } else { not_lead(name) });
        };
        self.access_in(self.hub.db(), actor, &group).await?;
        self.detail(group).await
    }

    /// A group's members and limits.
    pub(crate) async fn detail(&self, group: Group) -> Result<GroupDetail, ServiceError> {
        let members = groups::members(self.hub.db(), group.group_id).await?;
        let (quota, ceiling) = self.quota_and_ceiling(self.hub.db(), group.group_id).await?;
        let members_build_environments =
            labhub_db::environments::members_may_build(self.hub.db(), group.group_id).await?;
        let placement = groups::placement(self.hub.db(), group.group_id).await?;
        Ok(GroupDetail {
            group: group.into(),
            members: members.into_iter().map(Member::from).collect(),
            quota,
            ceiling,
            members_build_environments,
            placement,
        })
    }

    /// One page of groups and the total: every group for admins, the groups they lead for
    /// leads; refused for everyone else.
    pub async fn list(
        &self,
        actor: Actor<'_>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<GroupDetail>, i64), ServiceError> {
        let lead_id = match actor {
            Actor::User(p) if !p.admin => Some(p.user_id),
            Actor::Service(_) => {
                return Err(ServiceError::Forbidden("listing groups needs an admin or a lead of a group".into()));
            }
            _ => None,
        };
        let (list, total) = groups::list(self.hub.db(), lead_id, offset, limit).await?;
        if lead_id.is_some() && total == 0 {
            return Err(ServiceError::Forbidden("listing groups needs an admin or a lead of a group".into()));
        }
        let mut out = Vec::with_capacity(list.len());
        for g in list {
            out.push(self.detail(g).await?);
        }
        Ok((out, total))
    }

    /// The groups a user belongs to, with their role in each (that user or an admin).
    pub async fn memberships(&self, actor: Actor<'_>, user: UserId) -> Result<Vec<Membership>, ServiceError> {
        actor.require_self_or_admin(user)?;
        Ok(groups::of_user(self.hub.db(), user).await?.into_iter().map(Membership::from).collect())
    }

    /// Creates a group (admins); it follows the site default quota until one is set.
    pub async fn create(&self, actor: Actor<'_>, name: &GroupName) -> Result<model::Group, ServiceError> {
        let mut created = self.create_many(actor, std::slice::from_ref(name), &[]).await?;
        Ok(created.remove(0).group)
    }

    /// Creates groups with the same members (admins): all of it, or — a name taken, a user
    /// unknown — nothing.
    pub async fn create_many(
        &self,
        actor: Actor<'_>,
        names: &[GroupName],
        members: &[UserName],
    ) -> Result<Vec<GroupDetail>, ServiceError> {
        actor.require_admin()?;
        let mut tx = self.hub.begin().await?;
        let users = self.users_named(&mut tx, members).await?;
        let mut created = Vec::new();
        for name in names {
            let group = groups::insert(&mut *tx, name, self.hub.now()).await.on_constraint(groups::NAME_KEY, || {
                ServiceError::Conflict(format!("there is already a group named {name}"))
            })?;
            self.hub
                .audit()
                .record(&mut *tx, actor, "group.create", name.as_str(), json!({ "after": { "name": name } }))
                .await?;
            self.add_members_in(&mut tx, actor, &group, &users).await?;
            created.push(group);
        }
        tx.commit().await?;
        // Who is in a group decides who its shares reach.
        self.hub.shares().changed().await;
        let mut details = Vec::new();
        for group in created {
            details.push(self.detail(group).await?);
        }
        Ok(details)
    }

    /// Renames a group (admins).
    pub async fn rename(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        new_name: &GroupName,
    ) -> Result<model::Group, ServiceError> {
        actor.require_admin()?;
        let mut tx = self.hub.begin().await?;
        let group = groups::by_name_for_update(&mut *tx, name).await?.ok_or_else(|| no_group(name))?;
        if name == new_name {
            return Ok(group.into());
        }
        groups::rename(&mut *tx, group.group_id, new_name).await.on_constraint(groups::NAME_KEY, || {
            ServiceError::Conflict(format!("there is already a group named {new_name}"))
        })?;
        self.hub
            .audit()
            .record(&mut *tx, actor, "group.rename", new_name.as_str(), json!({ "before": name, "after": new_name }))
            .await?;
        tx.commit().await?;
        Ok(Group { name: new_name.clone(), ..group }.into())
    }

    /// Deletes a group with its memberships and quota (admins). Refused while servers run
    /// under it, since their use would have nowhere to be charged. Its shared folder is kept
    /// as an orphan under Storage, or deleted after the group is gone (a failure then leaves
    /// the orphan for an admin to remove, never a group without its files).
    pub async fn delete(&self, actor: Actor<'_>, name: &GroupName, folder: StorageFate) -> Result<(), ServiceError> {
        actor.require_admin()?;
        let spawner = match (folder, &self.hub.0.spawner) {
            (StorageFate::Keep, _) => None,
            (StorageFate::Delete, Some(spawner)) => Some(spawner.clone()),
            (StorageFate::Delete, None) => {
                return Err(ServiceError::Unavailable(
                    "the group's folder cannot be deleted: the container runtime is not reachable".into(),
                ));
            }
        };
        let mut tx = self.hub.begin().await?;
        let group = groups::by_name_for_update(&mut *tx, name).await?.ok_or_else(|| no_group(name))?;
        let charged = labhub_db::quotas::charged(&mut *tx, Some(group.group_id)).await?;
        if charged.servers > 0 {
            return Err(ServiceError::Conflict(format!(
                "{} server{} still run under {name}; stop them before deleting the group",
                charged.servers,
                if charged.servers == 1 { "" } else { "s" }
            )));
        }
        let members = groups::members(&mut *tx, group.group_id).await?;
        let (quota, ceiling) = self.quota_and_ceiling(&mut *tx, group.group_id).await?;
        groups::delete(&mut *tx, group.group_id).await?;
        let before = json!({
            "name": name,
            "members": members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            "leads": members.iter().filter(|m| m.role == GroupRole::Lead).map(|m| m.name.as_str()).collect::<Vec<_>>(),
            "quota": describe(&quota),
            "ceiling": describe(&ceiling),
            "shared_folder": group.shared_folder,
        });
        let detail = json!({ "before": before, "group_id": group.group_id, "shared_folder": folder.as_str() });
        self.hub.audit().record(&mut *tx, actor, "group.delete", name.as_str(), detail).await?;
        tx.commit().await?;
        // Who is in a group decides who its shares reach.
        self.hub.shares().changed().await;
        if let Some(spawner) = spawner {
            spawner.remove_storage(&Storage::Group(group.group_id)).await.map_err(|e| {
                ServiceError::Conflict(format!(
                    "the group is deleted but not its folder ({e}); remove it under Storage"
                ))
            })?;
        }
        Ok(())
    }

    /// Turns a group's shared folder on or off (admins, its leads), and whether members (not
    /// leads) get it read-only. Servers get or lose the folder at their next start; turning it
    /// off keeps its files (turning it on again brings them back).
    pub async fn set_shared_folder(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        shared_folder: bool,
        read_only: bool,
    ) -> Result<GroupDetail, ServiceError> {
        let mut tx = self.hub.begin().await?;
        let (group, _) = self.managed(&mut tx, actor, name).await?;
        if (group.shared_folder, group.shared_read_only) != (shared_folder, read_only) {
            groups::set_shared_folder(&mut *tx, group.group_id, shared_folder, read_only).await?;
            let detail = json!({ "before": { "shared_folder": group.shared_folder, "read_only": group.shared_read_only },
                                 "after": { "shared_folder": shared_folder, "read_only": read_only } });
            self.hub.audit().record(&mut *tx, actor, "group.set_shared_folder", name.as_str(), detail).await?;
        }
        tx.commit().await?;
        self.detail(Group { shared_folder, shared_read_only: read_only, ..group }).await
    }

    /// Sets which Swarm nodes the group's servers may run on (admins: nodes are the site's,
    /// not a group's to choose). Takes effect at each server's next start.
    pub async fn set_placement(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        placement: &[Placement],
    ) -> Result<GroupDetail, ServiceError> {
        actor.require_admin()?;
        let group = groups::by_name(self.hub.db(), name).await?.ok_or_else(|| no_group(name))?;
        let mut tx = self.hub.begin().await?;
        let before: Vec<String> =
            groups::placement(&mut *tx, group.group_id).await?.into_iter().map(String::from).collect();
        let after: Vec<&str> = placement.iter().map(Placement::as_str).collect();
        if before != after {
            groups::set_placement(&mut *tx, group.group_id, &after).await?;
            let detail = json!({ "before": before, "after": after });
            self.hub.audit().record(&mut *tx, actor, "group.set_placement", name.as_str(), detail).await?;
        }
        tx.commit().await?;
        self.detail(group).await
    }

    /// Looks up accounts by name; refuses the whole list if any is unknown.
    async fn users_named(
        &self,
        db: &mut labhub_db::PgConnection,
        names: &[UserName],
    ) -> Result<Vec<User>, ServiceError> {
        let mut found = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        for n in names {
            match users::by_name(&mut *db, n).await? {
                Some(u) => {
                    if !found.iter().any(|f: &User| f.user_id == u.user_id) {
                        found.push(u);
                    }
                }
                None => missing.push(n.to_string()),
            }
        }
        if !missing.is_empty() {
            return Err(ServiceError::Invalid(format!("there is no user named {}", missing.join(", "))));
        }
        Ok(found)
    }

    /// Adds members to a group (admins, its leads). Those already in it keep their role.
    pub async fn add_members(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        names: &[UserName],
    ) -> Result<GroupDetail, ServiceError> {
        let mut tx = self.hub.begin().await?;
        let (group, _) = self.managed(&mut tx, actor, name).await?;
        let users = self.users_named(&mut tx, names).await?;
        self.add_members_in(&mut tx, actor, &group, &users).await?;
        tx.commit().await?;
        // Who is in a group decides who its shares reach.
        self.hub.shares().changed().await;
        self.detail(group).await
    }

    /// Adds users to a group as members, in the caller's transaction; members stay as they are.
    async fn add_members_in(
        &self,
        tx: &mut labhub_db::PgConnection,
        actor: Actor<'_>,
        group: &Group,
        users: &[User],
    ) -> Result<(), ServiceError> {
        for user in users {
            if groups::role_of(&mut *tx, group.group_id, user.user_id).await?.is_some() {
                continue;
            }
            groups::set_member(&mut *tx, group.group_id, user.user_id, GroupRole::Member, self.hub.now()).await?;
            self.hub
                .audit()
                .record(
                    &mut *tx,
                    actor,
                    "group.add_member",
                    group.name.as_str(),
                    json!({ "user": user.name, "before": null, "after": GroupRole::Member.as_str() }),
                )
                .await?;
        }
        Ok(())
    }

    /// Takes members out of a group (admins, its leads; only admins take out a lead). Their
    /// running servers keep running, charged to the group until they stop.
    pub async fn remove_members(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        names: &[UserName],
    ) -> Result<GroupDetail, ServiceError> {
        let mut tx = self.hub.begin().await?;
        let (group, access) = self.managed(&mut tx, actor, name).await?;
        for user in self.users_named(&mut tx, names).await? {
            let Some(role) = groups::role_of(&mut *tx, group.group_id, user.user_id).await? else { continue };
            if role == GroupRole::Lead && access != GroupAccess::Admin {
                return Err(ServiceError::Forbidden(format!(
                    "{} leads {name}; only an admin may take a lead out of a group",
                    user.name
                )));
            }
            groups::remove_member(&mut *tx, group.group_id, user.user_id).await?;
            self.hub
                .audit()
                .record(
                    &mut *tx,
                    actor,
                    "group.remove_member",
                    name.as_str(),
                    json!({ "user": user.name, "before": role.as_str(), "after": null }),
                )
                .await?;
        }
        tx.commit().await?;
        // Who is in a group decides who its shares reach.
        self.hub.shares().changed().await;
        self.detail(group).await
    }

    /// Makes someone a lead of a group (adding them to it), or a plain member again (admins).
    pub async fn set_lead(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        user: &UserName,
        lead: bool,
    ) -> Result<GroupDetail, ServiceError> {
        self.set_leads(actor, name, std::slice::from_ref(user), lead).await
    }

    /// Makes users leads of a group (adding them to it), or plain members again (admins): all
    /// of them, or — a user unknown, or not in the group — none.
    pub async fn set_leads(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        names: &[UserName],
        lead: bool,
    ) -> Result<GroupDetail, ServiceError> {
        actor.require_admin()?;
        let mut tx = self.hub.begin().await?;
        let group = groups::by_name_for_update(&mut *tx, name).await?.ok_or_else(|| no_group(name))?;
        let after = if lead { GroupRole::Lead } else { GroupRole::Member };
        for user in self.users_named(&mut tx, names).await? {
            let before = groups::role_of(&mut *tx, group.group_id, user.user_id).await?;
            if before == Some(after) {
                continue;
            }
            if before.is_none() && !lead {
                return Err(ServiceError::Conflict(format!("{} is not in {name}", user.name)));
            }
            groups::set_member(&mut *tx, group.group_id, user.user_id, after, self.hub.now()).await?;
            self.hub
                .audit()
                .record(
                    &mut *tx,
                    actor,
                    "group.set_lead",
                    name.as_str(),
                    json!({ "user": user.name, "before": before.map(GroupRole::as_str), "after": after.as_str() }),
                )
                .await?;
        }
        tx.commit().await?;
        // Who is in a group decides who its shares reach.
        self.hub.shares().changed().await;
        self.detail(group).await
    }

    /// The group's limits in force and its ceiling, the site default standing in for either
    /// when it was never set.
    pub(crate) async fn quota_and_ceiling(
        &self,
        db: impl labhub_db::PgExecutor<'_>,
        group_id: GroupId,
    ) -> Result<(Quota, Quota), ServiceError> {
        let mut set = labhub_db::quotas::of_groups(db, &[group_id]).await?;
        let site = &self.hub.quota_settings().site_default;
        let quota = set.remove(&(group_id, QuotaKind::Quota)).unwrap_or_else(|| site.clone());
        let ceiling = set.remove(&(group_id, QuotaKind::Ceiling)).unwrap_or_else(|| site.clone());
        Ok((quota, ceiling))
    }
}
