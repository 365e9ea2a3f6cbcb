//! The idle culler: stops servers without activity for longer than their group's idle
//! timeout, and servers past their group's maximum lifetime. Activity is proxied traffic and,
//! for Jupyter servers whose group spares busy ones (the default), a kernel executing code or
//! an open terminal, which the culler asks each server about (`probe`). Driven by the hub's
//! `Clock`, so tests move time instead of waiting for it.
//!
//! Every view of a running server carries when the culler will stop it (`plan`), so owners
//! and clients are warned before it happens.

mod plan;
mod probe;

use std::collections::HashMap;

use futures::StreamExt;
use labhub_core::{GroupId, ImageKind, ServerId, ServerName, ServerState, UserName};
use labhub_db::quotas::{self, QuotaKind};
use labhub_db::servers;
use labhub_db::usage::{self, ChargedServer};
use serde_json::json;
use time::OffsetDateTime;

pub use crate::model::{CullPlan, CullPolicy, CullReason};
pub use probe::Doing;

use crate::access::{Actor, ServerRef};
use crate::model::{ServerView, StopOutcome, server_label};
use crate::{Hub, ServiceError};

/// Servers asked at once what they are doing.
const PROBES_AT_ONCE: usize = 8;

/// A server the culler stopped.
#[derive(Debug, Clone)]
pub struct Culled {
    /// `alice` or `alice/gpu`.
    pub server: String,
    /// Why, as its owner reads it.
    pub reason: String,
}

impl Hub {
    /// The idle culler.
    pub fn culler(&self) -> Culler<'_> {
        Culler::new(self)
    }
}

/// The idle culler.
#[derive(Clone, Copy)]
pub struct Culler<'h> {
    hub: &'h Hub,
}

