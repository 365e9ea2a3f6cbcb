//! Users' homes: which storage is whose (by account id, never by name), what is left of
//! deleted accounts, and homes made before ids.
//!
//! A home is keyed by its owner's account id: a deleted account's home is never mounted for a
//! later account of the same name. What such an account leaves (its home, kept unless the
//! admin deleting it chose otherwise) is an *orphan*: listed for admins with its size and age,
//! removable, and copyable into another account's home (into a folder of its own, never over
//! the other account's files). Homes made by hubs before ids carry only a name; each is adopted
//! once by the account that had the name when the home was made (an account created no later
//! than the home), else it is an orphan too. So is the shared folder a deleted group leaves.

mod archive;

pub use archive::{ArchiveFormat, HomeArchive, Restored};
pub(crate) use archive::{decompressed, packed};

use labhub_core::spawner::{Spawner, StoredVolume};
use labhub_core::{GroupId, Owner, ServerName, ServerState, Storage, UserId, UserName};
use labhub_db::{groups, homes, servers, users};
use serde_json::json;
use time::OffsetDateTime;

use crate::access::Actor;
use crate::{Hub, ServiceError};

impl Hub {
    /// Users' homes: whose is which, orphans, homes made before ids.
    pub fn homes(&self) -> Homes<'_> {
        Homes::new(self)
    }
}

/// A home no account can use: its account was deleted, or it was made before ids and no
/// account could claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanHome {
    /// Its runtime name (what admins act on).
    pub volume: String,
    /// The deleted account it was made for, when made since ids.
    pub former_id: Option<UserId>,
    /// The deleted group it was the shared folder of.
    pub former_group: Option<GroupId>,
    /// Its owner's name when it was made, when known.
    pub former_name: Option<UserName>,
    /// The server it was made for, where each server has its own.
    pub server: Option<ServerName>,
    /// Bytes used, when measured.
    pub bytes: Option<u64>,
    /// When it was made.
    pub created: Option<OffsetDateTime>,
}

impl OrphanHome {
    /// Whose it was, for people: `zoe (account 42, deleted)`, `zoe (before account ids)`.
    pub fn former_owner(&self) -> String {
        if let Some(group) = self.former_group {
            return format!("the shared folder of group {group} (deleted)");
        }
        let name = self.former_name.as_ref().map_or("someone", UserName::as_str);
        match self.former_id {
            Some(id) => format!("{name} (account {id}, deleted)"),
            None => format!("{name} (before account ids)"),
        }
    }
}

/// What adopting the homes made before ids did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdoptReport {
    /// Homes now used by the account that made them.
    pub adopted: Vec<String>,
    /// Homes no account could claim (left as orphans).
    pub unclaimed: Vec<String>,
}

/// Users' homes.
#[derive(Clone, Copy)]
pub struct Homes<'h> {
    hub: &'h Hub,
}

