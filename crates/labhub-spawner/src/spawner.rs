//! `DockerSpawner`: the `Spawner` seam on a local Docker engine, through bollard.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, ContainerSummaryStateEnum, ImageInspect, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StartContainerOptions, StatsOptions, StopContainerOptions,
    UploadToContainerOptions,
};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use labhub_core::spawner::{
    ImageInfo, ObservedServer, Progress, ProgressSender, ServerExit, ServerSpec, ServerStatus, ServerUsage, SpawnError,
    Spawner, SpawnerState, Started,
};
use labhub_core::{ImageKind, ImageRef, ServerName, UserName};
use serde::{Deserialize, Serialize};

use crate::config::{DockerConfig, PullPolicy};
use crate::http::{EngineAddr, engine_get, probe};
use crate::naming::{LABEL_HUB, LABEL_KIND, LABEL_PORT, LABEL_USER, LABEL_VOLUME, ServerNames, owner_from_labels};
use crate::plan::{ContainerPlan, ImageFacts, PlanContext, Readiness, SeedEntry, container_plan, exit_reason};
use crate::{events, network, usage};

/// Where bollard connects when `DOCKER_HOST` is unset.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// How long `stop` lets a server shut down cleanly before the engine kills it.
const STOP_GRACE_SECS: i32 = 5;
/// How long a network found in order is trusted before a start looks again: a burst of
/// starts then costs one network inspection and one `iptables -C`, not one each.
const NETWORK_RECHECK: Duration = Duration::from_secs(30);
/// Log lines quoted in a failed start's error.
const FAILURE_LOG_LINES: usize = 20;
/// Longest single readiness request; a server that accepts but never answers is retried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause between readiness checks; it doubles up to `readiness_interval`.
const FIRST_READINESS_PAUSE: Duration = Duration::from_millis(10);
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
/// Environment variables whose values are secrets, blanked out of logs we pass on.
const SECRET_ENV: &[&str] = &["JUPYTER_TOKEN"];

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

/// Volume name → bytes used, as measured by the engine at one moment.
type VolumeSizes = Arc<HashMap<String, u64>>;

/// Runs each user's server as a Docker container on the engine `DOCKER_HOST` names.
pub struct DockerSpawner {
    docker: Docker,
    engine: EngineAddr,
    config: DockerConfig,
    /// When the network and its host-isolation rule were last found in order; the lock
    /// also serialises network creation among this process's concurrent starts.
    network_checked: tokio::sync::Mutex<Option<Instant>>,
    /// Whether the "no iptables" warning was logged already.
    iptables_warned: AtomicBool,
    /// The last `/system/df` volume sizes and when they were read.
    df_cache: tokio::sync::Mutex<Option<(Instant, VolumeSizes)>>,
}

impl std::fmt::Debug for DockerSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerSpawner").field("engine", &self.engine).field("config", &self.config).finish()
    }
}

/// True when a bollard error is the engine answering with `status`.
pub(crate) fn is_status(e: &DockerError, status: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// A runtime failure, saying what was being done.
pub(crate) fn runtime_error(context: &str, e: impl Display) -> SpawnError {
    SpawnError::Runtime(format!("{context}: {e}"))
}

/// What the engine said, without bollard's "Docker responded with status code …" wrapper.
fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string())
}

