//! Backups: every home and group's shared folder archived to the backup directory at a
//! configured time, kept by a daily/weekly/monthly rule, verified and restored on request;
//! and the storage of deleted accounts and groups (orphans) archived there on request.
//!
//! An archive is the volume's tar, read by the runtime through a container that mounts it
//! read-only and never runs (the hub never opens a user's file with its own privileges),
//! gzipped and hashed on the way, and written to `{dir}/{kind}/{owner}/…tar.gz` with a
//! manifest beside it (`….json`: owner id and name, size, SHA-256, time, labhub version).
//! The table `backups` is the index; the files are the truth a lab can take elsewhere.
//!
//! **Consistency.** A volume has no snapshots, so the servers using it are paused while it
//! is read (`Spawner::snapshot`): an archive holds every write completed before the read
//! began and none after — what a power cut at that instant would leave, never a file half
//! from before and half from after a write that finished. A server that starts using the
//! volume during the read fails that archive, which is taken again once.
//!
//! **One run at a time**: a run holds the process's lock and a Postgres advisory lock, so
//! neither another task nor another replica (or `labhub backup` at the command line) runs at
//! the same time; a scheduled run finding the lock taken leaves the slot to the holder.

mod restore;
mod retention;
mod run;
mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use labhub_core::{BackupId, ExtraMount, MountSource, Storage, UserId, UserName};
use labhub_db::backups;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::access::Actor;
use crate::{Hub, ServiceError};

pub use restore::RestoreReport;
pub use retention::Keep;
pub use run::{RunReport, Target};
pub use schedule::{LastRuns, RunRecord};

impl Hub {
    /// Backups: made, listed, verified, restored, kept by the retention rule, and scheduled.
    pub fn backups(&self) -> Backups<'_> {
        Backups { hub: self }
    }
}

/// `[backups]`: where archives go, when the daily run is, and how many are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    /// The backup directory (any folder the hub may write, a mounted target too); `None`
    /// turns backups off.
    pub dir: Option<PathBuf>,
    /// The time of day (UTC) of the daily run.
    pub at: time::Time,
    /// How many archives of each home and folder are kept.
    pub keep: Keep,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self { dir: None, at: time::Time::from_hms(2, 0, 0).unwrap_or(time::Time::MIDNIGHT), keep: Keep::default() }
    }
}

/// What the backups capability keeps in memory.
pub(crate) struct BackupsState {
    pub(crate) settings: BackupSettings,
    /// Held by the run in progress in this process.
    pub(crate) running: tokio::sync::Mutex<()>,
    /// When this process began watching the schedule: a first slot before it is not missed.
    pub(crate) since: OffsetDateTime,
    /// What the admins' banner says about scheduled runs, refreshed by the schedule.
    pub(crate) banner: Mutex<Option<String>>,
}

impl BackupsState {
    pub(crate) fn new(settings: BackupSettings, now: OffsetDateTime) -> Self {
        Self { settings, running: tokio::sync::Mutex::new(()), since: now, banner: Mutex::new(None) }
    }
}

/// What an archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    /// An account's home.
    Home,
    /// A group's shared folder.
    Group,
    /// The storage of a deleted account or group.
    Orphan,
}

impl BackupKind {
    /// The database's and the manifest's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Home => "home",
            Self::Group => "group",
            Self::Orphan => "orphan",
        }
    }

    fn parse(raw: &str) -> Result<Self, ServiceError> {
        match raw {
            "home" => Ok(Self::Home),
            "group" => Ok(Self::Group),
            "orphan" => Ok(Self::Orphan),
            other => Err(ServiceError::Internal(format!("a backup of an unknown kind {other:?}"))),
        }
    }
}

/// One archive in the backup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub id: BackupId,
    pub kind: BackupKind,
    /// The account's or group's id (a deleted one's too, for an orphan when known).
    pub owner_id: Option<i64>,
    /// Whose it is, for people: the account's or group's name when it was made.
    pub owner_name: String,
    /// The server whose own home it is, where each server has one; empty otherwise.
    pub server: String,
    /// The runtime's name of the volume it was read from.
    pub volume: String,
    /// The archive, relative to the backup directory.
    pub file: String,
    /// Size of the archive (compressed).
    pub bytes: u64,
    /// SHA-256 of the archive, hex.
    pub sha256: String,
    pub created_at: OffsetDateTime,
    pub labhub_version: String,
}

impl TryFrom<backups::Backup> for Backup {
    type Error = ServiceError;
    fn try_from(b: backups::Backup) -> Result<Self, ServiceError> {
        Ok(Self {
            id: BackupId::new(b.backup_id),
            kind: BackupKind::parse(&b.kind)?,
            owner_id: b.owner_id,
            owner_name: b.owner_name,
            server: b.server_name,
            volume: b.volume,
            file: b.file,
            bytes: u64::try_from(b.bytes).unwrap_or(0),
            sha256: b.sha256,
            created_at: b.created_at,
            labhub_version: b.labhub_version,
        })
    }
}

