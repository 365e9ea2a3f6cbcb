//! The Swarm spawner (`[docker] mode = "swarm"`) on a single-node swarm of this machine's
//! engine (`labhub_testkit::swarm`: made for the run when the engine is in none, left again
//! after the last test): start and readiness from the task's states, a server reached through
//! the hub's proxy, stop, restart policy none, the quota as limits and reservations, an image
//! the engine lacks, tasks that fail or cannot be placed, boot reconcile, a running task saved
//! as an image, an rstudio server, placement from the site, the catalogue entry and the group, and what keeps
//! tasks apart on the overlay.
//!
//! A second node is `swarm_nodes.rs`'s. Not verified anywhere: NFS homes following a user
//! across nodes (the mount spec is unit-tested; this kernel has no NFS), encrypted overlays
//! between nodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use labhub_core::spawner::{Progress, ServerSpec, ServerStatus, SpawnError, Spawner, Started};
use labhub_core::{ImageKind, ImageRef, Resources, Secret, Storage, UserId, UserName};
use labhub_spawner::{DockerConfig, PullPolicy, SwarmSpawner};
use labhub_testkit::TestApp;
use labhub_testkit::swarm::SwarmScope;
use serde_json::json;

use crate::common::test_server_binary;

const MEMORY: u64 = 256 << 20;
const CPU_MILLIS: u32 = 500;

async fn scope() -> SwarmScope {
    scope_with(|_| {}).await
}

async fn scope_with(adjust: impl FnOnce(&mut DockerConfig)) -> SwarmScope {
    SwarmScope::with(test_server_binary(), adjust).await
}

/// A server of the test image with the quota these tests check.
pub(crate) fn spec(s: &SwarmScope, user: &str, owner: i64) -> ServerSpec {
    let owner = UserId::new(owner);
    let user = UserName::parse(user).unwrap();
    ServerSpec {
        owner,
        home: Storage::Home { owner, server: None },
        mounts: Vec::new(),
        server: None,
        image: s.docker.test_image.clone(),
        kind: ImageKind::Jupyter,
        port: ImageKind::Jupyter.default_port(),
        command: None,
        resources: Resources { cpu_millis: CPU_MILLIS, memory_bytes: MEMORY, gpus: 0 },
        base_url: format!("/user/{user}/"),
        user,
        token: Secret::new(uuid::Uuid::new_v4().simple().to_string()),
        env: BTreeMap::new(),
        start_timeout: Duration::from_secs(60),
        node: None,
        contract: labhub_core::Contract::Labhub,
        placement: Vec::new(),
    }
}

pub(crate) async fn start(spawner: &SwarmSpawner, spec: &ServerSpec) -> Result<(Started, Vec<Progress>), SpawnError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = spawner.start(spec, tx).await;
    let mut events = Vec::new();
    while let Ok(p) = rx.try_recv() {
        events.push(p);
    }
    started.map(|s| (s, events))
}

pub(crate) fn service_id(started: &Started) -> String {
    started.state["service_id"].as_str().unwrap().to_string()
}

pub(crate) async fn services_of(s: &SwarmScope) -> Vec<bollard::models::Service> {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{}={}", labhub_spawner::LABEL_HUB, s.config.hub_id)],
    )]);
    let options = bollard::query_parameters::ListServicesOptions { filters: Some(filters), ..Default::default() };
    s.engine().list_services(Some(options)).await.unwrap()
}

/// The status of `GET path` on a server, with its token.
pub(crate) async fn get(addr: SocketAddr, path: &str, token: &str) -> Result<u16, reqwest::Error> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    let r = client.get(format!("http://{addr}{path}")).header("Authorization", format!("token {token}")).send().await?;
    Ok(r.status().as_u16())
}

/// The task container behind a started server (on this node).
async fn task_container(s: &SwarmScope, started: &Started) -> String {
    let tasks = s
        .engine()
        .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
            filters: Some(std::collections::HashMap::from([("service".to_string(), vec![service_id(started)])])),
        }))
        .await
        .unwrap();
    tasks[0].status.as_ref().unwrap().container_status.as_ref().unwrap().container_id.clone().unwrap()
}