fn send(progress: &ProgressSender, percent: u8, message: impl Into<String>) {
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
            iptables_warned: AtomicBool::new(false),
            df_cache: tokio::sync::Mutex::new(None),
        })
    }

    /// The settings this spawner runs with.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The bollard client, for callers that build images (recipes, tests).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Makes sure the users' network exists, isolated, with the host-isolation rule when
    /// asked (checked again at most every 30 s).
    pub async fn prepare_network(&self) -> Result<(), SpawnError> {
        let mut checked = self.network_checked.lock().await;
        if checked.is_some_and(|at| at.elapsed() < NETWORK_RECHECK) {
            return Ok(());
        }
        let bridge = network::ensure_network(&self.docker, &self.config).await?;
        if self.config.isolate_host
            && let Err(e) = network::ensure_host_isolation(&bridge).await
            && !self.iptables_warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                bridge = %bridge,
                error = %e,
                "could not add the iptables rule that keeps user servers off the host's own services \
                 (is the hub root, with iptables installed?); servers still cannot reach each other"
            );
        }
        *checked = Some(Instant::now());
        Ok(())
    }

    /// Removes the users' network and its host-isolation rule (uninstalling, tests);
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
            && let Err(e) = network::remove_host_isolation(&bridge).await
        {
            tracing::warn!(bridge = %bridge, error = %e, "could not remove the host-isolation rule");
        }
        Ok(())
    }

    /// The image's inspect data, pulling it first when absent and the policy allows.
    async fn ensure_image(&self, image: &ImageRef, progress: &ProgressSender) -> Result<ImageInspect, SpawnError> {
        match self.docker.inspect_image(image.as_str()).await {
            Ok(found) => return Ok(found),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(runtime_error(&format!("inspecting image {image}"), e)),
        }
        let missing = |detail: String| SpawnError::ImageMissing { image: image.to_string(), detail };
        if self.config.pull_policy == PullPolicy::Never {
            return Err(missing("pulling is turned off (pull_policy = never)".into()));
        }
        send(progress, 5, format!("pulling image {image}"));
        let timeout = self.config.pull_timeout;
        match tokio::time::timeout(timeout, self.pull(image, progress)).await {
            Err(_) => return Err(missing(format!("the pull took longer than {}", seconds(timeout)))),
            Ok(Err(e)) => return Err(missing(engine_message(&e))),
            Ok(Ok(())) => {}
        }
        self.docker
            .inspect_image(image.as_str())
            .await
            .map_err(|e| missing(format!("not there after the pull: {}", engine_message(&e))))
    }

    /// Pulls `image`, mapping the layers' download progress to 5–40 %.
    async fn pull(&self, image: &ImageRef, progress: &ProgressSender) -> Result<(), DockerError> {
        let (from_image, tag) = split_reference(image.as_str());
        let options =
            CreateImageOptions { from_image: Some(from_image.into()), tag: Some(tag.into()), ..Default::default() };
        let mut pulled = self.docker.create_image(Some(options), None, None);
        let mut layers: HashMap<String, (i64, i64)> = HashMap::new();
        let mut last_percent = 5;
        while let Some(info) = pulled.next().await {
            let info = info?;
            let (Some(id), Some(detail)) = (info.id, info.progress_detail) else { continue };
            if info.status.as_deref() != Some("Downloading") {
                continue;
            }
            if let (Some(current), Some(total)) = (detail.current, detail.total)
                && total > 0
            {
                layers.insert(id, (current.min(total), total));
            }
            let (done, total) = layers.values().fold((0i64, 0i64), |(d, t), (c, n)| (d + c, t + n));
            if total > 0 {
                let percent = 5 + (35 * done / total).clamp(0, 35) as u8;
                if percent > last_percent {
                    last_percent = percent;
                    send(progress, percent, format!("pulling image {image}: {} of {} MiB", done >> 20, total >> 20));
                }
            }
        }
        Ok(())
    }

    /// Creates the user's volume unless it exists; refuses a same-named volume that is not theirs.
    async fn ensure_volume(&self, spec: &ServerSpec, name: &str) -> Result<(), SpawnError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => {
                let ours = v.labels.get(LABEL_HUB).map(String::as_str) == Some(self.config.hub_id.as_str())
                    && v.labels.get(LABEL_USER).map(String::as_str) == Some(spec.user.as_str());
                return if ours {
                    Ok(())
                } else {
                    Err(SpawnError::Runtime(format!(
                        "volume {name} exists but was not made by this hub for {}; refusing to mount it",
                        spec.user
                    )))
                };
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(runtime_error(&format!("inspecting volume {name}"), e)),
        }
        let server = if self.config.volume_per_server { spec.server.as_ref() } else { None };
        let labels = crate::naming::server_labels(&self.config.hub_id, &spec.user, server);
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: Some("local".into()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker.create_volume(request).await.map_err(|e| runtime_error(&format!("creating volume {name}"), e))?;
        Ok(())
    }

    /// Removes an exited container left under this server's name; refuses to touch a running one.
    async fn clear_stale(&self, spec: &ServerSpec, name: &str) -> Result<(), SpawnError> {
        let existing = match self.docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(runtime_error(&format!("inspecting container {name}"), e)),
        };
        if existing.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            return Err(already_running(spec, name));
        }
        let id = existing.id.unwrap_or_else(|| name.to_string());
        tracing::info!(container = name, "removing a stopped container left from an earlier run");
        self.remove_container(&id).await
    }

    /// Force-removes a container; absent is success.
    async fn remove_container(&self, id: &str) -> Result<(), SpawnError> {
        let options = RemoveContainerOptions { force: true, ..Default::default() };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 404: gone already; 409: the engine is removing it right now.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(runtime_error(&format!("removing container {id}"), e)),
        }
    }

    /// Places the plan's seed files into a created container.
    async fn upload_seed(&self, id: &str, seed: &[SeedEntry]) -> Result<(), SpawnError> {
        if seed.is_empty() {
            return Ok(());
        }
        let archive = seed_archive(seed).map_err(|e| runtime_error("packing the server's start files", e))?;
        let options = UploadToContainerOptions { path: "/".into(), ..Default::default() };
        self.docker
            .upload_to_container(id, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| runtime_error("placing the server's start files", e))
    }

    /// The container's address on the users' network.
    fn ip_of(&self, c: &ContainerInspectResponse) -> Option<IpAddr> {
        let nets = c.network_settings.as_ref()?.networks.as_ref()?;
        nets.get(self.config.network.as_str())?.ip_address.as_deref()?.parse().ok()
    }

    /// The last lines a container printed, with secrets blanked out.
    async fn log_tail(&self, id: &str, lines: usize) -> String {
        let secrets = match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(c) => secrets_of(&c),
            Err(_) => Vec::new(),
        };
        let options = LogsOptions { stdout: true, stderr: true, tail: lines.to_string(), ..Default::default() };
        let chunks: Vec<_> = self.docker.logs(id, Some(options)).collect().await;
        let text: String = chunks.into_iter().filter_map(Result::ok).map(|c| c.to_string()).collect();
        redact(text.trim_end(), &secrets)
    }

    /// Waits until the server answers, checking on every round that it still runs.
    async fn wait_ready(
        &self,
        id: &str,
        spec: &ServerSpec,
        readiness: &Readiness,
        progress: &ProgressSender,
    ) -> Result<SocketAddr, SpawnError> {
        let started = Instant::now();
        let mut last_percent = 70;
        let mut last_error = String::from("no answer yet");
        // Small servers answer within tens of milliseconds of running: ask early, then back
        // off to the configured interval so a slow boot costs few engine calls.
        let mut pause = FIRST_READINESS_PAUSE.min(self.config.readiness_interval);
        loop {
            let c = match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
                Ok(c) => c,
                Err(e) if is_status(&e, 404) => {
                    return Err(SpawnError::Exited {
                        reason: "the container was removed during start".into(),
                        log_tail: String::new(),
                    });
                }
                Err(e) => return Err(runtime_error("inspecting the starting container", e)),
            };
            let state = c.state.clone().unwrap_or_default();
            if !state.running.unwrap_or(false) {
                let reason = exit_reason(state.exit_code.unwrap_or(-1), state.oom_killed.unwrap_or(false));
                return Err(SpawnError::Exited { reason, log_tail: self.log_tail(id, FAILURE_LOG_LINES).await });
            }
            if let Some(ip) = self.ip_of(&c) {
                let addr = SocketAddr::new(ip, spec.port);
                match answers(addr, readiness).await {
                    Ok(()) => return Ok(addr),
                    Err(e) => last_error = e,
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= spec.start_timeout {
                tracing::info!(container = id, last_error = %last_error, "server did not answer in time");
                return Err(SpawnError::Timeout {
                    seconds: spec.start_timeout.as_secs(),
                    log_tail: self.log_tail(id, FAILURE_LOG_LINES).await,
                });
            }
            // 70 % → 89 % over the start timeout, so the bar moves while the server boots.
            let share = elapsed.as_secs_f64() / spec.start_timeout.as_secs_f64().max(0.001);
            let percent = 70 + (19.0 * share).min(19.0) as u8;
            if percent > last_percent {
                last_percent = percent;
                send(progress, percent, format!("waiting for the server to answer ({} s)", elapsed.as_secs()));
            }
            let remaining = spec.start_timeout.saturating_sub(elapsed);
            tokio::time::sleep(pause.min(remaining)).await;
            pause = (pause * 2).min(self.config.readiness_interval);
        }
    }

    /// Everything of a start after the container exists; the caller removes it on failure.
    async fn run_container(
        &self,
        id: &str,
        spec: &ServerSpec,
        plan: &ContainerPlan,
        progress: &ProgressSender,
    ) -> Result<SocketAddr, SpawnError> {
        self.upload_seed(id, &plan.seed).await?;
        send(progress, 65, "starting the container");
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| runtime_error("starting the container", e))?;
        tracing::debug!(
            target: "labhub::timing",
            user = %spec.user,
            server = spec.server.as_ref().map_or("", ServerName::as_str),
            "spawn.container_running"
        );
        send(progress, 70, "waiting for the server to answer");
        self.wait_ready(id, spec, &plan.readiness, progress).await
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

    fn storage_name(&self, user: &UserName, server: Option<&ServerName>) -> String {
        crate::naming::volume_name(&self.config.hub_id, user, server, self.config.volume_per_server)
    }

    fn hub_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={}", self.config.hub_id)])])
    }
}

