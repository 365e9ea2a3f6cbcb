//! The daily run: the maintenance loop asks at every tick whether the configured time has
//! come (by the hub's clock, so tests move it by hand); a slot that passed by more than
//! [`GRACE`] without a run — the hub was down, or another run held the lock — is recorded as
//! missed (a failed run, audited and counted) and made up at once. The admins' banner shows
//! while the latest scheduled run failed or was missed.

use labhub_db::backups::{self, Run};
use serde_json::json;
use time::OffsetDateTime;

use super::Backups;
use super::run::Target;
use crate::ServiceError;
use crate::access::Actor;

/// How late a scheduled run may begin before its slot counts as missed.
const GRACE: time::Duration = time::Duration::hours(1);

/// One run, for the admin page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub started_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    pub scheduled: bool,
    /// `None` while it runs.
    pub ok: Option<bool>,
    pub detail: String,
}

impl From<Run> for RunRecord {
    fn from(r: Run) -> Self {
        Self {
            started_at: r.started_at,
            finished_at: r.finished_at,
            scheduled: r.scheduled,
            ok: r.ok,
            detail: r.detail,
        }
    }
}

/// The latest runs and the next scheduled one, for the admin page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRuns {
    /// The latest run of any kind.
    pub last: Option<RunRecord>,
    /// The latest scheduled run that succeeded.
    pub last_good: Option<RunRecord>,
    /// When the next scheduled run begins; `None` with backups off.
    pub next: Option<OffsetDateTime>,
}

/// The latest time of day `at` (UTC) not after `now`.
fn slot(now: OffsetDateTime, at: time::Time) -> OffsetDateTime {
    let today = now.replace_time(at);
    if today <= now { today } else { today - time::Duration::days(1) }
}

/// A time for people: `2026-12-07 02:00 UTC`.
fn utc(t: OffsetDateTime) -> String {
    format!("{} {:02}:{:02} UTC", t.date(), t.hour(), t.minute())
}

impl Backups<'_> {
    /// Runs the scheduled backup of everything when its time has come and no run of this
    /// slot exists (in any process), recording a missed slot first; otherwise only refreshes
    /// the banner. Called by the maintenance loop at every tick; returns at once while a run
    /// is in progress.
    pub async fn on_schedule(&self) -> Result<(), ServiceError> {
        if !self.enabled() {
            return Ok(());
        }
        let db = self.hub.db();
        let now = self.hub.now();
        let slot = slot(now, self.settings().at);
        let done = |last: &Option<Run>| last.as_ref().is_some_and(|r| r.started_at >= slot);
        let last = backups::last_scheduled(db).await?;
        // A hub that never ran a backup starts with the first slot after it started.
        if done(&last) || (last.is_none() && slot < self.hub.0.backups.since) {
            return self.refresh_banner().await;
        }
        let Some(lock) = self.try_lock().await? else { return Ok(()) };
        let result = self.run_slot(slot, now, &lock).await;
        lock.release().await;
        result
    }

    /// The scheduled run of `slot`, under the lock: none when another process ran it meanwhile.
    async fn run_slot(
        &self,
        slot: OffsetDateTime,
        now: OffsetDateTime,
        lock: &super::run::Running<'_>,
    ) -> Result<(), ServiceError> {
        let db = self.hub.db();
        if backups::last_scheduled(db).await?.is_some_and(|r| r.started_at >= slot) {
            return self.refresh_banner().await;
        }
        if now - slot > GRACE {
            let detail = format!("missed: no backup ran at {} (the hub was not running, or busy)", utc(slot));
            let run_id = backups::begin_run(db, slot, true).await?;
            backups::end_run(db, run_id, now, false, &detail).await?;
            metrics::counter!("labhub_backup_runs_total", "result" => "missed").increment(1);
            tracing::warn!(slot = %utc(slot), "a scheduled backup was missed; running it now");
            let audit = json!({ "slot": utc(slot), "detail": detail });
            self.hub.audit().record(db, Actor::System, "backup.missed", &format!("run {run_id}"), audit).await?;
            self.refresh_banner().await?;
        }
        self.run(Actor::System, &Target::All, true, lock).await.map(|_| ())
    }

    /// Reads the latest finished scheduled run into the banner and the gauge.
    pub(super) async fn refresh_banner(&self) -> Result<(), ServiceError> {
        let last = backups::last_finished_scheduled(self.hub.db()).await?;
        let text = last.filter(|r| r.ok == Some(false)).map(|r| {
            format!(
                "The scheduled backup of {} did not succeed: {}. Admin → Backups shows the runs; \
                 run one by hand with “Back up everything now”.",
                utc(r.started_at),
                r.detail
            )
        });
        metrics::gauge!("labhub_backups_failing").set(if text.is_some() { 1.0 } else { 0.0 });
        *self.hub.0.backups.banner.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = text;
        Ok(())
    }

    /// What the admins' banner says about scheduled backups, if anything.
    pub fn banner(&self) -> Option<String> {
        self.hub.0.backups.banner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The latest runs and the next scheduled one (admins).
    pub async fn runs(&self, actor: Actor<'_>) -> Result<LastRuns, ServiceError> {
        actor.require_admin()?;
        let (last, good) = backups::last_runs(self.hub.db()).await?;
        let next = self.enabled().then(|| slot(self.hub.now(), self.settings().at) + time::Duration::days(1));
        Ok(LastRuns { last: last.map(Into::into), last_good: good.map(Into::into), next })
    }
}

#[cfg(test)]
mod tests {
    use time::macros::{datetime, time};

    use super::*;

    #[test]
    fn the_slot_is_the_latest_time_of_day_not_after_now() {
        assert_eq!(slot(datetime!(2026-12-07 03:00 UTC), time!(02:00)), datetime!(2026-12-07 02:00 UTC));
        assert_eq!(slot(datetime!(2026-12-07 02:00 UTC), time!(02:00)), datetime!(2026-12-07 02:00 UTC));
        assert_eq!(slot(datetime!(2026-12-07 01:59 UTC), time!(02:00)), datetime!(2026-12-06 02:00 UTC));
    }
}
