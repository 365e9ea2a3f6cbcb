//! A second Swarm node on this machine: a second `dockerd` in a network namespace the test
//! makes, joined to the test swarm as a worker (see `swarm`).
//!
//! The namespace `lhtest-node<k>` is linked to the host by a veth pair on 10.254.<k>.0/30
//! (host .1, node .2), with a default route to the host, so the node reaches the manager at
//! [`MANAGER_ADDR`] (on the host's `lo`) and nothing leaves the machine. Its `dockerd` runs
//! through `nsenter --net=… unshare --mount --uts` with a fresh `/sys` (the engine reads its
//! namespace's interfaces there; the host's cgroups bound back into it), a host name of its own (the node's Swarm host name), its
//! own data root, exec root, pid file, socket and an empty `--config-file` (so it does not
//! read the host's `daemon.json`), the `vfs` storage driver and iptables in its namespace.
//! Before joining, its `docker_gwbridge` is made on 10.254.<k>.128/25 and the host routes
//! that range through the veth, with one rule in the node's `DOCKER-USER` letting the host's
//! end of the veth open connections to it: that is how a hub on the manager reaches servers
//! on this node (what an admin does between machines, see the README). Dropping the node
//! leaves the swarm, removes it from the manager's list, stops its engine and removes the
//! namespace, the route and the files.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use labhub_core::NodeName;

use crate::swarm::MANAGER_ADDR;

/// Numbers this process's nodes (with the process id, their addresses and names).
static NODES: AtomicU32 = AtomicU32::new(0);
/// How long a node's engine may take to answer, and the manager to see the node ready.
const READY_WAIT: Duration = Duration::from_secs(90);

/// A second engine in a network namespace of its own, reachable from the host (see the
/// module docs); not in any swarm until [`SwarmNode`] joins it.
pub struct SecondEngine {
    /// Its host name (`lhtest-node<k>`).
    pub hostname: NodeName,
    /// Its engine's API (`unix:///tmp/lhtest-node<k>/docker.sock`).
    pub docker_host: String,
    /// Its engine.
    pub docker: Docker,
    /// Its address, at the namespace's end of the veth.
    pub address: String,
    netns: String,
    gateway_range: String,
    dir: PathBuf,
    dockerd: Child,
}

