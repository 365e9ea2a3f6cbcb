//! Swarm mode on two nodes: this machine's engine (the manager) and a second `dockerd` in a
//! network namespace of the test's, joined as a worker (`labhub_testkit::node`). An image the
//! hub has is copied to the second node by content id, a server pinned there runs there from
//! that id and answers the hub; users are pinned to a node at their first start and stay; an
//! admin moves one with `labhub user pin`; a multi-node swarm without pins is refused with
//!
//! what to configure; and `labhub swarm guard`, run inside the second node, keeps servers
//! there apart from each other and off that node's host.
//!
//! The `registry` image mode on the second node is `swarm_registry.rs`'s. Not verified here:
//! NFS homes following a user across nodes (this kernel has no `nfs` or `nfsd`:
//! `/proc/filesystems` lists neither).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use labhub_core::spawner::{ServerSpec, SpawnError, Spawner};
use labhub_core::{NodeName, UserName};
use labhub_service::Actor;
use labhub_spawner::{DockerConfig, DockerSpawner, SwarmHomes, SwarmNodeConfig, SwarmSpawner};
use labhub_testkit::TestApp;
use labhub_testkit::node::SwarmNode;
use labhub_testkit::pg::TestCluster;
use labhub_testkit::swarm::SwarmScope;
use serde_json::json;

use crate::common::test_server_binary;
use crate::swarm::connects_from;

/// A scope on two nodes whose hub pins homes and places servers on both.
async fn two_nodes() -> SwarmScope {
    SwarmScope::with_node(test_server_binary(), |c, node| {
        c.swarm_homes = SwarmHomes::Pinned;
        c.swarm_nodes = vec![listed(node)];
    })
    .await
}

/// The node as the hub's configuration lists it. Declared guarded: most tests here are about
/// placement, images and reach, and run no guard; the guard's own test runs one.
pub(crate) fn listed(node: &SwarmNode) -> SwarmNodeConfig {
    SwarmNodeConfig { hostname: node.hostname.clone(), docker_host: node.docker_host.clone(), isolated_by_admin: true }
}

/// The swarm tests' server, with time for an image copy to the second node.
pub(crate) fn spec(s: &SwarmScope, user: &str, owner: i64) -> ServerSpec {
    ServerSpec { start_timeout: Duration::from_secs(120), ..crate::swarm::spec(s, user, owner) }
}

/// The node id and container id of a service's task.
pub(crate) async fn task_of(s: &SwarmScope, service_id: &str) -> (String, String) {
    let options = bollard::query_parameters::ListTasksOptions {
        filters: Some(HashMap::from([("service".to_string(), vec![service_id.to_string()])])),
    };
    let tasks = s.engine().list_tasks(Some(options)).await.unwrap();
    let task = tasks.into_iter().next().expect("the service has a task");
    let container = task.status.unwrap().container_status.unwrap().container_id.unwrap();
    (task.node_id.unwrap(), container)
}

async fn get(addr: SocketAddr, path: &str, token: &str) -> u16 {
    crate::swarm::get(addr, path, token).await.unwrap()
}