fn already_running(spec: &ServerSpec, name: &str) -> SpawnError {
    let which = spec.server.as_ref().map_or_else(|| "default server".to_string(), |s| format!("server {s}"));
    SpawnError::Invalid(format!("{}'s {which} is already running (container {name}); stop it first", spec.user))
}

/// Checks one readiness round; `Err` says what went wrong, for the log.
async fn answers(addr: SocketAddr, readiness: &Readiness) -> Result<(), String> {
    let (path, token) = match readiness {
        Readiness::TokenApi { path, token } => (path, Some(token.expose().as_str())),
        Readiness::AnyAnswer { path } | Readiness::Below500 { path } => (path, None),
    };
    let status = probe(addr, path, token, PROBE_TIMEOUT).await.map_err(|e| e.to_string())?;
    let ok = match readiness {
        Readiness::TokenApi { .. } => status == hyper::StatusCode::OK,
        Readiness::AnyAnswer { .. } => true,
        Readiness::Below500 { .. } => status.as_u16() < 500,
    };
    if ok { Ok(()) } else { Err(format!("answered {status}")) }
}

/// `name[:tag]` / `name@digest` → what the pull API wants: the name, and a tag or digest
/// (never empty: an empty tag would pull every tag of the repository).
fn split_reference(reference: &str) -> (&str, &str) {
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    if let Some((name_tag, digest)) = reference.split_once('@') {
        let name = match name_tag[last_slash.min(name_tag.len())..].rfind(':') {
            Some(i) => &name_tag[..last_slash + i],
            None => name_tag,
        };
        return (name, digest);
    }
    match reference[last_slash..].rfind(':') {
        Some(i) => (&reference[..last_slash + i], &reference[last_slash + i + 1..]),
        None => (reference, "latest"),
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

/// The values of a container's secret environment variables.
fn secrets_of(c: &ContainerInspectResponse) -> Vec<String> {
    let env = c.config.as_ref().and_then(|cfg| cfg.env.clone()).unwrap_or_default();
    env.iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, v)| SECRET_ENV.contains(k) && !v.is_empty())
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Blanks every occurrence of each secret (jupyter_server prints its URL with the token).
fn redact(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_string(), |t, s| t.replace(s.as_str(), "[redacted]"))
}

