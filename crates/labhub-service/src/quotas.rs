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
//! - The check runs in the start's transaction after locking the group's row (an advisory
//!   lock stands in for users in no group), so concurrent starts see each other's pending
//!   servers and can never together exceed a budget.

use std::time::Duration;

use labhub_core::resources::{format_bytes, format_cpu};
use labhub_core::{GroupName, GroupRole, Resources, UserName};
use labhub_db::PgConnection;
use labhub_db::groups::{self, Group};
use labhub_db::images::Image;
use labhub_db::quotas::{self, ImageAllowance, Quota, QuotaKind};
use labhub_db::users::User;
use serde_json::{Value, json};

use crate::audit::Actor;
use crate::groups::{GroupAccess, GroupDetail};
use crate::servers::StartRequest;
use crate::{Hub, ServiceError};

/// The smallest memory a start may ask for (the catalogue's own minimum).
const MIN_MEMORY_BYTES: u64 = 64 << 20;

/// A quota as JSON: the API's model and the audit log's before/after.
pub fn describe(q: &Quota) -> Value {
    json!({
        "max_cpu_millis": q.max_cpu_millis,
        "max_memory_bytes": q.max_memory_bytes,
        "max_gpus": q.max_gpus,
        "images": match &q.images {
            ImageAllowance::All => Value::Null,
            ImageAllowance::Only(names) => json!(names),
        },
        "max_servers_per_member": q.max_servers_per_member,
        "budget_cpu_millis": q.budget_cpu_millis,
        "budget_memory_bytes": q.budget_memory_bytes,
        "storage_bytes": q.storage_bytes,
        "idle_timeout_seconds": q.idle_timeout.map(|d| d.as_secs()),
        "max_lifetime_seconds": q.max_lifetime.map(|d| d.as_secs()),
    })
}

/// A change to some of a quota's limits; the fields left `None` keep their value. For the
/// limits that may be absent, `Some(None)` removes the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaPatch {
    pub max_cpu_millis: Option<u32>,
    pub max_memory_bytes: Option<u64>,
    pub max_gpus: Option<u32>,
    pub images: Option<ImageAllowance>,
    pub max_servers_per_member: Option<u32>,
    pub budget_cpu_millis: Option<Option<u64>>,
    pub budget_memory_bytes: Option<Option<u64>>,
    pub storage_bytes: Option<Option<u64>>,
    pub idle_timeout: Option<Option<Duration>>,
    pub max_lifetime: Option<Option<Duration>>,
}

impl QuotaPatch {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == QuotaPatch::default()
    }

    /// The quota with this change applied.
    pub fn apply(&self, q: &Quota) -> Quota {
        Quota {
            max_cpu_millis: self.max_cpu_millis.unwrap_or(q.max_cpu_millis),
            max_memory_bytes: self.max_memory_bytes.unwrap_or(q.max_memory_bytes),
            max_gpus: self.max_gpus.unwrap_or(q.max_gpus),
            images: self.images.clone().unwrap_or_else(|| q.images.clone()),
            max_servers_per_member: self.max_servers_per_member.unwrap_or(q.max_servers_per_member),
            budget_cpu_millis: self.budget_cpu_millis.unwrap_or(q.budget_cpu_millis),
            budget_memory_bytes: self.budget_memory_bytes.unwrap_or(q.budget_memory_bytes),
            storage_bytes: self.storage_bytes.unwrap_or(q.storage_bytes),
            idle_timeout: self.idle_timeout.unwrap_or(q.idle_timeout),
            max_lifetime: self.max_lifetime.unwrap_or(q.max_lifetime),
        }
    }
}

/// `a <= b` where `None` is no limit (infinitely generous).
fn within<T: PartialOrd>(a: Option<T>, b: Option<T>) -> bool {
    match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a <= b,
    }
}

/// The smaller of two limits where `None` is no limit.
fn min_limit<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(a.min(b)),
    }
}

