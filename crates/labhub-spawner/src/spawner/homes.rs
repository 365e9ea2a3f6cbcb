//! Users' homes (their volumes): creating, measuring, listing, removing, and copying files
//! from one home into another.
//!
//! Copying runs no program in either home: a container is created (never started) from an
//! empty image with both volumes mounted, and the engine itself reads one and writes the other
//! through its archive API, streamed through the hub without being held in memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use labhub_core::spawner::{SpawnError, StoredHome};
use labhub_core::{Home, ServerName, UserId, UserName};

use super::DockerSpawner;
use crate::error::{is_status, runtime_error};
use crate::http::engine_get;
use crate::naming::{LABEL_HUB, LABEL_USER, LABEL_USER_ID, home_volume, owner_from_labels, server_labels};
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
/// The image the copying containers are created from: no files at all, never run.
const EMPTY_IMAGE: &str = "labhub/empty:1";
/// Where a copying container mounts the home it reads.
const FROM: &str = "/from";
/// Where a copying container mounts the home it writes.
const INTO: &str = "/into";

/// Volume name → bytes used, as measured by the engine at one moment.
pub(super) type VolumeSizes = Arc<HashMap<String, u64>>;

impl DockerSpawner {
    /// The volume a home lives on.
    pub(super) fn volume_of(&self, home: &Home) -> String {
        match home {
            Home::Owned { owner, server } => {
                let server = server.as_ref().filter(|_| self.config.volume_per_server);
                home_volume(&self.config.hub_id, *owner, server)
            }
            Home::Volume(name) => name.clone(),
        }
    }

    /// Whether runtime labels say this hub made the object.
    pub(super) fn is_ours(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(LABEL_HUB).map(String::as_str) == Some(self.config.hub_id.as_str())
    }

