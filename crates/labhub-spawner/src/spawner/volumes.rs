//! The hub's volumes — users' homes, groups' shared folders — by what they are for: naming,
//! creating, measuring, listing, removing. (Reading and writing their files is `archives`.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};
use labhub_core::spawner::{SpawnError, StoredVolume};
use labhub_core::{ServerName, Storage, UserName};

use super::DockerSpawner;
use crate::error::{is_status, runtime_error};
use crate::http::engine_get;
use crate::naming::{
    LABEL_GROUP_ID, LABEL_HUB, LABEL_SERVER, LABEL_USER, LABEL_USER_ID, attached_volume, group_volume, home_volume,
    owner_from_labels,
};
use crate::usage;

/// How long a `/system/df` answer is reused: computing it walks every volume, and the hub
/// asks for one user at a time.
const DF_CACHE_TTL: Duration = Duration::from_secs(30);
/// Longest wait for one `/system/df` answer.
const DF_TIMEOUT: Duration = Duration::from_secs(120);
/// How many times a busy `/system/df` is asked again.
const DF_BUSY_RETRIES: u32 = 40;
/// The pause before asking a busy `/system/df` again.
const DF_BUSY_PAUSE: Duration = Duration::from_millis(250);
/// The most bytes of `/system/df` read (thousands of volumes fit easily).
const DF_MAX_BYTES: usize = 64 << 20;

/// Volume name → bytes used, as measured by the engine at one moment.
pub(super) type VolumeSizes = Arc<HashMap<String, u64>>;

impl DockerSpawner {
    /// The volume storage lives on.
    pub(crate) fn volume_of(&self, storage: &Storage) -> String {
        match storage {
            Storage::Home { owner, server } => {
                let server = server.as_ref().filter(|_| self.config.volume_per_server);
                home_volume(&self.config.hub_id, *owner, server)
            }
            Storage::Group(group) => group_volume(&self.config.hub_id, *group),
            Storage::Attached { owner, key } => attached_volume(&self.config.hub_id, *owner, key),
            Storage::Volume(name) => name.clone(),
        }
    }

    /// Whether runtime labels say this hub made the object.
    pub(super) fn is_ours(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(LABEL_HUB).map(String::as_str) == Some(self.config.hub_id.as_str())
    }

