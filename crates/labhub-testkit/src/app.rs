//! The real hub, in-process on a loopback port, against a fresh database.

use std::sync::Arc;

use labhub::Config;
use labhub::app::{self, Overrides};

pub use crate::http::{browser, csrf_of, script};
use labhub_auth::HubKey;
use labhub_auth::passwords::HashCost;
use labhub_core::{Clock, ManualClock, Secret, SystemClock, UserName};
use labhub_db::PgPool;
use labhub_service::Actor;
use labhub_service::Hub;
use labhub_service::accounts::NewAccount;
use reqwest::{Client, Response, StatusCode};
use tokio::sync::oneshot;

use crate::api::Api;
use crate::docker::DockerScope;
use crate::pg::{TestCluster, TestDb};

/// Builds a [`TestApp`] with a changed configuration or clock.
pub struct TestAppBuilder {
    config: Config,
    manual_clock: Option<ManualClock>,
    public_url: Option<String>,
    runtime: app::Runtime,
    docker: Option<Arc<DockerScope>>,
    hub_api: bool,
    key: Option<HubKey>,
}

/// A running hub for one test. Dropping it stops the server.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub url: String,
    /// The hub's services.
    pub hub: Hub,
    /// The test's database.
    pub db: PgPool,
    /// The test database's name.
    pub db_name: String,
    /// The clock, when the test asked for a manual one.
    pub clock: Option<ManualClock>,
    /// The configuration the hub runs with.
    pub config: Config,
    /// The Docker scope servers run in, when the test asked for one.
    pub docker: Option<Arc<DockerScope>>,
    /// The hub's front door (the service the server runs), for tests that drive a
    /// connection by hand.
    pub service: labhub_web::HubService,
    /// `http://<gateway>:<port>` of the single-user API on the users' network, when the test
    /// asked for it.
    pub internal_url: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    internal: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
        }
        if let Some(h) = self.internal.take() {
            h.abort();
        }
    }
}

impl Default for TestAppBuilder {
    fn default() -> Self {
        let mut config = Config { data_dir: std::env::temp_dir().join("labhub-test-data"), ..Config::default() };
        // The suite reads the metrics anonymously; `tests/it/roles.rs` checks the closed default.
        config.http.metrics_public = true;
        Self {
            config,
            manual_clock: None,
            public_url: None,
            runtime: app::Runtime::default(),
            docker: None,
            hub_api: false,
            key: None,
        }
    }
}

impl TestAppBuilder {
    /// Changes the configuration before the hub starts.
    pub fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Runs the hub on a clock the test moves by hand.
    pub fn manual_clock(mut self) -> Self {
        self.manual_clock = Some(ManualClock::new(time::OffsetDateTime::now_utc()));
        self
    }

    /// Runs the hub on a clock the test moves by hand, starting at `start`.
    pub fn manual_clock_at(mut self, start: time::OffsetDateTime) -> Self {
        self.manual_clock = Some(ManualClock::new(start));
        self
    }

    /// Runs users' servers in this Docker scope (its hub id and network); the scope lives as
    /// long as the hub.
    pub fn docker(mut self, scope: Arc<DockerScope>) -> Self {
        self.config.docker = scope.config.clone();
        self.runtime = app::Runtime::of(scope.spawner.clone());
        self.docker = Some(scope);
        self
    }

    /// Serves the single-user API on the Docker scope's network gateway (a free port), as
    /// `docker.hub_api_port` does, and tells servers of JupyterHub's contract its address.
    pub fn hub_api(mut self) -> Self {
        self.hub_api = true;
        self
    }

    /// Runs users' servers on `spawner` (the Swarm spawner over the scope's engine) instead
    /// of the scope's engine spawner; after [`Self::docker`].
    pub fn spawner(mut self, spawner: Arc<dyn labhub_core::spawner::Spawner>) -> Self {
        self.runtime.spawner = Some(spawner);
        self
    }

    /// Runs the hub in Swarm mode on `swarm` (over the scope's engine), as `labhub serve`
    /// does, the single-user API included; after [`Self::docker`].
    pub fn swarm(mut self, swarm: Arc<labhub_spawner::SwarmSpawner>) -> Self {
        self.runtime = app::Runtime::swarm(swarm);
        self
    }

