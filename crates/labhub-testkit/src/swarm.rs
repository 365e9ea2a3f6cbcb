//! A Swarm on this machine's engine, for the Swarm-mode tests, left as it was found.
//!
//! Other tests (and other people's test runs) use the same engine in engine mode at the same
//! time, which a swarm does not disturb: a swarm only adds `docker_gwbridge`, the `ingress`
//! overlay and our firewall rules on `docker_gwbridge`. So the engine is put in a swarm only
//! while a [`SwarmScope`] exists, in any test process of the machine: a process's first
//! scope takes a shared file lock (`/tmp/labhub-test-swarm.hold`) and, when the engine is in
//! no swarm, runs `docker swarm init` advertising [`MANAGER_ADDR`] (an address of ours on
//! `lo`, which a second node in a namespace of ours reaches, see `node`); when the last scope
//! of the last process goes (it gets the hold exclusively), that process leaves the swarm a
//! test made (`docker swarm leave --force`), removes our rules on `docker_gwbridge`, that
//! bridge if a test made it, and the address. Init and leave are serialised machine-wide by
//! `/tmp/labhub-test-swarm.lock`, so two processes never init or leave under each other. An
//! engine that was in a swarm already is left in it, untouched. A scope with a second node
//! ([`SwarmScope::with_node`]) has the swarm to itself: scopes hold a shared lock on
//! `/tmp/labhub-test-swarm.nodes`, a scope with a node an exclusive one.
//!
//! Each scope is a [`DockerScope`] (its own hub id) in Swarm mode with an overlay of its own
//! (`<hub id>-ov`, a /16 of 10.160.0.0/11 numbered from the process id and a counter: Swarm
//! refuses two overlays on one subnet); dropping it removes its services, their containers
//! and the overlay.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, ListServicesOptions, RemoveContainerOptions};
use labhub_spawner::{DockerConfig, LABEL_HUB, NetworkName, RuntimeMode, SwarmSpawner};

use crate::docker::DockerScope;
use crate::node::SwarmNode;

/// Serialises the swarm's init and leave among every test process of this machine (other
/// people's test runs use the same engine).
const LOCK_FILE: &str = "/tmp/labhub-test-swarm.lock";
/// Every process holding the swarm keeps a shared lock on it; the last one gets it exclusively.
const HOLD_FILE: &str = "/tmp/labhub-test-swarm.hold";
/// Every scope keeps a shared lock on it, a scope with a second node an exclusive one: while
/// a node is joined, the swarm has two nodes, which other scopes' tests do not expect.
const NODES_FILE: &str = "/tmp/labhub-test-swarm.nodes";
/// Present while a swarm a test made is up; says whether `docker_gwbridge` existed before.
const MADE_FILE: &str = "/tmp/labhub-test-swarm.made";
/// The manager's address, on `lo`: reachable from a second node's namespace through its
/// veth (see `node`), unlike 127.0.0.1, and not on any real network.
pub const MANAGER_ADDR: &str = "10.254.254.1";

/// This process's scopes on the swarm, and its shared lock on `HOLD_FILE` while it has any.
struct Holders {
    count: usize,
    hold: Option<File>,
}

static HOLDERS: Mutex<Holders> = Mutex::new(Holders { count: 0, hold: None });
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

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The machine-wide lock around init and leave (released when dropped).
fn machine_lock() -> File {
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(LOCK_FILE).expect("the swarm lock file");
    file.lock().expect("locking the swarm lock file");
    file
}

impl SwarmHold {
    fn acquire() -> Self {
        let mut h = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if h.count == 0 {
            let _machine = machine_lock();
            let hold =
                OpenOptions::new().create(true).truncate(false).write(true).open(HOLD_FILE).expect("the hold file");
            hold.lock_shared().expect("a shared hold on the swarm");
            let state = docker_cli(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).expect("docker info answers");
            if state == "inactive" {
                let gateway_existed = docker_cli(&["network", "inspect", "docker_gwbridge"]).is_ok();
                let cidr = format!("{MANAGER_ADDR}/32");
                if let Err(e) = ip(&["addr", "add", &cidr, "dev", "lo"]) {
                    assert!(e.contains("File exists"), "{e}");
                }
                let listen = format!("{MANAGER_ADDR}:2377");
                docker_cli(&["swarm", "init", "--advertise-addr", MANAGER_ADDR, "--listen-addr", &listen])
                    .expect("docker swarm init");
                std::fs::write(MADE_FILE, if gateway_existed { "gateway existed" } else { "" })
                    .expect("the made-swarm marker");
            } else {
                assert_eq!(
                    state, "active",
                    "the engine's swarm is {state}; the Swarm tests need it inactive or active"
                );
            }
            h.hold = Some(hold);
        }
        h.count += 1;
        SwarmHold
    }
}