#[tokio::test]
async fn a_server_pinned_to_the_second_node_runs_there_from_the_image_copied_by_id() {
    let s = two_nodes().await;
    let node = s.node.as_ref().unwrap();
    let id = s.spawner.inspect_image(&s.docker.test_image).await.unwrap().expect("the hub has the test image").digest;
    assert!(node.docker.inspect_image(&id).await.is_err(), "the second node starts without the image");

    let mut spec = spec(&s, "alice", 1);
    spec.node = Some(node.hostname.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = s.spawner.start(&spec, tx).await.unwrap_or_else(|e| panic!("{e}"));
    let mut messages = Vec::new();
    while let Ok(p) = rx.try_recv() {
        messages.push(p.message);
    }
    assert!(messages.contains(&format!("copying the image to node {}", node.hostname)), "{messages:?}");

    // The node holds exactly that image, untagged, and the task runs there from it.
    let copied = node.docker.inspect_image(&id).await.unwrap();
    assert_eq!(copied.id.as_deref(), Some(id.as_str()));
    assert_eq!(copied.repo_tags.unwrap_or_default(), Vec::<String>::new(), "loaded by id, untagged");
    assert_eq!(started.image_digest, id);
    let (task_node, container) = task_of(&s, started.state["service_id"].as_str().unwrap()).await;
    assert_eq!(task_node, node.node_id, "the task runs on the second node");
    let c = node.docker.inspect_container(&container, None).await.unwrap();
    assert_eq!(c.image.as_deref(), Some(id.as_str()), "from the same bytes");

    // The hub (this process, on the manager) reaches it through the node's gateway bridge.
    assert_eq!(get(started.endpoint, "/user/alice/api", spec.token.expose()).await, 200);
    s.spawner.stop(&started.state).await.unwrap();

    // A second start finds the image there and copies nothing.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let again = s.spawner.start(&spec, tx).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(again.endpoint, "/user/alice/api", spec.token.expose()).await, 200);
    s.spawner.stop(&again.state).await.unwrap();
    let _ = rx.try_recv();
}

#[tokio::test]
async fn users_are_pinned_at_their_first_start_stay_there_and_an_admin_moves_them() {
    let s = two_nodes().await;
    let node = s.node.as_ref().unwrap().hostname.clone();
    let app = TestApp::builder().docker(s.docker.clone()).spawner(s.spawner.clone()).spawn().await;
    app.add_test_image("test").await;
    let alice = UserName::parse("alice").unwrap();
    app.add_user("alice", "correct horse", false).await;
    let api = app.api_for("alice").await;
    let pins = app.hub.node_pins();
    assert_eq!(pins.of(Actor::System, &alice).await.unwrap(), None);

    let run = |expected: NodeName| {
        let api = &api;
        let s = &s;
        async move {
            let (status, _) =
                api.start("alice", None, json!({"image": "test"})).await.unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(status.as_u16(), 201 | 202), "{status}");
            api.wait_ready("alice", None).await;
            let services =
                s.engine().list_services(None::<bollard::query_parameters::ListServicesOptions>).await.unwrap();
            let ours: Vec<_> = services
                .into_iter()
                .filter(|svc| {
                    svc.spec
                        .as_ref()
                        .and_then(|x| x.name.as_deref())
                        .is_some_and(|n| n.starts_with(s.config.hub_id.as_str()))
                })
                .collect();
            assert_eq!(ours.len(), 1);
            let (task_node, _) = task_of(s, ours[0].id.as_deref().unwrap()).await;
            let hostname = s.engine().inspect_node(&task_node).await.unwrap().description.unwrap().hostname.unwrap();
            assert_eq!(hostname, expected.as_str(), "the server runs on the user's node");
            api.stop("alice", None).await.unwrap();
            api.wait_stopped("alice", None).await;
        }
    };

    // A new user goes where fewest are; but one whose first server speaks JupyterHub's
    // contract goes to the hub's node, the only one where such a server may run.
    let manager = s.engine().info().await.unwrap().name.unwrap();
    let crowded = std::collections::BTreeMap::from([(NodeName::parse(&manager).unwrap(), 5)]);
    let placed = |contract| s.spawner.place(&crowded, contract);
    assert_eq!(placed(labhub_core::Contract::Labhub).await.unwrap(), Some(node.clone()));
    assert_eq!(placed(labhub_core::Contract::Jupyterhub).await.unwrap(), Some(NodeName::parse(&manager).unwrap()));

    // The first start pins alice (to the node with fewest users: a tie, broken by name).
    let first = NodeName::parse(std::cmp::min(manager.as_str(), node.as_str())).unwrap();
    run(first.clone()).await;
    assert_eq!(pins.of(Actor::System, &alice).await.unwrap(), Some(first.clone()), "the pin is recorded");
    run(first.clone()).await;

    // An admin moves her, from the command line; refused while her server runs.
    let other = if first == node { NodeName::parse(&manager).unwrap() } else { node.clone() };
    let url = TestCluster::get().url(&app.db_name);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_labhub-exe"))
            .args(args)
            .env_remove("LABHUB_CONFIG")
            .env("DATABASE_URL", &url)
            .env("LABHUB_LOG", "warn")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    api.start("alice", None, json!({"image": "test"})).await.unwrap();
    api.wait_ready("alice", None).await;
    let (ok, said) = cli(&["user", "pin", "alice", other.as_str()]);
    assert!(!ok && said.contains("stop it first"), "{said}");
    api.stop("alice", None).await.unwrap();
    api.wait_stopped("alice", None).await;
    let (ok, said) = cli(&["user", "pin", "alice", other.as_str()]);
    assert!(ok && said.contains(&format!("moves from node {first} to node {other}")), "{said}");
    assert_eq!(app.count("select count(*) from audit_log where action = 'user.pin'").await, 1, "audited");
    run(other).await;
}