/// What checking an archive found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub id: BackupId,
    /// Whether the file and its manifest match the index.
    pub ok: bool,
    /// What was found, for people.
    pub detail: String,
}

/// The manifest's name beside an archive: `x.tar.gz` → `x.json`.
pub(crate) fn manifest_of(file: &str) -> String {
    format!("{}.json", file.strip_suffix(".tar.gz").unwrap_or(file))
}

/// Backups.
#[derive(Clone, Copy)]
pub struct Backups<'h> {
    hub: &'h Hub,
}

impl<'h> Backups<'h> {
    fn settings(&self) -> &'h BackupSettings {
        &self.hub.0.backups.settings
    }

    /// The backup directory, or why there is none.
    fn dir(&self) -> Result<&'h Path, ServiceError> {
        self.settings().dir.as_deref().ok_or_else(|| {
            ServiceError::Conflict("backups are off on this hub: set [backups] dir in the configuration".into())
        })
    }

    /// Whether backups are on (a backup directory is configured).
    pub fn enabled(&self) -> bool {
        self.settings().dir.is_some()
    }

    /// The settings in force.
    pub fn settings_in_force(&self) -> &'h BackupSettings {
        self.settings()
    }

    /// Every archive, newest first; only the home archives of `user` when given (admins).
    pub async fn list(&self, actor: Actor<'_>, user: Option<&UserName>) -> Result<Vec<Backup>, ServiceError> {
        actor.require_admin()?;
        let owner = match user {
            Some(name) => Some(("home", self.hub.user_row(name).await?.user_id.get())),
            None => None,
        };
        backups::list(self.hub.db(), owner).await?.into_iter().map(Backup::try_from).collect()
    }

    /// One archive (admins).
    pub async fn get(&self, actor: Actor<'_>, id: BackupId) -> Result<Backup, ServiceError> {
        actor.require_admin()?;
        self.row(id).await
    }

    async fn row(&self, id: BackupId) -> Result<Backup, ServiceError> {
        backups::get(self.hub.db(), id.get())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("there is no backup {id}")))?
            .try_into()
    }

    /// Reads an archive again and compares its size and SHA-256 with the index and its
    /// manifest (admins); audited. A changed, cut or missing file is `ok: false`.
    pub async fn verify(&self, actor: Actor<'_>, id: BackupId) -> Result<Verified, ServiceError> {
        actor.require_admin()?;
        let backup = self.row(id).await?;
        let dir = self.dir()?;
        let (ok, detail) = match hash_file(&dir.join(&backup.file)).await {
            Err(e) => (false, format!("the archive {} cannot be read: {e}", backup.file)),
            Ok((bytes, sha)) if bytes != backup.bytes || sha != backup.sha256 => (
                false,
                format!(
                    "the archive {} has changed: {bytes} bytes with SHA-256 {sha}, but {} bytes with {} were written",
                    backup.file, backup.bytes, backup.sha256
                ),
            ),
            Ok(_) => match manifest_sha(&dir.join(manifest_of(&backup.file))).await {
                Some(sha) if sha == backup.sha256 => {
                    (true, format!("{} matches its SHA-256 and manifest", backup.file))
                }
                Some(sha) => (false, format!("the manifest names SHA-256 {sha}, the archive is {}", backup.sha256)),
                None => (false, format!("the manifest beside {} is missing or unreadable", backup.file)),
            },
        };
        let details = json!({ "file": backup.file, "ok": ok, "detail": detail });
        self.hub.audit().record(self.hub.db(), actor, "backup.verify", &id.to_string(), details).await?;
        Ok(Verified { id, ok, detail })
    }

    /// The volumes restored for an account, mounted at `~/restored/{folder}` in its servers.
    pub(crate) async fn mounts_for(&self, user: UserId) -> Result<Vec<ExtraMount>, ServiceError> {
        Ok(backups::attached_to(self.hub.db(), user.get())
            .await?
            .into_iter()
            .map(|a| ExtraMount {
                source: MountSource::Storage(Storage::Attached { owner: user, key: a.key }),
                at: format!("restored/{}", a.folder),
                read_only: false,
                optional: false,
            })
            .collect())
    }
}

/// Size and SHA-256 (hex) of a file, read in bounded chunks.
async fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// The SHA-256 a manifest names, when it can be read.
async fn manifest_sha(path: &Path) -> Option<String> {
    let text = tokio::fs::read(path).await.ok()?;
    let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
    value.get("sha256")?.as_str().map(str::to_string)
}
