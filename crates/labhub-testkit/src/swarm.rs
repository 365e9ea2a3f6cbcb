//! A single-node Swarm on this machine's engine, for the Swarm-mode tests, left as it was
//! found.
//!
//! Other tests (and other people's test runs) use the same engine in engine mode at the same
//! time, which a swarm does not disturb: a swarm only adds `docker_gwbridge`, the `ingress`
//! overlay and our firewall rules on `docker_gwbridge`. So the engine is put in a swarm only
//! while a [`SwarmScope`] exists: the first scope of the process runs
//! `docker swarm init --advertise-addr 127.0.0.1` when the engine is in none, scopes count
//! themselves, and when the last one is dropped the process leaves the swarm it made
//! (`docker swarm leave --force`), removes our rules on `docker_gwbridge` and that bridge if
//! it made it. An engine that was in a swarm already is left in it, untouched. Tests that do
//! not overlap in time may each init and leave: slower, never wrong.
//!
//! Each scope is a [`DockerScope`] (its own hub id) in Swarm mode with an overlay of its own
//! (`<hub id>-ov`, a /16 of 10.160.0.0/11 per scope of the process: Swarm refuses two overlays
//! on one subnet); dropping it removes its services, their containers and the overlay.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, ListServicesOptions, RemoveContainerOptions};
use labhub_spawner::{DockerConfig, LABEL_HUB, NetworkName, RuntimeMode, SwarmSpawner};

use crate::docker::DockerScope;

/// Who holds the swarm, and whether this process made it.
struct Holders {
    count: usize,
    made: bool,
    gateway_existed: bool,
}

static HOLDERS: Mutex<Holders> = Mutex::new(Holders { count: 0, made: false, gateway_existed: true });
/// Numbers the scopes' overlay subnets.
static SUBNETS: AtomicU32 = AtomicU32::new(0);

/// One scope's hold on the swarm (see the module docs).
struct SwarmHold;

fn docker_cli(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().map_err(|e| format!("docker {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl SwarmHold {
    fn acquire() -> Self {
        let mut h = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if h.count == 0 {
            let state = docker_cli(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).expect("docker info answers");
            if state == "inactive" {
                h.gateway_existed = docker_cli(&["network", "inspect", "docker_gwbridge"]).is_ok();
                docker_cli(&["swarm", "init", "--advertise-addr", "127.0.0.1"]).expect("docker swarm init");
                h.made = true;
            } else {
                assert_eq!(
                    state, "active",
                    "the engine's swarm is {state}; the Swarm tests need it inactive or active"
                );
            }
        }
        h.count += 1;
        SwarmHold
    }
}

impl Drop for SwarmHold {
    fn drop(&mut self) {
        let mut h = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        h.count -= 1;
        if h.count > 0 || !h.made {
            return;
        }
        if let Err(e) = docker_cli(&["swarm", "leave", "--force"]) {
            eprintln!("leaving the test swarm: {e}");
        }
        let rules = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(SwarmSpawner::remove_gateway_rules(&DockerConfig::default())).err()
        });
        if let Ok(Some(e)) = rules.join() {
            eprintln!("removing the rules on docker_gwbridge: {e}");
        }
        if !h.gateway_existed
            && let Err(e) = docker_cli(&["network", "rm", "docker_gwbridge"])
        {
            eprintln!("removing docker_gwbridge: {e}");
        }
        h.made = false;
    }
}

/// One test's hub id and overlay on a single-node swarm, with a Swarm spawner.
pub struct SwarmScope {
    /// The engine scope (hub id, test image, the engine spawner).
    pub docker: Arc<DockerScope>,
    /// The Swarm spawner.
    pub spawner: Arc<SwarmSpawner>,
    /// Its settings (Swarm mode, the scope's overlay).
    pub config: DockerConfig,
    // Dropped after the scope's cleanup (fields drop in order).
    _hold: SwarmHold,
}

impl SwarmScope {
    /// A scope whose settings the test adjusts (after the scope's own).
    pub async fn with(server_binary: &Path, adjust: impl FnOnce(&mut DockerConfig)) -> Self {
        let hold = tokio::task::spawn_blocking(SwarmHold::acquire).await.expect("the swarm is ready");
        let n = SUBNETS.fetch_add(1, Ordering::Relaxed) % 32;
        let docker = DockerScope::with(server_binary, |c| {
            c.mode = RuntimeMode::Swarm;
            c.swarm_network = NetworkName::parse(&format!("{}-ov", c.hub_id)).expect("a valid network name");
            c.swarm_subnet = format!("10.{}.0.0/16", 160 + n);
            adjust(c);
        })
        .await;
        let spawner = SwarmSpawner::on(docker.spawner.clone()).await.expect("the engine is a swarm manager");
        Self { config: docker.config.clone(), docker: Arc::new(docker), spawner: Arc::new(spawner), _hold: hold }
    }

    /// The engine.
    pub fn engine(&self) -> &Docker {
        self.docker.docker()
    }
}

impl Drop for SwarmScope {
    fn drop(&mut self) {
        let config = self.config.clone();
        let cleaner = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(remove_services(config));
        });
        let _ = cleaner.join();
    }
}

/// Removes the scope's services, their containers and its overlay.
async fn remove_services(config: DockerConfig) {
    let Ok(docker) = Docker::connect_with_local_defaults() else { return };
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={}", config.hub_id)])]);
    let services = docker
        .list_services(Some(ListServicesOptions { filters: Some(filters.clone()), ..Default::default() }))
        .await
        .unwrap_or_default();
    for s in services {
        let _ = docker.delete_service(s.id.as_deref().unwrap_or_default()).await;
    }
    let list = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    for c in docker.list_containers(Some(list)).await.unwrap_or_default() {
        let options = RemoveContainerOptions { force: true, ..Default::default() };
        let _ = docker.remove_container(c.id.as_deref().unwrap_or_default(), Some(options)).await;
    }
    // The overlay's endpoints go a moment after their containers.
    for _ in 0..50 {
        match docker.remove_network(config.swarm_network.as_str()).await {
            Ok(()) => return,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    eprintln!("cleanup: the overlay {} could not be removed", config.swarm_network);
}
