//! A private corner of the real Docker engine for one test: its own hub id (so container,
//! volume and network names cannot meet another test's) and its own network, removed with
//! everything in it when the scope is dropped, also on panic.
//!
//! Hub ids carry the test process's id (`lhtest<pid>x<random>`), so a run that was killed
//! before it could clean up is swept by the next one: anything labelled for a process that
//! no longer exists is removed the first time a scope is made.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListImagesOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveImageOptions, RemoveVolumeOptions,
};
use labhub_core::ImageRef;
use labhub_spawner::{DockerConfig, DockerSpawner, HubId, LABEL_HUB, NetworkName};

use crate::images;

/// One test's hub id, network, spawner and test image.
pub struct DockerScope {
    /// The spawner's configuration (hub id, network).
    pub config: DockerConfig,
    /// The spawner, already connected.
    pub spawner: Arc<DockerSpawner>,
    /// The tiny test image (`labhub-test/testserver:<hash>`).
    pub test_image: ImageRef,
    /// Shared with other scopes, or held alone by an exclusive one; released after cleanup.
    _turn: Turn,
}

/// Every scope makes and removes a Docker network, and a new bridge address makes Chromium
/// abort whatever it was loading (`net::ERR_NETWORK_CHANGED`). Scopes share this lock; a
/// browser test takes it alone, so no network comes or goes while the browser runs.
static NETWORK_CHURN: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A scope's hold on [`NETWORK_CHURN`]: one of the two guards.
struct Turn {
    _shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
    _alone: Option<tokio::sync::RwLockWriteGuard<'static, ()>>,
}

const PREFIX: &str = "lhtest";

impl DockerScope {
    /// A scope with the default spawner settings; `server_binary` is the test server's path
    /// (`env!("CARGO_BIN_EXE_labhub-testserver")` in this package's integration tests).
    pub async fn new(server_binary: &Path) -> Self {
        Self::with(server_binary, |_| {}).await
    }

    /// A scope whose spawner settings the test adjusts.
    pub async fn with(server_binary: &Path, adjust: impl FnOnce(&mut DockerConfig)) -> Self {
        let turn = Turn { _shared: Some(NETWORK_CHURN.read().await), _alone: None };
        Self::make(server_binary, adjust, turn).await
    }

    /// A scope that runs while no other scope exists, with its network made up front: for a
    /// browser, which aborts its page loads whenever the host's networks change.
    pub async fn exclusive(server_binary: &Path) -> Self {
        let turn = Turn { _shared: None, _alone: Some(NETWORK_CHURN.write().await) };
        let scope = Self::make(server_binary, |_| {}, turn).await;
        scope.spawner.prepare_network().await.expect("the users' network can be made");
        scope
    }

    async fn make(server_binary: &Path, adjust: impl FnOnce(&mut DockerConfig), turn: Turn) -> Self {
        let rand = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let id = format!("{PREFIX}{}x{rand}", std::process::id());
        let mut config = DockerConfig {
            hub_id: HubId::parse(&id).expect("a valid hub id"),
            network: NetworkName::parse(&format!("{id}-net")).expect("a valid network name"),
            readiness_interval: Duration::from_millis(100),
            ..DockerConfig::default()
        };
        adjust(&mut config);
        let spawner = DockerSpawner::connect(config.clone()).await.expect("the Docker engine answers");
        sweep_dead_runs_once(spawner.docker()).await;
        let test_image =
            images::test_server_image(spawner.docker(), server_binary).await.expect("the test image builds");
        Self { config, spawner: Arc::new(spawner), test_image, _turn: turn }
    }

    /// The engine.
    pub fn docker(&self) -> &Docker {
        self.spawner.docker()
    }
}

impl Drop for DockerScope {
    fn drop(&mut self) {
        let config = self.config.clone();
        // A fresh runtime on its own thread: the test's runtime may be the one dropping us (or
        // unwinding from a panic) and cannot run more work.
        let cleaner = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(clean_up(config));
        });
        let _ = cleaner.join();
    }
}

/// Removes every container and volume labelled for `config`'s hub id, then its network and
/// that network's firewall rules (for a hub a test ran as a process of its own).
pub async fn clean_up(config: DockerConfig) {
    let Ok(spawner) = DockerSpawner::connect(config.clone()).await else { return };
    remove_labelled(spawner.docker(), config.hub_id.as_str()).await;
    if let Err(e) = spawner.remove_network().await {
        eprintln!("cleanup of {}: {e}", config.network);
    }
}