/// A tar archive of the seed entries, paths relative to `/`.
fn seed_archive(seed: &[SeedEntry]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in seed {
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(0);
        let path = entry.path.trim_start_matches('/');
        match &entry.contents {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Some(text) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(text.len() as u64);
                builder.append_data(&mut header, path, text.as_bytes())?;
            }
        }
    }
    builder.into_inner()
}

/// Removes a container if the start that made it is abandoned (its future dropped).
struct ContainerGuard {
    docker: Docker,
    id: Option<String>,
}

impl ContainerGuard {
    fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let docker = self.docker.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let options = RemoveContainerOptions { force: true, ..Default::default() };
                if let Err(e) = docker.remove_container(&id, Some(options)).await {
                    tracing::warn!(container = %id, error = %e, "could not remove the container of an abandoned start");
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl Spawner for DockerSpawner {
    async fn start(&self, spec: &ServerSpec, progress: ProgressSender) -> Result<Started, SpawnError> {
        let names =
            ServerNames::new(&self.config.hub_id, &spec.user, spec.server.as_ref(), self.config.volume_per_server);
        tracing::info!(user = %spec.user, server = ?spec.server, image = %spec.image, container = %names.container, "starting a server");
        tracing::debug!(
            target: "labhub::timing",
            user = %spec.user,
            server = spec.server.as_ref().map_or("", ServerName::as_str),
            "spawn.begin"
        );

        send(&progress, 2, format!("checking image {}", spec.image));
        let image = self.ensure_image(&spec.image, &progress).await?;
        let facts = ImageFacts {
            id: image.id.clone().ok_or_else(|| SpawnError::Runtime(format!("image {} has no id", spec.image)))?,
            user: image.config.as_ref().and_then(|c| c.user.clone()).filter(|u| !u.is_empty()),
            home: image
                .config
                .as_ref()
                .and_then(|c| c.env.as_ref())
                .and_then(|env| env.iter().find_map(|kv| kv.strip_prefix("HOME=").map(str::to_string))),
        };
        let ctx = PlanContext {
            hub: &self.config.hub_id,
            names: &names,
            network: self.config.network.as_str(),
            pids_limit: self.config.pids_limit,
            image: &facts,
        };
        let plan = container_plan(spec, &ctx)?;

        send(&progress, 42, "preparing the network");
        self.prepare_network().await?;
        send(&progress, 45, "preparing your storage");
        self.ensure_volume(spec, &names.volume).await?;

        send(&progress, 55, "creating the container");
        self.clear_stale(spec, &names.container).await?;
        let options = CreateContainerOptions { name: Some(names.container.clone()), ..Default::default() };
        tracing::debug!(
            target: "labhub::timing",
            user = %spec.user,
            server = spec.server.as_ref().map_or("", ServerName::as_str),
            "spawn.create_container"
        );
        let created = match self.docker.create_container(Some(options), plan.body.clone()).await {
            Ok(c) => c,
            // Another start of the same server won the race for the name.
            Err(e) if is_status(&e, 409) => return Err(already_running(spec, &names.container)),
            Err(e) => return Err(runtime_error("creating the container", e)),
        };
        let id = created.id;
        let mut guard = ContainerGuard { docker: self.docker.clone(), id: Some(id.clone()) };

        match self.run_container(&id, spec, &plan, &progress).await {
            Ok(endpoint) => {
                guard.disarm();
                tracing::debug!(
                    target: "labhub::timing",
                    user = %spec.user,
                    server = spec.server.as_ref().map_or("", ServerName::as_str),
                    "spawn.server_answers"
                );
                send(&progress, 90, "the server answers");
                tracing::info!(container = %names.container, %endpoint, "server ready");
                let state = DockerState {
                    container_id: id,
                    container_name: names.container,
                    volume: names.volume,
                    ip: Some(endpoint.ip()),
                    port: spec.port,
                    kind: spec.kind,
                };
                Ok(Started { endpoint, state: state.to_json(), image_digest: facts.id })
            }
            Err(e) => {
                tracing::info!(container = %names.container, error = %e, "start failed; removing the container");
                if let Err(remove) = self.remove_container(&id).await {
                    tracing::warn!(container = %id, error = %remove, "could not remove the failed container");
                } else {
                    guard.disarm();
                }
                Err(e)
            }
        }
    }

    async fn poll(&self, state: &SpawnerState) -> Result<ServerStatus, SpawnError> {
        let s = DockerState::from_json(state)?;
        let c = match self.docker.inspect_container(&s.container_id, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) if is_status(&e, 404) => {
                return Ok(ServerStatus::Stopped { reason: "its container is gone".into() });
            }
            Err(e) => return Err(runtime_error("inspecting the container", e)),
        };
        let st = c.state.clone().unwrap_or_default();
        if st.running.unwrap_or(false) {
            let ip = self.ip_of(&c).or(s.ip).ok_or_else(|| {
                SpawnError::Runtime(format!(
                    "container {} runs but has no address on the users' network",
                    s.container_name
                ))
            })?;
            Ok(ServerStatus::Running { endpoint: SocketAddr::new(ip, s.port) })
        } else {
            Ok(ServerStatus::Stopped {
                reason: exit_reason(st.exit_code.unwrap_or(-1), st.oom_killed.unwrap_or(false)),
            })
        }
    }

    async fn stop(&self, state: &SpawnerState) -> Result<(), SpawnError> {
        let s = DockerState::from_json(state)?;
        let options = StopContainerOptions { t: Some(STOP_GRACE_SECS), signal: None };
        match self.docker.stop_container(&s.container_id, Some(options)).await {
            // 304: it was not running.
            Ok(()) => {}
            Err(e) if is_status(&e, 304) || is_status(&e, 404) => {}
            Err(e) => return Err(runtime_error(&format!("stopping container {}", s.container_name), e)),
        }
        self.remove_container(&s.container_id).await
    }

    async fn list(&self) -> Result<Vec<ObservedServer>, SpawnError> {
        let options = ListContainersOptions { all: true, filters: Some(self.hub_filter()), ..Default::default() };
        let containers =
            self.docker.list_containers(Some(options)).await.map_err(|e| runtime_error("listing containers", e))?;
        let mut found = Vec::with_capacity(containers.len());
        for c in containers {
            let labels = c.labels.clone().unwrap_or_default();
            let id = c.id.clone().unwrap_or_default();
            let Some((user, server)) = owner_from_labels(&labels) else {
                tracing::warn!(container = %id, "a container with this hub's label has no valid user/server labels");
                continue;
            };
            let (Some(kind), Some(port)) = (
                labels.get(LABEL_KIND).and_then(|k| ImageKind::parse(k)),
                labels.get(LABEL_PORT).and_then(|p| p.parse::<u16>().ok()),
            ) else {
                tracing::warn!(container = %id, "a container with this hub's label has no kind/port labels");
                continue;
            };
            let ip = c
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(self.config.network.as_str()))
                .and_then(|e| e.ip_address.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
            let status = match (running, ip) {
                (true, Some(ip)) => ServerStatus::Running { endpoint: SocketAddr::new(ip, port) },
                (true, None) => ServerStatus::Stopped { reason: "running but off the users' network".into() },
                (false, _) => ServerStatus::Stopped {
                    reason: format!("container {}", c.status.clone().unwrap_or_else(|| "not running".into())),
                },
            };
            let name = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string());
            let state = DockerState {
                container_id: id,
                container_name: name.unwrap_or_default(),
                volume: labels.get(LABEL_VOLUME).cloned().unwrap_or_default(),
                ip,
                port,
                kind,
            };
            found.push(ObservedServer { user, server, state: state.to_json(), status });
        }
        Ok(found)
    }

