//! Restoring an archive: into its owner's home (every server of the account stopped), or
//! into a new volume attached to another account, mounted at `~/restored/backup-{id}` in that
//! account's servers only. The archive's SHA-256 is checked first: a changed archive is
//! never unpacked.

use futures::StreamExt;
use labhub_core::spawner::Spawner;
use labhub_core::{BackupId, ServerName, Storage, UserName};
use labhub_db::backups::{self, Attached};
use serde_json::json;
use tokio_util::io::ReaderStream;

use super::{BackupKind, Backups, hash_file};
use crate::ServiceError;
use crate::access::Actor;
use crate::homes::decompressed;

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub id: BackupId,
    /// The account whose server now has the files.
    pub account: UserName,
    /// Where in that account's servers: `~` (its home) or `~/restored/backup-{id}`.
    pub place: String,
    /// Bytes of tar unpacked.
    pub bytes: u64,
}

impl Backups<'_> {
    /// Restores archive `id` (admins): into the home of `owner`, whose archive it must be
    /// (refused while any of the account's servers runs), or, given `into`, into a new volume
    /// attached to that account alone (then `owner`, when given, must be the archive's owner).
    /// Audited.
    pub async fn restore(
        &self,
        actor: Actor<'_>,
        id: BackupId,
        owner: Option<&UserName>,
        into: Option<&UserName>,
    ) -> Result<RestoreReport, ServiceError> {
        actor.require_admin()?;
        let backup = self.row(id).await?;
        if let Some(owner) = owner {
            let user = self.hub.user_row(owner).await?;
            if backup.kind != BackupKind::Home || backup.owner_id != Some(user.user_id.get()) {
                return Err(ServiceError::Invalid(format!(
                    "backup {id} is not of {owner}'s home but of {} ({}); name its owner, or give only --into",
                    backup.owner_name,
                    backup.kind.as_str()
                )));
            }
        }
        let path = self.dir()?.join(&backup.file);
        let (bytes, sha) = hash_file(&path)
            .await
            .map_err(|e| ServiceError::Unavailable(format!("the archive {} cannot be read: {e}", backup.file)))?;
        if bytes != backup.bytes || sha != backup.sha256 {
            return Err(ServiceError::Conflict(format!(
                "the archive {} has changed since it was written (its SHA-256 differs); it is not restored",
                backup.file
            )));
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| ServiceError::Unavailable(format!("the archive {} cannot be read: {e}", backup.file)))?;
        let stream = ReaderStream::with_capacity(file, 256 * 1024).boxed();
        let report = match (into, owner) {
            (Some(other), _) => self.restore_attached(id, other, stream).await?,
            (None, Some(owner)) => {
                let user = self.hub.user_row(owner).await?;
                let server = ServerName::parse_optional(&backup.server)?;
                let bytes = self.hub.homes().restore_into(&user, server.as_ref(), stream).await?;
                RestoreReport { id, account: owner.clone(), place: "~".into(), bytes }
            }
            (None, None) => {
                return Err(ServiceError::Invalid(
                    "say whose home to restore into (the archive's owner), or another account to attach it to".into(),
                ));
            }
        };
        let detail =
            json!({ "file": backup.file, "owner": backup.owner_name, "place": report.place, "bytes": report.bytes });
        self.hub.audit().record(self.hub.db(), actor, "backup.restore", report.account.as_str(), detail).await?;
        Ok(report)
    }

    /// Unpacks an archive into a new volume attached to `other` (mounted from its next start).
    async fn restore_attached(
        &self,
        id: BackupId,
        other: &UserName,
        stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
    ) -> Result<RestoreReport, ServiceError> {
        let user = self.hub.user_row(other).await?;
        let taken = backups::attached_to(self.hub.db(), user.user_id.get()).await?;
        // A second restore of one archive into one account gets a place of its own.
        let (key, folder) = (1..)
            .map(|n: u32| match n {
                1 => (format!("backup.{id}"), format!("backup-{id}")),
                n => (format!("backup.{id}.{n}"), format!("backup-{id}-{n}")),
            })
            .find(|(k, f)| !taken.iter().any(|a| &a.key == k || &a.folder == f))
            .unwrap_or_default();
        let storage = Storage::Attached { owner: user.user_id, key: key.clone() };
        let spawner: std::sync::Arc<dyn Spawner> = self.hub.homes().spawner()?.clone();
        let tar = decompressed(stream).await?;
        let bytes = match spawner.restore(&storage, "", tar).await {
            Ok(bytes) => bytes,
            Err(e) => {
                // Nobody has the half-written volume yet: take it away.
                let _ = spawner.remove_storage(&storage).await;
                return Err(ServiceError::Conflict(e.to_string()));
            }
        };
        let attached = Attached {
            user_id: user.user_id.get(),
            key,
            folder: folder.clone(),
            backup_id: Some(id.get()),
            created_at: self.hub.now(),
        };
        backups::attach(self.hub.db(), &attached).await?;
        Ok(RestoreReport { id, account: other.clone(), place: format!("~/restored/{folder}"), bytes })
    }
}
