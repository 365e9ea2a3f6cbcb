//! What the hub knows about its own parts' health, for the admin pages' banner: today, the
//! embedded database, which the binary supervises and restarts when it dies.

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use crate::words::format_duration;

/// How long the admin pages keep saying that the database was restarted.
const RECENT: Duration = Duration::from_secs(3600);

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
        let at = |t: OffsetDateTime| {
            t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC"))
                .unwrap_or_default()
        };
        match self.state() {
            DatabaseState::Up => None,
            DatabaseState::Down { since, attempts } => Some(format!(
                "The embedded database stopped unexpectedly at {} ({} ago). The hub is restarting it \
                 ({attempts} attempts so far); pages and the API answer 503 until it is back. \
                 Postgres's log is under the data directory (postgres/postgres.log).",
                at(since),
                ago(since)
            )),
            DatabaseState::Restarted { died, at: back } if now - back < RECENT => Some(format!(
                "The embedded database stopped unexpectedly at {} and the hub restarted it at {} \
                 (Postgres recovered from its own log). Look at postgres/postgres.log under the data \
                 directory and the system log (the OOM killer?) to learn why.",
                at(died),
                at(back)
            )),
            DatabaseState::Restarted { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
