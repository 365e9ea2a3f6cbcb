//! Quotas: what a group's members may start, checked atomically with the start itself.
//!
//! The rules (also in the README):
//! - Every group has limits in force (its quota) and a ceiling an admin sets; its leads may
//!   change the quota within the ceiling. Until set, both are the site default (configuration).
//! - Users in no group get the site default; their servers share its budget.
//! - A server is started under one group (the start asks which when the member is in several;
//!   without an answer the hub takes the most generous group whose limits admit the request)
//!   and is charged to it until it stops: that group's per-server limits, images, per-member
//!   server count, budget, idle timeout and lifetime apply to it. Limits are never mixed or
//!   added across groups.
//! - Storage belongs to the person, not to a server: the limit is the most generous one among
//!   their groups.
//! - The decision is a pure function (`policy.rs`) over facts. Storage is measured before the
//!   start's transaction (it may ask the runtime); the transaction then locks the groups it
//!   considers (an advisory lock stands in for users in no group) and reads what concurrent
//!   starts change — their pending servers — so starts can never together exceed a budget.

mod policy;
mod words;

use labhub_core::resources::format_bytes;
use labhub_core::spawner::MountSource;
use labhub_core::{GroupName, GroupRole, ImageAllowance, Quota, ServerName, Storage, UserName};
use labhub_db::groups;
use labhub_db::quotas::{self, QuotaKind};
use labhub_db::users::User;
use serde_json::json;

pub(crate) use policy::{Ask, Charge, Refusal};
use policy::{GroupFacts, MIN_MEMORY_BYTES, StartFacts, Wanted};
pub use policy::{QuotaPatch, clamp};
pub use words::{above_ceiling, cpu_text, describe, summary};

use crate::access::Actor;
use crate::hub::HubTx;
use crate::model::{CatalogueImage, GroupAccess, GroupDetail, StartRequest};
use crate::words::capitalise;
use crate::{Hub, ServiceError};

/// One group (or the site default) a member may start under, for the start form.
#[derive(Debug, Clone)]
pub struct StartOption {
    /// The group; `None` for users in no group, who get the site default.
    pub group: Option<GroupName>,
    /// Its limits in force.
    pub quota: Quota,
}

/// A member's storage as measured before a start, for [`Quotas::charge`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct StorageUsed(u64);

impl Hub {
    /// Quotas: what a start is charged to, and groups' limits.
    pub fn quotas(&self) -> Quotas<'_> {
        Quotas::new(self)
    }
}

/// Quotas.
#[derive(Clone, Copy)]
pub struct Quotas<'h> {
    hub: &'h Hub,
}