async fn remove_labelled(docker: &Docker, hub_id: &str) {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={hub_id}")])]);
    let list = ListContainersOptions { all: true, filters: Some(filters.clone()), ..Default::default() };
    for c in docker.list_containers(Some(list)).await.unwrap_or_default() {
        let options = RemoveContainerOptions { force: true, ..Default::default() };
        let _ = docker.remove_container(c.id.as_deref().unwrap_or_default(), Some(options)).await;
    }
    let volumes = docker.list_volumes(Some(ListVolumesOptions { filters: Some(filters.clone()) })).await;
    for v in volumes.ok().and_then(|r| r.volumes).unwrap_or_default() {
        let _ = docker.remove_volume(&v.name, None::<RemoveVolumeOptions>).await;
    }
    // Environments the hub built.
    let images = docker.list_images(Some(ListImagesOptions { filters: Some(filters), ..Default::default() })).await;
    for i in images.unwrap_or_default() {
        let options = RemoveImageOptions { force: true, ..Default::default() };
        let _ = docker.remove_image(&i.id, Some(options), None).await;
    }
}

/// The process id in a test hub id, if it is one.
fn pid_of(hub_id: &str) -> Option<u32> {
    hub_id.strip_prefix(PREFIX)?.split('x').next()?.parse().ok()
}

async fn sweep_dead_runs_once(docker: &Docker) {
    static ONCE: Once = Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let containers = docker
        .list_containers(Some(ListContainersOptions { all: true, ..Default::default() }))
        .await
        .unwrap_or_default();
    let mut dead: Vec<String> = containers
        .iter()
        .filter_map(|c| c.labels.as_ref()?.get(LABEL_HUB).cloned())
        .filter(|h| pid_of(h).is_some_and(|p| !alive(p)))
        .collect();
    let volumes =
        docker.list_volumes(None::<ListVolumesOptions>).await.ok().and_then(|r| r.volumes).unwrap_or_default();
    dead.extend(
        volumes
            .iter()
            .filter_map(|v| v.labels.get(LABEL_HUB).cloned())
            .filter(|h| pid_of(h).is_some_and(|p| !alive(p))),
    );
    dead.sort();
    dead.dedup();
    for hub in &dead {
        remove_labelled(docker, hub).await;
    }
    remove_orphan_firewall_rules();
    let networks = docker.list_networks(None::<ListNetworksOptions>).await.unwrap_or_default();
    for n in networks {
        let name = n.name.unwrap_or_default();
        if let Some(hub) = name.strip_suffix("-net").filter(|h| pid_of(h).is_some_and(|p| !alive(p))) {
            let config = DockerConfig {
                hub_id: HubId::parse(hub).expect("a test hub id"),
                network: NetworkName::parse(&name).expect("a test network name"),
                ..DockerConfig::default()
            };
            clean_up(config).await;
        }
    }
}

/// The firewall rules the spawner keeps for `bridge`, as `(chain, rule)` in `iptables -S`'s
/// words: its rules in `INPUT` and `DOCKER-USER`, then those of its own chain.
pub fn firewall_rules(bridge: &str) -> Vec<(String, Vec<String>)> {
    let own = format!("LABHUB-{bridge}");
    let mut rules = Vec::new();
    for chain in ["INPUT", "DOCKER-USER", own.as_str()] {
        let Ok(out) = std::process::Command::new("iptables").args(["-w", "-S", chain]).output() else { continue };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(rule) = line.strip_prefix("-A ").and_then(|l| l.strip_prefix(chain)) else { continue };
            let words: Vec<String> = shell_words(rule).into_iter().map(str::to_string).collect();
            if chain == own || words.windows(2).any(|w| w[0] == "-i" && w[1] == bridge) {
                rules.push((chain.to_string(), words));
            }
        }
    }
    rules
}

/// Deletes every firewall rule the spawner keeps for `bridge`, and its chain, as a firewall
/// reload would (other rules are left alone: the host is shared).
pub fn remove_firewall_rules(bridge: &str) {
    let own = format!("LABHUB-{bridge}");
    for (chain, rule) in firewall_rules(bridge) {
        if chain != own {
            let _ = std::process::Command::new("iptables").args(["-w", "-D", &chain]).args(&rule).status();
        }
    }
    for op in ["-F", "-X"] {
        let _ = std::process::Command::new("iptables").args(["-w", op, &own]).output();
    }
}

/// Removes the hub's firewall rules whose bridge interface no longer exists (left by networks
/// removed behind the spawner's back, e.g. by a killed test run).
fn remove_orphan_firewall_rules() {
    let Ok(out) = std::process::Command::new("iptables").args(["-w", "-S"]).output() else { return };
    let gone = |iface: &str| iface.starts_with("lh-") && !Path::new("/sys/class/net").join(iface).exists();
    let mut bridges: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let words = shell_words(line);
        let named = words.windows(2).find(|w| w[0] == "-i").map(|w| w[1]);
        let chain = line.strip_prefix("-N LABHUB-");
        if let Some(bridge) = named.filter(|_| line.contains("labhub:")).or(chain).filter(|b| gone(b))
            && !bridges.iter().any(|b| b == bridge)
        {
            bridges.push(bridge.to_string());
        }
    }
    for bridge in bridges {
        remove_firewall_rules(&bridge);
    }
}

/// Splits an `iptables -S` line into arguments, keeping quoted comments whole.
fn shell_words(line: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            words.push(&quoted[..end]);
            rest = quoted.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            words.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
    }
    words
}
