//! `DockerSpawner`: the `Spawner` seam on a local Docker engine, through bollard.
//!
//! This file holds the spawner itself (connecting, the users' network, the state it stores
//! per server) and the trait implementation, which hands each call to the file of its
//! capability: `start` and `readiness` (creating a server until it answers), `stop`
//! (stopping and removing), `observe` (polling, listing for reconcile, live resource use),
//! `images`, `volumes` (homes and groups' folders: naming, measuring, listing, removing),
//! `archives` (reading and writing their files), `snapshot` (reading them as they were at
//! one instant, servers paused), `commit` (saving a running server as an image) and `logs`.

mod archives;
mod commit;
mod images;
mod logs;
mod observe;
pub(crate) mod readiness;
mod snapshot;
pub(crate) mod start;
mod stop;
mod volumes;

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerInspectResponse;
use bytes::Bytes;
use futures::stream::BoxStream;
use labhub_core::spawner::{
    ImageInfo, Isolation, ObservedServer, Progress, ProgressSender, ServerExit, ServerSpec, ServerStatus, ServerUsage,
    SpawnError, Spawner, SpawnerState, Started, StoredVolume,
};
use labhub_core::{ImageKind, ImageRef, MountSource, Storage};
use serde::{Deserialize, Serialize};

use crate::config::DockerConfig;
use crate::error::{is_status, runtime_error};
use crate::firewall::Firewall;
use crate::http::EngineAddr;
use crate::naming::LABEL_HUB;
use crate::{events, network};

/// Where bollard connects when `DOCKER_HOST` is unset.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// How long a network found in order is trusted before a start looks again: a burst of
/// starts then costs one network inspection and one look at the firewall rules, not one each.
const NETWORK_RECHECK: Duration = Duration::from_secs(30);

/// What the spawner stores per server (`servers.spawner_state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DockerState {
    container_id: String,
    container_name: String,
    volume: String,
    ip: Option<IpAddr>,
    port: u16,
    kind: ImageKind,
}

impl DockerState {
    fn from_json(state: &SpawnerState) -> Result<Self, SpawnError> {
        serde_json::from_value(state.clone())
            .map_err(|e| SpawnError::Invalid(format!("this server's stored state is not a Docker server's: {e}")))
    }

    fn to_json(&self) -> SpawnerState {
        // A struct of strings and numbers always serialises.
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Runs each user's server as a Docker container on the engine `DOCKER_HOST` names.
pub struct DockerSpawner {
    docker: Docker,
    engine: EngineAddr,
    config: DockerConfig,
    /// When the network and its firewall rules were last found in order; the lock
    /// also serialises network creation among this process's concurrent starts.
    network_checked: tokio::sync::Mutex<Option<Instant>>,
    /// Whether the firewall rules were in place once, so that adding them again is a repair.
    rules_seen: AtomicBool,
    /// The last `/system/df` volume sizes and when they were read.
    df_cache: tokio::sync::Mutex<Option<(Instant, volumes::VolumeSizes)>>,
    /// Where the hub serves its single-user API on the users' network, once bound.
    hub_api: std::sync::OnceLock<SocketAddrV4>,
}

impl std::fmt::Debug for DockerSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerSpawner").field("engine", &self.engine).field("config", &self.config).finish()
    }
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string())
}

pub(crate) fn send(progress: &ProgressSender, percent: u8, message: impl Into<String>) {
    // A hub that stopped listening does not stop the start.
    let _ = progress.send(Progress { percent, message: message.into() });
}

impl DockerSpawner {
    /// Connects to the engine `DOCKER_HOST` names (the local socket by default) and agrees on an API version.
    pub async fn connect(config: DockerConfig) -> Result<Self, SpawnError> {
        Self::connect_at(docker_host(), config).await
    }

    async fn connect_at(host: String, config: DockerConfig) -> Result<Self, SpawnError> {
        let unreachable = |e: &dyn Display| {
            SpawnError::Runtime(format!(
                "cannot reach the Docker engine at {host}: is it running, and may the hub use its socket? ({e})"
            ))
        };
        let engine = EngineAddr::parse(&host).ok_or_else(|| {
            SpawnError::Invalid(format!("DOCKER_HOST={host} is not supported: use unix:///path or tcp://host:port"))
        })?;
        let docker = Docker::connect_with_host(&host).map_err(|e| unreachable(&e))?;
        let docker = docker.negotiate_version().await.map_err(|e| unreachable(&e))?;
        Ok(Self {
            docker,
            engine,
            config,
            network_checked: tokio::sync::Mutex::new(None),
            rules_seen: AtomicBool::new(false),
            df_cache: tokio::sync::Mutex::new(None),
            hub_api: std::sync::OnceLock::new(),
        })
    }