#[tokio::test]
async fn a_swarm_of_two_nodes_without_pins_is_refused_with_what_to_set() {
    let s = two_nodes().await;
    // The same engine, a hub configured for one node.
    let config = DockerConfig { swarm_homes: SwarmHomes::Local, swarm_nodes: Vec::new(), ..s.config.clone() };
    let engine = std::sync::Arc::new(DockerSpawner::connect(config).await.unwrap());
    let spawner = SwarmSpawner::on(engine).await.unwrap();
    let e = spawner.start(&spec(&s, "bob", 2), tokio::sync::mpsc::unbounded_channel().0).await.unwrap_err();
    let SpawnError::Invalid(message) = &e else { panic!("{e}") };
    assert!(message.contains("this swarm has 2 nodes"), "{message}");
    assert!(message.contains("swarm_homes = \"pinned\"") && message.contains("\"nfs\""), "{message}");
    assert!(message.contains("swarm_constraints"), "{message}");

    // Pinned homes and the node listed, but nobody keeps servers apart there yet.
    let node = s.node.as_ref().unwrap();
    let unguarded = SwarmNodeConfig { isolated_by_admin: false, ..listed(node) };
    let config = DockerConfig { swarm_nodes: vec![unguarded], ..s.config.clone() };
    let engine = std::sync::Arc::new(DockerSpawner::connect(config).await.unwrap());
    let spawner = SwarmSpawner::on(engine).await.unwrap();
    let e = spawner.start(&spec(&s, "bob", 2), tokio::sync::mpsc::unbounded_channel().0).await.unwrap_err();
    let message = e.to_string();
    assert!(message.contains(&format!("`labhub swarm guard` on {}", node.hostname)), "{message}");
    assert!(!message.contains("homes:"), "{message}");
}

