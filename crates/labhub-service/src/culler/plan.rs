//! When the culler will stop a running server, and why: one calculation for the culler's
//! decision, the API's `cull_at` and the owner's warning, so they never disagree.

use time::OffsetDateTime;

use crate::model::{CullPlan, CullPolicy, CullReason};

impl CullPolicy {
    /// The earliest stop this policy sets for a server started at `started` and last used at
    /// `last_activity` (a server never used has been idle since it started); `None`: never.
    pub fn plan(&self, started: OffsetDateTime, last_activity: Option<OffsetDateTime>) -> Option<CullPlan> {
        let since = last_activity.unwrap_or(started).max(started);
        let idle =
            self.idle_timeout.map(|limit| CullPlan { at: since + limit, reason: CullReason::Idle { since, limit } });
        let lifetime =
            self.max_lifetime.map(|limit| CullPlan { at: started + limit, reason: CullReason::Lifetime { limit } });
        match (idle, lifetime) {
            (Some(i), Some(l)) => Some(if l.at < i.at { l } else { i }),
            (i, l) => i.or(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s)
    }

    #[test]
    fn the_earlier_limit_wins_and_a_never_used_server_is_idle_since_its_start() {
        let p = CullPolicy {
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(3600)),
            cull_busy: false,
        };
        let plan = p.plan(at(0), Some(at(2500))).unwrap();
        assert_eq!(plan.at, at(3100));
        assert_eq!(plan.reason.as_str(), "idle");
        assert_eq!(p.plan(at(1000), None).unwrap().at, at(1600));
        let late = p.plan(at(0), Some(at(3300))).unwrap();
        assert_eq!((late.at, late.reason.as_str()), (at(3600), "lifetime"));
        let forever = CullPolicy { idle_timeout: None, max_lifetime: None, cull_busy: false };
        assert!(forever.plan(at(0), None).is_none());
    }
}