    /// The settings this spawner runs with.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// Where the engine listens.
    pub(crate) fn engine_addr(&self) -> &EngineAddr {
        &self.engine
    }

    /// The bollard client, for callers that build images (recipes, tests).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Makes sure the users' network exists, isolated, with its firewall rules when
    /// `isolate_host` asks for them; looked at again at most every 30 s, and at once after a
    /// failure. Fails with [`SpawnError::Isolation`] when the isolation cannot be enforced.
    pub async fn prepare_network(&self) -> Result<(), SpawnError> {
        self.prepare(false).await
    }

    /// [`Self::prepare_network`] without trusting an earlier answer: the rules are looked for
    /// one by one, and whatever went missing (a firewall reload) is put back.
    async fn prepare(&self, fresh: bool) -> Result<(), SpawnError> {
        let mut checked = self.network_checked.lock().await;
        if !fresh && checked.is_some_and(|at| at.elapsed() < NETWORK_RECHECK) {
            return Ok(());
        }
        *checked = None;
        let bridge = network::ensure_network(&self.docker, &self.config).await?.bridge;
        if self.config.isolate_host {
            // The hub logs when isolation starts and stops failing; this is every attempt.
            let firewall = Firewall::new(&self.config, &bridge, self.hub_api.get().copied());
            let added = firewall.enforce().await.map_err(|e| {
                tracing::debug!(bridge = %bridge, error = %e, "servers cannot be isolated");
                SpawnError::Isolation(e.to_string())
            })?;
            let repair = self.rules_seen.swap(true, Ordering::Relaxed);
            if !added.is_empty() && repair {
                tracing::warn!(bridge = %bridge, restored = ?added, "firewall rules for servers had gone (a firewall reload?); put back");
            } else if !added.is_empty() {
                tracing::info!(bridge = %bridge, ?added, "servers are kept off the host, link-local and private ranges");
            }
        }
        *checked = Some(Instant::now());
        Ok(())
    }

    /// Listens for the hub's single-user API on the users' network's gateway (`port` 0: any
    /// free one), the one address and port of the host that servers may then open
    /// connections to (the next check of the network puts the firewall's exception in place).
    /// Once per spawner.
    pub async fn bind_hub_api(&self, port: u16) -> Result<tokio::net::TcpListener, SpawnError> {
        let net = network::ensure_network(&self.docker, &self.config).await?;
        let gateway = net.gateway.ok_or_else(|| {
            SpawnError::Runtime(format!("the engine names no IPv4 gateway of network {}", self.config.network.as_str()))
        })?;
        let (listener, bound) = network::listen_on_gateway(gateway, port).await?;
        self.hub_api
            .set(bound)
            .map_err(|_| SpawnError::Invalid("the hub's single-user API is bound already".into()))?;
        *self.network_checked.lock().await = None;
        Ok(listener)
    }

    /// Removes the users' network and its firewall rules (uninstalling, tests);
    /// refused by the engine while a container uses the network. Absent is success.
    pub async fn remove_network(&self) -> Result<(), SpawnError> {
        let mut checked = self.network_checked.lock().await;
        *checked = None;
        let name = self.config.network.as_str();
        let net = match self.docker.inspect_network(name, None).await {
            Ok(net) => net,
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(runtime_error(&format!("inspecting network {name}"), e)),
        };
        if net.labels.as_ref().and_then(|l| l.get(LABEL_HUB)).map(String::as_str) != Some(self.config.hub_id.as_str()) {
            return Err(SpawnError::Invalid(format!("network {name} was not created by hub {}", self.config.hub_id)));
        }
        let bridge = net.options.as_ref().and_then(|o| o.get("com.docker.network.bridge.name")).cloned();
        match self.docker.remove_network(name).await {
            Ok(()) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(runtime_error(&format!("removing network {name}"), e)),
        }
        if let Some(bridge) = bridge
            && let Err(e) = Firewall::new(&self.config, &bridge, self.hub_api.get().copied()).remove().await
        {
            tracing::warn!(bridge = %bridge, error = %e, "could not remove the network's firewall rules");
        }
        Ok(())
    }

    /// The container's address on the users' network.
    fn ip_of(&self, c: &ContainerInspectResponse) -> Option<IpAddr> {
        let nets = c.network_settings.as_ref()?.networks.as_ref()?;
        nets.get(self.config.network.as_str())?.ip_address.as_deref()?.parse().ok()
    }

