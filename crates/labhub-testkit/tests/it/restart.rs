//! The `labhub` binary as a real process with users' servers running: killed with SIGKILL
//! and started again, it adopts them; stopped with SIGTERM, it leaves them running; a server
//! whose container vanished while the hub was down is marked stopped when it comes back.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use labhub_core::spawner::Spawner;
use labhub_testkit::Api;
use labhub_testkit::docker::DockerScope;
use labhub_testkit::pg::{TestCluster, TestDb, free_port};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::test_server_binary;
use crate::proxied::{WsEnd, echo, ws_connect, ws_end, ws_url};
use labhub_testkit::app::script;

const EXE: &str = env!("CARGO_BIN_EXE_labhub-exe");

/// What successive (or simultaneous: `replicas.rs`) hub processes share: the database, the
/// data folder (and so the secret key the servers' tokens derive from), and the Docker scope
/// (kept alive for cleanup).
pub(crate) struct Site {
    pub(crate) scope: DockerScope,
    pub(crate) db: TestDb,
    db_url: String,
    data: tempfile::TempDir,
}

impl Site {
    pub(crate) async fn new() -> Self {
        let scope = DockerScope::new(test_server_binary()).await;
        let db = TestCluster::get().fresh_database().await;
        let db_url = TestCluster::get().url(&db.name);
        Self { scope, db, db_url, data: tempfile::tempdir().unwrap() }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(EXE);
        c.args(args)
            .env_remove("LABHUB_CONFIG")
            .env("DATABASE_URL", &self.db_url)
            .env("LABHUB_DATA_DIR", self.data.path())
            .env("LABHUB_DOCKER__HUB_ID", self.scope.config.hub_id.as_str())
            .env("LABHUB_DOCKER__NETWORK", self.scope.config.network.as_str())
            .env("LABHUB_SERVERS__BUILD_MISSING_IMAGES_AT_BOOT", "false")
            .env("LABHUB_LOG", "info,sqlx=warn,hyper=warn,bollard=warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs a one-shot command; returns its standard output.
    async fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().await.expect("running labhub");
        assert!(out.status.success(), "labhub {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An admin `root` and an API token (`token …`) for it, made with the command line.
    pub(crate) async fn admin(&self) -> String {
        let out = self.run(&["user", "add", "root", "--admin"]).await;
        assert!(out.contains("Created root (admin).") && out.contains("Password: "), "{out}");
        format!("token {}", self.run(&["token", "create", "root", "--note", "restart test"]).await.trim())
    }

    /// The container of `user`'s default server, as the engine lists it.
    pub(crate) async fn container_of(&self, user: &str) -> Option<String> {
        let pool = labhub_db::sqlx::PgPool::connect(&self.db_url).await.expect("the site's database");
        let id: i64 = labhub_db::sqlx::query_scalar("select user_id from users where name = $1")
            .bind(user)
            .fetch_one(&pool)
            .await
            .expect("the account exists");
        let owner = labhub_core::Owner::User(labhub_core::UserId::new(id));
        let listed = self.scope.spawner.list().await.expect("listing containers");
        listed
            .into_iter()
            .find(|o| o.owner == owner && o.server.is_none())
            .and_then(|o| o.state["container_id"].as_str().map(str::to_string))
    }

    pub(crate) async fn is_running(&self, container: &str) -> bool {
        let inspect = self
            .scope
            .docker()
            .inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>)
            .await;
        inspect.ok().and_then(|c| c.state).and_then(|s| s.running).unwrap_or(false)
    }
}

/// One `labhub serve` process.
pub(crate) struct HubProcess {
    child: tokio::process::Child,
    pub(crate) url: String,
    log: std::path::PathBuf,
}

impl HubProcess {
    /// Starts `labhub serve` on a free port and waits until it answers.
    pub(crate) async fn start(site: &Site, name: &str) -> Self {
        Self::start_with(site, name, &[]).await
    }

    /// [`HubProcess::start`] with more `LABHUB_*` settings.
    pub(crate) async fn start_with(site: &Site, name: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = site.data.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = site
            .command(&["serve"])
            .envs(env.iter().copied())
            .env("LABHUB_BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting labhub serve");
        let hub = Self { child, url: format!("http://127.0.0.1:{port}"), log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = script().get(hub.at("/hub/health")).send().await
                && r.status() == StatusCode::OK
            {
                return hub;
            }
            assert!(Instant::now() < deadline, "{name} did not come up:\n{}", hub.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// An API client of this hub with an API token.
    pub(crate) fn api(&self, auth: &str) -> Api {
        Api::new(&self.url, auth)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`.
    pub(crate) async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// `kill -TERM`, then waits for the exit.
    async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().expect("a running hub").to_string();
        let status = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(status.success());
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("the hub did not stop within {within:?} of SIGTERM:\n{}", self.log_text()),
        }
    }
}

/// Adds the test image to the catalogue and starts `root`'s default server on it.
pub(crate) async fn start_server(site: &Site, hub: &HubProcess, auth: &str) {
    let api = hub.api(auth);
    let image = json!({"name": "test", "display_name": "Test server", "reference": site.scope.test_image.to_string(),
                       "kind": "jupyter", "cpu": 0.5, "memory": "256M"});
    api.add_image(image).await.unwrap_or_else(|e| panic!("{e}"));
    let (status, _) = api.start("root", None, json!({"image": "test"})).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(status.as_u16(), 201 | 202), "{status}");
    // A hang guard with the hub's log, which says why a start went nowhere.
    let give_up = Instant::now() + Duration::from_secs(120);
    while !api.user("root").await.is_ready(None) {
        assert!(Instant::now() < give_up, "the server did not become ready:\n{}", hub.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_with_sigkill_adopts_its_running_servers_when_it_comes_back() {
    let site = Site::new().await;
    let auth = site.admin().await;
    let mut first = HubProcess::start(&site, "first").await;
    start_server(&site, &first, &auth).await;
    let c = script();
    let r = c
        .put(first.at("/user/root/files/notes.txt"))
        .header("Authorization", &auth)
        .body("written before the crash")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut ws = ws_connect(&ws_url(&first.url, "/user/root/ws/echo"), &[("Authorization", &auth)]).await.unwrap();
    assert_eq!(echo(&mut ws, "before").await, "before");
    let container = site.container_of("root").await.expect("the server's container");

    first.kill().await;
    // The hub's sockets went with it; the user's container did not.
    let end = ws_end(&mut ws, Duration::from_secs(5)).await;
    eprintln!("the tunnel through the killed hub ended: {end:?}");
    assert!(site.is_running(&container).await, "the server kept running while the hub was dead");
    assert!(c.get(first.at("/hub/health")).send().await.is_err());

    let second = HubProcess::start(&site, "second").await;
    let log = second.log_text();
    assert!(log.contains("adopted a running server"), "{log}");
    let model = second.api(&auth).user("root").await;
    assert!(model.is_ready(None), "{model:?}");
    assert_eq!(model.servers[""].url, "/user/root/");
    let r = c.get(second.at("/user/root/files/notes.txt")).header("Authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "written before the crash");
    let mut ws = ws_connect(&ws_url(&second.url, "/user/root/ws/echo"), &[("Authorization", &auth)]).await.unwrap();
    assert_eq!(echo(&mut ws, "after").await, "after");
    assert_eq!(site.container_of("root").await.as_deref(), Some(container.as_str()), "the same container, adopted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_leaves_servers_running_and_a_vanished_one_is_marked_stopped() {
    let site = Site::new().await;
    let auth = site.admin().await;
    let mut first = HubProcess::start(&site, "first").await;
    start_server(&site, &first, &auth).await;
    let container = site.container_of("root").await.expect("the server's container");
    // A tunnel stays open across the stop: the hub must not wait for it, nor leave it behind.
    let mut ws = ws_connect(&ws_url(&first.url, "/user/root/ws/echo"), &[("Authorization", &auth)]).await.unwrap();
    assert_eq!(echo(&mut ws, "before").await, "before");

    let start = Instant::now();
    let status = first.terminate(Duration::from_secs(20)).await;
    eprintln!("SIGTERM to exit: {:?} ({status})", start.elapsed());
    assert!(status.success(), "a clean exit: {status}\n{}", first.log_text());
    let log = first.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("user servers keep running"), "{log}");
    match ws_end(&mut ws, Duration::from_secs(5)).await {
        WsEnd::Closed(_) | WsEnd::Dropped(_) => {}
    }
    assert!(site.is_running(&container).await, "SIGTERM stops the hub, not the users' servers");

    // Started again, it adopts the server; stopped again, the container is then removed
    // behind its back.
    let mut second = HubProcess::start(&site, "second").await;
    assert!(second.api(&auth).user("root").await.is_ready(None));
    assert!(second.terminate(Duration::from_secs(20)).await.success());
    let options = bollard::query_parameters::RemoveContainerOptions { force: true, ..Default::default() };
    site.scope.docker().remove_container(&container, Some(options)).await.unwrap();

    let third = HubProcess::start(&site, "third").await;
    let log = third.log_text();
    assert!(log.contains("a server's container was gone; marked stopped"), "{log}");
    let model = third.api(&auth).user("root").await;
    assert!(model.servers.is_empty(), "no server runs: {model:?}");
    let r = script().get(third.at("/user/root/api/status")).header("Authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (state, reason): (String, Option<String>) =
        labhub_db::sqlx::query_as("select state::text, stop_reason from servers")
            .fetch_one(&site.db.pool)
            .await
            .unwrap();
    assert_eq!(state, "stopped");
    assert_eq!(reason.as_deref(), Some("its container disappeared while the hub was away"));
}

/// One endless response through the proxy (an event stream, a stalled download, an RStudio
/// long poll) must not keep the hub from exiting on SIGTERM: the drain is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_does_not_wait_for_endless_event_streams() {
    let site = Site::new().await;
    let auth = site.admin().await;
    let mut hub = HubProcess::start(&site, "first").await;
    start_server(&site, &hub, &auth).await;
    let sse = script()
        .get(hub.at("/user/root/sse?n=100000&interval_ms=200"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let mut sse = sse.bytes_stream();
    assert!(futures::StreamExt::next(&mut sse).await.is_some(), "the stream runs");
    let start = Instant::now();
    let status = hub.terminate(Duration::from_secs(30)).await;
    eprintln!("SIGTERM to exit with an event stream open: {:?} ({status})", start.elapsed());
    assert!(status.success());
}