    async fn logs(&self, state: &SpawnerState, tail: usize) -> Result<String, SpawnError> {
        let s = DockerState::from_json(state)?;
        match self.docker.inspect_container(&s.container_id, None::<InspectContainerOptions>).await {
            Ok(_) => Ok(self.log_tail(&s.container_id, tail).await),
            Err(e) if is_status(&e, 404) => Ok(String::new()),
            Err(e) => Err(runtime_error("reading the server's logs", e)),
        }
    }

    async fn exits(&self) -> Result<BoxStream<'static, ServerExit>, SpawnError> {
        Ok(events::exit_stream(self.docker.clone(), self.config.hub_id.clone()))
    }

    async fn usage(&self) -> Result<Vec<ServerUsage>, SpawnError> {
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

    async fn storage_usage(&self, user: &UserName, server: Option<&ServerName>) -> Result<Option<u64>, SpawnError> {
        let name = self.storage_name(user, server);
        match self.docker.inspect_volume(&name).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(runtime_error(&format!("inspecting volume {name}"), e)),
        }
        let sizes = self.volume_sizes(&name).await?;
        Ok(Some(sizes.get(&name).copied().unwrap_or(0)))
    }

    async fn remove_storage(&self, user: &UserName, server: Option<&ServerName>) -> Result<bool, SpawnError> {
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

    async fn inspect_image(&self, image: &ImageRef) -> Result<Option<ImageInfo>, SpawnError> {
        match self.docker.inspect_image(image.as_str()).await {
            Ok(i) => Ok(Some(ImageInfo {
                digest: i.id.unwrap_or_default(),
                size_bytes: i.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                created: i.created,
            })),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(runtime_error(&format!("inspecting image {image}"), e)),
        }
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
    fn references_split_for_the_pull_api() {
        assert_eq!(split_reference("labhub/jupyterlab:1"), ("labhub/jupyterlab", "1"));
        assert_eq!(split_reference("jupyter/base"), ("jupyter/base", "latest"));
        assert_eq!(split_reference("127.0.0.1:9/labhub-missing:1"), ("127.0.0.1:9/labhub-missing", "1"));
        assert_eq!(split_reference("localhost:5000/img"), ("localhost:5000/img", "latest"));
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(split_reference(&format!("rocker/rstudio:4.4@{d}")), ("rocker/rstudio", d));
        assert_eq!(split_reference(&format!("host:5/img@{d}")), ("host:5/img", d));
    }

    #[test]
    fn secrets_are_blanked() {
        let text = "listening on http://127.0.0.1:8888/lab?token=abcd1234 and abcd1234";
        assert_eq!(
            redact(text, &["abcd1234".into()]),
            "listening on http://127.0.0.1:8888/lab?token=[redacted] and [redacted]"
        );
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

    #[test]
    fn seed_archives_keep_owner_and_mode() {
        let seed = vec![
            SeedEntry { path: "/tmp/x".into(), contents: None, mode: 0o700, uid: 1000, gid: 1000 },
            SeedEntry { path: "/tmp/x/f".into(), contents: Some("hi".into()), mode: 0o600, uid: 1000, gid: 1000 },
        ];
        let bytes = seed_archive(&seed).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().mode().unwrap(), e.header().uid().unwrap())
            })
            .collect();
        assert_eq!(entries, vec![("tmp/x/".into(), 0o700, 1000), ("tmp/x/f".into(), 0o600, 1000)]);
    }
}
