//! Reading and writing the files of the hub's volumes without running anything in them.
//!
//! A container is created — never started — from an empty image, with the volumes mounted
//! (read-only where only read); the engine itself reads and writes their files through its
//! archive API, as uncompressed tar streams that pass through the hub without being held in
//! memory. The hub never opens a user's file with its own privileges, and no program of
//! anyone's runs beside the files. The container is removed when the work ends, also when the
//! caller drops a stream midway.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions, ListContainersOptions,
    RemoveContainerOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use labhub_core::spawner::SpawnError;
use labhub_core::{MountSource, Storage};

use super::DockerSpawner;
use crate::error::{is_status, runtime_error};
use crate::naming::LABEL_HUB;

/// The image the file-handling containers are created from, never run: no files, only the
/// folders that seed new storage's root (see [`DockerSpawner::seed_root`]).
const EMPTY_IMAGE: &str = "labhub/empty:2";
/// The owner servers run as in the Jupyter and Rocker images (`jovyan`/`rstudio`, group
/// `users`): new storage's root belongs to them, not to root, so a server can write there
/// even when its image has no folder to copy at the mount point.
const SERVER_UID: u64 = 1000;
const SERVER_GID: u64 = 100;
/// Seed folders of the empty image: a home's root (the owner's alone) and a group's shared
/// folder's (writable by every member's server, whatever user it runs as).
const SEED_HOME: (&str, u32) = ("seed/home", 0o755);
const SEED_GROUP: (&str, u32) = ("seed/group", 0o777);
/// Where a file-handling container mounts what it reads.
const FROM: &str = "/from";
/// Where a file-handling container mounts what it writes.
const INTO: &str = "/into";

/// A created, never started container: removed by [`Helper::remove`] once its work is done,
/// or in the background if it is dropped before (a failed or abandoned step).
struct Helper {
    docker: Docker,
    id: String,
}

impl Helper {
    /// Removes it and waits for that: a short-lived process (a CLI command) ends right after,
    /// and would take a removal left to the background with it. Dropped while waiting, the
    /// removal is made again in the background.
    async fn remove(mut self) {
        remove_helper(self.docker.clone(), self.id.clone()).await;
        self.id.clear();
    }
}

async fn remove_helper(docker: Docker, id: String) {
    let options = RemoveContainerOptions { force: true, v: false, ..Default::default() };
    match docker.remove_container(&id, Some(options)).await {
        // Removed by an earlier attempt that was cut short.
        Err(e) if is_status(&e, 404) => {}
        Err(e) => tracing::warn!(container = %id, error = %e, "could not remove a file-handling container"),
        Ok(()) => {}
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.id.is_empty() {
            return;
        }
        let remove = remove_helper(self.docker.clone(), std::mem::take(&mut self.id));
        // Without a runtime (the process ending) there is nobody to remove it: the next list
        // of this hub's containers shows it, and it holds nothing but its mounts.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(remove);
        }
    }
}

/// Checks a relative folder name: plain segments, no `.`/`..`, nothing empty.
fn check_subdir(subdir: &str) -> Result<(), SpawnError> {
    if !subdir.is_empty() && subdir.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return Err(SpawnError::Invalid(format!("{subdir:?} is not a folder name")));
    }
    Ok(())
}