/// The larger of two limits where `None` is no limit.
fn max_limit<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (None, _) | (_, None) => None,
        (Some(a), Some(b)) => Some(a.max(b)),
    }
}

fn or_none<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "none".to_string(), f)
}

fn or_never(v: Option<Duration>) -> String {
    v.map_or_else(|| "never".to_string(), format_duration)
}

/// The first limit of `q` above `ceiling`, in words; `None` when all are within it.
pub fn above_ceiling(q: &Quota, ceiling: &Quota) -> Option<String> {
    let over =
        |what: &str, asked: String, most: String| Some(format!("{what} of {asked} is above the ceiling of {most}"));
    if q.max_cpu_millis > ceiling.max_cpu_millis {
        return over("a CPU limit per server", format_cpu(q.max_cpu_millis), format_cpu(ceiling.max_cpu_millis));
    }
    if q.max_memory_bytes > ceiling.max_memory_bytes {
        return over(
            "a memory limit per server",
            format_bytes(q.max_memory_bytes),
            format_bytes(ceiling.max_memory_bytes),
        );
    }
    if q.max_gpus > ceiling.max_gpus {
        return over("a GPU limit per server", q.max_gpus.to_string(), ceiling.max_gpus.to_string());
    }
    if q.max_servers_per_member > ceiling.max_servers_per_member {
        return over(
            "a limit of servers per member",
            q.max_servers_per_member.to_string(),
            ceiling.max_servers_per_member.to_string(),
        );
    }
    if let ImageAllowance::Only(allowed) = &ceiling.images {
        match &q.images {
            ImageAllowance::All => {
                return Some(format!(
                    "every catalogue image is more than the ceiling's images ({})",
                    allowed.join(", ")
                ));
            }
            ImageAllowance::Only(names) => {
                let extra: Vec<&str> = names.iter().filter(|n| !allowed.contains(n)).map(String::as_str).collect();
                if !extra.is_empty() {
                    return Some(format!(
                        "the image{} {} {} not among the ceiling's images ({})",
                        if extra.len() == 1 { "" } else { "s" },
                        extra.join(", "),
                        if extra.len() == 1 { "is" } else { "are" },
                        allowed.join(", ")
                    ));
                }
            }
        }
    }
    if !within(q.budget_cpu_millis, ceiling.budget_cpu_millis) {
        return over(
            "a group CPU budget",
            or_none(q.budget_cpu_millis, |v| format_cpu(v.min(u64::from(u32::MAX)) as u32)),
            or_none(ceiling.budget_cpu_millis, |v| format_cpu(v.min(u64::from(u32::MAX)) as u32)),
        );
    }
    if !within(q.budget_memory_bytes, ceiling.budget_memory_bytes) {
        return over(
            "a group memory budget",
            or_none(q.budget_memory_bytes, format_bytes),
            or_none(ceiling.budget_memory_bytes, format_bytes),
        );
    }
    if !within(q.storage_bytes, ceiling.storage_bytes) {
        return over(
            "a storage limit",
            or_none(q.storage_bytes, format_bytes),
            or_none(ceiling.storage_bytes, format_bytes),
        );
    }
    if !within(q.idle_timeout, ceiling.idle_timeout) {
        return over("an idle timeout", or_never(q.idle_timeout), or_never(ceiling.idle_timeout));
    }
    if !within(q.max_lifetime, ceiling.max_lifetime) {
        return over("a maximum lifetime", or_never(q.max_lifetime), or_never(ceiling.max_lifetime));
    }
    None
}

