//! What groups use: a background sampler of the runtime's live numbers (stored in Postgres,
//! kept for a bounded time) and of users' storage, and the usage view of one group.

use std::collections::HashMap;
use std::time::Duration;

use labhub_core::{GroupId, GroupName, GroupRole, Owner, ServerId, UserName};
use labhub_db::usage::{self, Sample};

use crate::access::Actor;
use crate::model::{ChargedServer, GroupDetail, UsageSample};
use crate::{Hub, ServiceError};

/// How far back the usage chart looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageRange {
    /// The last 24 hours, in 10-minute averages.
    #[default]
    Day,
    /// The last 7 days, in hourly averages.
    Week,
}

impl UsageRange {
    /// How far back it looks.
    pub fn span(self) -> Duration {
        match self {
            UsageRange::Day => Duration::from_secs(86400),
            UsageRange::Week => Duration::from_secs(7 * 86400),
        }
    }

    /// The width of one averaged point.
    pub fn bucket(self) -> Duration {
        match self {
            UsageRange::Day => Duration::from_secs(600),
            UsageRange::Week => Duration::from_secs(3600),
        }
    }
}

/// Reserved and used amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    /// CPU the servers reserved (their limits), in millicores.
    pub cpu_reserved: u64,
    /// Memory the servers reserved, in bytes.
    pub memory_reserved: u64,
    /// CPU in use at the last sample, in millicores.
    pub cpu_used: u64,
    /// Memory in use at the last sample, in bytes.
    pub memory_used: u64,
    /// How many servers.
    pub servers: usize,
}

impl Amounts {
    fn add(&mut self, s: &ChargedServer) {
        let (cpu_used, memory_used) = s.used.unwrap_or((0, 0));
        self.cpu_reserved += u64::from(s.reserved.cpu_millis);
        self.memory_reserved += s.reserved.memory_bytes;
        self.cpu_used += cpu_used;
        self.memory_used += memory_used;
        self.servers += 1;
    }
}

/// One member's servers under the group.
#[derive(Debug, Clone)]
pub struct MemberUsage {
    /// Who.
    pub name: UserName,
    /// Their role in the group; `None` when they left it while a server still runs under it.
    pub role: Option<GroupRole>,
    /// Their active servers charged to the group.
    pub servers: Vec<ChargedServer>,
    /// What those servers hold.
    pub total: Amounts,
}

/// One group's use: per member and in total, against its budget, and over time.
#[derive(Debug, Clone)]
pub struct GroupUsage {
    /// The group, its members and limits.
    pub detail: GroupDetail,
    /// Every member, and anyone else with a server still charged to the group.
    pub members: Vec<MemberUsage>,
    /// The group's total.
    pub total: Amounts,
    /// The samples of the chosen range, oldest first.
    pub samples: Vec<UsageSample>,
    /// The range the samples cover.
    pub range: UsageRange,
    /// The shared folder's size as last measured (when it is on).
    pub shared_bytes: Option<u64>,
    /// Whether the shared folder is near or past the group's storage limit, in words.
    pub shared_warning: Option<String>,
}

impl Hub {
    /// What groups use.
    pub fn usage(&self) -> Usage<'_> {
        Usage::new(self)
    }
}

/// What groups use.
#[derive(Clone, Copy)]
pub struct Usage<'h> {
    hub: &'h Hub,
}

impl<'h> Usage<'h> {
    /// How many users were active in the last day, week and month, labelled as JupyterHub's
    /// `jupyterhub_active_users{period}` is.
    pub async fn active_users(&self) -> Result<Vec<(&'static str, i64)>, ServiceError> {
        let now = self.hub.now();
        let mut out = Vec::new();
        for (period, days) in [("24h", 1), ("7d", 7), ("30d", 30)] {
            let since = now - time::Duration::days(days);
            out.push((period, labhub_db::users::count_active_since(self.hub.db(), since).await?));
        }
        Ok(out)
    }

    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    /// One group's use (admins, its leads).
    pub async fn of_group(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        range: UsageRange,
    ) -> Result<GroupUsage, ServiceError> {
        let detail = self.hub.groups().get(actor, name).await?;
        let group_id = detail.group.id;
        let servers = usage::active_in_group(self.hub.db(), group_id).await?;
        let mut members: Vec<MemberUsage> = detail
            .members
            .iter()
            .map(|m| MemberUsage {
                name: m.name.clone(),
                role: Some(m.role),
                servers: Vec::new(),
                total: Amounts::default(),
            })
            .collect();
        let mut total = Amounts::default();
        for mut s in servers.into_iter().map(ChargedServer::from) {
            // The proxy's stamps not yet written to the database are the freshest activity.
            let live = self
                .hub
                .routes()
                .get(s.owner.as_str(), s.name.as_ref().map(labhub_core::ServerName::as_str))
                .and_then(|r| r.last_activity());
            s.last_activity = s.last_activity.max(live);
            total.add(&s);
            let i = match members.iter().position(|m| m.name == s.owner) {
                Some(i) => i,
                None => {
                    members.push(MemberUsage {
                        name: s.owner.clone(),
                        role: None,
                        servers: Vec::new(),
                        total: Amounts::default(),
                    });
                    members.len() - 1
                }
            };
            members[i].total.add(&s);
            members[i].servers.push(s);
        }
        let span = time::Duration::try_from(range.span()).unwrap_or(time::Duration::DAY);
        let bucket = range.bucket().as_secs() as i64;
        let samples = usage::series(self.hub.db(), group_id, self.hub.now() - span, bucket).await?;
        let samples = samples.into_iter().map(UsageSample::from).collect();
        let (shared_bytes, shared_warning) = self.shared_folder(&detail).await?;
        Ok(GroupUsage { detail, members, total, samples, range, shared_bytes, shared_warning })
    }