    /// Creates `owner`'s home `name` unless it exists; refuses a same-named volume made for
    /// anyone else. `user`, the owner's name when known, is only a label for people.
    pub(super) async fn ensure_home(
        &self,
        owner: UserId,
        user: Option<&UserName>,
        server: Option<&ServerName>,
        name: &str,
    ) -> Result<(), SpawnError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => {
                let theirs = self.is_ours(&v.labels)
                    && v.labels.get(LABEL_USER_ID).map(String::as_str) == Some(owner.to_string().as_str());
                return if theirs {
                    Ok(())
                } else {
                    Err(SpawnError::Runtime(format!(
                        "volume {name} exists but was not made by this hub for account {owner}; refusing to use it"
                    )))
                };
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(runtime_error(&format!("inspecting volume {name}"), e)),
        }
        let mut labels = server_labels(&self.config.hub_id, owner, server);
        if let Some(user) = user {
            labels.insert(LABEL_USER.to_string(), user.to_string());
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: Some("local".into()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker.create_volume(request).await.map_err(|e| runtime_error(&format!("creating volume {name}"), e))?;
        Ok(())
    }

    /// `Spawner::storage_usage`: bytes used by a home, `None` when there is none.
    pub(super) async fn volume_usage(&self, home: &Home) -> Result<Option<u64>, SpawnError> {
        let name = self.volume_of(home);
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
    pub(super) async fn remove_volume(&self, home: &Home) -> Result<bool, SpawnError> {
        let name = self.volume_of(home);
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
                tracing::info!(volume = %name, "removed a home");
                self.df_cache.lock().await.take();
                Ok(true)
            }
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) if is_status(&e, 409) => {
                Err(SpawnError::Invalid(format!("the home {name} is in use by a server; stop the server first")))
            }
            Err(e) => Err(runtime_error(&format!("removing volume {name}"), e)),
        }
    }

    /// `Spawner::homes`: every volume labelled for this hub with a valid owner, with its size.
    pub(super) async fn list_homes(&self) -> Result<Vec<StoredHome>, SpawnError> {
        let options = ListVolumesOptions { filters: Some(self.hub_filter()) };
        let listed = self.docker.list_volumes(Some(options)).await.map_err(|e| runtime_error("listing volumes", e))?;
        let volumes = listed.volumes.unwrap_or_default();
        let sizes = if volumes.is_empty() { VolumeSizes::default() } else { self.volume_sizes(None).await? };
        let mut homes = Vec::with_capacity(volumes.len());
        for v in volumes {
            let Some((owner, server)) = owner_from_labels(&v.labels) else {
                tracing::warn!(volume = %v.name, "a volume with this hub's label names no valid owner; left out");
                continue;
            };
            let created = v.created_at;
            let bytes = sizes.get(&v.name).copied();
            let made_for = v.labels.get(LABEL_USER).and_then(|n| UserName::parse(n).ok());
            homes.push(StoredHome { volume: v.name, owner, made_for, server, created, bytes });
        }
        homes.sort_by(|a, b| a.volume.cmp(&b.volume));
        Ok(homes)
    }

    /// `Spawner::copy_home`: the files of `from` into `into`/`subdir`, through a container
    /// that never runs. `into` is created like a new home when absent (it must then be
    /// [`Home::Owned`], which says whose it is).
    pub(super) async fn copy_between_homes(&self, from: &Home, into: &Home, subdir: &str) -> Result<u64, SpawnError> {
        if subdir.is_empty() || subdir.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return Err(SpawnError::Invalid(format!("{subdir:?} is not a folder name to copy into")));
        }
        let (source, target) = (self.volume_of(from), self.volume_of(into));
        match self.docker.inspect_volume(&source).await {
            Ok(v) if self.is_ours(&v.labels) => {}
            Ok(_) => return Err(SpawnError::Invalid(format!("volume {source} was not created by this hub"))),
            Err(e) if is_status(&e, 404) => return Err(SpawnError::Invalid(format!("the home {source} is gone"))),
            Err(e) => return Err(runtime_error(&format!("inspecting volume {source}"), e)),
        }
        match into {
            Home::Owned { owner, server } => {
                let server = server.as_ref().filter(|_| self.config.volume_per_server);
                self.ensure_home(*owner, None, server, &target).await?;
            }
            Home::Volume(_) => match self.docker.inspect_volume(&target).await {
                Ok(v) if self.is_ours(&v.labels) => {}
                Ok(_) => return Err(SpawnError::Invalid(format!("volume {target} was not created by this hub"))),
                Err(e) if is_status(&e, 404) => return Err(SpawnError::Invalid(format!("the home {target} is gone"))),
                Err(e) => return Err(runtime_error(&format!("inspecting volume {target}"), e)),
            },
        }
        if self.home_in_use(&target).await? {
            return Err(SpawnError::Invalid(format!("the home {target} is in use by a server; stop the server first")));
        }
        let helper = self.copying_container(&source, &target).await?;
        let copied = self.stream_files(&helper, subdir).await;
        let removed = self
            .docker
            .remove_container(&helper, Some(RemoveContainerOptions { force: true, v: false, ..Default::default() }))
            .await;
        if let Err(e) = removed {
            tracing::warn!(container = %helper, error = %e, "could not remove a copying container");
        }
        self.df_cache.lock().await.take();
        copied
    }

    /// Whether a running container of this hub mounts `volume`.
    async fn home_in_use(&self, volume: &str) -> Result<bool, SpawnError> {
        let mut filters = self.hub_filter();
        filters.insert("volume".into(), vec![volume.to_string()]);
        filters.insert("status".into(), vec!["running".into()]);
        let options = bollard::query_parameters::ListContainersOptions { filters: Some(filters), ..Default::default() };
        let running =
            self.docker.list_containers(Some(options)).await.map_err(|e| runtime_error("listing containers", e))?;
        Ok(!running.is_empty())
    }

    /// Creates (never starts) a container with `source` read-only at [`FROM`] and `target` at
    /// [`INTO`], without network, capabilities or a command worth running; returns its id.
    async fn copying_container(&self, source: &str, target: &str) -> Result<String, SpawnError> {
        self.ensure_empty_image().await?;
        let mount = |volume: &str, at: &str, read_only: bool| Mount {
            target: Some(at.to_string()),
            source: Some(volume.to_string()),
            typ: Some(MountType::VOLUME),
            read_only: Some(read_only),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(EMPTY_IMAGE.to_string()),
            cmd: Some(vec!["copy".to_string()]),
            labels: Some(HashMap::from([(LABEL_HUB.to_string(), self.config.hub_id.to_string())])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(vec![mount(source, FROM, true), mount(target, INTO, false)]),
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| runtime_error("creating a copying container", e))?;
        Ok(created.id)
    }

    /// Streams every file of [`FROM`] into [`INTO`]`/subdir`. The folder gets the owner and
    /// mode of the home it comes from (the archive's first entry, `./`), as does a target
    /// home created just now, whose root would otherwise belong to root.
    async fn stream_files(&self, container: &str, subdir: &str) -> Result<u64, SpawnError> {
        let read = DownloadFromContainerOptions { path: format!("{FROM}/.") };
        let mut files = self.docker.download_from_container(container, Some(read));
        let mut first = Vec::with_capacity(512);
        while first.len() < 512 {
            match files.next().await {
                Some(Ok(chunk)) => first.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(runtime_error("reading the home to copy", e)),
                None => return Err(SpawnError::Runtime("the home to copy came back empty".into())),
            }
        }
        let root = tar::Header::from_byte_slice(&first[..512]).clone();
        let folders = folders_archive(&root, subdir).map_err(|e| runtime_error("preparing the copy", e))?;
        let put = |path: String| UploadToContainerOptions { path, ..Default::default() };
        self.docker
            .upload_to_container(container, Some(put(INTO.to_string())), bollard::body_full(folders.into()))
            .await
            .map_err(|e| runtime_error("creating the folder to copy into", e))?;
        let copied = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = copied.clone();
        let head = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(first)) });
        let rest = files.map_err(std::io::Error::other);
        let body = head.chain(rest).inspect_ok(move |b| {
            counter.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        });
        self.docker
            .upload_to_container(container, Some(put(format!("{INTO}/{subdir}"))), bollard::body_try_stream(body))
            .await
            .map_err(|e| runtime_error("writing the copied files", e))?;
        Ok(copied.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Imports the empty image copying containers are created from, unless it is here.
    async fn ensure_empty_image(&self) -> Result<(), SpawnError> {
        if self.docker.inspect_image(EMPTY_IMAGE).await.is_ok() {
            return Ok(());
        }
        let (repo, tag) = EMPTY_IMAGE.split_once(':').unwrap_or((EMPTY_IMAGE, "latest"));
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.into()),
            tag: Some(tag.into()),
            ..Default::default()
        };
        let empty =
            tar::Builder::new(Vec::new()).into_inner().map_err(|e| runtime_error("packing an empty image", e))?;
        self.docker
            .create_image(Some(options), Some(bollard::body_full(empty.into())), None)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| runtime_error("importing the empty image", e))?;
        Ok(())
    }

    /// The cached `/system/df` volume sizes, measured again when older than [`DF_CACHE_TTL`]
    /// or when they do not know `volume` (created since).
    async fn volume_sizes(&self, volume: Option<&str>) -> Result<VolumeSizes, SpawnError> {
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

/// A small archive of the target home's root (`./`) and each folder on the way to `subdir`,
/// with the owner and mode of `root` (the home copied from).
fn folders_archive(root: &tar::Header, subdir: &str) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut path = String::from(".");
    let folder = |path: &str, archive: &mut tar::Builder<Vec<u8>>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(root.mode().unwrap_or(0o755));
        h.set_uid(root.uid().unwrap_or(0));
        h.set_gid(root.gid().unwrap_or(0));
        h.set_mtime(root.mtime().unwrap_or(0));
        h.set_size(0);
        archive.append_data(&mut h, format!("{path}/"), std::io::empty())
    };
    folder(&path, &mut archive)?;
    for part in subdir.split('/') {
        path = format!("{path}/{part}");
        folder(&path, &mut archive)?;
    }
    archive.into_inner()
}
