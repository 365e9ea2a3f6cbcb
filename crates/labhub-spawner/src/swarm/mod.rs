//! `SwarmSpawner`: the `Spawner` seam on a Docker Swarm, one service with one task per
//! server (`[docker] mode = "swarm"`).
//!
//! The service is built from the engine mode's container plan (`spec`), on a labhub-owned
//! overlay kept apart as `network` describes; a start follows the task's states as progress
//! (`start`, `tasks`); `observe` polls, stops and lists services for reconcile; `nodes`
//! refuses a multi-node swarm that would lose homes and reaches the other nodes' engines;
//! `placement` pins users to nodes (`swarm_homes = "pinned"`); `distribute` copies images to
//! the node a server is pinned to (`swarm_images = "copy"`). What is node-local is the engine
//! spawner's job on the manager, delegated: images (inspect, build), storage (volumes, their
//! usage, archives, snapshots, restores, copies), dataset sources, live usage and exit
//! events (the task containers' `die` events carry the service's labels). That is exact on
//! a single node; on several nodes it sees the manager's share only (the README says so).

mod distribute;
mod guard;
mod network;
mod nodes;
mod observe;
mod placement;
mod registry;
mod spec;
mod start;
mod tasks;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bytes::Bytes;
use futures::stream::BoxStream;
use labhub_core::spawner::{
    ImageInfo, Isolation, ObservedServer, ProgressSender, ServerExit, ServerSpec, ServerStatus, ServerUsage,
    SpawnError, Spawner, SpawnerState, Started, StoredVolume,
};
use labhub_core::{ImageKind, ImageRef, MountSource, NodeName, Storage};
use serde::{Deserialize, Serialize};

pub use distribute::{Copied, copy_image};
pub use network::check_swarm_subnet;

/// How long a swarm and overlay found in order are trusted before a start looks again (as
/// the engine mode's network): a burst of starts costs one look, not one each.
const RECHECK: Duration = Duration::from_secs(30);

use crate::config::{DockerConfig, SwarmHomes};
use crate::http::EngineAddr;
use crate::spawner::DockerSpawner;

/// What the spawner stores per server (`servers.spawner_state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SwarmState {
    service_id: String,
    service_name: String,
    volume: String,
    ip: Option<IpAddr>,
    port: u16,
    kind: ImageKind,
}

impl SwarmState {
    fn from_json(state: &SpawnerState) -> Result<Self, SpawnError> {
        serde_json::from_value(state.clone())
            .map_err(|e| SpawnError::Invalid(format!("this server's stored state is not a Swarm service's: {e}")))
    }

    fn to_json(&self) -> SpawnerState {
        // A struct of strings and numbers always serialises.
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Runs each user's server as a Swarm service on the manager `DOCKER_HOST` names.
pub struct SwarmSpawner {
    /// The manager's engine, for what is node-local (see the module docs).
    engine: Arc<DockerSpawner>,
    docker: Docker,
    addr: EngineAddr,
    config: DockerConfig,
    /// The manager's node: its id and host name (where the hub runs).
    manager: (String, NodeName),
    /// When the swarm, the overlay and the rules were last found in order, and the overlay's
    /// id; the lock also serialises the overlay's creation among concurrent starts.
    checked: tokio::sync::Mutex<Option<(Instant, String)>>,
    /// The hub's single-user API on this node's `docker_gwbridge` gateway, once bound.
    hub_api: std::sync::OnceLock<std::net::SocketAddrV4>,
}

impl std::fmt::Debug for SwarmSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmSpawner").field("config", &self.config).finish()
    }
}

impl SwarmSpawner {
    /// Connects to the manager `DOCKER_HOST` names; refuses an engine that is not a Swarm
    /// manager, with what to do.
    pub async fn connect(config: DockerConfig) -> Result<Self, SpawnError> {
        let engine = Arc::new(DockerSpawner::connect(config.clone()).await?);
        Self::on(engine).await
    }

    /// The Swarm spawner over an engine spawner already connected to a manager.
    pub async fn on(engine: Arc<DockerSpawner>) -> Result<Self, SpawnError> {
        if !engine.config().internet_access {
            return Err(SpawnError::Invalid(
                "[docker] internet_access = false is not supported in Swarm mode: the hub reaches servers through \
                 docker_gwbridge, which the tasks of an internal overlay do not join"
                    .into(),
            ));
        }
        let docker = engine.docker().clone();
        let manager = nodes::check_manager(&docker).await?;
        Ok(Self {
            manager,
            addr: engine.engine_addr().clone(),
            config: engine.config().clone(),
            docker,
            engine,
            checked: tokio::sync::Mutex::new(None),
            hub_api: std::sync::OnceLock::new(),
        })
    }