    /// Runs the hub with this secret key (replicas of one lab share theirs); a new one otherwise.
    pub fn key(mut self, key: HubKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Presents the hub under another public URL (e.g. https, to test `Secure` cookies);
    /// `{port}` in it becomes the port the hub listens on.
    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.to_string());
        self
    }

    /// Starts the hub on a fresh database.
    pub async fn spawn(self) -> TestApp {
        let TestDb { name, pool, .. } = TestCluster::get().fresh_database().await;
        self.spawn_with(pool, name).await
    }

    /// Starts the hub on the database at `url` (migrated first), e.g. a cluster the test stops.
    pub async fn spawn_on_url(self, url: &str) -> TestApp {
        let options: labhub_db::PgConnectOptions = url.parse().expect("a database URL");
        let settings =
            labhub_db::PoolSettings { max_connections: 4, acquire_timeout: self.config.database.acquire_timeout };
        let pool = labhub_db::connect_lazy(options, settings);
        labhub_db::migrate(&pool).await.expect("migrating");
        self.spawn_with(pool, String::new()).await
    }

    async fn spawn_with(self, pool: PgPool, name: String) -> TestApp {
        init_tracing();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let mut config = self.config;
        config.bind = addr;
        let public = self
            .public_url
            .clone()
            .map_or_else(|| format!("http://{addr}/"), |u| u.replace("{port}", &addr.port().to_string()));
        config.public_url = Some(public.parse().expect("a URL"));
        let mut runtime = self.runtime.clone();
        let internal_listener =
            if self.hub_api { runtime.bind_hub_api(0).await.expect("the single-user API's address") } else { None };
        let clock: Arc<dyn Clock> = match &self.manual_clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        let built = app::build(
            &config,
            pool.clone(),
            self.key.clone().unwrap_or_else(HubKey::generate),
            runtime.clone(),
            Overrides { clock, hash_cost: HashCost::INSECURE_FOR_TESTS },
        )
        .expect("building the hub");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let service = built.service.clone();
        let server = tokio::spawn(app::serve(listener, built.service, async move {
            let _ = stop_rx.await;
        }));
        let internal =
            internal_listener.map(|l| tokio::spawn(app::serve_internal(l, built.internal, std::future::pending())));
        TestApp {
            url: format!("http://{addr}"),
            hub: built.hub,
            db: pool,
            db_name: name,
            clock: self.manual_clock,
            config,
            docker: self.docker,
            service,
            internal_url: runtime.hub_api.map(|a| format!("http://{a}")),
            stop: Some(stop_tx),
            server: Some(server),
            internal,
        }
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("LABHUB_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

impl TestApp {
    /// A hub with the default test configuration.
    pub async fn spawn() -> TestApp {
        TestAppBuilder::default().spawn().await
    }

    /// A hub with a changed configuration or clock.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// The absolute URL of a path on the hub.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Creates an active account directly through the service.
    pub async fn add_user(&self, name: &str, password: &str, admin: bool) -> UserName {
        let name = UserName::parse(name).expect("a valid test user name");
        self.hub
            .accounts()
            .create(
                Actor::System,
                NewAccount { name: name.clone(), password: Some(Secret::new(password.into())), admin, provider: None },
            )
            .await
            .expect("creating a test user");
        name
    }

    /// An API token for a user.
    pub async fn token(&self, name: &str) -> String {
        let name = UserName::parse(name).expect("a valid name");
        self.hub.tokens().create(Actor::System, &name, "test", None, None).await.expect("a token").0.expose().clone()
    }

    /// A client of the hub's API with this token (bare, or `token …`).
    pub fn api(&self, token: &str) -> Api {
        Api::new(&self.url, token)
    }

    /// A client of the hub's API with a new token of `name`'s.
    pub async fn api_for(&self, name: &str) -> Api {
        self.api(&self.token(name).await)
    }

    /// Fetches a page and returns the CSRF token its forms carry.
    pub async fn csrf(&self, client: &Client, path: &str) -> String {
        let html = client.get(self.at(path)).send().await.expect("the page").text().await.expect("its text");
        csrf_of(&html)
    }

    /// Signs a browser in through the login form; returns the form's answer.
    pub async fn login(&self, client: &Client, name: &str, password: &str) -> Response {
        let csrf = self.csrf(client, "/hub/login").await;
        client
            .post(self.at("/hub/login"))
            .header("Origin", self.config.public_url().origin().ascii_serialization())
            .form(&[("_csrf", csrf.as_str()), ("username", name), ("password", password), ("next", "")])
            .send()
            .await
            .expect("the login answer")
    }

    /// Adds the Docker scope's test image to the catalogue as `name` (kind jupyter: the test
    /// server answers `jupyter lab …` like JupyterLab).
    pub async fn add_test_image(&self, name: &str) {
        let scope = self.docker.as_ref().expect("a hub started with .docker(..)");
        let fields = labhub_core::ImageFields {
            display_name: format!("Test server {name}"),
            description: "the tiny test server".into(),
            reference: scope.test_image.clone(),
            kind: labhub_core::ImageKind::Jupyter,
            port: None,
            command: None,
            cpu_millis: 500,
            memory_bytes: 256 << 20,
            enabled: true,
            recipe: None,
            contract: labhub_core::Contract::Labhub,
            placement: Vec::new(),
        };
        self.hub.catalogue().add(Actor::System, name, fields).await.expect("adding the test image");
    }

    /// The single number a query returns (`select count(*) …`).
    pub async fn count(&self, sql: &'static str) -> i64 {
        labhub_db::sqlx::query_scalar(sql).fetch_one(&self.db).await.expect("a count")
    }

    /// A browser already signed in as `name`.
    pub async fn signed_in(&self, name: &str, password: &str) -> Client {
        let c = browser();
        let r = self.login(&c, name, password).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "signing in {name}");
        c
    }
}
