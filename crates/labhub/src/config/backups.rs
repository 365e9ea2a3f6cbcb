//! `[backups]`: where archives of homes and shared folders go, when the daily run is, and
//! how many are kept. Off until `dir` is set.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Config;

/// `[backups]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupsConfig {
    /// The backup directory (a local folder or any target mounted there); unset: no backups.
    pub dir: Option<PathBuf>,
    /// The time of the daily run, `HH:MM` in UTC.
    #[serde(with = "hh_mm")]
    pub time: time::Time,
    /// Archives kept per home or folder: the newest of each of this many recent days…
    pub keep_daily: u32,
    /// …of this many recent weeks…
    pub keep_weekly: u32,
    /// …and of this many recent months (all three 0: every archive is kept).
    pub keep_monthly: u32,
}

impl Default for BackupsConfig {
    fn default() -> Self {
        let d = labhub_service::backups::BackupSettings::default();
        Self {
            dir: d.dir,
            time: d.at,
            keep_daily: d.keep.daily,
            keep_weekly: d.keep.weekly,
            keep_monthly: d.keep.monthly,
        }
    }
}

/// A time of day written `HH:MM` (24 hours).
mod hh_mm {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &time::Time, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:02}:{:02}", t.hour(), t.minute()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<time::Time, D::Error> {
        let raw = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("{raw:?} is not a time of day: write it HH:MM, e.g. \"02:30\""));
        let (h, m) = raw.trim().split_once(':').ok_or_else(bad)?;
        let (h, m) = (h.parse::<u8>().map_err(|_| bad())?, m.parse::<u8>().map_err(|_| bad())?);
        time::Time::from_hms(h, m, 0).map_err(|_| bad())
    }
}

impl Config {
    /// The backup rules for the service.
    pub fn backup_settings(&self) -> labhub_service::backups::BackupSettings {
        let b = &self.backups;
        labhub_service::backups::BackupSettings {
            dir: b.dir.clone(),
            at: b.time,
            keep: labhub_service::backups::Keep { daily: b.keep_daily, weekly: b.keep_weekly, monthly: b.keep_monthly },
        }
    }
}