    /// Listens for the hub's single-user API on this node's `docker_gwbridge` gateway at
    /// `port` (0: any free one), the one address of the host its tasks may open connections
    /// to (the firewall gets exactly that exception). Servers of JupyterHub's contract run on
    /// this node only (see `spec.rs`): elsewhere the gateway is another host.
    pub async fn bind_hub_api(&self, port: u16) -> Result<tokio::net::TcpListener, SpawnError> {
        let gateway = network::gateway_address(&self.docker).await?;
        let (listener, bound) = crate::network::listen_on_gateway(gateway, port).await?;
        self.hub_api
            .set(bound)
            .map_err(|_| SpawnError::Invalid("the hub's single-user API is bound already".into()))?;
        // The next start puts the exception in place with the other rules.
        *self.checked.lock().await = None;
        Ok(listener)
    }

    /// Removes the firewall's exception for this hub's single-user API (a test harness
    /// leaving, uninstalling); the other rules on `docker_gwbridge` stay for the node's hubs.
    pub async fn remove_hub_api_rule(&self) -> Result<(), SpawnError> {
        let Some(api) = self.hub_api.get() else { return Ok(()) };
        crate::firewall::Firewall::new(&self.config, network::GATEWAY_BRIDGE, Some(*api))
            .remove_exception()
            .await
            .map_err(|e| SpawnError::Runtime(e.to_string()))
    }

    /// The engine spawner on the manager (builds images, holds volumes).
    pub fn engine(&self) -> &Arc<DockerSpawner> {
        &self.engine
    }

    /// Makes sure the swarm may run servers, the overlay exists and its isolation holds;
    /// returns the overlay's id. Trusted for 30 s unless `fresh`, and looked at again at once
    /// after a failure.
    async fn prepare(&self, fresh: bool) -> Result<String, SpawnError> {
        let mut checked = self.checked.lock().await;
        if let Some((at, id)) = checked.as_ref()
            && !fresh
            && at.elapsed() < RECHECK
        {
            return Ok(id.clone());
        }
        *checked = None;
        nodes::check_cluster(&self.docker, &self.config).await?;
        let id = network::ensure_overlay(&self.docker, &self.config).await?;
        if self.config.isolate_host {
            let added = network::enforce_gateway_rules(&self.config, self.hub_api.get().copied()).await?;
            if !added.is_empty() {
                tracing::info!(?added, "Swarm tasks are kept off the host, link-local and private ranges");
            }
        }
        network::isolate_overlay(&id).await?;
        *checked = Some((Instant::now(), id.clone()));
        Ok(id)
    }

    /// Removes the firewall rules on `docker_gwbridge` (uninstalling, or a test harness
    /// leaving the swarm it made); they protect every labhub hub of this node.
    pub async fn remove_gateway_rules(config: &DockerConfig) -> Result<(), SpawnError> {
        crate::firewall::Firewall::new(config, network::GATEWAY_BRIDGE, None)
            .remove()
            .await
            .map_err(|e| SpawnError::Runtime(e.to_string()))
    }

    /// Removes the overlay (tests, uninstalling); refused by the engine while a task uses it.
    pub async fn remove_network(&self) -> Result<(), SpawnError> {
        match self.docker.remove_network(self.config.swarm_network.as_str()).await {
            Ok(()) => Ok(()),
            Err(e) if crate::error::is_status(&e, 404) => Ok(()),
            Err(e) => Err(crate::error::runtime_error("removing the overlay", e)),
        }
    }
}

/// Each call goes to the file of its capability, or to the engine (see the module docs).
#[async_trait::async_trait]
impl Spawner for SwarmSpawner {
    async fn start(&self, spec: &ServerSpec, progress: ProgressSender) -> Result<Started, SpawnError> {
        self.start_service(spec, progress).await
    }

    async fn poll(&self, state: &SpawnerState) -> Result<ServerStatus, SpawnError> {
        self.poll_service(state).await
    }

    async fn stop(&self, state: &SpawnerState) -> Result<(), SpawnError> {
        self.stop_service(state).await
    }

    async fn list(&self) -> Result<Vec<ObservedServer>, SpawnError> {
        self.list_services().await
    }

    async fn logs(&self, state: &SpawnerState, tail: usize) -> Result<String, SpawnError> {
        self.service_logs(state, tail).await
    }