/// A second engine, a worker of the test swarm (see the module docs).
pub struct SwarmNode {
    /// Its Swarm host name.
    pub hostname: NodeName,
    /// Its engine's API.
    pub docker_host: String,
    /// Its engine.
    pub docker: Docker,
    /// Its Swarm node id.
    pub node_id: String,
    // Stopped after the node left the swarm.
    engine: SecondEngine,
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program} {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl SecondEngine {
    /// Makes the namespace and starts the engine in it (blocking; call it from
    /// `spawn_blocking` in async code).
    pub fn start() -> Self {
        let k = (std::process::id() + NODES.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
        let name = format!("lhtest-node{k}");
        let dir = PathBuf::from(format!("/tmp/{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the node's folder");
        std::fs::write(dir.join("daemon.json"), "{}").expect("the node's empty daemon.json");
        let (host_end, node_end) = (format!("10.254.{k}.1"), format!("10.254.{k}.2"));
        let gateway_range = format!("10.254.{k}.128/25");
        let veth = (format!("lhn{k}h"), format!("lhn{k}n"));
        let _ = run("ip", &["netns", "del", &name]);
        let _ = run("ip", &["link", "del", &veth.0]);
        let ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", name.as_str()];
            all.extend_from_slice(args);
            run("ip", &all).expect("setting up the node's namespace")
        };
        run("ip", &["netns", "add", &name]).expect("ip netns add");
        run("ip", &["link", "add", &veth.0, "type", "veth", "peer", "name", &veth.1]).expect("a veth pair");
        run("ip", &["link", "set", &veth.1, "netns", &name]).expect("the veth into the namespace");
        run("ip", &["addr", "add", &format!("{host_end}/30"), "dev", &veth.0]).expect("the host's veth address");
        run("ip", &["link", "set", &veth.0, "up"]).expect("the host's veth up");
        ns(&["ip", "addr", "add", &format!("{node_end}/30"), "dev", &veth.1]);
        ns(&["ip", "link", "set", &veth.1, "up"]);
        ns(&["ip", "link", "set", "lo", "up"]);
        ns(&["ip", "route", "add", "default", "via", &host_end]);

        let d = dir.display();
        let script = format!(
            "mkdir -p {d}/cgroup && mount --rbind /sys/fs/cgroup {d}/cgroup && mount -t sysfs sysfs /sys && \
             mount --rbind {d}/cgroup /sys/fs/cgroup && hostname {name} && exec dockerd --config-file {d}/daemon.json \
             --data-root {d}/data --exec-root {d}/exec --pidfile {d}/dockerd.pid -H unix://{d}/docker.sock \
             --storage-driver vfs --bridge none --iptables=true"
        );
        let log = File::create(dir.join("dockerd.log")).expect("the node's log");
        let dockerd = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{name}"))
            .args(["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log again"))
            .stderr(log)
            .spawn()
            .expect("nsenter, unshare and dockerd run");
        let docker_host = format!("unix://{d}/docker.sock");
        let on_node = |args: &[&str]| {
            let mut all = vec!["-H", docker_host.as_str()];
            all.extend_from_slice(args);
            run("docker", &all)
        };
        let deadline = Instant::now() + READY_WAIT;
        while on_node(&["info", "--format", "{{.ID}}"]).is_err() {
            assert!(Instant::now() < deadline, "the node's dockerd did not answer; see {d}/dockerd.log");
            std::thread::sleep(Duration::from_millis(200));
        }
        on_node(&[
            "network",
            "create",
            "--subnet",
            &gateway_range,
            "--opt",
            "com.docker.network.bridge.name=docker_gwbridge",
            "--opt",
            "com.docker.network.bridge.enable_icc=false",
            "--opt",
            "com.docker.network.bridge.enable_ip_masquerade=true",
            "docker_gwbridge",
        ])
        .expect("the node's docker_gwbridge");
        run("ip", &["route", "replace", &gateway_range, "via", &node_end])
            .expect("the route to the node's gateway bridge");
        ns(&["iptables", "-I", "DOCKER-USER", "-s", &host_end, "-o", "docker_gwbridge", "-j", "ACCEPT"]);

        let docker = Docker::connect_with_unix(&format!("{d}/docker.sock"), 120, bollard::API_DEFAULT_VERSION)
            .expect("a client of the node's engine");
        Self {
            hostname: NodeName::parse(&name).expect("a valid host name"),
            docker_host,
            docker,
            address: node_end,
            netns: name,
            gateway_range,
            dir,
            dockerd,
        }
    }
}

impl SwarmNode {
    /// Starts a second engine and joins it to the swarm this process holds (blocking; call
    /// it from `spawn_blocking`).
    pub(crate) fn join() -> Self {
        let advertised = run("docker", &["info", "--format", "{{.Swarm.NodeAddr}}"]).expect("docker info answers");
        assert_eq!(
            advertised, MANAGER_ADDR,
            "the swarm a second node joins must advertise {MANAGER_ADDR} (the test harness inits it so); this one \
             advertises {advertised}: it was made outside the tests, leave it first"
        );
        let engine = SecondEngine::start();
        let deadline = Instant::now() + READY_WAIT;
        let node_end = engine.address.clone();
        let name = engine.hostname.to_string();
        let on_node = |args: &[&str]| engine.cli(args);
        let token = run("docker", &["swarm", "join-token", "-q", "worker"]).expect("the worker token");
        on_node(&[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            &node_end,
            "--listen-addr",
            &format!("{node_end}:2377"),
            &format!("{MANAGER_ADDR}:2377"),
        ])
        .expect("docker swarm join");
        let node_id = on_node(&["info", "--format", "{{.Swarm.NodeID}}"]).expect("the node's id");
        while run("docker", &["node", "inspect", &node_id, "--format", "{{.Status.State}}"]).as_deref() != Ok("ready") {
            assert!(Instant::now() < deadline, "the manager does not see node {name} ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        Self {
            hostname: engine.hostname.clone(),
            docker_host: engine.docker_host.clone(),
            docker: engine.docker.clone(),
            node_id,
            engine,
        }
    }
}

impl SecondEngine {
    /// Runs `docker` against this engine; its output.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-H", self.docker_host.as_str()];
        all.extend_from_slice(args);
        run("docker", &all)
    }
}

impl Drop for SwarmNode {
    fn drop(&mut self) {
        let _ = self.engine.cli(&["swarm", "leave", "--force"]);
        if let Err(e) = run("docker", &["node", "rm", "--force", &self.node_id]) {
            eprintln!("removing node {} from the swarm: {e}", self.hostname);
        }
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        if let Ok(ids) = self.cli(&["ps", "-aq"]) {
            for id in ids.lines() {
                let _ = self.cli(&["rm", "-f", id]);
            }
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.dockerd.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.dockerd.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if matches!(self.dockerd.try_wait(), Ok(None)) {
            let _ = self.dockerd.kill();
            let _ = self.dockerd.wait();
        }
        let _ = run("ip", &["route", "del", &self.gateway_range]);
        let _ = run("ip", &["netns", "del", &self.netns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
