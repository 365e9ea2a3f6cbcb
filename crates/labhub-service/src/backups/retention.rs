//! Which archives the retention rule keeps: for each home or folder, the newest archive of
//! each of its `daily` most recent days that have one, of its `weekly` most recent ISO weeks
//! and of its `monthly` most recent months; every other archive of it expires. An orphan's
//! archive is the only copy of a deleted owner's files and never expires.

use std::collections::{BTreeMap, HashSet};

use labhub_db::backups;
use serde_json::json;
use time::OffsetDateTime;

use super::{Backup, BackupKind, Backups, manifest_of};
use crate::ServiceError;
use crate::access::Actor;

/// How many archives of each home and folder are kept (all zero: every archive is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl Default for Keep {
    fn default() -> Self {
        Self { daily: 7, weekly: 4, monthly: 6 }
    }
}

/// Which period (day, ISO week, month) a time falls in, as a comparable pair.
type PeriodOf = fn(OffsetDateTime) -> (i32, u32);

/// Whose archives are counted together: kind, owner id, server, and the volume when the
/// owner is not known.
type OwnerKey<'a> = (&'a str, Option<i64>, &'a str, &'a str);

/// The archives of one owner that the rule lets go, given all of them.
fn expired_of(mut archives: Vec<(i64, OffsetDateTime)>, keep: Keep) -> Vec<i64> {
    if keep == (Keep { daily: 0, weekly: 0, monthly: 0 }) {
        return Vec::new();
    }
    // Newest first: the first archive met in a period is that period's newest.
    archives.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut kept = HashSet::new();
    let periods: [(u32, PeriodOf); 3] = [
        (keep.daily, |t| (t.year(), u32::from(t.ordinal()))),
        (keep.weekly, |t| {
            let (year, week, _) = t.to_iso_week_date();
            (year, u32::from(week))
        }),
        (keep.monthly, |t| (t.year(), u32::from(u8::from(t.month())))),
    ];
    for (count, period_of) in periods {
        let mut seen = HashSet::new();
        for (id, at) in &archives {
            if seen.len() >= count as usize {
                break;
            }
            if seen.insert(period_of(*at)) {
                kept.insert(*id);
            }
        }
    }
    archives.iter().map(|(id, _)| *id).filter(|id| !kept.contains(id)).collect()
}

/// Every archive the rule lets go, owner by owner (orphans' never).
pub(super) fn expired(all: &[Backup], keep: Keep) -> Vec<i64> {
    let mut by_owner: BTreeMap<OwnerKey<'_>, Vec<(i64, OffsetDateTime)>> = BTreeMap::new();
    for b in all.iter().filter(|b| b.kind != BackupKind::Orphan) {
        let key =
            (b.kind.as_str(), b.owner_id, b.server.as_str(), if b.owner_id.is_some() { "" } else { b.volume.as_str() });
        by_owner.entry(key).or_default().push((b.id.get(), b.created_at));
    }
    by_owner.into_values().flat_map(|archives| expired_of(archives, keep)).collect()
}

impl Backups<'_> {
    /// Deletes the archives (files, manifests and rows) the retention rule lets go; audited.
    /// Returns how many went.
    pub(super) async fn expire(&self, actor: Actor<'_>) -> Result<usize, ServiceError> {
        let dir = self.dir()?;
        let all: Vec<Backup> =
            backups::list(self.hub.db(), None).await?.into_iter().map(Backup::try_from).collect::<Result<_, _>>()?;
        let gone = expired(&all, self.settings().keep);
        let mut files = Vec::with_capacity(gone.len());
        for b in all.iter().filter(|b| gone.contains(&b.id.get())) {
            for file in [b.file.clone(), manifest_of(&b.file)] {
                match tokio::fs::remove_file(dir.join(&file)).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ServiceError::Unavailable(format!("deleting the expired {file}: {e}"))),
                }
            }
            backups::delete(self.hub.db(), b.id.get()).await?;
            files.push(b.file.clone());
        }
        if !files.is_empty() {
            let detail = json!({ "files": files, "keep": {
                "daily": self.settings().keep.daily, "weekly": self.settings().keep.weekly,
                "monthly": self.settings().keep.monthly } });
            self.hub.audit().record(self.hub.db(), actor, "backup.expire", "retention", detail).await?;
        }
        Ok(files.len())
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn keep(daily: u32, weekly: u32, monthly: u32) -> Keep {
        Keep { daily, weekly, monthly }
    }

    fn sorted(mut v: Vec<i64>) -> Vec<i64> {
        v.sort_unstable();
        v
    }

    #[test]
    fn the_newest_of_each_recent_day_week_and_month_is_kept_and_nothing_else() {
        // 2026-11-30 is a Monday; weeks 49 and 48 of 2026.
        let archives = vec![
            (1, datetime!(2026-10-15 03:00 UTC)),
            (2, datetime!(2026-11-23 03:00 UTC)),
            (3, datetime!(2026-11-30 03:00 UTC)),
            (4, datetime!(2026-11-30 15:00 UTC)),
            (5, datetime!(2026-12-01 03:00 UTC)),
            (6, datetime!(2026-12-02 03:00 UTC)),
            (7, datetime!(2026-12-02 09:00 UTC)),
        ];
        // Days: 7 (Dec 2), 5 (Dec 1). Weeks: 7 (week 49), 2 (week 48). Months: 7 (Dec), 4 (Nov).
        assert_eq!(sorted(expired_of(archives.clone(), keep(2, 2, 2))), vec![1, 3, 6]);
        assert_eq!(sorted(expired_of(archives.clone(), keep(1, 0, 0))), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(sorted(expired_of(archives.clone(), keep(0, 0, 3))), vec![2, 3, 5, 6]);
        assert_eq!(expired_of(archives.clone(), keep(0, 0, 0)), Vec::<i64>::new(), "all zero keeps everything");
        assert_eq!(expired_of(archives, keep(30, 0, 0)), vec![6, 3], "the older ones of a day go");
    }

    #[test]
    fn each_owner_is_counted_alone_and_orphans_never_expire() {
        let b = |id: i64, kind: BackupKind, owner: Option<i64>, at: OffsetDateTime| Backup {
            id: labhub_core::BackupId::new(id),
            kind,
            owner_id: owner,
            owner_name: String::new(),
            server: String::new(),
            volume: format!("v{id}"),
            file: format!("f{id}"),
            bytes: 1,
            sha256: String::new(),
            created_at: at,
            labhub_version: String::new(),
        };
        let all = vec![
            b(1, BackupKind::Home, Some(1), datetime!(2026-12-01 03:00 UTC)),
            b(2, BackupKind::Home, Some(1), datetime!(2026-12-02 03:00 UTC)),
            b(3, BackupKind::Home, Some(2), datetime!(2026-12-01 03:00 UTC)),
            b(4, BackupKind::Group, Some(1), datetime!(2026-12-01 03:00 UTC)),
            b(5, BackupKind::Orphan, None, datetime!(2026-12-01 03:00 UTC)),
            b(6, BackupKind::Orphan, None, datetime!(2026-12-01 04:00 UTC)),
        ];
        assert_eq!(expired(&all, keep(1, 0, 0)), vec![1]);
    }
}