    /// The engine's filter for everything labelled with this hub.
    fn hub_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={}", self.config.hub_id)])])
    }
}

/// Each call goes to the file of its capability (see the module docs).
#[async_trait::async_trait]
impl Spawner for DockerSpawner {
    async fn start(&self, spec: &ServerSpec, progress: ProgressSender) -> Result<Started, SpawnError> {
        self.start_server(spec, progress).await
    }

    async fn poll(&self, state: &SpawnerState) -> Result<ServerStatus, SpawnError> {
        self.poll_server(state).await
    }

    async fn stop(&self, state: &SpawnerState) -> Result<(), SpawnError> {
        self.stop_server(state).await
    }

    async fn list(&self) -> Result<Vec<ObservedServer>, SpawnError> {
        self.list_servers().await
    }

    async fn logs(&self, state: &SpawnerState, tail: usize) -> Result<String, SpawnError> {
        self.server_logs(state, tail).await
    }

    async fn exits(&self) -> Result<BoxStream<'static, ServerExit>, SpawnError> {
        Ok(events::exit_stream(self.docker.clone(), self.config.hub_id.clone()))
    }

    async fn usage(&self) -> Result<Vec<ServerUsage>, SpawnError> {
        self.live_usage().await
    }

    async fn storage_usage(&self, home: &Storage) -> Result<Option<u64>, SpawnError> {
        self.volume_usage(home).await
    }

    async fn remove_storage(&self, home: &Storage) -> Result<bool, SpawnError> {
        self.remove_volume(home).await
    }

    fn storage_name(&self, storage: &Storage) -> String {
        self.volume_of(storage)
    }

    async fn volumes(&self) -> Result<Vec<StoredVolume>, SpawnError> {
        self.list_volumes().await
    }

    async fn copy_files(&self, from: &Storage, into: &Storage, subdir: &str) -> Result<u64, SpawnError> {
        self.copy_between(from, into, subdir).await
    }

    async fn archive(&self, storage: &Storage) -> Result<BoxStream<'static, Result<Bytes, SpawnError>>, SpawnError> {
        self.archive_files(storage).await
    }

    async fn resume_paused(&self) -> Result<usize, SpawnError> {
        self.resume_all_paused().await
    }

    async fn snapshot(&self, storage: &Storage) -> Result<BoxStream<'static, Result<Bytes, SpawnError>>, SpawnError> {
        self.snapshot_files(storage).await
    }

    async fn restore(
        &self,
        storage: &Storage,
        subdir: &str,
        tar: BoxStream<'static, Result<Bytes, std::io::Error>>,
    ) -> Result<u64, SpawnError> {
        self.restore_files(storage, subdir, tar).await
    }

    async fn check_source(&self, source: &MountSource) -> Result<(), SpawnError> {
        self.check_mount_source(source).await
    }

    async fn inspect_image(&self, image: &ImageRef) -> Result<Option<ImageInfo>, SpawnError> {
        self.image_info(image).await
    }

    async fn commit_server(
        &self,
        state: &SpawnerState,
        tag: &ImageRef,
        labels: &std::collections::BTreeMap<String, String>,
        max_bytes: u64,
    ) -> Result<ImageInfo, SpawnError> {
        self.commit_running(state, tag, labels, max_bytes).await
    }

    async fn check_isolation(&self) -> Result<Isolation, SpawnError> {
        self.prepare(true).await?;
        Ok(if self.config.isolate_host { Isolation::Full } else { Isolation::ServersOnly })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_engine_is_a_clear_error() {
        let err = DockerSpawner::connect_at("unix:///nonexistent/docker.sock".into(), DockerConfig::default())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock: is it running"),
            "{text}"
        );
        let err = DockerSpawner::connect_at("ssh://host".into(), DockerConfig::default()).await.unwrap_err();
        assert!(matches!(err, SpawnError::Invalid(_)), "{err}");
    }

    #[test]
    fn state_round_trips() {
        let s = DockerState {
            container_id: "abc".into(),
            container_name: "labhub_alice".into(),
            volume: "labhub-home_alice".into(),
            ip: Some("172.18.0.2".parse().unwrap()),
            port: 8888,
            kind: ImageKind::Jupyter,
        };
        assert_eq!(DockerState::from_json(&s.to_json()).unwrap(), s);
        assert!(DockerState::from_json(&serde_json::json!({"x": 1})).is_err());
    }
}
