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

use crate::{GroupId, ImageKind, ImageRef, NodeName, Resources, Secret, ServerName, UserId, UserName};

/// The spawner's own bookkeeping for one server, opaque to the hub.
pub type SpawnerState = serde_json::Value;

/// Whose a server or a storage volume is, as the runtime's labels record it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An account, by its id: everything this hub creates for a user is keyed so.
    User(UserId),
    /// A group, by its id (its shared folder).
    Group(GroupId),
    /// Made before servers and homes were keyed by account id: only the name its owner had
    /// then, which a later account may have taken. Never trusted to mean an account by itself.
    LegacyName(UserName),
}

/// Storage the hub addresses: a home, a group's shared folder, or a volume by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// The home of an account (of one of its servers, where each server has its own), keyed
    /// by the account's id.
    Home { owner: UserId, server: Option<ServerName> },
    /// A group's shared folder, keyed by the group's id.
    Group(GroupId),
    /// A volume of an account's besides its home (a backup restored for it), keyed by the
    /// account's id and a key of `a-z`, `0-9`, `.` (e.g. `backup.12`); created when absent.
    Attached { owner: UserId, key: String },
    /// A storage object by its runtime name: an adopted legacy home, an orphan, or a volume
    /// an admin registered as a dataset.
    Volume(String),
}

/// A volume the runtime holds for this hub, whoever it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVolume {
    /// Its runtime name (what [`Storage::Volume`] addresses).
    pub volume: String,
    /// Whose it was made for.
    pub owner: Owner,
    /// Its owner's name when it was made (a label for people, never trusted as an owner).
    pub made_for: Option<UserName>,
    /// The server it was made for, where each server has its own home.
    pub server: Option<ServerName>,
    /// When the runtime created it.
    pub created: Option<OffsetDateTime>,
    /// Bytes used, when measured (the figure may be up to half a minute old).
    pub bytes: Option<u64>,
}

/// Where a mounted folder's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// Storage of the hub's (a group's shared folder, created when absent).
    Storage(Storage),
    /// A volume an admin registered (a dataset); never created.
    Volume(String),
    /// A folder of the host an admin registered (a dataset); never created.
    HostPath(String),
}

/// A folder mounted in a server besides its home: a group's shared folder, a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    pub source: MountSource,
    /// Where, relative to the home: `shared/team`, `datasets/census`.
    pub at: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// What to do when the source is missing at start: a dataset is left out (with a line in
    /// the start's progress), never a failed start.
    pub optional: bool,
}

/// Everything a spawner needs to start one server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Whose server, by account id: what names and labels its runtime objects.
    pub owner: UserId,
    /// The owner's name now, for the server's URL, environment and logs.
    pub user: UserName,
    /// The home to mount: the owner's own, or an adopted legacy one.
    pub home: Storage,
    /// Folders mounted besides the home (groups' shared folders, datasets).
    pub mounts: Vec<ExtraMount>,
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
    /// Extra environment for the server process (for JupyterHub's contract, its
    /// `JUPYTERHUB_*` variables).
    pub env: BTreeMap<String, String>,
    /// The contract it speaks: JupyterHub's runs `jupyterhub-singleuser`, which checks who is
    /// asking with the hub rather than trusting the proxy's token.
    pub contract: crate::Contract,
    /// Swarm placement constraints of its catalogue entry, added to the site's.
    pub placement: Vec<crate::Placement>,
    /// How long to wait for the server to answer before giving up and cleaning up.
    pub start_timeout: Duration,
    /// The node the server must run on (its owner's pin, see [`Spawner::place`]); `None`
    /// lets the runtime choose.
    pub node: Option<NodeName>,
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
    /// The image's repository digest (`name@sha256:…`) when it has one (pulled or pushed
    /// images; images built here have none).
    pub repo_digest: Option<String>,
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
    pub owner: Owner,
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
    pub owner: Owner,
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
    pub owner: Owner,
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