impl DockerSpawner {
    /// Creates a never-started container with `mounts` (source, target, read-only).
    async fn helper(&self, mounts: &[(&str, &str, bool, MountType)]) -> Result<Helper, SpawnError> {
        self.ensure_empty_image().await?;
        let body = ContainerCreateBody {
            image: Some(EMPTY_IMAGE.to_string()),
            // Never run: a command only because the engine wants one.
            cmd: Some(vec!["files".to_string()]),
            labels: Some(HashMap::from([(LABEL_HUB.to_string(), self.config.hub_id.to_string())])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(
                    mounts
                        .iter()
                        .map(|(source, target, read_only, typ)| Mount {
                            target: Some(target.to_string()),
                            source: Some(source.to_string()),
                            typ: Some(*typ),
                            read_only: Some(*read_only),
                            ..Default::default()
                        })
                        .collect(),
                ),
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
            .map_err(|e| runtime_error("creating a file-handling container", e))?;
        Ok(Helper { docker: self.docker.clone(), id: created.id })
    }

    /// Gives a new, empty volume's root the seed folder's owner and mode: the engine copies
    /// a folder of the image into an empty volume mounted over it when the container is
    /// created (no program runs). Without this the root belongs to root, and a server whose
    /// image has nothing at the mount point (a group's folder, a home restored before its
    /// first start) could not write there. A volume that already has files keeps its root.
    pub(super) async fn seed_root(&self, volume: &str, group: bool) -> Result<(), SpawnError> {
        let at = format!("/{}", if group { SEED_GROUP.0 } else { SEED_HOME.0 });
        self.helper(&[(volume, &at, false, MountType::VOLUME)]).await?.remove().await;
        Ok(())
    }

    /// Whether a running container of this hub mounts `volume`.
    async fn in_use(&self, volume: &str) -> Result<bool, SpawnError> {
        let mut filters = self.hub_filter();
        filters.insert("volume".into(), vec![volume.to_string()]);
        filters.insert("status".into(), vec!["running".into()]);
        let options = ListContainersOptions { filters: Some(filters), ..Default::default() };
        let running =
            self.docker.list_containers(Some(options)).await.map_err(|e| runtime_error("listing containers", e))?;
        Ok(!running.is_empty())
    }

    /// The volume to write into: made when absent, refused while a server uses it.
    async fn writable(&self, storage: &Storage) -> Result<String, SpawnError> {
        let volume = self.ensure_storage(storage, None).await?;
        if self.in_use(&volume).await? {
            return Err(SpawnError::Invalid(format!("{volume} is in use by a server; stop the server first")));
        }
        Ok(volume)
    }

    /// `Spawner::archive`: the files of `storage` as a tar stream read through a read-only mount.
    pub(super) async fn archive_files(
        &self,
        storage: &Storage,
    ) -> Result<BoxStream<'static, Result<Bytes, SpawnError>>, SpawnError> {
        let volume = self.ensure_storage(storage, None).await?;
        let helper = self.helper(&[(&volume, FROM, true, MountType::VOLUME)]).await?;
        let read = DownloadFromContainerOptions { path: format!("{FROM}/.") };
        let files = self.docker.download_from_container(&helper.id, Some(read));
        // The helper lives as long as the stream: read to its end, the stream removes it
        // before it ends; dropped before, it is removed in the background.
        let removed = futures::stream::once(helper.remove()).filter_map(|()| std::future::ready(None));
        Ok(files.map(|r| r.map_err(|e| runtime_error("reading the files", e))).chain(removed).boxed())
    }

    /// `Spawner::restore`: unpacks a tar stream into `subdir` of `storage`.
    pub(super) async fn restore_files(
        &self,
        storage: &Storage,
        subdir: &str,
        tar: BoxStream<'static, Result<Bytes, std::io::Error>>,
    ) -> Result<u64, SpawnError> {
        check_subdir(subdir)?;
        let volume = self.writable(storage).await?;
        let helper = self.helper(&[(&volume, INTO, false, MountType::VOLUME)]).await?;
        let restored = self.unpack(&helper, subdir, tar).await;
        // Whether or not it worked: a CLI command ends right after.
        helper.remove().await;
        self.df_cache.lock().await.take();
        restored
    }

    /// `restore_files` once its helper is made: the bytes read.
    async fn unpack(
        &self,
        helper: &Helper,
        subdir: &str,
        mut tar: BoxStream<'static, Result<Bytes, std::io::Error>>,
    ) -> Result<u64, SpawnError> {
        // The archive's first entry, when it is its root (`./`, as the hub's archives have),
        // gives the folders on the way to `subdir` their owner and mode.
        let mut first = Vec::with_capacity(512);
        while first.len() < 512 {
            match tar.next().await {
                Some(Ok(chunk)) => first.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(SpawnError::Invalid(format!("the archive could not be read: {e}"))),
                None => break,
            }
        }
        if !subdir.is_empty() {
            let root = (first.len() >= 512)
                .then(|| tar::Header::from_byte_slice(&first[..512]).clone())
                .filter(|h| h.entry_type().is_dir() && h.path_bytes().as_ref() == b"./");
            let folders =
                folders_archive(root.as_ref(), subdir).map_err(|e| runtime_error("preparing the folder", e))?;
            self.put_small(helper, INTO.to_string(), folders).await?;
        }
        let read = Arc::new(AtomicU64::new(0));
        let counter = read.clone();
        let head = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(first)) });
        let body = head.chain(tar).inspect_ok(move |b| {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
        });
        let at = if subdir.is_empty() { INTO.to_string() } else { format!("{INTO}/{subdir}") };
        self.put(helper, at, body).await?;
        Ok(read.load(Ordering::Relaxed))
    }

    /// `Spawner::copy_files`: the files of `from` into `into`/`subdir`. The folder gets the
    /// owner and mode of `from`'s root (the archive's first entry, `./`), as does `into`
    /// itself when made just now, whose root would otherwise belong to root.
    pub(super) async fn copy_between(&self, from: &Storage, into: &Storage, subdir: &str) -> Result<u64, SpawnError> {
        if subdir.is_empty() {
            return Err(SpawnError::Invalid("copying needs a folder to copy into".into()));
        }
        check_subdir(subdir)?;
        let source = self.ensure_storage(from, None).await?;
        let target = self.writable(into).await?;
        let helper =
            self.helper(&[(&source, FROM, true, MountType::VOLUME), (&target, INTO, false, MountType::VOLUME)]).await?;
        let copied = self.copy_through(&helper, subdir).await;
        // Whether or not it worked: a CLI command ends right after.
        helper.remove().await;
        self.df_cache.lock().await.take();
        copied
    }

    /// `copy_between` once its helper is made: the bytes copied.
    async fn copy_through(&self, helper: &Helper, subdir: &str) -> Result<u64, SpawnError> {
        let read = DownloadFromContainerOptions { path: format!("{FROM}/.") };
        let mut files = self.docker.download_from_container(&helper.id, Some(read));
        let mut first = Vec::with_capacity(512);
        while first.len() < 512 {
            match files.next().await {
                Some(Ok(chunk)) => first.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(runtime_error("reading the files to copy", e)),
                None => return Err(SpawnError::Runtime("the files to copy came back empty".into())),
            }
        }
        let root = tar::Header::from_byte_slice(&first[..512]).clone();
        let folders = folders_archive(Some(&root), subdir).map_err(|e| runtime_error("preparing the copy", e))?;
        self.put_small(helper, INTO.to_string(), folders).await?;
        let copied = Arc::new(AtomicU64::new(0));
        let counter = copied.clone();
        let head = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(first)) });
        let body = head.chain(files.map_err(std::io::Error::other)).inspect_ok(move |b| {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
        });
        self.put(helper, format!("{INTO}/{subdir}"), body).await?;
        Ok(copied.load(Ordering::Relaxed))
    }

    /// Unpacks a tar stream at `path` of the helper's mounts.
    async fn put(
        &self,
        helper: &Helper,
        path: String,
        body: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), SpawnError> {
        let options = UploadToContainerOptions { path, ..Default::default() };
        self.docker
            .upload_to_container(&helper.id, Some(options), bollard::body_try_stream(body))
            .await
            .map_err(|e| runtime_error("writing files", e))
    }

    /// Unpacks a small archive held in memory at `path` of the helper's mounts.
    async fn put_small(&self, helper: &Helper, path: String, archive: Vec<u8>) -> Result<(), SpawnError> {
        let body = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(archive)) });
        self.put(helper, path, body).await
    }

    /// `Spawner::check_source`: a registered volume must exist; a host folder must be one the
    /// engine can mount (asked by creating a never-started container that mounts it).
    pub(super) async fn check_mount_source(&self, source: &MountSource) -> Result<(), SpawnError> {
        match source {
            MountSource::Storage(storage) => self.ensure_storage(storage, None).await.map(|_| ()),
            MountSource::Volume(name) => match self.docker.inspect_volume(name).await {
                Ok(_) => Ok(()),
                Err(e) if is_status(&e, 404) => Err(SpawnError::Invalid(format!("there is no volume named {name}"))),
                Err(e) => Err(runtime_error(&format!("inspecting volume {name}"), e)),
            },
            MountSource::HostPath(path) => {
                if !path.starts_with('/') {
                    return Err(SpawnError::Invalid(format!("{path:?} is not an absolute path")));
                }
                match self.helper(&[(path, FROM, true, MountType::BIND)]).await {
                    Ok(helper) => {
                        helper.remove().await;
                        Ok(())
                    }
                    Err(SpawnError::Runtime(detail)) if detail.contains("does not exist") => Err(SpawnError::Invalid(
                        format!("the folder {path} does not exist on the machine the servers run on"),
                    )),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Imports the empty image file-handling containers are created from, unless it is here.
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
        let empty = seed_image().map_err(|e| runtime_error("packing an empty image", e))?;
        self.docker
            .create_image(Some(options), Some(bollard::body_full(empty.into())), None)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| runtime_error("importing the empty image", e))?;
        Ok(())
    }
}

/// The empty image's only content: the seed folders, owned by the servers' user.
fn seed_image() -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    for (path, mode) in [("seed", 0o755), SEED_HOME, SEED_GROUP] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_uid(SERVER_UID);
        h.set_gid(SERVER_GID);
        h.set_size(0);
        archive.append_data(&mut h, format!("{path}/"), std::io::empty())?;
    }
    archive.into_inner()
}

/// A small archive of each folder on the way to `subdir`; with `root` (the copied storage's
/// root entry), also of the target's own root, all with `root`'s owner and mode.
fn folders_archive(root: Option<&tar::Header>, subdir: &str) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    let folder = |path: &str, archive: &mut tar::Builder<Vec<u8>>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(root.and_then(|r| r.mode().ok()).unwrap_or(0o755));
        h.set_uid(root.and_then(|r| r.uid().ok()).unwrap_or(0));
        h.set_gid(root.and_then(|r| r.gid().ok()).unwrap_or(0));
        h.set_mtime(root.and_then(|r| r.mtime().ok()).unwrap_or(0));
        h.set_size(0);
        archive.append_data(&mut h, format!("{path}/"), std::io::empty())
    };
    let mut path = String::from(".");
    if root.is_some() {
        folder(&path, &mut archive)?;
    }
    for part in subdir.split('/').filter(|p| !p.is_empty()) {
        path = format!("{path}/{part}");
        folder(&path, &mut archive)?;
    }
    archive.into_inner()
}
