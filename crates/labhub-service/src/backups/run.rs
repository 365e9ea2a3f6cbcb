//! Making archives: one account's homes, one group's folder, everything, or an orphan; each
//! a run recorded in `backup_runs`, one at a time across every process on the database.

use std::path::Path;

use futures::StreamExt;
use labhub_core::spawner::StoredVolume;
use labhub_core::{GroupName, Owner, ServerName, Storage, UserName};
use labhub_db::backups::{self, NewBackup, RunLock};
use labhub_db::{groups, homes, users};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Backup, BackupKind, Backups, manifest_of};
use crate::ServiceError;
use crate::access::Actor;
use crate::homes::{ArchiveFormat, packed};

/// What a run archives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every home of one account.
    User(UserName),
    /// One group's shared folder.
    Group(GroupName),
    /// Every home and every group's shared folder (what the schedule runs).
    All,
    /// The storage of a deleted account or group, by its runtime name.
    Orphan(String),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// The archives made.
    pub made: Vec<Backup>,
    /// What could not be archived, and why (for people).
    pub failed: Vec<String>,
    /// Archives deleted by the retention rule afterwards.
    pub expired: usize,
}

impl RunReport {
    /// One line for the run's record and the admin page.
    pub fn summary(&self) -> String {
        let bytes: u64 = self.made.iter().map(|b| b.bytes).sum();
        let mut s = format!(
            "{} archive{}, {}",
            self.made.len(),
            if self.made.len() == 1 { "" } else { "s" },
            crate::words::memory_text(bytes)
        );
        if self.expired > 0 {
            s.push_str(&format!("; {} expired archive(s) deleted", self.expired));
        }
        if !self.failed.is_empty() {
            s.push_str(&format!("; failed: {}", self.failed.join("; ")));
        }
        s
    }
}

/// One volume to archive, and whose it is.
struct Item {
    kind: BackupKind,
    storage: Storage,
    volume: String,
    owner_id: Option<i64>,
    owner_name: String,
    server: String,
}

/// Holds both locks of a run: the process's and the database's.
pub(super) struct Running<'h> {
    _local: tokio::sync::MutexGuard<'h, ()>,
    shared: RunLock,
}

impl Running<'_> {
    /// Gives both locks back (the database's at once, not when its connection is noticed gone).
    pub(super) async fn release(self) {
        self.shared.release().await;
    }
}