/// The PID of the task container behind a started server (on this node).
async fn task_pid(s: &SwarmScope, started: &Started) -> i64 {
    let c = s.engine().inspect_container(&task_container(s, started).await, None).await.unwrap();
    c.state.unwrap().pid.unwrap()
}

/// Whether a TCP connection from inside the network namespace of `pid` to `addr` succeeds.
pub(crate) fn connects_from(pid: i64, addr: SocketAddr) -> bool {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "curl", "-s", "-o", "/dev/null", "-m", "3", "-w", "%{http_code}"])
        .arg(format!("http://{addr}/"))
        .output()
        .expect("nsenter and curl run");
    String::from_utf8_lossy(&out.stdout).trim() != "000"
}

#[tokio::test]
async fn a_server_starts_as_a_service_with_its_quota_answers_and_stops() {
    let s = scope().await;
    let spec = spec(&s, "alice", 1);
    let (started, progress) = start(&s.spawner, &spec).await.unwrap();

    // Readiness came from the task's states, each a progress message.
    let messages: Vec<&str> = progress.iter().map(|p| p.message.as_str()).collect();
    assert!(messages.iter().any(|m| m.starts_with("task ")), "{messages:?}");
    assert!(messages.contains(&"the server answers"), "{messages:?}");
    let token = spec.token.expose().clone();
    assert_eq!(get(started.endpoint, "/user/alice/api", &token).await.unwrap(), 200);
    assert_eq!(s.spawner.poll(&started.state).await.unwrap(), ServerStatus::Running { endpoint: started.endpoint });

    // The service as Swarm holds it.
    let svc = s.engine().inspect_service(&service_id(&started), None).await.unwrap();
    let task = svc.spec.clone().unwrap().task_template.unwrap();
    let res = task.resources.unwrap();
    let limits = res.limits.unwrap();
    assert_eq!((limits.nano_cpus, limits.memory_bytes), (Some(500_000_000), Some(MEMORY as i64)));
    assert_eq!(limits.pids, Some(i64::from(s.config.pids_limit)));
    let reserved = res.reservations.unwrap();
    assert_eq!((reserved.nano_cpus, reserved.memory_bytes), (Some(500_000_000), Some(MEMORY as i64)));
    assert_eq!(task.restart_policy.unwrap().condition, Some(bollard::models::TaskSpecRestartPolicyConditionEnum::NONE));
    assert_eq!(svc.endpoint.unwrap().ports, None, "nothing published");
    let endpoint = svc.spec.clone().unwrap().endpoint_spec.unwrap();
    assert_eq!(endpoint.ports, None, "nothing to publish");
    assert_eq!(endpoint.mode, Some(bollard::models::EndpointSpecModeEnum::DNSRR), "no virtual IP, no routing mesh");
    let container = task.container_spec.unwrap();
    assert_eq!(Some(started.image_digest.clone()), container.image, "the service runs the image by content id");
    assert_eq!(container.capability_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(container.user.as_deref(), Some("1000:100"));
    // The task's container as the engine made it from that spec.
    let pid = task_pid(&s, &started).await;
    assert!(pid > 0);

    s.spawner.stop(&started.state).await.unwrap();
    assert!(services_of(&s).await.is_empty(), "the service is gone");
    assert!(matches!(s.spawner.poll(&started.state).await.unwrap(), ServerStatus::Stopped { .. }));
    s.spawner.stop(&started.state).await.expect("stopping again is done");
    // The home stayed; the next start mounts it again.
    assert!(s.spawner.storage_usage(&spec.home).await.unwrap().is_some(), "the home is kept");
}

#[tokio::test]
async fn an_rstudio_server_runs_as_a_service_with_its_private_state_made_by_its_own_user() {
    let s = scope().await;
    let mut spec = spec(&s, "lea", 9);
    spec.kind = ImageKind::Rstudio;
    spec.port = ImageKind::Rstudio.default_port();
    let (started, _) = start(&s.spawner, &spec).await.expect("an rstudio server starts in Swarm mode");
    assert_eq!(started.endpoint.port(), 8787);
    // The rserver stand-in answers at its own root (its sign-in redirect).
    let client = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let status = client.get(format!("http://{}/", started.endpoint)).send().await.unwrap().status();
    assert!(status.as_u16() < 500, "{status}");

    // What a service cannot have placed before start, the task's prologue made: rserver's
    // state, the rstudio user's own and private.
    let container = task_container(&s, &started).await;
    let entries = crate::common::owned_entries(s.engine(), &container, "/tmp/labhub-rserver").await;
    for dir in ["labhub-rserver/", "labhub-rserver/data/", "labhub-rserver/db/"] {
        assert!(entries.contains(&(dir.into(), 1000, 1000, 0o700)), "{dir}: {entries:?}");
    }
    assert!(entries.contains(&("labhub-rserver/database.conf".into(), 1000, 1000, 0o600)), "{entries:?}");
    s.spawner.stop(&started.state).await.unwrap();
    assert!(services_of(&s).await.is_empty());
}

#[tokio::test]
async fn a_running_service_is_saved_as_an_image_without_its_secrets_and_keeps_running() {
    let s = scope().await;
    let spec = spec(&s, "erin", 6);
    let (started, _) = start(&s.spawner, &spec).await.unwrap();
    let tag = ImageRef::parse(&format!("{}-env/saved:b1", s.config.hub_id)).unwrap();
    let labels = BTreeMap::from([("io.labhub.environment".to_string(), "saved".to_string())]);
    let saved =
        s.spawner.commit_server(&started.state, &tag, &labels, 1 << 30).await.expect("the task's container saved");
    let image = s.engine().inspect_image(tag.as_str()).await.expect("the tag names the saved image");
    assert_eq!(image.id.as_deref(), Some(saved.digest.as_str()));
    let config = image.config.unwrap();
    assert_eq!(config.labels.unwrap_or_default().get("io.labhub.environment").map(String::as_str), Some("saved"));
    let token = spec.token.expose().clone();
    let env = config.env.unwrap_or_default();
    assert!(!env.iter().any(|kv| kv.contains(&token)), "the server's token is not in the image: {env:?}");
    // Paused for the commit only: the server answers again.
    assert_eq!(get(started.endpoint, "/user/erin/api", &token).await.unwrap(), 200);
    s.spawner.stop(&started.state).await.unwrap();
    let refused = s.spawner.commit_server(&started.state, &tag, &labels, 1 << 30).await.unwrap_err();
    assert!(refused.to_string().contains("not running"), "{refused}");
    let _ = s.engine().remove_image(tag.as_str(), None::<bollard::query_parameters::RemoveImageOptions>, None).await;
}

#[tokio::test]
async fn a_server_that_exits_stays_stopped() {
    let s = scope().await;
    let spec = spec(&s, "bob", 2);
    let (started, _) = start(&s.spawner, &spec).await.unwrap();
    let pid = task_pid(&s, &started).await;
    let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    let mut status = s.spawner.poll(&started.state).await.unwrap();
    for _ in 0..100 {
        if matches!(status, ServerStatus::Stopped { .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = s.spawner.poll(&started.state).await.unwrap();
    }
    let ServerStatus::Stopped { reason } = status else { panic!("still running: {status:?}") };
    assert!(reason.contains("exited with code 137"), "{reason}");
    // Restart policy none: Swarm makes no second task, however long we look (the engine's
    // own restart delay is 5 s; a restart would show as a second task well within 7 s).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let tasks = s
        .engine()
        .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
            filters: Some(std::collections::HashMap::from([("service".to_string(), vec![service_id(&started)])])),
        }))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1, "no task was started again");
    assert!(matches!(s.spawner.poll(&started.state).await.unwrap(), ServerStatus::Stopped { .. }));
    s.spawner.stop(&started.state).await.unwrap();
}