impl<'h> Quotas<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    /// The limits in force of several groups, the site default for those never set.
    async fn quotas_of(
        &self,
        db: &mut labhub_db::PgConnection,
        ids: &[labhub_core::GroupId],
    ) -> Result<Vec<Quota>, ServiceError> {
        let mut set = quotas::of_groups(db, ids).await?;
        let site = &self.hub.quota_settings().site_default;
        Ok(ids.iter().map(|id| set.remove(&(*id, QuotaKind::Quota)).unwrap_or_else(|| site.clone())).collect())
    }

    /// The limits in force for one group (the site default for none): what a build that the
    /// group (or a member of it) runs may use.
    pub(crate) async fn limits_of(&self, group: Option<labhub_core::GroupId>) -> Result<Quota, ServiceError> {
        let site = &self.hub.quota_settings().site_default;
        let Some(group) = group else { return Ok(site.clone()) };
        let mut set = quotas::of_groups(self.hub.db(), &[group]).await?;
        Ok(set.remove(&(group, QuotaKind::Quota)).unwrap_or_else(|| site.clone()))
    }

    async fn leads_of(
        &self,
        db: &mut labhub_db::PgConnection,
        group: labhub_core::GroupId,
    ) -> Result<Vec<UserName>, ServiceError> {
        let members = groups::members(db, group).await?;
        Ok(members.into_iter().filter(|m| m.role == GroupRole::Lead).map(|m| m.name).collect())
    }

    /// Measures the storage a start would use, before its transaction: the last measurement,
    /// or — never measured, a new named server whose storage may be the user's one shared
    /// volume — the runtime's answer (an absent volume is empty).
    pub(crate) async fn storage_before_start(
        &self,
        user: &User,
        server: Option<&ServerName>,
    ) -> Result<StorageUsed, ServiceError> {
        let name = server.map_or("", ServerName::as_str);
        let measured = quotas::storage_of_user(self.hub.db(), user.user_id).await?;
        let used = match measured.iter().find(|m| m.server_name == name) {
            Some(m) => u64::try_from(m.bytes).unwrap_or(0),
            None => match &self.hub.0.spawner {
                Some(spawner) => {
                    let home = self.hub.homes().of(user.user_id, server).await?;
                    spawner.storage_usage(&home).await.ok().flatten().unwrap_or(0)
                }
                None => 0,
            },
        };
        // Backups restored for the account are its storage too, mounted in every server.
        let mut restored = 0;
        if let Some(spawner) = &self.hub.0.spawner {
            for mount in self.hub.backups().mounts_for(user.user_id).await? {
                if let MountSource::Storage(storage) = &mount.source {
                    restored += spawner.storage_usage(storage).await.ok().flatten().unwrap_or(0);
                }
            }
        }
        Ok(StorageUsed(used.saturating_add(restored)))
    }

    /// Decides which group a start is charged to and what it gets, or refuses it saying which
    /// limit, how much is in use and whom to ask. Runs in the start's transaction and locks
    /// the groups it considers, so that the caller's pending row is the next thing any other
    /// start under them sees.
    pub(crate) async fn charge(
        &self,
        tx: &mut HubTx<'_>,
        user: &User,
        image: &CatalogueImage,
        request: &StartRequest,
        storage: StorageUsed,
    ) -> Result<Charge, ServiceError> {
        let memberships = groups::of_user(&mut **tx, user.user_id).await?;
        let candidates: Vec<&groups::Group> = match &request.group {
            Some(g) => {
                vec![memberships.iter().find(|m| &m.group.name == g).map(|m| &m.group).ok_or_else(|| {
                    ServiceError::Forbidden(format!("{} is not a member of the group {g}", user.name))
                })?]
            }
            None => memberships.iter().map(|m| &m.group).collect(),
        };
        let ids: Vec<_> = candidates.iter().map(|g| g.group_id).collect();
        if ids.is_empty() {
            quotas::lock_ungrouped(&mut **tx).await?;
        } else {
            groups::lock(&mut **tx, &ids).await?;
        }
        // Everything a group says, for the member's groups (storage) and the candidates.
        let all: Vec<_> = memberships.iter().map(|m| m.group.group_id).collect();
        let all_quotas = self.quotas_of(tx, &all).await?;
        let mut facts_of = Vec::with_capacity(all.len());
        for (m, quota) in memberships.iter().zip(all_quotas) {
            let leads = self.leads_of(tx, m.group.group_id).await?;
            facts_of.push((m.group.group_id, m.group.name.clone(), quota, leads));
        }
        let site = &self.hub.quota_settings().site_default;
        let storage_groups: Vec<_> = facts_of
            .iter()
            .map(|(_, name, q, leads)| (q.storage_bytes, Ask { group: Some(name.clone()), leads: leads.clone() }))
            .collect();
        let mut groups_facts = Vec::new();
        if candidates.is_empty() {
            groups_facts.push(self.group_facts(tx, user, None, site.clone(), Vec::new()).await?);
        }
        for (id, name, quota, leads) in facts_of.into_iter().filter(|f| ids.contains(&f.0)) {
            groups_facts.push(self.group_facts(tx, user, Some((id, name)), quota, leads).await?);
        }
        let facts = StartFacts {
            wanted: Wanted {
                user: &user.name,
                image: &image.name,
                image_cpu_millis: image.fields.cpu_millis,
                image_memory_bytes: image.fields.memory_bytes,
                cpu_millis: request.cpu_millis,
                memory_bytes: request.memory_bytes,
                gpus: request.gpus,
            },
            candidates: groups_facts,
            storage_used: storage.0,
            storage_limit: policy::storage_limit(site.storage_bytes, &storage_groups),
        };
        policy::decide_start(&facts).map_err(policy::Refusal::into_error)
    }

    /// What a group holds now, read under its lock.
    async fn group_facts(
        &self,
        tx: &mut HubTx<'_>,
        user: &User,
        group: Option<(labhub_core::GroupId, GroupName)>,
        quota: Quota,
        leads: Vec<UserName>,
    ) -> Result<GroupFacts, ServiceError> {
        let id = group.as_ref().map(|g| g.0);
        let member_servers = quotas::member_servers(&mut **tx, user.user_id, id).await?;
        let charged = quotas::charged(&mut **tx, id).await?;
        let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(GroupFacts {
            group,
            quota,
            leads,
            member_servers: unsigned(member_servers),
            charged: (unsigned(charged.cpu_millis), unsigned(charged.memory_bytes)),
        })
    }

    /// Warnings for the home page when a member's storage is near or past their limit.
    pub async fn storage_warnings(&self, actor: Actor<'_>, name: &UserName) -> Result<Vec<String>, ServiceError> {
        let user = self.hub.user_row(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        let mut conn = self.hub.db().acquire().await.map_err(labhub_db::DbError::from)?;
        let memberships = groups::of_user(&mut *conn, user.user_id).await?;
        let ids: Vec<_> = memberships.iter().map(|m| m.group.group_id).collect();
        let group_quotas = self.quotas_of(&mut conn, &ids).await?;
        let mut limits = Vec::new();
        for (m, q) in memberships.iter().zip(group_quotas) {
            let leads = self.leads_of(&mut conn, m.group.group_id).await?;
            limits.push((q.storage_bytes, Ask { group: Some(m.group.name.clone()), leads }));
        }
        let percent = self.hub.quota_settings().storage_warning_percent;
        let mut out: Vec<String> = Vec::new();
        for (m, (limit, ask)) in memberships.iter().zip(&limits) {
            if let Some(text) = self.shared_warning(&mut conn, &m.group, *limit, ask).await? {
                out.push(text);
            }
        }
        let site = self.hub.quota_settings().site_default.storage_bytes;
        let (Some(limit), ask) = policy::storage_limit(site, &limits) else { return Ok(out) };
        for m in quotas::storage_of_user(&mut *conn, user.user_id).await? {
            let used = u64::try_from(m.bytes).unwrap_or(0);
            if let Some(text) = words::storage_warning(used, limit, percent, &ask)
                && !out.contains(&text)
            {
                out.push(text);
            }
        }
        Ok(out)
    }

    /// A warning when a group's shared folder (on, and measured) is near or past the group's
    /// storage limit, which it counts against.
    pub(crate) async fn shared_warning(
        &self,
        conn: &mut labhub_db::PgConnection,
        group: &groups::Group,
        limit: Option<u64>,
        ask: &Ask,
    ) -> Result<Option<String>, ServiceError> {
        let (true, Some(limit)) = (group.shared_folder, limit) else { return Ok(None) };
        let Some(used) = groups::shared_bytes(&mut *conn, group.group_id).await? else { return Ok(None) };
        let used = u64::try_from(used).unwrap_or(0);
        Ok(words::shared_folder_warning(
            &group.name,
            used,
            limit,
            self.hub.quota_settings().storage_warning_percent,
            ask,
        ))
    }

    /// Measures every user's storage through the runtime and records it; returns how many
    /// were measured. Cheap for the runtime: it measures all volumes at once and caches that.
    pub async fn measure_storage(&self) -> Result<usize, ServiceError> {
        let Some(spawner) = self.hub.0.spawner.clone() else { return Ok(0) };
        let mut measured = 0;
        for (user_id, owner, server) in quotas::storage_owners(self.hub.db()).await? {
            let Ok(server) = ServerName::parse_optional(&server) else { continue };
            let home = self.hub.homes().of(user_id, server.as_ref()).await?;
            match spawner.storage_usage(&home).await {
                Ok(Some(bytes)) => {
                    let name = server.as_ref().map_or("", ServerName::as_str);
                    quotas::put_storage(self.hub.db(), user_id, name, bytes, self.hub.now()).await?;
                    measured += 1;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(user = %owner, error = %e, "could not measure storage"),
            }
        }
        for group in groups::with_shared_folder(self.hub.db()).await? {
            match spawner.storage_usage(&Storage::Group(group.group_id)).await {
                Ok(bytes) => {
                    let bytes = i64::try_from(bytes.unwrap_or(0)).unwrap_or(i64::MAX);
                    groups::put_shared_bytes(self.hub.db(), group.group_id, bytes, self.hub.now()).await?;
                    measured += 1;
                }
                Err(e) => tracing::warn!(group = %group.name, error = %e, "could not measure a shared folder"),
            }
        }
        Ok(measured)
    }

    /// The groups (or the site default) a user may start servers under, for the start form
    /// (asked by whoever may start their servers).
    pub async fn start_options(&self, actor: Actor<'_>, owner: &UserName) -> Result<Vec<StartOption>, ServiceError> {
        let user = self.hub.user_row(owner).await?;
        self.hub.access().require(
            actor,
            crate::access::ServerRef { owner: user.user_id, owner_name: &user.name, server: None },
            crate::access::Need::Start,
        )?;
        let memberships = groups::of_user(self.hub.db(), user.user_id).await?;
        if memberships.is_empty() {
            let site = self.hub.quota_settings().site_default.clone();
            return Ok(vec![StartOption { group: None, quota: site }]);
        }
        let ids: Vec<_> = memberships.iter().map(|m| m.group.group_id).collect();
        let mut conn = self.hub.db().acquire().await.map_err(labhub_db::DbError::from)?;
        let quotas = self.quotas_of(&mut conn, &ids).await?;
        Ok(memberships
            .into_iter()
            .zip(quotas)
            .map(|(m, quota)| StartOption { group: Some(m.group.name), quota })
            .collect())
    }

    /// Changes a group's limits (admins, its leads), within the ceiling an admin set.
    pub async fn set_group_quota(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        patch: &QuotaPatch,
    ) -> Result<GroupDetail, ServiceError> {
        self.change_quota(actor, name, patch, "group.set_quota").await
    }

    /// Chooses which catalogue images a group may start (admins, its leads), within the ceiling.
    pub async fn set_group_images(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        images: ImageAllowance,
    ) -> Result<GroupDetail, ServiceError> {
        let patch = QuotaPatch { images: Some(images), ..QuotaPatch::default() };
        self.change_quota(actor, name, &patch, "group.set_images").await
    }

    async fn change_quota(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        patch: &QuotaPatch,
        action: &str,
    ) -> Result<GroupDetail, ServiceError> {
        let groups = self.hub.groups();
        let mut tx = self.hub.begin().await?;
        let (group, access) = groups.managed(&mut tx, actor, name).await?;
        let (quota, ceiling) = groups.quota_and_ceiling(&mut *tx, group.group_id).await?;
        let after = patch.apply(&quota);
        self.check_quota(&mut tx, &after).await?;
        if let Some(why) = above_ceiling(&after, &ceiling) {
            let remedy = match access {
                GroupAccess::Admin => "raise the ceiling first",
                GroupAccess::Lead => "ask an admin to raise it",
            };
            return Err(ServiceError::AboveCeiling(format!(
                "{}: the ceiling is the most an admin lets {name} have; {remedy}.",
                capitalise(&why)
            )));
        }
        if after != quota {
            quotas::put(&mut *tx, group.group_id, QuotaKind::Quota, &after, self.hub.now()).await?;
            let detail = if action == "group.set_images" {
                json!({ "before": describe(&quota)["images"], "after": describe(&after)["images"] })
            } else {
                json!({ "before": describe(&quota), "after": describe(&after) })
            };
            self.hub.audit().record(&mut *tx, actor, action, name.as_str(), detail).await?;
        }
        tx.commit().await?;
        groups.detail(group).await
    }

    /// Sets the most a group's leads may grant (admins); the quota in force is lowered to fit.
    pub async fn set_group_ceiling(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        patch: &QuotaPatch,
    ) -> Result<GroupDetail, ServiceError> {
        actor.require_admin()?;
        let groups = self.hub.groups();
        let mut tx = self.hub.begin().await?;
        let (group, _) = groups.managed(&mut tx, actor, name).await?;
        let (quota, ceiling) = groups.quota_and_ceiling(&mut *tx, group.group_id).await?;
        let new_ceiling = patch.apply(&ceiling);
        self.check_quota(&mut tx, &new_ceiling).await?;
        let new_quota = clamp(&quota, &new_ceiling);
        let now = self.hub.now();
        quotas::put(&mut *tx, group.group_id, QuotaKind::Ceiling, &new_ceiling, now).await?;
        quotas::put(&mut *tx, group.group_id, QuotaKind::Quota, &new_quota, now).await?;
        let audit = self.hub.audit();
        let detail = json!({ "before": describe(&ceiling), "after": describe(&new_ceiling) });
        audit.record(&mut *tx, actor, "group.set_ceiling", name.as_str(), detail).await?;
        if new_quota != quota {
            let detail = json!({ "before": describe(&quota), "after": describe(&new_quota), "reason": "lowered to the new ceiling" });
            audit.record(&mut *tx, actor, "group.set_quota", name.as_str(), detail).await?;
        }
        tx.commit().await?;
        groups.detail(group).await
    }

    /// Refuses limits that make no sense or name images the catalogue does not have.
    async fn check_quota(&self, tx: &mut HubTx<'_>, q: &Quota) -> Result<(), ServiceError> {
        if q.max_cpu_millis == 0 {
            return Err(ServiceError::Invalid("the CPU limit per server must be more than 0".into()));
        }
        if q.max_memory_bytes < MIN_MEMORY_BYTES {
            return Err(ServiceError::Invalid(format!(
                "the memory limit per server must be at least {}",
                format_bytes(MIN_MEMORY_BYTES)
            )));
        }
        if let ImageAllowance::Only(names) = &q.images {
            let mut unknown = Vec::new();
            for n in names {
                if labhub_db::images::by_name(&mut **tx, n).await?.is_none() {
                    unknown.push(n.as_str());
                }
            }
            if !unknown.is_empty() {
                return Err(ServiceError::Invalid(format!("the catalogue has no image named {}", unknown.join(", "))));
            }
        }
        Ok(())
    }
}
