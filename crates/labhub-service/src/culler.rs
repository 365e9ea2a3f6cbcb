//! The idle culler: stops servers without proxied activity for longer than their group's idle
//! timeout, and servers past their group's maximum lifetime. Driven by the hub's `Clock`, so
//! tests move time instead of waiting for it.

use std::collections::HashMap;
use std::time::Duration;

use labhub_core::Quota;
use labhub_core::{GroupId, ServerName, ServerState};
use labhub_db::quotas::{self, QuotaKind};
use labhub_db::usage::{self, ChargedServer};
use serde_json::json;

use crate::access::Actor;
use crate::model::{StopOutcome, StopReason, server_label};
use crate::{Hub, ServiceError};

/// A server the culler stopped.
#[derive(Debug, Clone)]
pub struct Culled {
    /// `alice` or `alice/gpu`.
    pub server: String,
    /// Why, as its owner reads it.
    pub reason: String,
}

/// Why a server is due, if it is: idle past its timeout, or past its lifetime.
fn due(s: &ChargedServer, q: &Quota, now: time::OffsetDateTime) -> Option<StopReason> {
    let started = s.started_at?;
    // A server nobody has used yet has been idle since it started.
    let last = s.last_activity.unwrap_or(started).max(started);
    let elapsed = |since: time::OffsetDateTime| Duration::try_from(now - since).unwrap_or(Duration::ZERO);
    if let Some(limit) = q.idle_timeout
        && elapsed(last) >= limit
    {
        return Some(StopReason::Idle(limit));
    }
    if let Some(limit) = q.max_lifetime
        && elapsed(started) >= limit
    {
        return Some(StopReason::Lifetime(limit));
    }
    None
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

    /// One pass of the culler: writes the proxy's activity to Postgres first (so nothing used a
    /// moment ago looks idle), then stops every running server that is due, logging and
    /// auditing each (actor `system`).
    pub async fn cull_once(&self) -> Result<Vec<Culled>, ServiceError> {
        self.hub.servers().flush_activity().await?;
        let running: Vec<ChargedServer> =
            usage::active(self.hub.db()).await?.into_iter().filter(|s| s.state == ServerState::Running).collect();
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let mut group_ids: Vec<GroupId> = running.iter().filter_map(|s| s.group_id).collect();
        group_ids.sort_unstable();
        group_ids.dedup();
        let mut set = quotas::of_groups(self.hub.db(), &group_ids).await?;
        let site = &self.hub.quota_settings().site_default;
        let limits: HashMap<GroupId, Quota> = group_ids
            .iter()
            .map(|id| (*id, set.remove(&(*id, QuotaKind::Quota)).unwrap_or_else(|| site.clone())))
            .collect();
        let now = self.hub.now();
        let mut culled = Vec::new();
        for s in running {
            let quota = s.group_id.and_then(|g| limits.get(&g)).unwrap_or(site);
            let Some(reason) = due(&s, quota, now) else { continue };
            let Ok(server) = ServerName::parse_optional(&s.name) else { continue };
            let label = server_label(&s.owner, server.as_ref());
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
        Ok(culled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