#[tokio::test]
async fn an_image_the_engine_lacks_is_a_clear_error_and_leaves_nothing() {
    let s = scope_with(|c| c.pull_policy = PullPolicy::Never).await;
    let mut spec = spec(&s, "carol", 3);
    spec.image = ImageRef::parse("labhub-test/absent:1").unwrap();
    let e = start(&s.spawner, &spec).await.unwrap_err();
    assert!(matches!(&e, SpawnError::ImageMissing { image, .. } if image == "labhub-test/absent:1"), "{e}");
    assert!(services_of(&s).await.is_empty());
}

#[tokio::test]
async fn a_task_that_fails_or_cannot_be_placed_is_a_clear_error_never_a_hang() {
    let s = scope().await;
    // The server exits at once: the task fails, the error says how, the service goes.
    let mut failing = spec(&s, "dave", 4);
    failing.command = Some(vec!["/labhub-testserver".into(), "--port".into(), "not-a-port".into()]);
    failing.start_timeout = Duration::from_secs(30);
    let e = tokio::time::timeout(Duration::from_secs(60), start(&s.spawner, &failing)).await.unwrap().unwrap_err();
    assert!(matches!(&e, SpawnError::Exited { reason, .. } if reason.contains("exited with code")), "{e}");
    assert!(services_of(&s).await.is_empty(), "the failed service was removed");

    // No node satisfies the constraint: the task stays pending, which is progress with
    // Swarm's own message until the start timeout, then a timeout error.
    let s2 = scope_with(|c| c.swarm_constraints = vec!["node.labels.labhub-test-absent==yes".into()]).await;
    let mut pending = spec(&s2, "erin", 5);
    pending.start_timeout = Duration::from_secs(3);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let e = s2.spawner.start(&pending, tx).await.unwrap_err();
    assert!(matches!(&e, SpawnError::Timeout { seconds: 3, .. }), "{e}");
    let mut messages = Vec::new();
    while let Ok(p) = rx.try_recv() {
        messages.push(p.message);
    }
    assert!(messages.iter().any(|m| m.starts_with("task pending: no suitable node")), "{messages:?}");
    assert!(services_of(&s2).await.is_empty());
}