/// `labhub swarm guard` running inside the second node (killed when dropped).
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address of `container` on `network`, as the node's engine has it.
async fn address_on(node: &SwarmNode, network: &str, container: &str) -> std::net::IpAddr {
    let net = node.docker.inspect_network(network, None).await.unwrap();
    let entry = net.containers.unwrap().remove(container).expect("the container is on the network");
    entry.ipv4_address.unwrap().split('/').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_guard_keeps_servers_on_the_second_node_apart_and_off_its_host() {
    let s = two_nodes().await;
    let node = s.node.as_ref().unwrap();
    let log_path = std::env::temp_dir().join(format!("{}-guard.log", s.config.hub_id));
    let log = std::fs::File::create(&log_path).unwrap();
    // Looking every 20 ms, the guard also comes between the overlay namespace's creation and
    // its bridge's, where a table at priority 0 was passed over (`OVERLAY_RULES` in the
    // spawner's swarm/network.rs): with that table, A reached B on the overlay in every run.
    let _guard = Guard(
        node.command_inside(std::path::Path::new(env!("CARGO_BIN_EXE_labhub-exe")))
            .args(["swarm", "guard", "--interval", "20ms"])
            .env_remove("LABHUB_CONFIG")
            .env("LABHUB_DOCKER__HUB_ID", s.config.hub_id.as_str())
            .env("LABHUB_DOCKER__SWARM_NETWORK", s.config.swarm_network.as_str())
            .env("LABHUB_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("labhub swarm guard runs in the node"),
    );
    let start_there = |user: &str, owner: i64| {
        let mut spec = spec(&s, user, owner);
        spec.node = Some(node.hostname.clone());
        spec
    };
    let (a_spec, b_spec) = (start_there("gina", 7), start_there("hank", 8));
    let a = s.spawner.start(&a_spec, tokio::sync::mpsc::unbounded_channel().0).await.unwrap_or_else(|e| panic!("{e}"));
    let b = s.spawner.start(&b_spec, tokio::sync::mpsc::unbounded_channel().0).await.unwrap_or_else(|e| panic!("{e}"));
    let (a_node, a_container) = task_of(&s, a.state["service_id"].as_str().unwrap()).await;
    let (b_node, b_container) = task_of(&s, b.state["service_id"].as_str().unwrap()).await;
    assert_eq!((a_node.as_str(), b_node.as_str()), (node.node_id.as_str(), node.node_id.as_str()));
    let pid_a = node.docker.inspect_container(&a_container, None).await.unwrap().state.unwrap().pid.unwrap();
    let b_gateway = address_on(node, "docker_gwbridge", &b_container).await;

    // The guard puts its rules in place as the tasks attach (an event) or at its next look:
    // a generous deadline for that, never a measured duration. Its table is then in the
    // overlay's namespace on that node, and A reaches B neither at its gateway address nor
    // at its overlay address.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let overlay = node.docker.inspect_network(s.config.swarm_network.as_str(), None).await.unwrap().id.unwrap();
    loop {
        let table = node
            .command_inside(std::path::Path::new("/usr/bin/nsenter"))
            .arg(format!("--net=/var/run/docker/netns/1-{}", &overlay[..10]))
            .args(["nft", "list", "table", "bridge", "labhub"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&table.stdout).contains("servers may not reach each other") {
            break;
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(std::time::Instant::now() < deadline, "the guard's table is not in the overlay's namespace: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!connects_from(pid_a, SocketAddr::new(b_gateway, 8888)), "A reached B on the node's docker_gwbridge");
    let b_overlay = address_on(node, s.config.swarm_network.as_str(), &b_container).await;
    assert!(!connects_from(pid_a, SocketAddr::new(b_overlay, 8888)), "A reached B on the overlay");

    // The node's own host: a listener in its namespace, at the node's address.
    let host_port = SocketAddr::new(node.address.parse().unwrap(), 18777);
    let mut listener = std::process::Command::new("ip")
        .args(["netns", "exec", node.hostname.as_str()]) // the namespace is named as the node
        .args(["python3", "-m", "http.server", "18777", "--bind", "0.0.0.0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let listening = std::time::Instant::now() + Duration::from_secs(30);
    while !connects_from(std::process::id() as i64, host_port) {
        assert!(std::time::Instant::now() < listening, "the node's host listener did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reached_host = connects_from(pid_a, host_port);
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(!reached_host, "A reached the second node's host");

    // The hub still reaches both.
    assert_eq!(get(a.endpoint, "/user/gina/api", a_spec.token.expose()).await, 200);
    assert_eq!(get(b.endpoint, "/user/hank/api", b_spec.token.expose()).await, 200);
    s.spawner.stop(&a.state).await.unwrap();
    s.spawner.stop(&b.state).await.unwrap();
}
