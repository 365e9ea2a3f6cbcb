//! What the hub knows about its own parts' health, for the admin pages' banners: the embedded
//! database, which the binary supervises and restarts when it dies, and whether users'
//! servers can be isolated, which the maintenance loop checks and starts depend on.

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use crate::words::format_duration;

/// How long the admin pages keep saying that the database was restarted.
const RECENT: Duration = Duration::from_secs(3600);

/// How often the maintenance loop checks (and repairs) servers' isolation.
pub const ISOLATION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The embedded database's state, as its supervisor last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatabaseState {
    /// Running, and never restarted by the hub (or no embedded database at all).
    #[default]
    Up,
    /// Found dead at `since`; `attempts` restarts have been tried so far.
    Down { since: OffsetDateTime, attempts: u32 },
    /// Found dead at `died` and running again since `at`.
    Restarted { died: OffsetDateTime, at: OffsetDateTime },
}

/// The embedded database's health, written by its supervisor and read by the admin pages.
#[derive(Debug, Default)]
pub struct DatabaseHealth {
    state: Mutex<DatabaseState>,
}

impl DatabaseHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, DatabaseState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state now.
    pub fn state(&self) -> DatabaseState {
        *self.lock()
    }

    /// Records that the database was found dead at `now` (the first time), or another failed
    /// restart (afterwards).
    pub fn down(&self, now: OffsetDateTime, attempts: u32) {
        let mut s = self.lock();
        let since = match *s {
            DatabaseState::Down { since, .. } => since,
            _ => now,
        };
        *s = DatabaseState::Down { since, attempts };
    }

    /// Records that the database runs again.
    pub fn restarted(&self, now: OffsetDateTime) {
        let mut s = self.lock();
        let died = match *s {
            DatabaseState::Down { since, .. } => since,
            _ => now,
        };
        *s = DatabaseState::Restarted { died, at: now };
    }

    /// What the admin pages say, while the database is down or for an hour after a restart.
    pub fn banner(&self, now: OffsetDateTime) -> Option<String> {
        let ago = |t: OffsetDateTime| format_duration(Duration::try_from(now - t).unwrap_or(Duration::ZERO));
        match self.state() {
            DatabaseState::Up => None,
            DatabaseState::Down { since, attempts } => Some(format!(
                "The embedded database stopped unexpectedly at {} ({} ago). The hub is restarting it \
                 ({attempts} attempts so far); pages and the API answer 503 until it is back. \
                 Postgres's log is under the data directory (postgres/postgres.log).",
                utc(since),
                ago(since)
            )),
            DatabaseState::Restarted { died, at: back } if now - back < RECENT => Some(format!(
                "The embedded database stopped unexpectedly at {} and the hub restarted it at {} \
                 (Postgres recovered from its own log). Look at postgres/postgres.log under the data \
                 directory and the system log (the OOM killer?) to learn why.",
                utc(died),
                utc(back)
            )),
            DatabaseState::Restarted { .. } => None,
        }
    }
}

/// Whether users' servers can be kept isolated, as the last check found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IsolationState {
    /// Not checked since the hub started (the first start checks).
    #[default]
    Unchecked,
    /// In force.
    Enforced,
    /// Turned off by the site: servers are kept from each other only.
    Off,
    /// Not enforceable since `since`, for `reason` (worded for an admin): no server starts.
    Failing { since: OffsetDateTime, reason: String },
}

/// Whether servers' isolation is in force, written by its checks and read by starts and the
/// admin pages.
#[derive(Debug, Default)]
pub struct IsolationHealth {
    state: Mutex<IsolationState>,
}

impl IsolationHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, IsolationState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state now.
    pub fn state(&self) -> IsolationState {
        self.lock().clone()
    }

    /// Records that the isolation is in force (`Enforced`, or `Off` as the site chose); true
    /// when it was failing until now.
    pub fn in_force(&self, state: IsolationState) -> bool {
        let before = std::mem::replace(&mut *self.lock(), state);
        matches!(before, IsolationState::Failing { .. })
    }

    /// Records that it cannot be enforced, and why; `since` stays the first failure's time.
    /// True when it was not failing until now.
    pub fn failing(&self, now: OffsetDateTime, reason: String) -> bool {
        let mut s = self.lock();
        let (since, new) = match *s {
            IsolationState::Failing { since, .. } => (since, false),
            _ => (now, true),
        };
        *s = IsolationState::Failing { since, reason };
        new
    }

    /// What the admin pages say while servers cannot be isolated.
    pub fn banner(&self) -> Option<String> {
        match self.state() {
            IsolationState::Failing { since, reason } => Some(format!(
                "Servers cannot start: since {} the hub cannot keep them isolated from each other, the host and \
                 the site's networks ({reason}). Servers already running may be unprotected while this lasts. \
                 The hub checks again every {} seconds and starts servers again once isolation is in force.",
                utc(since),
                ISOLATION_CHECK_INTERVAL.as_secs()
            )),
            IsolationState::Unchecked | IsolationState::Enforced | IsolationState::Off => None,
        }
    }
}

fn utc(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_isolation_banner_shows_while_it_fails_and_keeps_the_first_time() {
        let h = IsolationHealth::default();
        let t0 = time::macros::datetime!(2026-01-01 10:00 UTC);
        assert_eq!((h.state(), h.banner()), (IsolationState::Unchecked, None));
        assert!(h.failing(t0, "cannot run iptables".into()), "the first failure is news");
        assert!(!h.failing(t0 + time::Duration::seconds(30), "iptables failed".into()));
        let b = h.banner().unwrap();
        assert!(b.contains("since 2026-01-01 10:00:00 UTC") && b.contains("(iptables failed)"), "{b}");
        assert!(h.in_force(IsolationState::Enforced), "so is the recovery");
        assert!(!h.in_force(IsolationState::Enforced));
        assert_eq!((h.state(), h.banner()), (IsolationState::Enforced, None));
    }

    #[test]
    fn the_banner_follows_the_supervisor_and_fades_an_hour_after_a_restart() {
        let h = DatabaseHealth::default();
        let t0 = time::macros::datetime!(2026-01-01 10:00 UTC);
        assert!(h.banner(t0).is_none());
        h.down(t0, 0);
        h.down(t0 + time::Duration::seconds(5), 2);
        assert_eq!(h.state(), DatabaseState::Down { since: t0, attempts: 2 });
        assert!(h.banner(t0 + time::Duration::seconds(5)).unwrap().contains("2 attempts so far"));
        h.restarted(t0 + time::Duration::seconds(9));
        let b = h.banner(t0 + time::Duration::minutes(10)).unwrap();
        assert!(b.contains("10:00:00 UTC") && b.contains("restarted it at 2026-01-01 10:00:09 UTC"), "{b}");
        assert!(h.banner(t0 + time::Duration::minutes(61)).is_none());
    }
}