#[tokio::test]
async fn a_new_hub_adopts_running_services() {
    let s = scope().await;
    let spec = spec(&s, "frank", 6);
    let (started, _) = start(&s.spawner, &spec).await.unwrap();

    let again = SwarmSpawner::on(s.docker.spawner.clone()).await.unwrap();
    let found = again.list().await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].owner, labhub_core::Owner::User(UserId::new(6)));
    assert_eq!(found[0].status, ServerStatus::Running { endpoint: started.endpoint });
    assert_eq!(found[0].state["service_id"], started.state["service_id"]);
    again.stop(&found[0].state).await.unwrap();
    assert!(again.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn tasks_cannot_reach_each_other_or_the_host() {
    let s = scope().await;
    let (a, _) = start(&s.spawner, &spec(&s, "gina", 7)).await.unwrap();
    let (b, _) = start(&s.spawner, &spec(&s, "hank", 8)).await.unwrap();
    let pid_a = task_pid(&s, &a).await;

    // B's address on the overlay, from the manager's task list.
    let tasks = s
        .engine()
        .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
            filters: Some(std::collections::HashMap::from([("service".to_string(), vec![service_id(&b)])])),
        }))
        .await
        .unwrap();
    let network = s.engine().inspect_network(s.config.swarm_network.as_str(), None).await.unwrap();
    let b_container = tasks[0].status.clone().unwrap().container_status.unwrap().container_id.unwrap();
    let b_overlay: std::net::IpAddr = network.containers.unwrap()[&b_container]
        .ipv4_address
        .clone()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // The hub (this process, on the host) reaches both.
    assert!(connects_from(std::process::id() as i64, a.endpoint));
    assert!(connects_from(std::process::id() as i64, b.endpoint));
    // A reaches neither B's overlay address, B's gateway address, nor the host.
    assert!(!connects_from(pid_a, SocketAddr::new(b_overlay, 8888)), "A reached B on the overlay");
    assert!(!connects_from(pid_a, b.endpoint), "A reached B on docker_gwbridge");
    let host = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = host.local_addr().unwrap().port();
    let gateway: std::net::IpAddr = a_gateway(&s).await;
    let accept = tokio::spawn(async move { host.accept().await.is_ok() });
    assert!(!connects_from(pid_a, SocketAddr::new(gateway, port)), "A reached the host");
    accept.abort();
    // A itself still answers (the rules did not cut the hub off).
    assert!(connects_from(std::process::id() as i64, a.endpoint));
}