impl<'h> Culler<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    /// The cull policy of each group in `group_ids` (its quota, or the site default).
    async fn policies(&self, group_ids: &[GroupId]) -> Result<HashMap<GroupId, CullPolicy>, ServiceError> {
        if group_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut set = quotas::of_groups(self.hub.db(), group_ids).await?;
        let site = &self.hub.quota_settings().site_default;
        Ok(group_ids
            .iter()
            .map(|id| (*id, CullPolicy::from(&set.remove(&(*id, QuotaKind::Quota)).unwrap_or_else(|| site.clone()))))
            .collect())
    }

    fn site_policy(&self) -> CullPolicy {
        CullPolicy::from(&self.hub.quota_settings().site_default)
    }

    /// One pass of the culler: writes the proxy's activity to Postgres first (so nothing used a
    /// moment ago looks idle), asks the Jupyter servers that may be spared what they are doing
    /// (a busy kernel or an open terminal is activity now), then stops every running server
    /// that is due, logging and auditing each (actor `system`).
    pub async fn cull_once(&self) -> Result<Vec<Culled>, ServiceError> {
        self.hub.servers().flush_activity().await?;
        // One replica's pass at a time (and each stop re-checks the row under its lock).
        let Some(pass) = self.hub.replicas().lock(labhub_db::replicas::Job::Culler).await? else {
            return Ok(Vec::new());
        };
        let mut running: Vec<ChargedServer> =
            usage::active(self.hub.db()).await?.into_iter().filter(|s| s.state == ServerState::Running).collect();
        if running.is_empty() {
            pass.release().await?;
            return Ok(Vec::new());
        }
        let mut group_ids: Vec<GroupId> = running.iter().filter_map(|s| s.group_id).collect();
        group_ids.sort_unstable();
        group_ids.dedup();
        let policies = self.policies(&group_ids).await?;
        let site = self.site_policy();
        let policy_of = |s: &ChargedServer| s.group_id.and_then(|g| policies.get(&g)).copied().unwrap_or(site);
        let now = self.hub.now();
        let spared: Vec<&ChargedServer> =
            running.iter().filter(|s| policy_of(s).idle_timeout.is_some() && !policy_of(s).cull_busy).collect();
        let in_use = self.in_use(&spared).await;
        if !in_use.is_empty() {
            let seen: Vec<(String, String, OffsetDateTime)> = running
                .iter()
                .filter(|s| in_use.contains(&s.server_id))
                .map(|s| (s.owner.to_string(), s.name.clone(), now))
                .collect();
            servers::touch_activity(self.hub.db(), &seen).await?;
            self.hub.views_changed();
            for s in running.iter_mut().filter(|s| in_use.contains(&s.server_id)) {
                s.last_activity = Some(now);
            }
        }
        let mut culled = Vec::new();
        for s in running {
            let Some(started) = s.started_at else { continue };
            let Some(plan) = policy_of(&s).plan(started, s.last_activity).filter(|p| p.at <= now) else { continue };
            let Ok(server) = ServerName::parse_optional(&s.name) else { continue };
            let label = server_label(&s.owner, server.as_ref());
            let reason = plan.reason.stop_reason();
            let text = reason.text();
            tracing::info!(server = %label, reason = %text, "culling a server");
            let seen = Some((s.spawn_id, s.last_activity));
            let after = match self.hub.servers().stop_unless_changed(&s.owner, server.as_ref(), reason, seen).await {
                Ok(StopOutcome::Stopped) => "stopped",
                Ok(StopOutcome::Stopping) => "stopping",
                Err(e) => {
                    tracing::warn!(server = %label, error = %e, "could not cull a server");
                    continue;
                }
            };
            let idle = s.last_activity.or(s.started_at).map(|t| (now - t).whole_seconds());
            let audited = self
                .hub
                .audit()
                .record(
                    self.hub.db(),
                    Actor::System,
                    "server.cull",
                    &label,
                    json!({ "before": "running", "after": after, "reason": text, "idle_seconds": idle,
                            "started": s.started_at.map(|t| t.unix_timestamp()) }),
                )
                .await;
            // The server is stopped either way; one lost audit row must not end the pass.
            if let Err(e) = audited {
                tracing::error!(server = %label, error = %e, "a cull was not audited");
            }
            metrics::counter!("labhub_culls_total").increment(1);
            culled.push(Culled { server: label, reason: text });
        }
        pass.release().await?;
        Ok(culled)
    }

    /// The servers among `candidates` that say they are working: Jupyter servers with a busy
    /// kernel or an open terminal. A server that cannot be asked counts as not working (as
    /// before the hub asked), and the reason is logged.
    async fn in_use(&self, candidates: &[&ChargedServer]) -> Vec<ServerId> {
        let routes: Vec<_> = candidates
            .iter()
            .filter_map(|s| {
                let server = ServerName::parse_optional(&s.name).ok()?;
                let route = self.hub.routes().get(s.owner.as_str(), server.as_ref().map(ServerName::as_str))?;
                (route.route().kind == ImageKind::Jupyter)
                    .then(|| (s.server_id, server_label(&s.owner, server.as_ref()), route))
            })
            .collect();
        futures::stream::iter(routes)
            .map(|(id, label, route)| async move {
                match probe::ask(&route).await {
                    Ok(doing) => {
                        metrics::counter!("labhub_cull_probes_total", "outcome" => if doing.in_use() { "in_use" } else { "idle" }).increment(1);
                        doing.in_use().then(|| {
                            tracing::debug!(server = %label, ?doing, "working without traffic: counts as activity");
                            id
                        })
                    }
                    Err(e) => {
                        metrics::counter!("labhub_cull_probes_total", "outcome" => "unanswered").increment(1);
                        tracing::info!(server = %label, error = %e, "could not ask a Jupyter server what it is doing");
                        None
                    }
                }
            })
            .buffer_unordered(PROBES_AT_ONCE)
            .filter_map(std::future::ready)
            .collect()
            .await
    }

    /// Counts as activity on a running server now ("Keep it running" on the home page): its
    /// idle timeout starts again. Whoever may reach the server may.
    pub async fn keep_running(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<(), ServiceError> {
        let user = self.hub.user_row(owner).await?;
        self.hub.access().require(
            actor,
            ServerRef { owner: user.user_id, owner_name: &user.name, server },
            crate::access::Need::Access,
        )?;
        let row = servers::get(self.hub.db(), user.user_id, server.map_or("", ServerName::as_str))
            .await?
            .filter(|r| r.state == ServerState::Running)
            .ok_or_else(|| ServiceError::Conflict(format!("{} is not running", server_label(owner, server))))?;
        let mut tx = self.hub.begin().await?;
        servers::touch_one(&mut *tx, row.server_id, self.hub.now()).await?;
        tx.commit().await
    }

    /// Sets the cull policy of each running server among `views` from its group (none while
    /// the built-in culler is off), in one query.
    pub(crate) async fn attach_policies<'v>(
        &self,
        views: impl IntoIterator<Item = &'v mut ServerView>,
    ) -> Result<(), ServiceError> {
        if !self.hub.quota_settings().culling {
            return Ok(());
        }
        let mut running: Vec<&'v mut ServerView> =
            views.into_iter().filter(|v| v.state == ServerState::Running).collect();
        let mut group_ids: Vec<GroupId> = running.iter().filter_map(|v| v.group_id).collect();
        group_ids.sort_unstable();
        group_ids.dedup();
        let policies = self.policies(&group_ids).await?;
        let site = self.site_policy();
        for v in &mut running {
            v.policy = Some(v.group_id.and_then(|g| policies.get(&g)).copied().unwrap_or(site));
        }
        Ok(())
    }

    /// A view with the hub's freshest knowledge: the proxy's activity stamps not yet written
    /// to the database, and when the culler will stop it. Memory only (clients poll views).
    pub(crate) fn freshen(&self, view: &mut ServerView) {
        if view.state != ServerState::Running {
            return;
        }
        let live = self
            .hub
            .routes()
            .get(view.owner.as_str(), view.name.as_ref().map(ServerName::as_str))
            .and_then(|r| r.last_activity());
        view.last_activity = view.last_activity.max(live);
        view.cull = match (view.policy, view.started_at) {
            (Some(p), Some(started)) => p.plan(started, view.last_activity),
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use labhub_core::Quota;

    use super::*;
    use crate::model::StopReason;

    fn server(started: i64, last: Option<i64>) -> ChargedServer {
        let at = |s: i64| time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s);
        ChargedServer {
            server_id: labhub_core::ServerId::new(1),
            owner: labhub_core::UserName::parse("alice").unwrap(),
            user_id: labhub_core::UserId::new(1),
            name: String::new(),
            state: ServerState::Running,
            group_id: None,
            image_ref: None,
            cpu_millis: None,
            memory_bytes: None,
            gpus: 0,
            spawn_id: None,
            started_at: Some(at(started)),
            last_activity: last.map(at),
            used_cpu_millis: None,
            used_memory_bytes: None,
        }
    }

    fn due(s: &ChargedServer, q: &Quota, now: OffsetDateTime) -> Option<StopReason> {
        CullPolicy::from(q).plan(s.started_at?, s.last_activity).filter(|p| p.at <= now).map(|p| p.reason.stop_reason())
    }

    #[test]
    fn idle_and_lifetime_decide_with_the_given_time() {
        let q = Quota {
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(3600)),
            ..crate::QuotaSettings::default().site_default
        };
        let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(3000);
        assert!(due(&server(0, Some(2500)), &q, now).is_none(), "used 500 s ago");
        assert!(matches!(due(&server(0, Some(2000)), &q, now), Some(StopReason::Idle(_))));
        assert!(due(&server(2500, None), &q, now).is_none(), "never used, started 500 s ago");
        assert!(matches!(due(&server(2000, None), &q, now), Some(StopReason::Idle(_))));
        let later = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(3700);
        assert!(matches!(due(&server(0, Some(3650)), &q, later), Some(StopReason::Lifetime(_))));
        let forever = Quota { idle_timeout: None, max_lifetime: None, ..q };
        assert!(due(&server(0, Some(0)), &forever, later).is_none());
    }
}
