//! The Docker spawner against the real engine, with no hub around it: start and stop,
//! storage, isolation between users, hardening, failures and their cleanup, exit events,
//! listing, concurrency and hostile names.
//!
//! Every test makes its own [`TestHub`]: a hub id `lhtest<random>` and a network of its own.
//! Container and volume names start with the hub id, so nothing a test creates can meet what
//! another test (or another test process) creates, whatever user names it picks; that is what
//! lets the tests run in parallel and again and again. Dropping the `TestHub`, also when the
//! test panics, removes every container and volume carrying its hub label, then its network
//! and that network's iptables rule. Traffic goes only to containers these tests started.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{InspectContainerOptions, KillContainerOptions};
use futures::StreamExt;
use labhub_core::spawner::{ImageBuilder, Progress, ServerSpec, ServerStatus, SpawnError, Spawner, Started};
use labhub_core::{ImageKind, ImageRef, Owner, Resources, Secret, ServerName, Storage, UserId, UserName};
use labhub_spawner::{DockerConfig, DockerSpawner, PullPolicy};
use labhub_testkit::docker::DockerScope;
use labhub_testkit::images;

const MEMORY: u64 = 256 << 20;
const CPU_MILLIS: u32 = 500;
const PIDS: u32 = 256;

/// One isolated hub: its own id, network, spawner and the test image (a [`DockerScope`],
/// which cleans up when dropped).
struct TestHub {
    spawner: Arc<DockerSpawner>,
    config: DockerConfig,
    image: ImageRef,
    /// The account id each user name of the test stands for (as the hub's database would).
    owners: std::sync::Mutex<Vec<String>>,
    _scope: DockerScope,
}

impl TestHub {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(adjust: impl FnOnce(&mut DockerConfig)) -> Self {
        let binary = Path::new(env!("CARGO_BIN_EXE_labhub-testserver"));
        let scope = DockerScope::with(binary, |c| {
            c.pids_limit = PIDS;
            adjust(c);
        })
        .await;
        Self {
            spawner: scope.spawner.clone(),
            config: scope.config.clone(),
            image: scope.test_image.clone(),
            owners: std::sync::Mutex::new(Vec::new()),
            _scope: scope,
        }
    }

    /// The account id of `user` in this test: one per name, counted from 1.
    fn owner_of(&self, user: &str) -> UserId {
        let mut owners = self.owners.lock().unwrap();
        let at = owners.iter().position(|o| o == user).unwrap_or_else(|| {
            owners.push(user.to_string());
            owners.len() - 1
        });
        UserId::new(at as i64 + 1)
    }

    fn docker(&self) -> &Docker {
        self.spawner.docker()
    }

    fn spec(&self, user: &str, server: Option<&str>) -> ServerSpec {
        self.spec_with(user, server, &self.image, ImageKind::Jupyter)
    }

    fn spec_with(&self, user: &str, server: Option<&str>, image: &ImageRef, kind: ImageKind) -> ServerSpec {
        let user = UserName::parse(user).unwrap();
        let server = server.map(|s| ServerName::parse(s).unwrap());
        let base_url = match &server {
            Some(s) => format!("/user/{user}/{s}/"),
            None => format!("/user/{user}/"),
        };
        let owner = self.owner_of(user.as_str());
        ServerSpec {
            owner,
            user,
            home: Storage::Home { owner, server: server.clone() },
            mounts: Vec::new(),
            server,
            image: image.clone(),
            kind,
            port: kind.default_port(),
            command: None,
            resources: Resources { cpu_millis: CPU_MILLIS, memory_bytes: MEMORY, gpus: 0 },
            base_url,
            token: Secret::new(uuid::Uuid::new_v4().simple().to_string()),
            env: BTreeMap::new(),
            contract: labhub_core::Contract::Labhub,
            placement: Vec::new(),
            start_timeout: Duration::from_secs(30),
            node: None,
        }
    }