    async fn exits(&self) -> Result<BoxStream<'static, ServerExit>, SpawnError> {
        self.engine.exits().await
    }

    async fn usage(&self) -> Result<Vec<ServerUsage>, SpawnError> {
        self.engine.usage().await
    }

    async fn storage_usage(&self, storage: &Storage) -> Result<Option<u64>, SpawnError> {
        self.engine.storage_usage(storage).await
    }

    async fn remove_storage(&self, storage: &Storage) -> Result<bool, SpawnError> {
        self.engine.remove_storage(storage).await
    }

    fn storage_name(&self, storage: &Storage) -> String {
        self.engine.storage_name(storage)
    }

    async fn volumes(&self) -> Result<Vec<StoredVolume>, SpawnError> {
        self.engine.volumes().await
    }

    async fn copy_files(&self, from: &Storage, into: &Storage, subdir: &str) -> Result<u64, SpawnError> {
        self.engine.copy_files(from, into, subdir).await
    }

    async fn archive(&self, storage: &Storage) -> Result<BoxStream<'static, Result<Bytes, SpawnError>>, SpawnError> {
        self.engine.archive(storage).await
    }

    async fn snapshot(&self, storage: &Storage) -> Result<BoxStream<'static, Result<Bytes, SpawnError>>, SpawnError> {
        self.engine.snapshot(storage).await
    }

    async fn resume_paused(&self) -> Result<usize, SpawnError> {
        // The engine's snapshot paused the tasks' containers, by the hub's label.
        self.engine.resume_paused().await
    }

    async fn commit_server(
        &self,
        state: &SpawnerState,
        tag: &ImageRef,
        labels: &std::collections::BTreeMap<String, String>,
        max_bytes: u64,
    ) -> Result<ImageInfo, SpawnError> {
        // The task's container, committed by the engine it runs on: this node's.
        let s = SwarmState::from_json(state)?;
        let task = match self.docker.inspect_service(&s.service_id, None).await {
            Ok(_) => self.newest_task(&s.service_id).await?,
            Err(e) if crate::error::is_status(&e, 404) => None,
            Err(e) => return Err(crate::error::runtime_error("inspecting the server's service", e)),
        };
        let container = task.map(|t| t.status.container_status.container_id).unwrap_or_default();
        if container.is_empty() {
            return Err(SpawnError::Invalid("the server is not running".into()));
        }
        match self
            .docker
            .inspect_container(&container, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
        {
            Ok(_) => self.engine.commit_container(&container, tag, labels, max_bytes).await,
            Err(e) if crate::error::is_status(&e, 404) => Err(SpawnError::Invalid(
                "this server runs on another Swarm node; saving an environment works for servers on the hub's node"
                    .into(),
            )),
            Err(e) => Err(crate::error::runtime_error("inspecting the server's container", e)),
        }
    }

    async fn restore(
        &self,
        storage: &Storage,
        subdir: &str,
        tar: BoxStream<'static, Result<Bytes, std::io::Error>>,
    ) -> Result<u64, SpawnError> {
        self.engine.restore(storage, subdir, tar).await
    }

    async fn check_source(&self, source: &MountSource) -> Result<(), SpawnError> {
        self.engine.check_source(source).await
    }

    async fn inspect_image(&self, image: &ImageRef) -> Result<Option<ImageInfo>, SpawnError> {
        self.engine.inspect_image(image).await
    }

    async fn check_isolation(&self) -> Result<Isolation, SpawnError> {
        self.prepare(true).await?;
        Ok(if self.config.isolate_host { Isolation::Full } else { Isolation::ServersOnly })
    }

    async fn place(
        &self,
        pinned: &BTreeMap<NodeName, u64>,
        contract: labhub_core::Contract,
    ) -> Result<Option<NodeName>, SpawnError> {
        if self.config.swarm_homes != SwarmHomes::Pinned {
            return Ok(None);
        }
        if contract == labhub_core::Contract::Jupyterhub {
            // Such a server runs on the hub's node only (see `spec.rs`): so do its owner's homes.
            return Ok(Some(self.manager.1.clone()));
        }
        // The nodes the hub places servers on: its own and those it reaches (`swarm_nodes`).
        let ready = nodes::ready_nodes(&self.docker).await?;
        let candidates: Vec<NodeName> = std::iter::once(&self.manager.1)
            .chain(self.config.swarm_nodes.iter().map(|n| &n.hostname))
            .filter(|n| ready.contains(n))
            .cloned()
            .collect();
        placement::choose(&candidates, pinned).map(Some).ok_or_else(|| {
            SpawnError::Runtime("no node that may run servers is up (the manager and [[docker.swarm_nodes]])".into())
        })
    }
}
