//! The `Spawner` seam: where a user's server runs.
//!
//! One stateless implementation serves every user. Whatever it needs to find a server
//! again (a container id, a volume name) it returns as [`SpawnerState`], which the hub
//! keeps in Postgres (`servers.spawner_state`) and hands back on every later call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{ImageKind, ImageRef, Resources, Secret, ServerName, UserName};

/// The spawner's own bookkeeping for one server, opaque to the hub.
pub type SpawnerState = serde_json::Value;

/// Everything a spawner needs to start one server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Whose server.
    pub user: UserName,
    /// Which of their servers; `None` is the default server.
    pub server: Option<ServerName>,
    /// The catalogue image to run.
    pub image: ImageRef,
    /// How to run it.
    pub kind: ImageKind,
    /// The port the server listens on inside the container.
    pub port: u16,
    /// For `custom` images: the command to run (otherwise the kind decides).
    pub command: Option<Vec<String>>,
    /// Limits applied to the container.
    pub resources: Resources,
    /// The route prefix the server is reached under, e.g. `/user/alice/` (always ends in `/`).
    pub base_url: String,
    /// The secret the proxy injects on every request; the server accepts nothing else.
    pub token: Secret<String>,
    /// Extra environment for the server process.
    pub env: BTreeMap<String, String>,
    /// How long to wait for the server to answer before giving up and cleaning up.
    pub start_timeout: Duration,
}

/// One step of a start, for the progress bar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    /// What is happening, for the user.
    pub message: String,
}

/// Where a spawner reports progress; sending never blocks the start.
pub type ProgressSender = tokio::sync::mpsc::UnboundedSender<Progress>;

/// A server that answered on its port.
#[derive(Debug, Clone)]
pub struct Started {
    /// Where the proxy reaches it.
    pub endpoint: SocketAddr,
    /// The spawner's bookkeeping, to be stored and handed back.
    pub state: SpawnerState,
    /// The image's content id the server really runs (reproducibility).
    pub image_digest: String,
}

/// What `poll` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStatus {
    /// Running, reachable at this address.
    Running { endpoint: SocketAddr },
    /// Gone or exited; `reason` says why in words a user understands.
    Stopped { reason: String },
}

/// A server the runtime holds for this hub, found while reconciling.
#[derive(Debug, Clone)]
pub struct ObservedServer {
    /// Whose server, read back from the runtime's labels.
    pub user: UserName,
    /// Which server.
    pub server: Option<ServerName>,
    /// The spawner state that addresses it.
    pub state: SpawnerState,
    /// Running and reachable here, or exited.
    pub status: ServerStatus,
}

/// A server that ended while the hub was watching.
#[derive(Debug, Clone)]
pub struct ServerExit {
    /// Whose server.
    pub user: UserName,
    /// Which server.
    pub server: Option<ServerName>,
    /// The runtime id of what exited, so a stale event cannot stop a newer server.
    pub runtime_id: String,
    /// Why, in words a user understands ("exited with code 137 (killed: out of memory)").
    pub reason: String,
}

/// Live resource use of one running server.
#[derive(Debug, Clone)]
pub struct ServerUsage {
    /// Whose server.
    pub user: UserName,
    /// Which server.
    pub server: Option<ServerName>,
    /// CPU in use, in millicores, averaged over the runtime's sampling interval.
    pub cpu_millis: u32,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
}

/// What the runtime knows of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The content id (`sha256:…`).
    pub digest: String,
    /// Size on disk in bytes.
    pub size_bytes: u64,
    /// When it was created, if the runtime says.
    pub created: Option<OffsetDateTime>,
}

/// Why a spawner call failed, worded for the user who clicked Start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The image is not on this machine and could not be pulled.
    #[error(
        "image {image} is not available on this machine and could not be pulled ({detail}); ask an admin to build or load it"
    )]
    ImageMissing { image: String, detail: String },
    /// The server did not answer in time; it was removed.
    #[error("the server did not answer within {seconds} s and was stopped; its last log lines: {log_tail}")]
    Timeout { seconds: u64, log_tail: String },
    /// The server process ended during start.
    #[error("the server exited during start ({reason}); its last log lines: {log_tail}")]
    Exited { reason: String, log_tail: String },
    /// The container runtime could not be reached or refused the request.
    #[error("the container runtime failed: {0}")]
    Runtime(String),
    /// Something the caller handed in cannot be run.
    #[error("{0}")]
    Invalid(String),
}

/// Where users' servers run. Implementations keep no per-server state in memory.
#[async_trait::async_trait]
pub trait Spawner: Send + Sync + 'static {
    /// Starts a server, reporting progress, and returns once it answers on its port.
    /// On any failure nothing is left running (the user's storage is kept).
    async fn start(&self, spec: &ServerSpec, progress: ProgressSender) -> Result<Started, SpawnError>;

    /// Finds out whether a server is still running.
    async fn poll(&self, state: &SpawnerState) -> Result<ServerStatus, SpawnError>;

    /// Stops and removes a server; its storage is kept. Stopping a gone server succeeds.
    async fn stop(&self, state: &SpawnerState) -> Result<(), SpawnError>;

    /// Every server the runtime holds for this hub, for reconciling at boot.
    async fn list(&self) -> Result<Vec<ObservedServer>, SpawnError>;

    /// The last `tail` lines of a server's output.
    async fn logs(&self, state: &SpawnerState, tail: usize) -> Result<String, SpawnError>;

    /// Servers that end while the hub runs (crash, out of memory, killed behind the hub's back).
    async fn exits(&self) -> Result<BoxStream<'static, ServerExit>, SpawnError>;

    /// Live resource use of every running server of this hub.
    async fn usage(&self) -> Result<Vec<ServerUsage>, SpawnError>;

    /// Bytes used by a user's storage (their volume), `None` when it does not exist yet.
    async fn storage_usage(&self, user: &UserName, server: Option<&ServerName>) -> Result<Option<u64>, SpawnError>;

    /// Deletes a user's storage for good; refuses while a server uses it.
    async fn remove_storage(&self, user: &UserName, server: Option<&ServerName>) -> Result<bool, SpawnError>;

    /// What the runtime holds of an image, `None` when absent.
    async fn inspect_image(&self, image: &ImageRef) -> Result<Option<ImageInfo>, SpawnError>;
}

/// Where a server is in its life, as the hub records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    /// Starting: the container is being created or the server is not answering yet.
    Pending,
    /// Up and reachable through the proxy.
    Running,
    /// Being stopped.
    Stopping,
    /// Not running (never started, stopped, or failed to start).
    Stopped,
}

impl ServerState {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }
}

impl TryFrom<String> for ServerState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "pending" => Ok(Self::Pending),
            "running" => Ok(Self::Running),
            "stopping" => Ok(Self::Stopping),
            "stopped" => Ok(Self::Stopped),
            _ => Err(format!("unknown server state {s:?}")),
        }
    }
}

/// Builds catalogue images locally from recipes, for machines that cannot pull them.
#[async_trait::async_trait]
pub trait ImageBuilder: Send + Sync + 'static {
    /// The names of the recipes this builder knows.
    fn recipes(&self) -> Vec<String>;

    /// Builds `recipe` and tags the result `tag`; returns the image's content id.
    async fn build(&self, recipe: &str, tag: &ImageRef, progress: ProgressSender) -> Result<String, SpawnError>;
}