    /// A group's shared folder: its last measured size, and a warning near or past the limit.
    async fn shared_folder(&self, d: &GroupDetail) -> Result<(Option<u64>, Option<String>), ServiceError> {
        let Some(group) = labhub_db::groups::by_id(self.hub.db(), d.group.id).await? else { return Ok((None, None)) };
        if !group.shared_folder {
            return Ok((None, None));
        }
        let mut conn = self.hub.db().acquire().await.map_err(labhub_db::DbError::from)?;
        let bytes = labhub_db::groups::shared_bytes(&mut *conn, group.group_id).await?;
        let ask = crate::quotas::Ask { group: Some(group.name.clone()), leads: d.leads() };
        let warning = self.hub.quotas().shared_warning(&mut conn, &group, d.quota.storage_bytes, &ask).await?;
        Ok((bytes.map(|b| u64::try_from(b).unwrap_or(0)), warning))
    }

    /// Takes one sample of every active server's live use from the runtime, stores it per
    /// server and per group (with what the group's servers reserved), and drops samples past
    /// the retention.
    pub async fn sample(&self) -> Result<(), ServiceError> {
        let Some(spawner) = self.hub.0.spawner.clone() else { return Ok(()) };
        let live = spawner.usage().await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        // Servers made before ids are known by their owner's name; a name no account has
        // now finds no row below.
        let live: HashMap<(Owner, String), (i64, i64)> = live
            .into_iter()
            .map(|u| {
                let key = (u.owner, u.server.map(|s| s.to_string()).unwrap_or_default());
                (key, (i64::from(u.cpu_millis), i64::try_from(u.memory_bytes).unwrap_or(i64::MAX)))
            })
            .collect();
        let live_of = |s: &labhub_db::usage::ChargedServer| {
            let by_id = live.get(&(Owner::User(s.user_id), s.name.clone()));
            by_id.or_else(|| live.get(&(Owner::LegacyName(s.owner.clone()), s.name.clone()))).copied()
        };
        let now = self.hub.now();
        let active = usage::active(self.hub.db()).await?;
        let per_server: Vec<(ServerId, i64, i64)> =
            active.iter().filter_map(|s| live_of(s).map(|(c, m)| (s.server_id, c, m))).collect();
        usage::put_server_usage(self.hub.db(), now, &per_server).await?;
        let mut per_group: HashMap<GroupId, Sample> = usage::group_ids(self.hub.db())
            .await?
            .into_iter()
            .map(|id| (id, Sample { at: now, cpu_millis: 0, memory_bytes: 0, cpu_reserved: 0, memory_reserved: 0 }))
            .collect();
        for s in &active {
            let Some(sample) = s.group_id.and_then(|g| per_group.get_mut(&g)) else { continue };
            sample.cpu_reserved += i64::from(s.cpu_millis.unwrap_or(0));
            sample.memory_reserved += s.memory_bytes.unwrap_or(0);
            if let Some((c, m)) = live_of(s) {
                sample.cpu_millis += c;
                sample.memory_bytes += m;
            }
        }
        let rows: Vec<(GroupId, Sample)> = per_group.into_iter().collect();
        usage::insert_samples(self.hub.db(), &rows).await?;
        let retention = self.hub.quota_settings().usage_retention;
        let keep = time::Duration::try_from(retention).unwrap_or(time::Duration::WEEK);
        usage::delete_samples_before(self.hub.db(), now - keep).await?;
        Ok(())
    }
}