    /// Starts a server, returning what it reported along the way.
    async fn start(&self, spec: &ServerSpec) -> Result<(Started, Vec<Progress>), SpawnError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let started = self.spawner.start(spec, tx).await?;
        let mut events = Vec::new();
        while let Ok(p) = rx.try_recv() {
            events.push(p);
        }
        Ok((started, events))
    }

    async fn inspect(&self, started: &Started) -> bollard::models::ContainerInspectResponse {
        self.docker().inspect_container(&container_id(started), None::<InspectContainerOptions>).await.unwrap()
    }

    async fn container_exists(&self, name: &str) -> bool {
        self.docker().inspect_container(name, None::<InspectContainerOptions>).await.is_ok()
    }
}

fn container_id(started: &Started) -> String {
    started.state["container_id"].as_str().unwrap().to_string()
}

fn http() -> reqwest::Client {
    // No proxy: a proxy from the environment must never see a server's address or token.
    // No redirects: what a server answers is what the test looks at.
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn url(endpoint: SocketAddr, spec: &ServerSpec, rest: &str) -> String {
    format!("http://{endpoint}{}{rest}", spec.base_url)
}

async fn put_file(endpoint: SocketAddr, spec: &ServerSpec, name: &str, body: &str) {
    let resp = http()
        .put(url(endpoint, spec, &format!("files/{name}")))
        .header("Authorization", format!("token {}", spec.token.expose()))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
}

async fn get_file(endpoint: SocketAddr, spec: &ServerSpec, name: &str) -> (u16, String) {
    let resp = http()
        .get(url(endpoint, spec, &format!("files/{name}")))
        .header("Authorization", format!("token {}", spec.token.expose()))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Runs a command in a container and returns its stdout.
async fn exec(docker: &Docker, id: &str, cmd: Vec<String>) -> String {
    let options = CreateExecOptions {
        cmd: Some(cmd),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker.create_exec(id, options).await.unwrap();
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await.unwrap() {
        while let Some(Ok(chunk)) = output.next().await {
            out.push_str(&chunk.to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_stop_report_progress_in_order() {
    let hub = TestHub::new().await;
    let spec = hub.spec("alice", None);
    let t0 = Instant::now();
    let (started, events) = hub.start(&spec).await.unwrap();
    eprintln!("spawn-to-ready of the test image: {:?}", t0.elapsed());

    let percents: Vec<u8> = events.iter().map(|p| p.percent).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "progress goes forward: {events:?}");
    let messages: Vec<&str> = events.iter().map(|p| p.message.as_str()).collect();
    let order = [
        "checking image",
        "preparing your storage",
        "creating the container",
        "starting the container",
        "the server answers",
    ];
    let mut at = 0;
    for step in order {
        let found = messages[at..].iter().position(|m| m.starts_with(step));
        let found = found.unwrap_or_else(|| panic!("no {step:?} after step {at} in {messages:?}"));
        at += found + 1;
    }

    let info = hub.spawner.inspect_image(&hub.image).await.unwrap().unwrap();
    assert_eq!(started.image_digest, info.digest);
    assert!(started.image_digest.starts_with("sha256:"));
    let api = url(started.endpoint, &spec, "api");
    let authed =
        http().get(&api).header("Authorization", format!("token {}", spec.token.expose())).send().await.unwrap();
    assert_eq!(authed.status(), 200);
    assert_eq!(http().get(&api).send().await.unwrap().status(), 403, "the server wants its token");
    assert_eq!(hub.spawner.poll(&started.state).await.unwrap(), ServerStatus::Running { endpoint: started.endpoint });

    let t0 = Instant::now();
    hub.spawner.stop(&started.state).await.unwrap();
    eprintln!("stop: {:?}", t0.elapsed());
    assert!(matches!(hub.spawner.poll(&started.state).await.unwrap(), ServerStatus::Stopped { .. }));
    hub.spawner.stop(&started.state).await.expect("stopping a gone server succeeds");
    assert!(!hub.container_exists(started.state["container_name"].as_str().unwrap()).await);
    assert_eq!(hub.spawner.logs(&started.state, 10).await.unwrap(), "", "a gone server has no logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_survive_stop_and_start_and_storage_is_removed_on_request() {
    let hub = TestHub::new().await;
    let spec = hub.spec("bea", None);
    let home = spec.home.clone();
    let (first, _) = hub.start(&spec).await.unwrap();
    put_file(first.endpoint, &spec, "notes.txt", "remember the milk").await;
    hub.spawner.stop(&first.state).await.unwrap();

    let (second, _) = hub.start(&spec).await.unwrap();
    assert_ne!(container_id(&first), container_id(&second), "a new container");
    assert_eq!(get_file(second.endpoint, &spec, "notes.txt").await, (200, "remember the milk".to_string()));

    let used = hub.spawner.storage_usage(&home).await.unwrap().expect("the volume exists");
    assert!(used >= "remember the milk".len() as u64, "{used}");
    let refused = hub.spawner.remove_storage(&home).await.unwrap_err();
    assert!(refused.to_string().contains("in use"), "{refused}");

    hub.spawner.stop(&second.state).await.unwrap();
    assert!(hub.spawner.remove_storage(&home).await.unwrap());
    assert_eq!(hub.spawner.storage_usage(&home).await.unwrap(), None);
    assert!(!hub.spawner.remove_storage(&home).await.unwrap(), "already gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_see_or_reach_each_other_nor_the_host() {
    let hub = TestHub::new().await;
    let jupyterlab = images::jupyterlab_image(&hub.spawner).await.expect("the JupyterLab image exists or builds");
    let spec_a = hub.spec("ann", None);
    let (a, _) = hub.start(&spec_a).await.unwrap();
    put_file(a.endpoint, &spec_a, "ann-secret.txt", "only for ann").await;

    let mut spec_b = hub.spec_with("bob", None, &jupyterlab, ImageKind::Jupyter);
    spec_b.start_timeout = Duration::from_secs(120);
    let t0 = Instant::now();
    let (b, _) = hub.start(&spec_b).await.expect("real JupyterLab starts and answers");
    eprintln!("spawn-to-ready of the JupyterLab image: {:?}", t0.elapsed());

    // A port on the host that a container must not reach (any host address goes through INPUT).
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let b_inspect = hub.inspect(&b).await;
    let gateway = b_inspect.network_settings.as_ref().unwrap().networks.as_ref().unwrap()[hub.config.network.as_str()]
        .gateway
        .clone()
        .unwrap();
    let script = format!(
        r#"
import json, os, socket
def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "open"
    except Exception as e:
        return type(e).__name__
print(json.dumps({{
    "a": reach("{a_ip}", {a_port}),
    "self": reach("{b_ip}", {b_port}),
    "host": reach("{gateway}", {host_port}),
    "home": sorted(os.listdir(os.path.expanduser("~"))),
}}))
"#,
        a_ip = a.endpoint.ip(),
        a_port = a.endpoint.port(),
        b_ip = b.endpoint.ip(),
        b_port = b.endpoint.port(),
    );
    let out = exec(hub.docker(), &container_id(&b), vec!["python3".into(), "-c".into(), script]).await;
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    eprintln!("from bob's container: {seen}");
    assert_eq!(seen["self"], "open", "the probe itself works: {seen}");
    assert_ne!(seen["a"], "open", "bob reached ann's server: {seen}");
    assert_ne!(seen["host"], "open", "bob reached a service on the host: {seen}");
    assert!(!seen["home"].to_string().contains("ann-secret"), "bob sees ann's files: {seen}");
    // The hub, on the host, still reaches both.
    assert_eq!(get_file(a.endpoint, &spec_a, "ann-secret.txt").await.0, 200);
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_hardening_are_applied() {
    let hub = TestHub::new().await;
    let spec = hub.spec("carl", Some("work"));
    let (started, _) = hub.start(&spec).await.unwrap();
    let c = hub.inspect(&started).await;
    let hc = c.host_config.as_ref().unwrap();
    assert_eq!(hc.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(hc.cap_add.as_ref().is_none_or(Vec::is_empty), "{:?}", hc.cap_add);
    assert!(hc.security_opt.as_ref().unwrap().iter().any(|o| o.starts_with("no-new-privileges")));
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.pids_limit, Some(i64::from(PIDS)));
    assert_eq!(hc.memory, Some(MEMORY as i64));
    assert_eq!(hc.nano_cpus, Some(i64::from(CPU_MILLIS) * 1_000_000));
    assert!(hc.port_bindings.as_ref().is_none_or(|p| p.is_empty()), "{:?}", hc.port_bindings);
    assert_ne!(hc.publish_all_ports, Some(true));
    assert_eq!(hc.network_mode.as_deref(), Some(hub.config.network.as_str()));
    assert!(hc.binds.as_ref().is_none_or(Vec::is_empty));
    assert_eq!(hc.ipc_mode.as_deref(), Some("private"));
    let log = hc.log_config.as_ref().unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    assert!(log.config.as_ref().unwrap().contains_key("max-size"), "a chatty server cannot fill the disk");
    assert_eq!(c.config.as_ref().unwrap().user.as_deref(), Some("1000:100"));
    let mounts = c.mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].destination.as_deref(), Some("/home/jovyan"));
    assert_eq!(mounts[0].name.as_deref(), Some(started.state["volume"].as_str().unwrap()));
    assert!(mounts.iter().all(|m| !m.source.as_deref().unwrap_or_default().contains("docker.sock")));
    let labels = c.config.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels["io.labhub.hub"], hub.config.hub_id.as_str());
    assert_eq!(labels["io.labhub.user"], "carl");
    assert_eq!(labels["io.labhub.server"], "work");

    // What the kernel enforces on the server's process (the engine runs on this host).
    let pid = c.state.as_ref().unwrap().pid.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).unwrap().split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(field("Uid:"), "1000");
    assert_eq!(field("Gid:"), "100");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapBnd:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");

    let net = hub.docker().inspect_network(hub.config.network.as_str(), None).await.unwrap();
    let options = net.options.unwrap();
    assert_eq!(options["com.docker.network.bridge.enable_icc"], "false");
    let bridge = &options["com.docker.network.bridge.name"];
    assert!(bridge.starts_with("lh-") && bridge.len() <= 15, "{bridge}");
    let rules = std::process::Command::new("iptables").args(["-w", "-S", "INPUT"]).output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    let rule = rules.lines().find(|l| l.contains(bridge.as_str()));
    eprintln!("host-isolation rule: {rule:?}");
    assert!(rule.is_some_and(|r| r.contains("REJECT") && r.contains("NEW")), "{rules}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_internet_access_the_hub_still_reaches_servers() {
    let hub = TestHub::with(|c| c.internet_access = false).await;
    let spec = hub.spec("nat", None);
    let (started, _) = hub.start(&spec).await.unwrap();
    let net = hub.docker().inspect_network(hub.config.network.as_str(), None).await.unwrap();
    assert_eq!(net.internal, Some(true));
    assert_eq!(get_file(started.endpoint, &spec, "nothing-here").await.0, 404, "the server answers the hub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_named_and_nothing_is_left() {
    // Loopback port 9 (discard): any pull attempt ends here, never at a public registry.
    let missing = ImageRef::parse("127.0.0.1:9/labhub-missing:1").unwrap();
    for policy in [PullPolicy::IfMissing, PullPolicy::Never] {
        let hub = TestHub::with(|c| {
            c.pull_policy = policy;
            c.pull_timeout = Duration::from_secs(20);
        })
        .await;
        let spec = hub.spec_with("dora", None, &missing, ImageKind::Jupyter);
        let err = hub.start(&spec).await.unwrap_err();
        match &err {
            SpawnError::ImageMissing { image, detail } => {
                assert_eq!(image, missing.as_str());
                eprintln!("{policy:?}: {err}");
                if policy == PullPolicy::Never {
                    assert!(detail.contains("pull_policy"), "{detail}");
                }
            }
            other => panic!("expected ImageMissing, got {other:?}"),
        }
        assert!(err.to_string().contains("127.0.0.1:9/labhub-missing:1"));
        assert!(hub.spawner.list().await.unwrap().is_empty());
        assert_eq!(hub.spawner.storage_usage(&spec.home).await.unwrap(), None, "no volume either");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_timeout_removes_the_container_and_keeps_the_volume() {
    let hub = TestHub::new().await;
    let mut spec = hub.spec_with("eve", None, &hub.image, ImageKind::Custom);
    // Listens, but on another port than the one the hub waits on.
    spec.command =
        Some(vec!["jupyter".into(), "lab".into(), "--ServerApp.ip=0.0.0.0".into(), "--ServerApp.port=9999".into()]);
    spec.port = 8888;
    spec.start_timeout = Duration::from_secs(3);
    // Nothing ever answers where the spawner looks, so only its start timeout can end the start
    // (a spawner that ignored it would hang, and the guard would say so).
    let err = tokio::time::timeout(Duration::from_secs(120), hub.start(&spec))
        .await
        .expect("the start gave up by its timeout instead of waiting for ever")
        .unwrap_err();
    match &err {
        SpawnError::Timeout { seconds, log_tail } => {
            assert_eq!(*seconds, 3);
            assert!(log_tail.contains("9999"), "the last log lines explain: {log_tail}");
            assert!(!log_tail.contains(spec.token.expose().as_str()));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(hub.spawner.list().await.unwrap().is_empty(), "the container is gone");
    assert!(hub.spawner.storage_usage(&spec.home).await.unwrap().is_some(), "the volume is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_start_removes_its_container_and_keeps_the_volume() {
    let hub = TestHub::new().await;
    let mut spec = hub.spec_with("ian", None, &hub.image, ImageKind::Custom);
    // Runs, but never answers on the port the hub waits on.
    spec.command =
        Some(vec!["jupyter".into(), "lab".into(), "--ServerApp.ip=0.0.0.0".into(), "--ServerApp.port=9999".into()]);
    spec.port = 8888;
    spec.start_timeout = Duration::from_secs(120);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let start = hub.spawner.start(&spec, tx);
    let waiting = async {
        while let Some(p) = rx.recv().await {
            if p.message.starts_with("waiting for the server") {
                return;
            }
        }
    };
    tokio::select! {
        r = start => panic!("the start ended on its own: {:?}", r.map(|s| s.endpoint)),
        () = waiting => {}
        () = tokio::time::sleep(Duration::from_secs(60)) => panic!("the container never started"),
    }
    // The start's future is gone now, as when the task running it is aborted.
    let t0 = Instant::now();
    while !hub.spawner.list().await.unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the abandoned start's container is still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hub.spawner.storage_usage(&spec.home).await.unwrap().is_some(), "the volume is kept");
    let (again, _) = hub.start(&hub.spec("ian", None)).await.expect("the server starts again");
    hub.spawner.stop(&again.state).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_exiting_during_start_is_reported_with_its_logs() {
    let hub = TestHub::new().await;
    let mut spec = hub.spec_with("fay", None, &hub.image, ImageKind::Custom);
    spec.command = Some(vec!["/labhub-testserver".into(), "--no-such-flag".into()]);
    let err = hub.start(&spec).await.unwrap_err();
    match &err {
        SpawnError::Exited { reason, log_tail } => {
            assert_eq!(reason, "exited with code 2");
            assert!(log_tail.contains("no-such-flag"), "{log_tail}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(hub.spawner.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_behind_the_hubs_back_is_an_exit_event() {
    let hub = TestHub::new().await;
    let spec = hub.spec("gus", Some("k"));
    let (started, _) = hub.start(&spec).await.unwrap();
    let mut exits = hub.spawner.exits().await.unwrap();
    let id = container_id(&started);
    hub.docker().kill_container(&id, None::<KillContainerOptions>).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), exits.next()).await.expect("an exit event").unwrap();
    assert_eq!(exit.runtime_id, id);
    assert_eq!(exit.owner, Owner::User(spec.owner));
    assert_eq!(exit.server, spec.server);
    assert_eq!(exit.reason, "exited with code 137 (killed)");
    assert_eq!(
        hub.spawner.poll(&started.state).await.unwrap(),
        ServerStatus::Stopped { reason: "exited with code 137 (killed)".into() }
    );

    // The exited container under the same name is replaced by the next start.
    let (again, _) = hub.start(&spec).await.unwrap();
    assert_ne!(container_id(&again), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_is_never_replaced() {
    let hub = TestHub::new().await;
    let spec = hub.spec("hal", None);
    let (first, _) = hub.start(&spec).await.unwrap();
    let err = hub.start(&spec).await.unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");
    assert_eq!(hub.spawner.poll(&first.state).await.unwrap(), ServerStatus::Running { endpoint: first.endpoint });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_reads_users_and_servers_back_from_labels() {
    let hub = TestHub::new().await;
    let default = hub.spec("ida", None);
    let named = hub.spec("ida", Some("gpu-2"));
    let (a, _) = hub.start(&default).await.unwrap();
    let (b, _) = hub.start(&named).await.unwrap();
    let stopped = hub.spec("jon", None);
    let (c, _) = hub.start(&stopped).await.unwrap();
    hub.docker().kill_container(&container_id(&c), None::<KillContainerOptions>).await.unwrap();

    let mut seen: Vec<_> = hub.spawner.list().await.unwrap();
    let key = |o: &labhub_core::spawner::ObservedServer| match &o.owner {
        Owner::User(id) => (id.get(), o.server.clone()),
        Owner::LegacyName(_) | Owner::Group(_) => (0, None),
    };
    seen.sort_by_key(key);
    assert_eq!(seen.len(), 3);
    assert_eq!((&seen[0].owner, seen[0].server.as_ref().map(ServerName::as_str)), (&Owner::User(default.owner), None));
    assert_eq!(
        (&seen[1].owner, seen[1].server.as_ref().map(ServerName::as_str)),
        (&Owner::User(default.owner), Some("gpu-2"))
    );
    assert_eq!(seen[0].status, ServerStatus::Running { endpoint: a.endpoint });
    assert_eq!(seen[1].status, ServerStatus::Running { endpoint: b.endpoint });
    assert_eq!(seen[2].owner, Owner::User(stopped.owner));
    assert!(
        matches!(&seen[2].status, ServerStatus::Stopped { reason } if reason.contains("Exited")),
        "{:?}",
        seen[2].status
    );
    // The listed state addresses the same container as the one start returned.
    assert_eq!(seen[0].state["container_id"], a.state["container_id"]);
    assert_eq!(hub.spawner.poll(&seen[1].state).await.unwrap(), ServerStatus::Running { endpoint: b.endpoint });
    hub.spawner.stop(&seen[1].state).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_starts_all_succeed() {
    let hub = TestHub::new().await;
    let specs: Vec<ServerSpec> = (0..20).map(|i| hub.spec(&format!("user{i:02}"), None)).collect();
    let t0 = Instant::now();
    let results = futures::future::join_all(specs.iter().map(|s| hub.start(s))).await;
    eprintln!("20 concurrent starts: {:?}", t0.elapsed());
    let started: Vec<Started> = results.into_iter().map(|r| r.unwrap().0).collect();
    let endpoints: HashSet<SocketAddr> = started.iter().map(|s| s.endpoint).collect();
    assert_eq!(endpoints.len(), 20);
    for (s, spec) in started.iter().zip(&specs) {
        let resp = http()
            .get(url(s.endpoint, spec, "api"))
            .header("Authorization", format!("token {}", spec.token.expose()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let t0 = Instant::now();
    let stops = futures::future::join_all(started.iter().map(|s| hub.spawner.stop(&s.state))).await;
    eprintln!("20 concurrent stops: {:?}", t0.elapsed());
    assert!(stops.iter().all(Result::is_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_never_collide() {
    let hub = TestHub::with(|c| c.volume_per_server = true).await;
    let long_a = format!("a{}a", "@".repeat(62));
    let long_b = format!("a{}b", "@".repeat(62));
    let long_server = format!("s{}t", "-".repeat(30));
    let pairs: Vec<(&str, Option<&str>)> = vec![
        ("a-b", None),
        ("a", Some("b")),
        ("a", None),
        ("x_y", None),
        ("x-5fy", None),
        ("a@b.c", None),
        (&long_a, Some(&long_server)),
        (&long_b, Some(&long_server)),
    ];
    let specs: Vec<ServerSpec> = pairs.iter().map(|(u, s)| hub.spec(u, *s)).collect();
    let results = futures::future::join_all(specs.iter().map(|s| hub.start(s))).await;
    let started: Vec<Started> = results.into_iter().map(|r| r.unwrap().0).collect();
    let names: HashSet<&str> = started.iter().map(|s| s.state["container_name"].as_str().unwrap()).collect();
    let volumes: HashSet<&str> = started.iter().map(|s| s.state["volume"].as_str().unwrap()).collect();
    assert_eq!(names.len(), pairs.len(), "{names:?}");
    assert_eq!(volumes.len(), pairs.len(), "{volumes:?}");

    // Storage is not shared across the pairs naive joining would confuse.
    put_file(started[0].endpoint, &specs[0], "mine.txt", "a-b's").await;
    assert_eq!(get_file(started[1].endpoint, &specs[1], "mine.txt").await.0, 404);

    let listed: HashSet<(Owner, Option<String>)> =
        hub.spawner.list().await.unwrap().into_iter().map(|o| (o.owner, o.server.map(|s| s.to_string()))).collect();
    let wanted: HashSet<(Owner, Option<String>)> =
        specs.iter().map(|s| (Owner::User(s.owner), s.server.as_ref().map(|s| s.to_string()))).collect();
    assert_eq!(listed, wanted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_logs_of_a_running_server() {
    let hub = TestHub::new().await;
    let spec = hub.spec("kim", None);
    let (started, _) = hub.start(&spec).await.unwrap();
    let t0 = Instant::now();
    let usage = hub.spawner.usage().await.unwrap();
    eprintln!("usage of one server: {:?} ({usage:?})", t0.elapsed());
    let mine = usage.iter().find(|u| u.owner == Owner::User(spec.owner)).expect("the running server is measured");
    assert!(mine.memory_bytes > 0 && mine.memory_bytes < MEMORY, "{mine:?}");
    let logs = hub.spawner.logs(&started.state, 50).await.unwrap();
    assert!(logs.contains("listening"), "{logs}");
    assert!(!logs.contains(spec.token.expose().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rstudio_kind_runs_rserver_as_the_rocker_user() {
    let hub = TestHub::new().await;
    let spec = hub.spec_with("lea", None, &hub.image, ImageKind::Rstudio);
    let (started, _) = hub.start(&spec).await.unwrap();
    assert_eq!(started.endpoint.port(), 8787);
    let c = hub.inspect(&started).await;
    let config = c.config.as_ref().unwrap();
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    let cmd = config.cmd.clone().unwrap();
    assert_eq!(cmd[..2], ["/bin/sh", "-c"], "a prologue makes rserver's private state");
    assert_eq!(cmd[4], "/usr/lib/rstudio-server/bin/rserver");
    assert!(cmd.contains(&"--server-user=rstudio".to_string()) && cmd.contains(&"--auth-none=1".to_string()));
    assert!(!config.env.as_ref().unwrap().iter().any(|e| e.contains(spec.token.expose().as_str())));
    assert_eq!(c.mounts.as_ref().unwrap()[0].destination.as_deref(), Some("/home/rstudio"));
    let resp = http().get(format!("http://{}/", started.endpoint)).send().await.unwrap();
    assert!(resp.status().as_u16() < 500, "{}", resp.status());

    // rserver's private state was made by the prologue, owned by the rstudio user, private.
    let entries = crate::common::owned_entries(hub.docker(), &container_id(&started), "/tmp/labhub-rserver").await;
    assert!(entries.contains(&("labhub-rserver/".into(), 1000, 1000, 0o700)), "{entries:?}");
    assert!(entries.contains(&("labhub-rserver/db/".into(), 1000, 1000, 0o700)), "{entries:?}");
    assert!(entries.contains(&("labhub-rserver/database.conf".into(), 1000, 1000, 0o600)), "{entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipes_are_offered_through_the_image_builder_seam() {
    let hub = TestHub::new().await;
    assert_eq!(hub.spawner.recipes(), vec!["jupyterlab".to_string()]);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let tag = ImageRef::parse("labhub-test/never-built:1").unwrap();
    let err = hub.spawner.build("no-such-recipe", &tag, tx).await.unwrap_err();
    assert!(matches!(&err, SpawnError::Invalid(m) if m.contains("jupyterlab")), "{err}");
}
