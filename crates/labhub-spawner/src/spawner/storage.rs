//! Users' storage (their volumes: bytes used, removal) and the live resource use of running
//! servers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptions, RemoveVolumeOptions, StatsOptions};
use futures::stream::{self, StreamExt, TryStreamExt};
use labhub_core::spawner::{ServerUsage, SpawnError};
use labhub_core::{ServerName, UserName};

use super::DockerSpawner;
use crate::error::{is_status, runtime_error};
use crate::http::engine_get;
use crate::naming::{LABEL_HUB, owner_from_labels};
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
/// Stats requests in flight at once in `usage` (each takes about a second on the engine).
const STATS_CONCURRENCY: usize = 8;

/// Volume name → bytes used, as measured by the engine at one moment.
pub(super) type VolumeSizes = Arc<HashMap<String, u64>>;

impl DockerSpawner {
    /// `Spawner::storage_usage`: bytes used by the user's volume, `None` when there is none.
    pub(super) async fn volume_usage(
        &self,
        user: &UserName,
        server: Option<&ServerName>,
    ) -> Result<Option<u64>, SpawnError> {
        let name = self.storage_name(user, server);
        match self.docker.inspect_volume(&name).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(runtime_error(&format!("inspecting volume {name}"), e)),
        }
        let sizes = self.volume_sizes(&name).await?;
        Ok(Some(sizes.get(&name).copied().unwrap_or(0)))
    }

    /// `Spawner::remove_storage`: `true` when removed, `false` when there was none; refuses a
    /// volume in use or not made by this hub.
    pub(super) async fn remove_volume(&self, user: &UserName, server: Option<&ServerName>) -> Result<bool, SpawnError> {
        let name = self.storage_name(user, server);
        let volume = match self.docker.inspect_volume(&name).await {
            Ok(v) => v,
            Err(e) if is_status(&e, 404) => return Ok(false),
            Err(e) => return Err(runtime_error(&format!("inspecting volume {name}"), e)),
        };
        if volume.labels.get(LABEL_HUB).map(String::as_str) != Some(self.config.hub_id.as_str()) {
            return Err(SpawnError::Invalid(format!("volume {name} was not created by this hub; not removing it")));
        }
        match self.docker.remove_volume(&name, Some(RemoveVolumeOptions { force: false })).await {
            Ok(()) => {
                tracing::info!(volume = %name, user = %user, "removed a user's storage");
                self.df_cache.lock().await.take();
                Ok(true)
            }
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) if is_status(&e, 409) => Err(SpawnError::Invalid(format!(
                "{user}'s storage ({name}) is in use by a server; stop the server first"
            ))),
            Err(e) => Err(runtime_error(&format!("removing volume {name}"), e)),
        }
    }

    /// `Spawner::usage`: CPU and memory of every running container of this hub; a container
    /// that cannot be measured (it just stopped) is left out.
    pub(super) async fn live_usage(&self) -> Result<Vec<ServerUsage>, SpawnError> {
        let mut filters = self.hub_filter();
        filters.insert("status".into(), vec!["running".into()]);
        let options = ListContainersOptions { filters: Some(filters), ..Default::default() };
        let containers =
            self.docker.list_containers(Some(options)).await.map_err(|e| runtime_error("listing containers", e))?;
        let found: Vec<ServerUsage> = stream::iter(containers)
            .map(|c| async move {
                let (user, server) = owner_from_labels(c.labels.as_ref()?)?;
                let id = c.id?;
                // Not one-shot: the engine then waits for a second sample, which the CPU
                // delta needs (a one-shot answer has no previous sample to compare with).
                let options = StatsOptions { stream: false, one_shot: false };
                let stats = self.docker.stats(&id, Some(options)).try_next().await.ok().flatten()?;
                Some(ServerUsage {
                    user,
                    server,
                    cpu_millis: usage::cpu_millis(&stats),
                    memory_bytes: usage::memory_bytes(&stats),
                })
            })
            .buffer_unordered(STATS_CONCURRENCY)
            .filter_map(futures::future::ready)
            .collect()
            .await;
        Ok(found)
    }

    /// The cached `/system/df` volume sizes, measured again when older than
    /// [`DF_CACHE_TTL`] or when they do not know `volume` (created since).
    async fn volume_sizes(&self, volume: &str) -> Result<VolumeSizes, SpawnError> {
        let mut cache = self.df_cache.lock().await;
        if let Some((at, sizes)) = cache.as_ref()
            && at.elapsed() < DF_CACHE_TTL
            && sizes.contains_key(volume)
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

    /// The volume a user's (or, with `volume_per_server`, a server's) files live on.
    fn storage_name(&self, user: &UserName, server: Option<&ServerName>) -> String {
        crate::naming::volume_name(&self.config.hub_id, user, server, self.config.volume_per_server)
    }
}
