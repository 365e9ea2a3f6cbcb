//! `labhub backup …`: archives of homes and shared folders in the backup directory.

use anyhow::{Context, bail};
use clap::Subcommand;
use labhub_core::{BackupId, GroupName};
use labhub_service::Actor;
use labhub_service::backups::Target;

use super::name;

#[derive(Subcommand)]
pub(super) enum BackupCommand {
    /// Archive homes and shared folders now (one run; then the retention rule applies).
    Create {
        /// Every home of this account.
        #[arg(long, conflicts_with_all = ["group", "all", "orphan"])]
        user: Option<String>,
        /// This group's shared folder.
        #[arg(long, conflicts_with_all = ["all", "orphan"])]
        group: Option<String>,
        /// Every home and shared folder (what the daily run does).
        #[arg(long, conflicts_with = "orphan")]
        all: bool,
        /// The storage of a deleted account or group, by its volume (Admin → Storage).
        #[arg(long)]
        orphan: Option<String>,
    },
    /// List archives (id, owner, time, size), newest first.
    List {
        /// Only this account's home archives.
        #[arg(long)]
        user: Option<String>,
    },
    /// Restore archive ID into the home of its owner (every server of theirs stopped), or
    /// with --into into a new volume mounted at ~/restored/backup-ID for that account only.
    Restore {
        id: i64,
        /// The archive's owner (required unless --into is given).
        #[arg(long, required_unless_present = "into")]
        user: Option<String>,
        /// Another account to give the files to.
        #[arg(long)]
        into: Option<String>,
    },
    /// Read archive ID again and compare it with its SHA-256 and manifest.
    Verify { id: i64 },
}

/// Runs a `labhub backup` command as the system.
pub(super) async fn backup(hub: labhub_service::Hub, cmd: BackupCommand) -> anyhow::Result<()> {
    let actor = Actor::System;
    let backups = hub.backups();
    match cmd {
        BackupCommand::Create { user, group, all, orphan } => {
            let target = match (user, group, all, orphan) {
                (Some(u), None, false, None) => Target::User(name(&u)?),
                (None, Some(g), false, None) => {
                    Target::Group(GroupName::parse(&g).with_context(|| format!("{g:?} is not a group name"))?)
                }
                (None, None, true, None) => Target::All,
                (None, None, false, Some(v)) => Target::Orphan(v),
                _ => bail!("say what to back up: --user NAME, --group NAME, --all or --orphan VOLUME"),
            };
            let report = backups.create(actor, &target).await?;
            for b in &report.made {
                println!("{:>6}  {:<6} {:<32} {:>10}  {}", b.id, b.kind.as_str(), b.owner_name, b.bytes, b.file);
            }
            println!("{}", report.summary());
            if !report.failed.is_empty() {
                bail!("the run did not archive everything: {}", report.failed.join("; "));
            }
        }
        BackupCommand::List { user } => {
            let user = user.as_deref().map(name).transpose()?;
            println!("{:>6}  {:<6} {:<32} {:<22} {:>12}", "id", "kind", "owner", "time (UTC)", "bytes");
            for b in backups.list(actor, user.as_ref()).await? {
                let when = format!(
                    "{} {:02}:{:02}:{:02}",
                    b.created_at.date(),
                    b.created_at.hour(),
                    b.created_at.minute(),
                    b.created_at.second()
                );
                println!("{:>6}  {:<6} {:<32} {:<22} {:>12}", b.id, b.kind.as_str(), b.owner_name, when, b.bytes);
            }
        }
        BackupCommand::Restore { id, user, into } => {
            let user = user.as_deref().map(name).transpose()?;
            let into = into.as_deref().map(name).transpose()?;
            let r = backups.restore(actor, BackupId::new(id), user.as_ref(), into.as_ref()).await?;
            println!("Restored backup {} ({} bytes) into {} of {}.", r.id, r.bytes, r.place, r.account);
        }
        BackupCommand::Verify { id } => {
            let v = backups.verify(actor, BackupId::new(id)).await?;
            if !v.ok {
                bail!("backup {id} is damaged: {}", v.detail);
            }
            println!("Backup {id} is intact: {}.", v.detail);
        }
    }
    Ok(())
}