impl<'h> Backups<'h> {
    /// Takes the run lock, or `None` when a run holds it (here or in another process).
    pub(super) async fn try_lock(&self) -> Result<Option<Running<'h>>, ServiceError> {
        let Ok(local) = self.hub.0.backups.running.try_lock() else { return Ok(None) };
        let Some(shared) = backups::try_lock_runs(self.hub.db()).await? else { return Ok(None) };
        Ok(Some(Running { _local: local, shared }))
    }

    /// Resumes the servers a backup read left paused because its process died mid-read (the
    /// lock went with its connection): only while this process holds the run lock, so never
    /// during a read in progress anywhere. Called at boot and by the maintenance loop; how
    /// many it resumed (none when a run holds the lock).
    pub async fn resume_left_paused(&self) -> Result<usize, ServiceError> {
        let spawner = self.hub.homes().spawner()?.clone();
        let Some(lock) = self.try_lock().await? else { return Ok(0) };
        let resumed = spawner.resume_paused().await;
        lock.release().await;
        resumed.map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    /// Archives `target` now (admins), then applies the retention rule; every archive is
    /// audited. Refused while another run is in progress. A volume that fails does not stop
    /// the others: the report lists it, and the run is recorded as failed.
    pub async fn create(&self, actor: Actor<'_>, target: &Target) -> Result<RunReport, ServiceError> {
        actor.require_admin()?;
        self.dir()?;
        let Some(lock) = self.try_lock().await? else {
            return Err(ServiceError::Conflict(
                "a backup run is in progress; try again when it has finished (Admin → Backups shows it)".into(),
            ));
        };
        let report = self.run(actor, target, false, &lock).await;
        lock.release().await;
        report
    }

    /// One run under the lock: recorded, archived, expired; `Err` when `target` names nothing
    /// that exists (no run is recorded then) or the run could not be recorded at all.
    pub(super) async fn run(
        &self,
        actor: Actor<'_>,
        target: &Target,
        scheduled: bool,
        _lock: &Running<'_>,
    ) -> Result<RunReport, ServiceError> {
        let db = self.hub.db();
        let items = match self.items(actor, target).await {
            Err(e @ (ServiceError::NotFound(_) | ServiceError::Invalid(_) | ServiceError::Forbidden(_))) => {
                return Err(e);
            }
            other => other,
        };
        backups::close_unfinished(db, self.hub.now(), "cut short: the hub stopped during the run").await?;
        let run_id = backups::begin_run(db, self.hub.now(), scheduled).await?;
        let mut report = RunReport::default();
        match items {
            Err(e) => report.failed.push(e.to_string()),
            Ok(items) => {
                for item in items {
                    match self.archive_one(actor, &item).await {
                        Ok(b) => report.made.push(b),
                        Err(e) => report.failed.push(format!("{} ({}): {e}", item.owner_name, item.volume)),
                    }
                }
            }
        }
        if !matches!(target, Target::Orphan(_)) {
            match self.expire(actor).await {
                Ok(n) => report.expired = n,
                Err(e) => report.failed.push(format!("the retention rule: {e}")),
            }
        }
        let ok = report.failed.is_empty();
        backups::end_run(db, run_id, self.hub.now(), ok, &report.summary()).await?;
        metrics::counter!("labhub_backup_runs_total", "result" => if ok { "ok" } else { "failed" }).increment(1);
        if !ok {
            tracing::warn!(run = run_id, summary = %report.summary(), "a backup run failed");
            let detail = json!({ "run": run_id, "scheduled": scheduled, "failed": report.failed });
            self.hub.audit().record(db, actor, "backup.run_failed", &format!("run {run_id}"), detail).await?;
        }
        if scheduled {
            self.refresh_banner().await?;
        }
        Ok(report)
    }

    /// The volumes `target` names that exist.
    async fn items(&self, actor: Actor<'_>, target: &Target) -> Result<Vec<Item>, ServiceError> {
        let spawner = self.hub.homes().spawner()?.clone();
        let stored = spawner.volumes().await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let db = self.hub.db();
        let mut items = Vec::new();
        match target {
            Target::Orphan(volume) => {
                let orphan = self
                    .hub
                    .homes()
                    .orphans(actor)
                    .await?
                    .into_iter()
                    .find(|o| &o.volume == volume)
                    .ok_or_else(|| ServiceError::NotFound(format!("{volume} is not storage without an owner")))?;
                items.push(Item {
                    kind: BackupKind::Orphan,
                    storage: Storage::Volume(orphan.volume.clone()),
                    volume: orphan.volume.clone(),
                    owner_id: orphan.former_id.map(|u| u.get()).or(orphan.former_group.map(|g| g.get())),
                    owner_name: orphan.former_owner(),
                    server: orphan.server.as_ref().map(ServerName::to_string).unwrap_or_default(),
                });
            }
            Target::Group(name) => {
                let group = groups::by_name(db, name)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound(format!("no group named {name}")))?;
                let storage = Storage::Group(group.group_id);
                let volume = spawner.storage_name(&storage);
                if !stored.iter().any(|v| v.volume == volume) {
                    return Err(ServiceError::NotFound(format!("the group {name} has no shared folder to back up")));
                }
                let (owner_id, owner_name) = (Some(group.group_id.get()), name.to_string());
                items.push(Item {
                    kind: BackupKind::Group,
                    storage,
                    volume,
                    owner_id,
                    owner_name,
                    server: String::new(),
                });
            }
            Target::User(name) => {
                let user = self.hub.user_row(name).await?;
                for v in &stored {
                    if let Some(item) = self.home_item(v).await?
                        && item.owner_id == Some(user.user_id.get())
                    {
                        items.push(item);
                    }
                }
                if items.is_empty() {
                    return Err(ServiceError::NotFound(format!("{name} has no home to back up yet")));
                }
            }
            Target::All => {
                for v in &stored {
                    if let Owner::Group(id) = v.owner
                        && let Some(group) = groups::by_id(db, id).await?
                    {
                        let storage = Storage::Group(id);
                        let (owner_id, owner_name) = (Some(id.get()), group.name.to_string());
                        let (volume, server) = (v.volume.clone(), String::new());
                        items.push(Item { kind: BackupKind::Group, storage, volume, owner_id, owner_name, server });
                    } else if let Some(item) = self.home_item(v).await? {
                        items.push(item);
                    }
                }
            }
        }
        Ok(items)
    }

    /// A stored volume as an account's home, when it is one (not an orphan, not a restored
    /// backup attached to the account).
    async fn home_item(&self, v: &StoredVolume) -> Result<Option<Item>, ServiceError> {
        let db = self.hub.db();
        let user = match &v.owner {
            Owner::User(id) => users::by_id(db, *id).await?,
            Owner::LegacyName(_) => match homes::all(db).await?.into_iter().find(|h| h.volume == v.volume) {
                Some(adopted) => users::by_id(db, adopted.user_id).await?,
                None => None,
            },
            Owner::Group(_) => None,
        };
        let Some(user) = user else { return Ok(None) };
        let storage = self.hub.homes().of(user.user_id, v.server.as_ref()).await?;
        if self.hub.homes().spawner()?.storage_name(&storage) != v.volume {
            return Ok(None);
        }
        Ok(Some(Item {
            kind: BackupKind::Home,
            storage,
            volume: v.volume.clone(),
            owner_id: Some(user.user_id.get()),
            owner_name: user.name.to_string(),
            server: v.server.as_ref().map(ServerName::to_string).unwrap_or_default(),
        }))
    }

    /// Archives one volume, read as it was at one instant (taken again once when a server
    /// began using it during the read), into the backup directory with its manifest; indexes
    /// and audits it.
    async fn archive_one(&self, actor: Actor<'_>, item: &Item) -> Result<Backup, ServiceError> {
        let backup = match self.write_archive(item).await {
            // A server began using the volume mid-read: now it is paused with the others.
            Err(ServiceError::Conflict(why)) => {
                tracing::info!(volume = %item.volume, %why, "reading the volume again");
                self.write_archive(item).await?
            }
            other => other?,
        };
        let detail = json!({
            "kind": backup.kind.as_str(), "volume": backup.volume, "file": backup.file,
            "bytes": backup.bytes, "sha256": backup.sha256,
        });
        let target = format!("{} {}", backup.kind.as_str(), backup.owner_name);
        self.hub.audit().record(self.hub.db(), actor, "backup.create", &target, detail).await?;
        Ok(backup)
    }

    /// Streams one volume into `{dir}/{kind}/{owner}/{time}-{random}.tar.gz` (written under a
    /// temporary name, renamed when whole), then its manifest, then its row.
    async fn write_archive(&self, item: &Item) -> Result<Backup, ServiceError> {
        let dir = self.dir()?;
        let now = self.hub.now();
        let owner_dir = match (item.kind, item.owner_id) {
            (BackupKind::Home, Some(id)) => format!("home/U{id}"),
            (BackupKind::Group, Some(id)) => format!("group/G{id}"),
            _ => format!("orphan/{}", item.volume),
        };
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let server = if item.server.is_empty() { String::new() } else { format!("-{}", item.server) };
        let file = format!("{owner_dir}/{stamp}{server}-{suffix}.tar.gz");
        let path = dir.join(&file);
        let spawner = self.hub.homes().spawner()?.clone();
        let tar = spawner.snapshot(&item.storage).await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let body = packed(tar, ArchiveFormat::TarGz);
        let (bytes, sha256) = match write_stream(&path, body).await {
            Ok(done) => done,
            Err(e) if e.to_string().contains("during the read") => {
                return Err(ServiceError::Conflict(e.to_string()));
            }
            Err(e) => return Err(ServiceError::Unavailable(format!("writing {}: {e}", path.display()))),
        };
        let version = env!("CARGO_PKG_VERSION");
        let manifest = json!({
            "archive": file.rsplit('/').next().unwrap_or(&file),
            "kind": item.kind.as_str(),
            "owner_id": item.owner_id,
            "owner_name": item.owner_name,
            "server": item.server,
            "volume": item.volume,
            "bytes": bytes,
            "sha256": sha256,
            "created_at": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "labhub_version": version,
            "format": "tar.gz",
            "consistency": "read while the servers using the volume were paused: every write completed before the read began, none after",
        });
        let manifest_path = dir.join(manifest_of(&file));
        let written = write_small(&manifest_path, &serde_json::to_vec_pretty(&manifest).unwrap_or_default()).await;
        let row = match written {
            Ok(()) => {
                let new = NewBackup {
                    kind: item.kind.as_str(),
                    owner_id: item.owner_id,
                    owner_name: &item.owner_name,
                    server_name: &item.server,
                    volume: &item.volume,
                    file: &file,
                    bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                    sha256: &sha256,
                    created_at: now,
                    labhub_version: version,
                };
                backups::insert(self.hub.db(), &new).await.map_err(ServiceError::from)
            }
            Err(e) => Err(ServiceError::Unavailable(format!("writing {}: {e}", manifest_path.display()))),
        };
        match row {
            Ok(row) => Backup::try_from(row),
            Err(e) => {
                // An archive the index does not know would never expire: take it away.
                let _ = tokio::fs::remove_file(&path).await;
                let _ = tokio::fs::remove_file(&manifest_path).await;
                Err(e)
            }
        }
    }
}

/// Creates a file's folders, private to the hub (`0700`).
async fn make_parent(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let Some(parent) = path.parent() else { return Ok(()) };
    let parent = parent.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent))
        .await
        .map_err(std::io::Error::other)?
}

/// Writes a stream to `path` (via `path.partial`, owner-only), hashing it on the way; returns
/// its size and SHA-256 (hex). Only one chunk is held at a time. A stream that fails leaves
/// nothing behind.
async fn write_stream(
    path: &Path,
    mut body: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
) -> std::io::Result<(u64, String)> {
    make_parent(path).await?;
    let partial = path.with_extension("partial");
    let result = async {
        let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial).await?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            total += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        tokio::fs::rename(&partial, path).await?;
        Ok((total, hex::encode(hasher.finalize())))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

/// Writes a small file, owner-only.
async fn write_small(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    make_parent(path).await?;
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).await?;
    file.write_all(contents).await?;
    file.sync_all().await
}