/// `q` lowered to fit under `ceiling`, limit by limit.
pub fn clamp(q: &Quota, ceiling: &Quota) -> Quota {
    Quota {
        max_cpu_millis: q.max_cpu_millis.min(ceiling.max_cpu_millis),
        max_memory_bytes: q.max_memory_bytes.min(ceiling.max_memory_bytes),
        max_gpus: q.max_gpus.min(ceiling.max_gpus),
        images: match (&q.images, &ceiling.images) {
            (x, ImageAllowance::All) => x.clone(),
            (ImageAllowance::All, only) => only.clone(),
            (ImageAllowance::Only(a), ImageAllowance::Only(b)) => {
                ImageAllowance::Only(a.iter().filter(|n| b.contains(n)).cloned().collect())
            }
        },
        max_servers_per_member: q.max_servers_per_member.min(ceiling.max_servers_per_member),
        budget_cpu_millis: min_limit(q.budget_cpu_millis, ceiling.budget_cpu_millis),
        budget_memory_bytes: min_limit(q.budget_memory_bytes, ceiling.budget_memory_bytes),
        storage_bytes: min_limit(q.storage_bytes, ceiling.storage_bytes),
        idle_timeout: min_limit(q.idle_timeout, ceiling.idle_timeout),
        max_lifetime: min_limit(q.max_lifetime, ceiling.max_lifetime),
    }
}

/// A memory size exactly, in the largest binary unit that divides it ("1536M", "8G"), or in
/// bytes; `parse_memory` reads it back unchanged.
pub fn memory_text(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A length of time in words: "90 seconds", "1 hour", "2 hours 30 minutes".
pub fn format_duration(d: Duration) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let s = d.as_secs();
    if s < 120 && !s.is_multiple_of(60) {
        return plural(s, "second");
    }
    if s.is_multiple_of(86400) {
        return plural(s / 86400, "day");
    }
    let (h, m) = (s / 3600, (s % 3600) / 60);
    match (h, m) {
        (0, m) => plural(m, "minute"),
        (h, 0) => plural(h, "hour"),
        (h, m) => format!("{} {}", plural(h, "hour"), plural(m, "minute")),
    }
}

/// What a start is charged to, and the resources it gets.
#[derive(Debug, Clone)]
pub(crate) struct Charge {
    /// The group whose budget it uses; `None` for users in no group.
    pub(crate) group_id: Option<i64>,
    /// That group's name, for the audit log.
    pub(crate) group: Option<GroupName>,
    /// What the container may use.
    pub(crate) resources: Resources,
}

/// One group (or the site default) a member may start under, for the start form.
#[derive(Debug, Clone)]
pub struct StartOption {
    /// The group; `None` for users in no group, who get the site default.
    pub group: Option<GroupName>,
    /// Its limits in force.
    pub quota: Quota,
}