/// How far a spawner keeps servers apart, as it is configured to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// From each other, the host and the networks they may not reach.
    Full,
    /// From each other only: the site turned the rest off.
    ServersOnly,
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
    /// The isolation the spawner was configured with cannot be enforced (why, for an admin),
    /// so it runs no server.
    #[error("the hub cannot keep servers isolated ({0}), so it starts none until an admin fixes this")]
    Isolation(String),
    /// What a commit would save is larger than allowed (bytes); nothing was made.
    #[error("the server's changes hold {size} bytes, more than the {limit} allowed")]
    TooLarge { size: u64, limit: u64 },
}

/// Where users' servers run. Implementations keep no per-server state in memory: whatever
/// addresses a server is in the [`SpawnerState`] that `start` and `list` return.
///
/// # What callers must do
/// - **One start per server at a time.** Two `start`s of the same (user, server) may not
///   overlap; the service serialises them (the user's row lock in `start_server`, and a
///   pending server is never started again). An implementation need not cope: with
///   Docker's, at most one of two overlapping starts succeeds, and the other fails, not
///   always with "already running".
/// - **Exits are hints.** An exit event may come twice and may be about an older run of the
///   server; before acting, ask [`Spawner::poll`] with the state of the run you know (the
///   service does). See [`Spawner::exits`] for what can be missed.
/// - **Storage goes last.** [`Spawner::remove_storage`] is refused while a server uses the
///   storage, but the service checks first that none of the user's servers is active.
///
/// # What callers may rely on
/// - No server is left running by a `start` that failed; a start whose future is dropped
///   removes what it created in the background (details on [`Spawner::start`]).
/// - **Isolation fails closed.** A `start` whose isolation cannot be enforced fails with
///   [`SpawnError::Isolation`] before anything runs; [`Spawner::check_isolation`] says the
///   same at any time and repairs what can be repaired.
/// - `stop`, `remove_storage` and `logs` treat a server or storage that is already gone as
///   done, so they may be repeated.
/// - A hub restart touches no server: `list` finds them again from the runtime's labels.
#[async_trait::async_trait]
pub trait Spawner: Send + Sync + 'static {
    /// Starts a server, reporting progress, and returns once it answers on its port.
    ///
    /// On any failure nothing is left running, and the user's storage is kept (created if it
    /// did not exist, unless the image was missing or isolation failed).
    /// [`SpawnError::ImageMissing`] comes before anything is created, so a caller may build
    /// the image and call `start` again. A start whose isolation cannot be enforced fails with
    /// [`SpawnError::Isolation`] before the storage or a container is made.
    /// A server of the same (user, server) that still runs is refused ([`SpawnError::Invalid`],
    /// "already running"); an exited one left behind is replaced.
    ///
    /// Dropping the future abandons the start: a container it created is removed by a
    /// background task on the current runtime. That task cannot run when the runtime itself
    /// is shutting down (the hub stopping mid-start), and a container the engine was creating
    /// at the moment of the drop is not known yet; either is left behind, found by the next
    /// `list` (a reconcile adopts it if it runs, otherwise stops it) and replaced by the next
    /// `start` of that server.
    async fn start(&self, spec: &ServerSpec, progress: ProgressSender) -> Result<Started, SpawnError>;

    /// Whether the run that `state` addresses still runs: its address, or why it stopped
    /// ("its container is gone", an exit code). `Err` only when the runtime cannot be asked
    /// or `state` is not this spawner's.
    async fn poll(&self, state: &SpawnerState) -> Result<ServerStatus, SpawnError>;

    /// Stops the run that `state` addresses (a short grace period, then a kill) and removes
    /// it; the storage is kept. A run that already stopped or is gone is success, so `stop`
    /// may be repeated and may follow an exit event.
    async fn stop(&self, state: &SpawnerState) -> Result<(), SpawnError>;

    /// Every server the runtime holds for this hub, in any state, for reconciling at boot:
    /// running (with its address) or stopped (exited, created but never started, or running
    /// off the users' network), each with a state that `poll`, `stop` and `logs` accept.
    /// Runtime objects whose labels do not name a valid user and server are left out.
    /// A start in flight shows up too (stopped until its container runs), so reconcile while
    /// none is in flight, as the hub does at boot.
    async fn list(&self) -> Result<Vec<ObservedServer>, SpawnError>;

    /// The last `tail` lines of a server's output, secrets blanked; empty when it is gone.
    async fn logs(&self, state: &SpawnerState, tail: usize) -> Result<String, SpawnError>;

    /// Servers of this hub that end from the moment of this call on (crash, out of memory,
    /// killed behind the hub's back, and stops the hub asked for), as an endless stream.
    ///
    /// The stream reconnects by itself when the runtime's event connection breaks, asking for
    /// the events since the last one it handed out, so a short break loses nothing. An event
    /// may come twice at such a boundary. Exits are lost when the runtime no longer has them
    /// to replay: Docker keeps only its last 256 events of any kind, and none across its own
    /// restart. A server that ended before the call is not reported either, so open the
    /// stream before a reconcile to leave no window between the two.
    async fn exits(&self) -> Result<BoxStream<'static, ServerExit>, SpawnError>;

    /// Live resource use of every running server of this hub; a server that cannot be
    /// measured at that moment (it just stopped) is left out.
    async fn usage(&self) -> Result<Vec<ServerUsage>, SpawnError>;

    /// Bytes used by storage, `None` when it does not exist yet. The figure may be up to half a
    /// minute old.
    async fn storage_usage(&self, storage: &Storage) -> Result<Option<u64>, SpawnError>;

    /// Deletes storage for good: `true` when it was removed, `false` when there was none (so it
    /// may be repeated). Refused while a server uses it, and for storage this hub did not
    /// create. Where servers share one home per user, [`Storage::Home`]'s `server` does not
    /// narrow it: the user's home goes.
    async fn remove_storage(&self, storage: &Storage) -> Result<bool, SpawnError>;

    /// The runtime's name of `storage` (what [`StoredVolume::volume`] says of it), whether it
    /// exists or not.
    fn storage_name(&self, storage: &Storage) -> String;

    /// Every volume this hub created, whoever it belongs to (the hub finds orphans and adopts
    /// legacy homes from this).
    async fn volumes(&self) -> Result<Vec<StoredVolume>, SpawnError>;

    /// Copies every file of `from` into the directory `subdir` of `into` (created, with `into`
    /// itself when absent), keeping owners and modes; returns the bytes copied. Refused while
    /// a server uses `into`. Runs no program in either: the runtime itself reads and writes
    /// the files.
    async fn copy_files(&self, from: &Storage, into: &Storage, subdir: &str) -> Result<u64, SpawnError>;

    /// The files of `storage` as an uncompressed tar stream (entries `./…`), read by the
    /// runtime through a read-only mount, whether a server uses it or not. Dropping the stream
    /// ends the read and removes what the read needed.
    async fn archive(
        &self,
        storage: &Storage,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes, SpawnError>>, SpawnError>;

    /// The files of `storage` as [`Spawner::archive`] gives them, but as they were at one
    /// instant: every server using the storage is paused (frozen between two instructions,
    /// its connections kept open) from before the read until the stream ends or is dropped,
    /// so the stream holds every write completed before the pause and none after. It ends
    /// with an error when a server began using the storage during the read. Servers left
    /// paused by a process that died mid-read stay paused until [`Spawner::resume_paused`].
    async fn snapshot(
        &self,
        storage: &Storage,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes, SpawnError>>, SpawnError>;

    /// Resumes every server of this hub that is paused; how many it resumed. Only servers a
    /// [`Spawner::snapshot`] paused are ever paused, so the caller must hold what keeps any
    /// snapshot from running anywhere (the backup run lock), or it would thaw a read in
    /// progress. Runtimes that cannot pause have nothing to resume.
    async fn resume_paused(&self) -> Result<usize, SpawnError> {
        Ok(0)
    }

    /// Unpacks a tar stream into `subdir` of `storage` (`""`: its root; created with the
    /// storage when absent), over files of the same names; returns the bytes read. Refused
    /// while a server uses it. A stream that fails midway leaves what was written so far.
    async fn restore(
        &self,
        storage: &Storage,
        subdir: &str,
        tar: BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
    ) -> Result<u64, SpawnError>;

    /// Whether a registered source (a dataset's volume or host folder) exists, as the runtime
    /// sees it; a clear error naming it when not.
    async fn check_source(&self, source: &MountSource) -> Result<(), SpawnError>;

    /// Saves the running server `state` addresses as a new image tagged `tag`, with `labels`
    /// added to its base image's; returns the new image. The server is paused for the commit
    /// (its processes frozen, connections kept) and resumes after it.
    ///
    /// Only the container's own files go in: storage and every mount (the home, datasets) are
    /// never part of the image, and the image keeps the configuration its server was started
    /// from (its command, user, environment variables) rather than the server's, whose
    /// environment holds its secrets. Refused, with nothing made, when the server is not
    /// running or the files it wrote outside its mounts exceed `max_bytes`
    /// ([`SpawnError::TooLarge`]).
    async fn commit_server(
        &self,
        state: &SpawnerState,
        tag: &ImageRef,
        labels: &std::collections::BTreeMap<String, String>,
        max_bytes: u64,
    ) -> Result<ImageInfo, SpawnError>;

    /// What the runtime holds of an image, `None` when absent; never pulls.
    async fn inspect_image(&self, image: &ImageRef) -> Result<Option<ImageInfo>, SpawnError>;

    /// Makes sure servers are kept apart as configured — from each other, the host and the
    /// addresses they may not reach — putting back whatever went missing (firewall rules a
    /// reload removed, which protects running servers again too), without trusting an
    /// earlier answer; says how far that goes. [`SpawnError::Isolation`] says why it cannot
    /// be enforced; any other error, that the runtime could not be asked. The hub calls it
    /// periodically.
    async fn check_isolation(&self) -> Result<Isolation, SpawnError>;

    /// Where to pin a user who has no node yet, when this runtime keeps each user's homes on
    /// one node (`None` when it does not: one engine, or homes that follow their owner);
    /// `pinned` is how many users each node holds now, `contract` what the server they are
    /// starting speaks (a runtime may run some only on certain nodes). The hub records the
    /// answer and sets it as [`ServerSpec::node`] on every start of theirs.
    async fn place(
        &self,
        _pinned: &BTreeMap<NodeName, u64>,
        _contract: crate::Contract,
    ) -> Result<Option<NodeName>, SpawnError> {
        Ok(None)
    }
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
///
/// Callers run at most one build per tag at a time (the service keys builds by image
/// reference and lets later requests join the one in flight); two builds of one tag would
/// both finish, the later one's image winning the tag.
#[async_trait::async_trait]
pub trait ImageBuilder: Send + Sync + 'static {
    /// The names of the recipes this builder knows.
    fn recipes(&self) -> Vec<String>;

    /// Builds `recipe` and tags the result `tag`; returns the image's content id. Progress
    /// goes to `progress`; a failure says why with the build's last output lines.
    ///
    /// `tag` is moved only when the build succeeds, so a failed or abandoned build leaves
    /// the previous image in place. Dropping the future stops the build: the build's
    /// processes are asked to end (SIGTERM) and clean up their temporary files themselves.
    async fn build(&self, recipe: &str, tag: &ImageRef, progress: ProgressSender) -> Result<String, SpawnError>;

    /// Builds an environment from its source (`crate::environment`): fetches the repository
    /// at the ref, reads its recipe, builds on the base without pulling, privileges or the
    /// engine's socket inside the build, within the limits. Every line of the build's output
    /// goes to `progress` (with a percent from the build's steps).
    ///
    /// `spec.tag` is set only when the build succeeds: a failed, timed-out or abandoned build
    /// leaves no tagged image and the previous one in place.
    async fn build_environment(
        &self,
        spec: &crate::environment::EnvBuildSpec,
        progress: ProgressSender,
    ) -> crate::environment::EnvBuildOutcome;

    /// The images this hub built from environments' sources.
    async fn built_images(&self) -> Result<Vec<crate::environment::BuiltImage>, SpawnError>;

    /// Removes an image this hub built, with its tags; `false` (and nothing removed) when a
    /// container uses it or it is gone already.
    async fn remove_built_image(&self, id: &str) -> Result<bool, SpawnError>;
}