/// The host's address on `docker_gwbridge`.
async fn a_gateway(s: &SwarmScope) -> std::net::IpAddr {
    let net = s.engine().inspect_network("docker_gwbridge", None).await.unwrap();
    let config = net.ipam.unwrap().config.unwrap();
    config[0].gateway.clone().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_hub_proxies_to_a_service_and_stops_it() {
    let s = scope().await;
    let app = TestApp::builder().docker(s.docker.clone()).spawner(s.spawner.clone()).spawn().await;
    app.add_test_image("test").await;
    app.add_user("alice", "correct horse", false).await;
    let alice = app.api_for("alice").await;
    let (status, _) = alice.start("alice", None, json!({"image": "test"})).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(status.as_u16(), 201 | 202), "{status}");
    alice.wait_ready("alice", None).await;
    assert_eq!(services_of(&s).await.len(), 1, "the server runs as a service");
    let r = reqwest::Client::new()
        .get(app.at("/user/alice/api/status"))
        .header("Authorization", alice.authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "through the hub's proxy to the task");
    alice.stop("alice", None).await.unwrap();
    alice.wait_stopped("alice", None).await;
    assert!(services_of(&s).await.is_empty());
}

#[tokio::test]
async fn a_servers_placement_is_the_sites_its_catalogue_entrys_and_its_groups() {
    let s = scope_with(|c| c.swarm_constraints = vec!["node.platform.os==linux".into()]).await;
    let app = TestApp::builder().docker(s.docker.clone()).spawner(s.spawner.clone()).spawn().await;
    app.add_test_image("test").await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    let root = app.api_for("root").await;
    let reference = s.docker.test_image.to_string();
    let entry = json!({"display_name": "Test", "reference": reference, "kind": "jupyter", "cpu": 0.5,
                       "memory": "256M", "placement": ["node.role == manager"]});
    let put = root.put_json("/hub/api/images/test", &entry).await;
    assert!(put.status.is_success(), "{put:?}");
    root.post_json("/hub/api/groups", &json!({"groups": ["lab"]})).await;
    root.post_json("/hub/api/groups/lab/users", &json!({"users": ["alice"]})).await;
    let patched = root.patch_json("/hub/api/groups/lab", &json!({"placement": ["node.labels.labhub-test!=no"]})).await;
    assert_eq!(patched.value()["placement"], json!(["node.labels.labhub-test!=no"]), "{patched:?}");

    let alice = app.api_for("alice").await;
    alice.start("alice", None, json!({"image": "test"})).await.unwrap_or_else(|e| panic!("{e}"));
    alice.wait_ready("alice", None).await;
    let service = services_of(&s).await.remove(0);
    let constraints = service.spec.unwrap().task_template.unwrap().placement.unwrap().constraints.unwrap();
    assert_eq!(constraints, ["node.platform.os==linux", "node.role==manager", "node.labels.labhub-test!=no"]);
    alice.stop("alice", None).await.unwrap();
    alice.wait_stopped("alice", None).await;
}