/// Who to ask for more: the leads of the group, or an admin.
fn ask(group: Option<&GroupName>, leads: &[UserName]) -> String {
    match (group, leads) {
        (Some(g), [one]) => format!("ask {one} (lead of {g})"),
        (Some(g), [rest @ .., last]) => {
            format!("ask {} or {last} (leads of {g})", rest.iter().map(UserName::as_str).collect::<Vec<_>>().join(", "))
        }
        _ => "ask an admin".to_string(),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// A refusal before its "who to ask" is known.
enum Refusal {
    /// Never allowed under this group (403).
    Forbidden(String),
    /// Not now: the group or the member is at a limit (409).
    Full(String),
}

impl Hub {
    async fn leads_of(&self, db: &mut PgConnection, group_id: i64) -> Result<Vec<UserName>, ServiceError> {
        Ok(groups::members(db, group_id)
            .await?
            .into_iter()
            .filter(|m| m.role == GroupRole::Lead)
            .map(|m| m.name)
            .collect())
    }

    /// The limits in force of several groups, the site default for those never set.
    async fn quotas_of(&self, db: &mut PgConnection, group_ids: &[i64]) -> Result<Vec<Quota>, ServiceError> {
        let mut set = quotas::of_groups(db, group_ids).await?;
        let site = &self.quota_settings().site_default;
        Ok(group_ids.iter().map(|id| set.remove(&(*id, QuotaKind::Quota)).unwrap_or_else(|| site.clone())).collect())
    }

    /// Decides which group a start is charged to and what it gets, or refuses it saying which
    /// limit, how much is in use and whom to ask. Runs in the start's transaction and locks
    /// the groups it considers, so that the caller's pending row is the next thing any other
    /// start under them sees.
    pub(crate) async fn charge_start(
        &self,
        tx: &mut PgConnection,
        user: &User,
        server_name: &str,
        image: &Image,
        request: &StartRequest,
    ) -> Result<Charge, ServiceError> {
        let memberships = groups::of_user(&mut *tx, user.user_id).await?;
        let candidates: Vec<Group> = match &request.group {
            Some(g) => {
                vec![memberships.iter().find(|m| &m.group.name == g).map(|m| m.group.clone()).ok_or_else(|| {
                    ServiceError::Forbidden(format!("{} is not a member of the group {g}", user.name))
                })?]
            }
            None => memberships.iter().map(|m| m.group.clone()).collect(),
        };
        let ids: Vec<i64> = candidates.iter().map(|g| g.group_id).collect();
        if ids.is_empty() {
            quotas::lock_ungrouped(&mut *tx).await?;
        } else {
            groups::lock(&mut *tx, &ids).await?;
        }
        self.check_storage(tx, user, server_name, &memberships.iter().map(|m| m.group.clone()).collect::<Vec<_>>())
            .await?;
        if candidates.is_empty() {
            let site = self.quota_settings().site_default.clone();
            return match self.fits(tx, user, None, &site, image, request).await? {
                Ok(resources) => Ok(Charge { group_id: None, group: None, resources }),
                Err(r) => Err(self.refusal(tx, None, r).await?),
            };
        }
        let mut options: Vec<(Group, Quota)> = candidates.into_iter().zip(self.quotas_of(tx, &ids).await?).collect();
        // The most generous group first: one that allows the image, then the largest servers.
        options.sort_by(|(ga, a), (gb, b)| {
            let key = |q: &Quota| (q.images.allows(&image.name), q.max_cpu_millis, q.max_memory_bytes, q.max_gpus);
            key(b).cmp(&key(a)).then_with(|| ga.name.cmp(&gb.name))
        });
        let mut first_refusal = None;
        for (group, quota) in &options {
            match self.fits(tx, user, Some(group), quota, image, request).await? {
                Ok(resources) => {
                    return Ok(Charge { group_id: Some(group.group_id), group: Some(group.name.clone()), resources });
                }
                Err(r) => {
                    if first_refusal.is_none() {
                        first_refusal = Some((group.clone(), r));
                    }
                }
            }
        }
        let (group, r) = first_refusal.expect("at least one group was considered");
        Err(self.refusal(tx, Some(&group), r).await?)
    }

    async fn refusal(
        &self,
        tx: &mut PgConnection,
        group: Option<&Group>,
        r: Refusal,
    ) -> Result<ServiceError, ServiceError> {
        let leads = match group {
            Some(g) => self.leads_of(tx, g.group_id).await?,
            None => Vec::new(),
        };
        let who = ask(group.map(|g| &g.name), &leads);
        Ok(match r {
            Refusal::Forbidden(m) => ServiceError::Forbidden(format!("{m} {}.", capitalise(&who))),
            Refusal::Full(m) => ServiceError::Conflict(format!("{m} Stop a server first, or {who}.")),
        })
    }

    /// Whether a start fits one group's limits (or the site default's): the resources it would
    /// get, or why not. An invalid request is an error of its own.
    async fn fits(
        &self,
        tx: &mut PgConnection,
        user: &User,
        group: Option<&Group>,
        quota: &Quota,
        image: &Image,
        request: &StartRequest,
    ) -> Result<Result<Resources, Refusal>, ServiceError> {
        let under = match group {
            Some(g) => format!("group {}", g.name),
            None => "the site default for users in no group".to_string(),
        };
        if !quota.images.allows(&image.name) {
            let allowed = match &quota.images {
                ImageAllowance::Only(names) if !names.is_empty() => names.join(", "),
                _ => "none".to_string(),
            };
            return Ok(Err(Refusal::Forbidden(format!(
                "The image '{}' is not one that {under} may use (allowed: {allowed}).",
                image.name
            ))));
        }
        let cpu = request.cpu_millis.unwrap_or_else(|| image.cpu_millis.min(quota.max_cpu_millis));
        let memory = request.memory_bytes.unwrap_or_else(|| image.memory_bytes.min(quota.max_memory_bytes));
        let gpus = request.gpus.unwrap_or(0);
        if cpu == 0 {
            return Err(ServiceError::Invalid("give the server some CPU, e.g. 0.5".into()));
        }
        if memory < MIN_MEMORY_BYTES {
            return Err(ServiceError::Invalid(format!(
                "give the server at least {} of memory",
                format_bytes(MIN_MEMORY_BYTES)
            )));
        }
        if cpu > quota.max_cpu_millis {
            return Ok(Err(Refusal::Forbidden(format!(
                "{} CPU is more than the limit of {} CPU per server in {under}. Choose a smaller size.",
                format_cpu(cpu),
                format_cpu(quota.max_cpu_millis)
            ))));
        }
        if memory > quota.max_memory_bytes {
            return Ok(Err(Refusal::Forbidden(format!(
                "{} of memory is more than the limit of {} per server in {under}. Choose a smaller size.",
                format_bytes(memory),
                format_bytes(quota.max_memory_bytes)
            ))));
        }
        if gpus > quota.max_gpus {
            return Ok(Err(Refusal::Forbidden(format!(
                "{gpus} GPU{} is more than the limit of {} GPU{} per server in {under}.",
                if gpus == 1 { "" } else { "s" },
                quota.max_gpus,
                if quota.max_gpus == 1 { "" } else { "s" }
            ))));
        }
        let group_id = group.map(|g| g.group_id);
        let running = quotas::member_servers(&mut *tx, user.user_id, group_id).await?;
        if running >= i64::from(quota.max_servers_per_member) {
            return Ok(Err(Refusal::Full(format!(
                "{} already runs {running} server{} under {under}, its limit per member of {}.",
                user.name,
                if running == 1 { "" } else { "s" },
                quota.max_servers_per_member
            ))));
        }
        let charged = quotas::charged(&mut *tx, group_id).await?;
        let used_cpu = u64::try_from(charged.cpu_millis).unwrap_or(0);
        if let Some(budget) = quota.budget_cpu_millis
            && used_cpu + u64::from(cpu) > budget
        {
            return Ok(Err(Refusal::Full(format!(
                "The CPU budget of {under} is {} CPU and its running servers reserve {} CPU, so {} CPU more does not fit.",
                format_cpu(budget.min(u64::from(u32::MAX)) as u32),
                format_cpu(used_cpu.min(u64::from(u32::MAX)) as u32),
                format_cpu(cpu)
            ))));
        }
        let used_memory = u64::try_from(charged.memory_bytes).unwrap_or(0);
        if let Some(budget) = quota.budget_memory_bytes
            && used_memory + memory > budget
        {
            return Ok(Err(Refusal::Full(format!(
                "The memory budget of {under} is {} and its running servers reserve {}, so {} more does not fit.",
                format_bytes(budget),
                format_bytes(used_memory),
                format_bytes(memory)
            ))));
        }
        Ok(Ok(Resources { cpu_millis: cpu, memory_bytes: memory, gpus }))
    }

    /// A user's storage limit: the most generous among their groups (the site default for
    /// users in no group), and the group it comes from.
    async fn storage_limit(
        &self,
        db: &mut PgConnection,
        groups_of_user: &[Group],
    ) -> Result<(Option<u64>, Option<Group>), ServiceError> {
        if groups_of_user.is_empty() {
            return Ok((self.quota_settings().site_default.storage_bytes, None));
        }
        let ids: Vec<i64> = groups_of_user.iter().map(|g| g.group_id).collect();
        let quotas = self.quotas_of(db, &ids).await?;
        let mut best: Option<(Option<u64>, &Group)> = None;
        for (g, q) in groups_of_user.iter().zip(&quotas) {
            best = match best {
                Some((limit, from)) if max_limit(limit, q.storage_bytes) == limit => Some((limit, from)),
                _ => Some((q.storage_bytes, g)),
            };
        }
        Ok(best.map_or((None, None), |(limit, g)| (limit, Some(g.clone()))))
    }

    async fn check_storage(
        &self,
        tx: &mut PgConnection,
        user: &User,
        server_name: &str,
        groups_of_user: &[Group],
    ) -> Result<(), ServiceError> {
        let (Some(limit), from) = self.storage_limit(tx, groups_of_user).await? else { return Ok(()) };
        let measured = quotas::storage_of_user(&mut *tx, user.user_id).await?;
        let used = match measured.iter().find(|m| m.server_name == server_name) {
            Some(m) => u64::try_from(m.bytes).unwrap_or(0),
            // Never measured: a new named server, whose storage may still be the user's one
            // shared volume; the runtime knows (an absent volume is empty).
            None => match (&self.0.servers.spawner, labhub_core::ServerName::parse_optional(server_name)) {
                (Some(spawner), Ok(server)) => {
                    spawner.storage_usage(&user.name, server.as_ref()).await.ok().flatten().unwrap_or(0)
                }
                _ => 0,
            },
        };
        if used <= limit {
            return Ok(());
        }
        let leads = match &from {
            Some(g) => self.leads_of(tx, g.group_id).await?,
            None => Vec::new(),
        };
        Err(ServiceError::Conflict(format!(
            "Your storage holds {}, more than your limit of {}: free at least {} before starting. To delete files, {} to raise the limit for a while.",
            format_bytes(used),
            format_bytes(limit),
            format_bytes(used - limit),
            ask(from.as_ref().map(|g| &g.name), &leads)
        )))
    }

    /// Warnings for the home page when a user's storage is near or past their limit.
    pub async fn storage_warnings(&self, user: &User) -> Result<Vec<String>, ServiceError> {
        let mut conn = self.db().acquire().await.map_err(labhub_db::DbError::from)?;
        let memberships: Vec<Group> =
            groups::of_user(&mut *conn, user.user_id).await?.into_iter().map(|m| m.group).collect();
        let (Some(limit), from) = self.storage_limit(&mut conn, &memberships).await? else { return Ok(Vec::new()) };
        let leads = match &from {
            Some(g) => self.leads_of(&mut conn, g.group_id).await?,
            None => Vec::new(),
        };
        let who = ask(from.as_ref().map(|g| &g.name), &leads);
        let percent = u128::from(self.quota_settings().storage_warning_percent);
        let mut out: Vec<String> = Vec::new();
        for m in quotas::storage_of_user(&mut *conn, user.user_id).await? {
            let used = u64::try_from(m.bytes).unwrap_or(0);
            let text = if used > limit {
                format!(
                    "Your storage holds {}, more than your limit of {}: servers cannot start until you free at least {}. To delete files, {} to raise the limit for a while.",
                    format_bytes(used),
                    format_bytes(limit),
                    format_bytes(used - limit),
                    who
                )
            } else if u128::from(used) * 100 >= u128::from(limit) * percent {
                format!(
                    "Your storage holds {} of your {} limit. Delete files you no longer need: past the limit, servers cannot start. For more space, {who}.",
                    format_bytes(used),
                    format_bytes(limit)
                )
            } else {
                continue;
            };
            if !out.contains(&text) {
                out.push(text);
            }
        }
        Ok(out)
    }

    /// Measures every user's storage through the runtime and records it; returns how many
    /// were measured. Cheap for the runtime: it measures all volumes at once and caches that.
    pub async fn measure_storage(&self) -> Result<usize, ServiceError> {
        let Some(spawner) = self.0.servers.spawner.clone() else { return Ok(0) };
        let mut measured = 0;
        for (user_id, owner, server) in quotas::storage_owners(self.db()).await? {
            let (Ok(owner), Ok(server)) = (UserName::parse(&owner), labhub_core::ServerName::parse_optional(&server))
            else {
                continue;
            };
            match spawner.storage_usage(&owner, server.as_ref()).await {
                Ok(Some(bytes)) => {
                    let name = server.as_ref().map_or("", labhub_core::ServerName::as_str);
                    quotas::put_storage(self.db(), user_id, name, bytes, self.now()).await?;
                    measured += 1;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(user = %owner, error = %e, "could not measure storage"),
            }
        }
        Ok(measured)
    }

    /// The groups (or the site default) a user may start servers under, for the start form
    /// (asked by the user or an admin: whoever may start their servers).
    pub async fn start_options(&self, actor: Actor<'_>, owner: &UserName) -> Result<Vec<StartOption>, ServiceError> {
        let user = self.user_by_name(owner).await?;
        actor.require_self_or_admin(user.user_id)?;
        let memberships = groups::of_user(self.db(), user.user_id).await?;
        if memberships.is_empty() {
            return Ok(vec![StartOption { group: None, quota: self.quota_settings().site_default.clone() }]);
        }
        let ids: Vec<i64> = memberships.iter().map(|m| m.group.group_id).collect();
        let mut conn = self.db().acquire().await.map_err(labhub_db::DbError::from)?;
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
        let mut tx = labhub_db::begin(self.db()).await?;
        let (group, access) = self.managed_group(&mut tx, actor, name).await?;
        let (quota, ceiling) = self.quota_and_ceiling(&mut *tx, group.group_id).await?;
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
            quotas::put(&mut *tx, group.group_id, QuotaKind::Quota, &after, self.now()).await?;
            let detail = if action == "group.set_images" {
                json!({ "before": describe(&quota)["images"], "after": describe(&after)["images"] })
            } else {
                json!({ "before": describe(&quota), "after": describe(&after) })
            };
            self.audit(&mut *tx, actor, action, name.as_str(), detail).await?;
        }
        labhub_db::commit(tx).await?;
        self.group_detail(group).await
    }

    /// Sets the most a group's leads may grant (admins); the quota in force is lowered to fit.
    pub async fn set_group_ceiling(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        patch: &QuotaPatch,
    ) -> Result<GroupDetail, ServiceError> {
        actor.require_admin()?;
        let mut tx = labhub_db::begin(self.db()).await?;
        let group = groups::by_name_for_update(&mut *tx, name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("there is no group named {name}")))?;
        let (quota, ceiling) = self.quota_and_ceiling(&mut *tx, group.group_id).await?;
        let new_ceiling = patch.apply(&ceiling);
        self.check_quota(&mut tx, &new_ceiling).await?;
        let new_quota = clamp(&quota, &new_ceiling);
        let now = self.now();
        quotas::put(&mut *tx, group.group_id, QuotaKind::Ceiling, &new_ceiling, now).await?;
        quotas::put(&mut *tx, group.group_id, QuotaKind::Quota, &new_quota, now).await?;
        self.audit(
            &mut *tx,
            actor,
            "group.set_ceiling",
            name.as_str(),
            json!({ "before": describe(&ceiling), "after": describe(&new_ceiling) }),
        )
        .await?;
        if new_quota != quota {
            self.audit(
                &mut *tx,
                actor,
                "group.set_quota",
                name.as_str(),
                json!({ "before": describe(&quota), "after": describe(&new_quota), "reason": "lowered to the new ceiling" }),
            )
            .await?;
        }
        labhub_db::commit(tx).await?;
        self.group_detail(group).await
    }

    /// Refuses limits that make no sense or name images the catalogue does not have.
    async fn check_quota(&self, db: &mut PgConnection, q: &Quota) -> Result<(), ServiceError> {
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
                if labhub_db::images::by_name(&mut *db, n).await?.is_none() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> Quota {
        crate::QuotaSettings::default().site_default
    }

    #[test]
    fn memory_text_reads_back_exactly() {
        for b in [3u64 << 29, 8 << 30, 1000, 4096, 1 << 40] {
            assert_eq!(labhub_core::resources::parse_memory(&memory_text(b)).unwrap(), b);
        }
        assert_eq!(memory_text(3 << 29), "1536M");
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(format_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(format_duration(Duration::from_secs(90)), "90 seconds");
        assert_eq!(format_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(format_duration(Duration::from_secs(120)), "2 minutes");
        assert_eq!(format_duration(Duration::from_secs(9000)), "2 hours 30 minutes");
        assert_eq!(format_duration(Duration::from_secs(2 * 86400)), "2 days");
    }

    #[test]
    fn ceilings_bound_every_limit_and_clamping_fits_under_them() {
        let ceiling = Quota {
            max_cpu_millis: 2000,
            images: ImageAllowance::Only(vec!["a".into(), "b".into()]),
            budget_cpu_millis: Some(8000),
            idle_timeout: Some(Duration::from_secs(3600)),
            ..quota()
        };
        let ok = Quota { max_cpu_millis: 1000, images: ImageAllowance::Only(vec!["a".into()]), ..ceiling.clone() };
        assert_eq!(above_ceiling(&ok, &ceiling), None);
        let more_cpu = Quota { max_cpu_millis: 4000, ..ok.clone() };
        assert!(above_ceiling(&more_cpu, &ceiling).unwrap().contains("CPU limit per server of 4"));
        let all_images = Quota { images: ImageAllowance::All, ..ok.clone() };
        assert!(above_ceiling(&all_images, &ceiling).unwrap().contains("every catalogue image"));
        let no_budget = Quota { budget_cpu_millis: None, ..ok.clone() };
        assert!(above_ceiling(&no_budget, &ceiling).unwrap().contains("budget"));
        let never_idle = Quota { idle_timeout: None, ..ok.clone() };
        assert!(above_ceiling(&never_idle, &ceiling).unwrap().contains("idle timeout of never"));
        let clamped = clamp(&Quota { images: ImageAllowance::Only(vec!["b".into(), "c".into()]), ..quota() }, &ceiling);
        assert_eq!(above_ceiling(&clamped, &ceiling), None);
        assert_eq!(clamped.images, ImageAllowance::Only(vec!["b".into()]));
        assert_eq!(clamped.budget_cpu_millis, Some(8000));
    }

    #[test]
    fn patches_change_only_what_they_name() {
        let q = quota();
        let p = QuotaPatch { max_gpus: Some(2), storage_bytes: Some(Some(1 << 30)), ..QuotaPatch::default() };
        let after = p.apply(&q);
        assert_eq!(after.max_gpus, 2);
        assert_eq!(after.storage_bytes, Some(1 << 30));
        assert_eq!(after.max_cpu_millis, q.max_cpu_millis);
        assert!(QuotaPatch::default().is_empty());
        let unlimited = QuotaPatch { storage_bytes: Some(None), ..QuotaPatch::default() }.apply(&after);
        assert_eq!(unlimited.storage_bytes, None);
    }

    #[test]
    fn whom_to_ask() {
        let g = GroupName::parse("lab").unwrap();
        let bob = UserName::parse("bob").unwrap();
        let carol = UserName::parse("carol").unwrap();
        assert_eq!(ask(Some(&g), std::slice::from_ref(&bob)), "ask bob (lead of lab)");
        assert_eq!(ask(Some(&g), &[bob, carol]), "ask bob or carol (leads of lab)");
        assert_eq!(ask(Some(&g), &[]), "ask an admin");
        assert_eq!(ask(None, &[]), "ask an admin");
    }
}