impl<'h> Homes<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    pub(crate) fn spawner(&self) -> Result<&'h std::sync::Arc<dyn Spawner>, ServiceError> {
        self.hub.0.spawner.as_ref().ok_or_else(|| {
            ServiceError::Unavailable("homes cannot be reached: the container runtime is not reachable".into())
        })
    }

    /// The home an account's server mounts: a home made before ids that the account adopted,
    /// else its own, keyed by its id.
    pub(crate) async fn of(&self, owner: UserId, server: Option<&ServerName>) -> Result<Storage, ServiceError> {
        let db = self.hub.db();
        let named = server.map_or("", ServerName::as_str);
        // A per-server legacy home first, then the account's shared one.
        for name in [named, ""] {
            if let Some(volume) = homes::of_user(db, owner, name).await? {
                return Ok(Storage::Volume(volume));
            }
        }
        Ok(Storage::Home { owner, server: server.cloned() })
    }

    /// Adopts the homes made before ids (at boot): each goes to the account that had its name
    /// when it was made, if any; the rest stay orphans. Never moves a file.
    pub async fn adopt_legacy(&self) -> Result<AdoptReport, ServiceError> {
        let Ok(spawner) = self.spawner() else { return Ok(AdoptReport::default()) };
        let stored = spawner.volumes().await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let adopted: Vec<String> = homes::all(self.hub.db()).await?.into_iter().map(|h| h.volume).collect();
        let mut report = AdoptReport::default();
        for home in stored {
            let Owner::LegacyName(name) = &home.owner else { continue };
            if adopted.contains(&home.volume) {
                continue;
            }
            let claimant = users::by_name(self.hub.db(), name).await?;
            // The runtime keeps whole seconds: a home made in the second its account was made
            // counts as made after it.
            let made_by_it = match (&claimant, home.created) {
                (Some(user), Some(created)) => user.created_at.replace_nanosecond(0).is_ok_and(|made| made <= created),
                _ => false,
            };
            let server = home.server.as_ref().map_or("", ServerName::as_str);
            match claimant.filter(|_| made_by_it) {
                Some(user) if homes::adopt(self.hub.db(), &home.volume, user.user_id, server).await? => {
                    tracing::info!(volume = %home.volume, user = %name, "adopted a home made before account ids");
                    report.adopted.push(home.volume);
                }
                _ => {
                    tracing::warn!(volume = %home.volume, name = %name, "a home made before account ids has no account; it is an orphan");
                    report.unclaimed.push(home.volume);
                }
            }
        }
        Ok(report)
    }

    /// Deletes an account's home for good (admins; the caller confirmed): `true` when there
    /// was one. Refused while any of the account's servers is active.
    pub async fn remove(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<bool, ServiceError> {
        actor.require_admin()?;
        let user = self.hub.user_row(owner).await?;
        let rows = servers::list_for_user(self.hub.db(), user.user_id).await?;
        if rows.iter().any(|s| s.state != ServerState::Stopped) {
            return Err(ServiceError::Conflict(format!(
                "{owner} has a server running; stop it before removing their storage"
            )));
        }
        let home = self.of(user.user_id, server).await?;
        let removed = self.spawner()?.remove_storage(&home).await.map_err(|e| ServiceError::Conflict(e.to_string()))?;
        if let Storage::Volume(volume) = &home {
            homes::forget(self.hub.db(), volume).await?;
        }
        let label = crate::model::server_label(owner, server);
        self.hub.audit().record(self.hub.db(), actor, "storage.remove", &label, json!({ "removed": removed })).await?;
        Ok(removed)
    }

    /// Every home of an account: its own (one, or one per server) and any it adopted.
    async fn all_of(&self, owner: UserId) -> Result<Vec<StoredVolume>, ServiceError> {
        let adopted: Vec<String> =
            homes::all(self.hub.db()).await?.into_iter().filter(|h| h.user_id == owner).map(|h| h.volume).collect();
        let stored = self.spawner()?.volumes().await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        Ok(stored.into_iter().filter(|h| h.owner == Owner::User(owner) || adopted.contains(&h.volume)).collect())
    }

    /// Deletes every home of an account for good (its servers must be stopped); returns how
    /// many there were.
    pub(crate) async fn remove_all_of(&self, owner: UserId) -> Result<usize, ServiceError> {
        let spawner = self.spawner()?;
        let found = self.all_of(owner).await?;
        for home in &found {
            let gone = Storage::Volume(home.volume.clone());
            spawner.remove_storage(&gone).await.map_err(|e| ServiceError::Conflict(e.to_string()))?;
            homes::forget(self.hub.db(), &home.volume).await?;
        }
        Ok(found.len())
    }

    /// The homes no account can use, with their sizes and ages (admins).
    pub async fn orphans(&self, actor: Actor<'_>) -> Result<Vec<OrphanHome>, ServiceError> {
        actor.require_admin()?;
        let stored = self.spawner()?.volumes().await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let adopted: Vec<String> = homes::all(self.hub.db()).await?.into_iter().map(|h| h.volume).collect();
        let mut orphans = Vec::new();
        for home in stored {
            let (former_id, former_group) = match &home.owner {
                Owner::User(id) if users::by_id(self.hub.db(), *id).await?.is_none() => (Some(*id), None),
                Owner::Group(id) if groups::by_id(self.hub.db(), *id).await?.is_none() => (None, Some(*id)),
                Owner::LegacyName(_) if !adopted.contains(&home.volume) => (None, None),
                _ => continue,
            };
            orphans.push(OrphanHome {
                volume: home.volume,
                former_id,
                former_group,
                former_name: home.made_for,
                server: home.server,
                bytes: home.bytes,
                created: home.created,
            });
        }
        Ok(orphans)
    }

    async fn orphan(&self, actor: Actor<'_>, volume: &str) -> Result<OrphanHome, ServiceError> {
        self.orphans(actor)
            .await?
            .into_iter()
            .find(|o| o.volume == volume)
            .ok_or_else(|| ServiceError::NotFound(format!("{volume} is not a home without an account")))
    }

    /// Deletes an orphan home for good (admins).
    pub async fn remove_orphan(&self, actor: Actor<'_>, volume: &str) -> Result<(), ServiceError> {
        let orphan = self.orphan(actor, volume).await?;
        self.spawner()?
            .remove_storage(&Storage::Volume(orphan.volume.clone()))
            .await
            .map_err(|e| ServiceError::Conflict(e.to_string()))?;
        let detail = json!({ "former_owner": orphan.former_owner(), "bytes": orphan.bytes });
        self.hub.audit().record(self.hub.db(), actor, "storage.remove_orphan", volume, detail).await
    }

    /// Copies an orphan home's files into a new folder of `to`'s home (admins), which must
    /// have no active server; returns the folder's name. The orphan stays until removed.
    pub async fn give_orphan(&self, actor: Actor<'_>, volume: &str, to: &UserName) -> Result<String, ServiceError> {
        let orphan = self.orphan(actor, volume).await?;
        let user = self.hub.user_row(to).await?;
        let active = servers::list_for_user(self.hub.db(), user.user_id).await?;
        if active.iter().any(|s| s.state != ServerState::Stopped) {
            return Err(ServiceError::Conflict(format!(
                "{to} has a server running; stop it before copying files into their home"
            )));
        }
        let former = match (&orphan.former_name, orphan.former_id, orphan.former_group) {
            (_, _, Some(group)) => format!("group-{group}"),
            (Some(name), _, _) => name.to_string(),
            (None, Some(id), _) => format!("account-{id}"),
            (None, None, None) => "home".to_string(),
        };
        let folder = format!("restored-{former}-{}", self.hub.now().date());
        let into = self.of(user.user_id, None).await?;
        let bytes = self
            .spawner()?
            .copy_files(&Storage::Volume(orphan.volume.clone()), &into, &folder)
            .await
            .map_err(|e| ServiceError::Conflict(e.to_string()))?;
        let detail = json!({ "from": volume, "former_owner": orphan.former_owner(), "folder": folder, "bytes": bytes });
        self.hub.audit().record(self.hub.db(), actor, "storage.give_orphan", to.as_str(), detail).await?;
        Ok(folder)
    }
}
