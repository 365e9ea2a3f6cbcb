//! Throttling of failed logins, per account name and per client address.
//!
//! Failures are counted in a sliding window. Past the limit, further attempts are refused
//! until the oldest failure in the window ages out. Names that do not exist are counted
//! exactly like names that do, so the throttle reveals nothing about which accounts exist.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use labhub_core::Clock;
use time::OffsetDateTime;

/// Limits for failed logins.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    /// Failures allowed per account name within the window.
    pub per_account: usize,
    /// Failures allowed per client address within the window.
    pub per_address: usize,
    /// The sliding window.
    pub window: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self { per_account: 5, per_address: 30, window: Duration::from_secs(15 * 60) }
    }
}

/// Entries kept at most per map; past it the oldest-looking entries are pruned.
const MAX_ENTRIES: usize = 100_000;

/// Counts failed logins in memory.
pub struct LoginThrottle {
    settings: ThrottleSettings,
    clock: Arc<dyn Clock>,
    accounts: DashMap<String, VecDeque<OffsetDateTime>>,
    addresses: DashMap<String, VecDeque<OffsetDateTime>>,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl LoginThrottle {
    /// A throttle with these limits.
    pub fn new(settings: ThrottleSettings, clock: Arc<dyn Clock>) -> Self {
        Self { settings, clock, accounts: DashMap::new(), addresses: DashMap::new() }
    }

    fn window(&self) -> time::Duration {
        time::Duration::try_from(self.settings.window).unwrap_or(time::Duration::MINUTE)
    }

    /// How long the caller must wait before trying again, if either limit is reached.
    pub fn retry_after(&self, account: &str, address: &str) -> Option<Duration> {
        let now = self.clock.now();
        let a = self.blocked_for(&self.accounts, account, self.settings.per_account, now);
        let b = self.blocked_for(&self.addresses, address, self.settings.per_address, now);
        a.max(b)
    }

    fn blocked_for(
        &self,
        map: &DashMap<String, VecDeque<OffsetDateTime>>,
        key: &str,
        limit: usize,
        now: OffsetDateTime,
    ) -> Option<Duration> {
        let mut entry = map.get_mut(key)?;
        let cutoff = now - self.window();
        while entry.front().is_some_and(|t| *t <= cutoff) {
            entry.pop_front();
        }
        if entry.len() < limit {
            return None;
        }
        let oldest = *entry.front()?;
        let wait = (oldest + self.window()) - now;
        Some(Duration::from_secs(wait.whole_seconds().max(1) as u64))
    }

    /// Counts a failed login against both the name and the address.
    pub fn record_failure(&self, account: &str, address: &str) {
        let now = self.clock.now();
        for (map, key) in [(&self.accounts, account), (&self.addresses, address)] {
            if map.len() >= MAX_ENTRIES {
                let cutoff = now - self.window();
                map.retain(|_, v| v.back().is_some_and(|t| *t > cutoff));
            }
            let mut e = map.entry(key.to_string()).or_default();
            e.push_back(now);
            // Never keep more than the limit needs.
            while e.len() > self.settings.per_account.max(self.settings.per_address) {
                e.pop_front();
            }
        }
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn record_success(&self, account: &str) {
        self.accounts.remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labhub_core::ManualClock;

    #[test]
    fn blocks_after_the_limit_and_releases_after_the_window() {
        let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        let t = LoginThrottle::new(
            ThrottleSettings { per_account: 3, per_address: 10, window: Duration::from_secs(60) },
            Arc::new(clock.clone()),
        );
        for _ in 0..3 {
            assert!(t.retry_after("alice", "1.2.3.4").is_none());
            t.record_failure("alice", "1.2.3.4");
        }
        let wait = t.retry_after("alice", "9.9.9.9").expect("account blocked from any address");
        assert_eq!(wait, Duration::from_secs(60));
        assert!(t.retry_after("bob", "1.2.3.4").is_none(), "address not yet at its limit");
        clock.advance(time::Duration::seconds(61));
        assert!(t.retry_after("alice", "1.2.3.4").is_none());
    }

    #[test]
    fn address_limit_spans_accounts() {
        let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        let t = LoginThrottle::new(
            ThrottleSettings { per_account: 100, per_address: 4, window: Duration::from_secs(60) },
            Arc::new(clock),
        );
        for i in 0..4 {
            t.record_failure(&format!("user{i}"), "5.5.5.5");
        }
        assert!(t.retry_after("someone-else", "5.5.5.5").is_some());
        assert!(t.retry_after("someone-else", "6.6.6.6").is_none());
    }
}