impl Drop for SwarmHold {
    fn drop(&mut self) {
        let mut h = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        h.count -= 1;
        if h.count > 0 {
            return;
        }
        let _machine = machine_lock();
        let Some(hold) = h.hold.take() else { return };
        // Another process still holding its shared lock keeps the swarm up.
        let _ = hold.unlock();
        if hold.try_lock().is_err() {
            return;
        }
        let Ok(marker) = std::fs::read_to_string(MADE_FILE) else { return };
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
        if marker.is_empty()
            && let Err(e) = docker_cli(&["network", "rm", "docker_gwbridge"])
        {
            eprintln!("removing docker_gwbridge: {e}");
        }
        let _ = ip(&["addr", "del", &format!("{MANAGER_ADDR}/32"), "dev", "lo"]);
        let _ = std::fs::remove_file(MADE_FILE);
    }
}

/// One test's hub id and overlay on the test swarm, with a Swarm spawner.
pub struct SwarmScope {
    /// The engine scope (hub id, test image, the engine spawner).
    pub docker: Arc<DockerScope>,
    /// The Swarm spawner.
    pub spawner: Arc<SwarmSpawner>,
    /// Its settings (Swarm mode, the scope's overlay).
    pub config: DockerConfig,
    /// The second node, for a scope made by [`SwarmScope::with_node`].
    pub node: Option<SwarmNode>,
    // Dropped after the scope's cleanup and the node (fields drop in order).
    _nodes: File,
    _hold: SwarmHold,
}

/// Locks `NODES_FILE`, exclusively for a scope with a node (blocking).
fn nodes_lock(exclusive: bool) -> File {
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(NODES_FILE).expect("the nodes lock file");
    if exclusive { file.lock() } else { file.lock_shared() }.expect("locking the nodes lock file");
    file
}

impl SwarmScope {
    /// A scope on a single-node swarm whose settings the test adjusts (after the scope's own).
    pub async fn with(server_binary: &Path, adjust: impl FnOnce(&mut DockerConfig)) -> Self {
        let hold = tokio::task::spawn_blocking(SwarmHold::acquire).await.expect("the swarm is ready");
        let nodes = tokio::task::spawn_blocking(|| nodes_lock(false)).await.expect("the nodes lock");
        Self::build(server_binary, hold, nodes, adjust).await
    }

    /// A scope on a swarm of two nodes: a second engine joins (see `node`) once no other
    /// scope of the machine is open, and none opens until this one is dropped. `adjust` sees
    /// the node.
    pub async fn with_node(server_binary: &Path, adjust: impl FnOnce(&mut DockerConfig, &SwarmNode)) -> Self {
        let hold = tokio::task::spawn_blocking(SwarmHold::acquire).await.expect("the swarm is ready");
        let nodes = tokio::task::spawn_blocking(|| nodes_lock(true)).await.expect("the nodes lock");
        let node = tokio::task::spawn_blocking(SwarmNode::join).await.expect("the second node joins");
        let mut scope = Self::build(server_binary, hold, nodes, |c| adjust(c, &node)).await;
        scope.node = Some(node);
        scope
    }

    async fn build(server_binary: &Path, hold: SwarmHold, nodes: File, adjust: impl FnOnce(&mut DockerConfig)) -> Self {
        let n = (std::process::id() * 7 + SUBNETS.fetch_add(1, Ordering::Relaxed)) % 32;
        let docker = DockerScope::with(server_binary, |c| {
            c.mode = RuntimeMode::Swarm;
            c.swarm_network = NetworkName::parse(&format!("{}-ov", c.hub_id)).expect("a valid network name");
            c.swarm_subnet = format!("10.{}.0.0/16", 160 + n);
            adjust(c);
        })
        .await;
        let spawner = SwarmSpawner::on(docker.spawner.clone()).await.expect("the engine is a swarm manager");
        Self {
            config: docker.config.clone(),
            docker: Arc::new(docker),
            spawner: Arc::new(spawner),
            node: None,
            _nodes: nodes,
            _hold: hold,
        }
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