    /// Makes sure storage exists; returns its volume. A home or a group's folder is created
    /// when absent (labelled with its owner's id; `made_for`, the owner's name when known, is
    /// only a label for people), and a same-named volume made for anyone else is refused. A
    /// volume addressed by name ([`Storage::Volume`]) must exist and be this hub's.
    pub(crate) async fn ensure_storage(
        &self,
        storage: &Storage,
        made_for: Option<&UserName>,
    ) -> Result<String, SpawnError> {
        let name = self.volume_of(storage);
        let (owner_label, owner) = match storage {
            Storage::Home { owner, .. } | Storage::Attached { owner, .. } => (LABEL_USER_ID, owner.to_string()),
            Storage::Group(group) => (LABEL_GROUP_ID, group.to_string()),
            Storage::Volume(_) => {
                return match self.docker.inspect_volume(&name).await {
                    Ok(v) if self.is_ours(&v.labels) => Ok(name),
                    Ok(_) => {
                        Err(SpawnError::Runtime(format!("volume {name} was not made by this hub; refusing to use it")))
                    }
                    Err(e) if is_status(&e, 404) => Err(SpawnError::Invalid(format!("the volume {name} is gone"))),
                    Err(e) => Err(runtime_error(&format!("inspecting volume {name}"), e)),
                };
            }
        };
        match self.docker.inspect_volume(&name).await {
            Ok(v) => {
                return if self.is_ours(&v.labels) && v.labels.get(owner_label) == Some(&owner) {
                    Ok(name)
                } else {
                    Err(SpawnError::Runtime(format!(
                        "volume {name} exists but was not made by this hub for its owner; refusing to use it"
                    )))
                };
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(runtime_error(&format!("inspecting volume {name}"), e)),
        }
        let mut labels =
            HashMap::from([(LABEL_HUB.to_string(), self.config.hub_id.to_string()), (owner_label.to_string(), owner)]);
        match storage {
            Storage::Home { server, .. } => {
                let server = server.as_ref().filter(|_| self.config.volume_per_server);
                labels.insert(LABEL_SERVER.to_string(), server.map(ServerName::to_string).unwrap_or_default());
            }
            // Listed as the account's (an orphan with it, removed with its storage).
            Storage::Attached { .. } => {
                labels.insert(LABEL_SERVER.to_string(), String::new());
            }
            Storage::Group(_) | Storage::Volume(_) => {}
        }
        if let Some(user) = made_for {
            labels.insert(LABEL_USER.to_string(), user.to_string());
        }
        let request = VolumeCreateRequest {
            name: Some(name.clone()),
            driver: Some("local".into()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker.create_volume(request).await.map_err(|e| runtime_error(&format!("creating volume {name}"), e))?;
        self.seed_root(&name, matches!(storage, Storage::Group(_))).await?;
        Ok(name)
    }

    /// `Spawner::storage_usage`: bytes used by storage, `None` when there is none.
    pub(super) async fn volume_usage(&self, storage: &Storage) -> Result<Option<u64>, SpawnError> {
        let name = self.volume_of(storage);
        match self.docker.inspect_volume(&name).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(runtime_error(&format!("inspecting volume {name}"), e)),
        }
        let sizes = self.volume_sizes(Some(&name)).await?;
        Ok(Some(sizes.get(&name).copied().unwrap_or(0)))
    }

    /// `Spawner::remove_storage`: `true` when removed, `false` when there was none; refuses a
    /// volume in use or not made by this hub.
    pub(super) async fn remove_volume(&self, storage: &Storage) -> Result<bool, SpawnError> {
        let name = self.volume_of(storage);
        let volume = match self.docker.inspect_volume(&name).await {
            Ok(v) => v,
            Err(e) if is_status(&e, 404) => return Ok(false),
            Err(e) => return Err(runtime_error(&format!("inspecting volume {name}"), e)),
        };
        if !self.is_ours(&volume.labels) {
            return Err(SpawnError::Invalid(format!("volume {name} was not created by this hub; not removing it")));
        }
        match self.docker.remove_volume(&name, Some(RemoveVolumeOptions { force: false })).await {
            Ok(()) => {
                tracing::info!(volume = %name, "removed a volume");
                self.df_cache.lock().await.take();
                Ok(true)
            }
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) if is_status(&e, 409) => {
                Err(SpawnError::Invalid(format!("{name} is in use by a server; stop the server first")))
            }
            Err(e) => Err(runtime_error(&format!("removing volume {name}"), e)),
        }
    }

    /// `Spawner::volumes`: every volume labelled for this hub with a valid owner, with its size
    /// when the engine could measure it.
    pub(super) async fn list_volumes(&self) -> Result<Vec<StoredVolume>, SpawnError> {
        let options = ListVolumesOptions { filters: Some(self.hub_filter()) };
        let listed = self.docker.list_volumes(Some(options)).await.map_err(|e| runtime_error("listing volumes", e))?;
        let volumes = listed.volumes.unwrap_or_default();
        // The sizes are a figure for people: a measurement the engine refuses (busy with
        // another one for too long) leaves them unmeasured rather than failing the list.
        let sizes = if volumes.is_empty() {
            VolumeSizes::default()
        } else {
            self.volume_sizes(None).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "volumes listed without their sizes");
                VolumeSizes::default()
            })
        };
        let mut homes = Vec::with_capacity(volumes.len());
        for v in volumes {
            let Some((owner, server)) = owner_from_labels(&v.labels) else {
                // The copying containers' own volumes and datasets carry no owner.
                tracing::debug!(volume = %v.name, "a volume with this hub's label names no owner; left out");
                continue;
            };
            let created = v.created_at;
            let bytes = sizes.get(&v.name).copied();
            let made_for = v.labels.get(LABEL_USER).and_then(|n| UserName::parse(n).ok());
            homes.push(StoredVolume { volume: v.name, owner, made_for, server, created, bytes });
        }
        homes.sort_by(|a, b| a.volume.cmp(&b.volume));
        Ok(homes)
    }

    /// The cached `/system/df` volume sizes, measured again when older than [`DF_CACHE_TTL`]
    /// or when they do not know `volume` (created since).
    pub(super) async fn volume_sizes(&self, volume: Option<&str>) -> Result<VolumeSizes, SpawnError> {
        let mut cache = self.df_cache.lock().await;
        if let Some((at, sizes)) = cache.as_ref()
            && at.elapsed() < DF_CACHE_TTL
            && volume.is_none_or(|v| sizes.contains_key(v))
        {
            return Ok(sizes.clone());
        }
        // bollard's model of this answer follows API 1.52, where volumes moved; older
        // engines (this one speaks 1.41) would come back empty, so read the JSON ourselves.
        let mut attempt = 0;
        let body = loop {
            let (status, body) = engine_get(&self.engine, "/system/df?type=volume", DF_TIMEOUT, DF_MAX_BYTES)
                .await
                .map_err(|e| runtime_error("measuring volumes (/system/df)", e))?;
            if status.is_success() {
                break body;
            }
            let message = String::from_utf8_lossy(&body);
            // Engines before 23 refuse a second measurement while one runs (another hub
            // process, `docker system df`): wait for it rather than fail.
            attempt += 1;
            if message.contains("already running") && attempt < DF_BUSY_RETRIES {
                tokio::time::sleep(DF_BUSY_PAUSE).await;
                continue;
            }
            return Err(SpawnError::Runtime(format!(
                "measuring volumes (/system/df): the engine answered {status}: {}",
                message.trim()
            )));
        };
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| runtime_error("reading /system/df", e))?;
        let sizes = Arc::new(usage::volume_sizes(&json));
        *cache = Some((Instant::now(), sizes.clone()));
        Ok(sizes)
    }
}
