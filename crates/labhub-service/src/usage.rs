//! What groups use: a background sampler of the runtime's live numbers (stored in Postgres,
//! kept for a bounded time) and of users' storage, and the usage view of one group.

use std::collections::HashMap;
use std::time::Duration;

use labhub_core::{GroupName, GroupRole, UserName};
use labhub_db::usage::{self, ChargedServer, Sample};

use crate::audit::Actor;
use crate::groups::GroupDetail;
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
        let unsigned = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        self.cpu_reserved += unsigned(s.cpu_millis.map(i64::from));
        self.memory_reserved += unsigned(s.memory_bytes);
        self.cpu_used += unsigned(s.used_cpu_millis);
        self.memory_used += unsigned(s.used_memory_bytes);
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
    pub samples: Vec<Sample>,
    /// The range the samples cover.
    pub range: UsageRange,
}

impl Hub {
    /// One group's use (admins, its leads).
    pub async fn group_usage(
        &self,
        actor: Actor<'_>,
        name: &GroupName,
        range: UsageRange,
    ) -> Result<GroupUsage, ServiceError> {
        let detail = self.group(actor, name).await?;
        let group_id = detail.group.group_id;
        let servers = usage::active_in_group(self.db(), group_id).await?;
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
        for s in servers {
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
        let samples = usage::series(self.db(), group_id, self.now() - span, bucket).await?;
        Ok(GroupUsage { detail, members, total, samples, range })
    }

    /// Takes one sample of every active server's live use from the runtime, stores it per
    /// server and per group (with what the group's servers reserved), and drops samples past
    /// the retention.
    pub async fn sample_usage(&self) -> Result<(), ServiceError> {
        let Some(spawner) = self.0.servers.spawner.clone() else { return Ok(()) };
        let live = spawner.usage().await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let live: HashMap<(String, String), (i64, i64)> = live
            .into_iter()
            .map(|u| {
                let key = (u.user.to_string(), u.server.map(|s| s.to_string()).unwrap_or_default());
                (key, (i64::from(u.cpu_millis), i64::try_from(u.memory_bytes).unwrap_or(i64::MAX)))
            })
            .collect();
        let now = self.now();
        let active = usage::active(self.db()).await?;
        let per_server: Vec<(i64, i64, i64)> = active
            .iter()
            .filter_map(|s| live.get(&(s.owner.to_string(), s.name.clone())).map(|(c, m)| (s.server_id, *c, *m)))
            .collect();
        usage::put_server_usage(self.db(), now, &per_server).await?;
        let mut per_group: HashMap<i64, Sample> = usage::group_ids(self.db())
            .await?
            .into_iter()
            .map(|id| (id, Sample { at: now, cpu_millis: 0, memory_bytes: 0, cpu_reserved: 0, memory_reserved: 0 }))
            .collect();
        for s in &active {
            let Some(sample) = s.group_id.and_then(|g| per_group.get_mut(&g)) else { continue };
            sample.cpu_reserved += i64::from(s.cpu_millis.unwrap_or(0));
            sample.memory_reserved += s.memory_bytes.unwrap_or(0);
            if let Some((c, m)) = live.get(&(s.owner.to_string(), s.name.clone())) {
                sample.cpu_millis += c;
                sample.memory_bytes += m;
            }
        }
        let rows: Vec<(i64, Sample)> = per_group.into_iter().collect();
        usage::insert_samples(self.db(), &rows).await?;
        let keep = time::Duration::try_from(self.quota_settings().usage_retention).unwrap_or(time::Duration::WEEK);
        usage::delete_samples_before(self.db(), now - keep).await?;
        Ok(())
    }

    /// Samples live use every `usage_interval` and measures storage every `storage_interval`
    /// until `shutdown` resolves.
    pub async fn run_usage_sampler(self, shutdown: impl std::future::Future<Output = ()>) {
        let settings = self.quota_settings().clone();
        let mut usage_tick = tokio::time::interval(settings.usage_interval);
        usage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut storage_tick = tokio::time::interval(settings.storage_interval);
        storage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = usage_tick.tick() => {
                    if let Err(e) = self.sample_usage().await {
                        tracing::debug!(error = %e, "usage not sampled this time");
                    }
                }
                _ = storage_tick.tick() => {
                    if let Err(e) = self.measure_storage().await {
                        tracing::debug!(error = %e, "storage not measured this time");
                    }
                }
            }
        }
    }
}
