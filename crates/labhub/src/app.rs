//! Assembling the hub from its crates, and serving it.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use labhub_auth::passwords::HashCost;
use labhub_auth::{HubKey, PasswordHasher};
use labhub_core::spawner::{ImageBuilder, Spawner};
use labhub_core::{Clock, SystemClock};
use labhub_db::PgPool;
use labhub_proxy::{Proxy, RouteTable};
use labhub_service::{Hub, HubParts};
use labhub_web::{AppState, HubService, WebSettings};
use tokio::net::TcpListener;

use crate::Config;

/// What tests may swap out; the binary uses the defaults.
pub struct Overrides {
    /// The hub's clock.
    pub clock: Arc<dyn Clock>,
    /// Password hashing cost.
    pub hash_cost: HashCost,
}

impl Default for Overrides {
    fn default() -> Self {
        Self { clock: Arc::new(SystemClock), hash_cost: HashCost::DEFAULT }
    }
}

/// Where servers run and how images are built; both absent when the engine is unreachable.
#[derive(Default, Clone)]
pub struct Runtime {
    /// Runs users' servers.
    pub spawner: Option<Arc<dyn Spawner>>,
    /// Builds catalogue images from recipes.
    pub builder: Option<Arc<dyn ImageBuilder>>,
    /// The Docker spawner itself, for what only it does (the single-user API's address).
    pub docker: Option<Arc<labhub_spawner::DockerSpawner>>,
    /// The Swarm spawner itself in Swarm mode, for the same.
    pub swarm: Option<Arc<labhub_spawner::SwarmSpawner>>,
    /// Where the hub's single-user API listens on the users' network, once bound.
    pub hub_api: Option<std::net::SocketAddr>,
}

impl Runtime {
    /// Servers run and images built by this Docker spawner.
    pub fn of(d: Arc<labhub_spawner::DockerSpawner>) -> Self {
        Self { spawner: Some(d.clone()), builder: Some(d.clone()), docker: Some(d), swarm: None, hub_api: None }
    }

    /// Servers run as services of this swarm; images built on its manager's engine.
    pub fn swarm(s: Arc<labhub_spawner::SwarmSpawner>) -> Self {
        let builder: Arc<dyn ImageBuilder> = s.engine().clone();
        Self { spawner: Some(s.clone()), builder: Some(builder), docker: None, swarm: Some(s), hub_api: None }
    }

    /// Listens for the hub's single-user API at `port` (0: any free one) where servers reach
    /// it — the users' network's gateway, or in Swarm mode the hub's node's `docker_gwbridge`
    /// gateway — when there is a spawner; the hub tells servers of JupyterHub's contract this
    /// address unless `servers.hub_api_url` names another.
    pub async fn bind_hub_api(&mut self, port: u16) -> anyhow::Result<Option<TcpListener>> {
        let listener = match (&self.docker, &self.swarm) {
            (Some(docker), _) => docker.bind_hub_api(port).await,
            (None, Some(swarm)) => swarm.bind_hub_api(port).await,
            (None, None) => return Ok(None),
        };
        let listener = listener.context("the hub's single-user API")?;
        self.hub_api = Some(listener.local_addr()?);
        Ok(Some(listener))
    }

    /// Connects to the Docker engine; on failure the hub runs without servers and says why.
    /// In Swarm mode (`[docker] mode = "swarm"`) servers run as services of the swarm this
    /// engine manages; images are still built on the engine.
    pub async fn docker(config: &labhub_spawner::DockerConfig) -> Self {
        let connected = match labhub_spawner::DockerSpawner::connect(config.clone()).await {
            Ok(d) => match config.mode {
                labhub_spawner::RuntimeMode::Engine => Ok(Self::of(Arc::new(d))),
                labhub_spawner::RuntimeMode::Swarm => {
                    labhub_spawner::SwarmSpawner::on(Arc::new(d)).await.map(|s| Self::swarm(Arc::new(s)))
                }
            },
            Err(e) => Err(e),
        };
        match connected {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "servers cannot start until the hub can use the Docker engine (or its swarm)");
                Self::default()
            }
        }
    }
}

/// A built hub: its services and its router.
pub struct App {
    /// The services (for background tasks and tests).
    pub hub: Hub,
    /// The HTTP surface.
    pub service: HubService,
    /// The internal address's surface (JupyterHub's single-user endpoints only).
    pub internal: axum::Router,
}

/// Builds the hub on an open, migrated database.
pub fn build(config: &Config, db: PgPool, key: HubKey, runtime: Runtime, overrides: Overrides) -> anyhow::Result<App> {
    let passwords = PasswordHasher::new(overrides.hash_cost, config.hashing_limits())?;
    let runtime_hub_api = runtime.hub_api;
    let routes = RouteTable::new(overrides.clock.clone());
    let hub = Hub::new(HubParts {
        db,
        clock: overrides.clock,
        passwords,
        key,
        accounts: config.account_settings(),
        providers: labhub_auth::oidc::Providers::new(&config.auth.providers, &config.public_url())?,
        directory: directory(config)?,
        spawner: runtime.spawner,
        builder: runtime.builder,
        routes: routes.clone(),
        servers: server_settings(config, &runtime_hub_api),
        quotas: config.quota_settings(),
        backups: config.backup_settings(),
        environments: config.environment_settings(),
    });
    let proxy = Proxy::new(config.proxy_settings(), routes);
    let web = WebSettings {
        public_url: config.public_url(),
        cookies: config.cookie_names(),
        max_body_bytes: config.http.max_body_bytes,
        trust_forwarded_for: config.http.trust_forwarded_for,
        metrics_public: config.http.metrics_public,
        user_subdomains: config.proxy.user_subdomains,
        front_door: config.front_door(),
    };
    let metrics = if config.http.metrics { crate::telemetry::metrics_handle() } else { None };
    let state = AppState::new(hub.clone(), web, metrics, proxy);
    Ok(App { hub, internal: labhub_web::internal_service(state.clone()), service: labhub_web::service(state) })
}

/// The server rules, with the single-user API's bound address as `JUPYTERHUB_API_URL` unless
/// `servers.hub_api_url` names one.
fn server_settings(config: &Config, hub_api: &Option<std::net::SocketAddr>) -> labhub_service::ServerSettings {
    let mut s = config.server_settings();
    if config.servers.hub_api_url.is_none()
        && let Some(addr) = hub_api
    {
        s.hub_api_url = format!("http://{addr}/hub/api");
    }
    s
}

/// Serves the internal address (JupyterHub's single-user endpoints) until `shutdown` resolves.
pub async fn serve_internal(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// The directory from `[auth.ldap]`, if set: its CA and password files are read now, so a
/// mistake stops the hub at start rather than at someone's sign-in.
pub fn directory(config: &Config) -> anyhow::Result<Option<labhub_auth::ldap::Directory>> {
    let Some(ldap) = &config.auth.ldap else { return Ok(None) };
    if ldap.plaintext() {
        tracing::warn!(
            url = ?ldap.url.iter().map(url::Url::as_str).collect::<Vec<_>>(),
            "[auth.ldap] tls = \"none\": passwords go to the directory unencrypted"
        );
    }
    let directory = labhub_auth::ldap::Directory::new(ldap).context("[auth.ldap] cannot be used")?;
    Ok(Some(directory))
}

/// Brings the hub's view of servers up to date and starts its background work: the default
/// catalogue entry, adopting homes made before account ids, reconciling with the runtime,
/// watching for servers that end, building missing images.
pub async fn boot(
    hub: &Hub,
    build_missing_images: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    hub.catalogue().ensure_default().await.context("could not prepare the image catalogue")?;
    match hub.environments().fail_unfinished().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(builds = n, "environment builds the hub stopped during are marked failed"),
        Err(e) => tracing::warn!(error = %e, "could not mark unfinished environment builds"),
    }
    // Before any start: a home made before account ids must go to the account that made it,
    // never to a later account of the same name.
    match hub.homes().adopt_legacy().await {
        Ok(report) if !report.unclaimed.is_empty() => tracing::warn!(
            homes = ?report.unclaimed,
            "homes made before account ids that no account can claim are kept as orphans (admin: Storage)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not look for homes made before account ids"),
    }
    match hub.servers().reconcile().await {
        Ok(report) => {
            for s in &report.adopted {
                tracing::info!(server = %s, "adopted a running server");
            }
            for s in &report.vanished {
                tracing::warn!(server = %s, "a server's container was gone; marked stopped");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not reconcile servers with the container runtime"),
    }
    match hub.backups().resume_left_paused().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(servers = n, "resumed servers a backup left paused"),
        Err(e) => tracing::debug!(error = %e, "could not look for servers a backup left paused"),
    }
    // Before serving: visitors a server was shared with are let in from the first request.
    if let Err(e) = hub.shares().refresh().await {
        tracing::warn!(error = %e, "could not load shares yet; retried in the background");
    }
    tokio::spawn(hub.clone().watch_exits(shutdown));
    if build_missing_images && let Err(e) = hub.catalogue().build_missing().await {
        tracing::warn!(error = %e, "could not start building missing images");
    }
    Ok(())
}

/// How long a shutdown waits for open requests before cutting them: proxied event streams,
/// long polls and WebSockets to users' servers may never end by themselves.
pub const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the hub until `shutdown` resolves, then drains open requests for at most
/// [`SHUTDOWN_DRAIN`].
pub async fn serve(
    listener: TcpListener,
    service: HubService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::serving::serve(listener, service, shutdown, SHUTDOWN_DRAIN).await
}

/// The hub's secret key: from the configuration, or generated once into `<data_dir>/secret_key`.
pub fn load_key(config: &Config) -> anyhow::Result<HubKey> {
    if let Some(hex_key) = &config.secret_key {
        let bytes = hex::decode(hex_key.expose()).context("secret_key is not hex")?;
        return HubKey::new(bytes).context("secret_key must be at least 32 bytes");
    }
    let path = config.data_dir.join("secret_key");
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
        let bytes = hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
        return HubKey::new(bytes).with_context(|| format!("{} holds a key shorter than 32 bytes", path.display()));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("could not create the data directory {}", config.data_dir.display()))?;
    // A new random token is 32 random bytes in hex: exactly a key file's contents.
    let (hex_key, _) = labhub_auth::new_token();
    write_private(&path, &hex_key)?;
    HubKey::new(hex::decode(&hex_key)?).context("a generated key is 32 bytes")
}

/// Writes a file only its owner can read (a key, a password). A symbolic link or a file with
/// other names (a hard link) in its place is refused, not followed: whoever made it would choose
/// where the secret goes. An existing file is made owner-only before the secret is written, since
/// opening keeps the mode it had.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow::anyhow!("refusing to write {shown}: it is a symbolic link"),
            _ => anyhow::Error::new(e).context(format!("could not write {shown}")),
        })?;
    let meta = f.metadata().with_context(|| format!("could not write {shown}"))?;
    if !meta.is_file() || meta.nlink() != 1 {
        bail!("refusing to write {shown}: it is not a plain file of its own (another name links to it)");
    }
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).with_context(|| format!("could not protect {shown}"))?;
    f.set_len(0).with_context(|| format!("could not write {shown}"))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("could not write {shown}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::write_private;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_files_are_owner_only_every_time_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        write_private(&fresh, "one").unwrap();
        assert_eq!((std::fs::read_to_string(&fresh).unwrap().as_str(), mode(&fresh)), ("one", 0o600));

        let loose = dir.path().join("loose");
        std::fs::write(&loose, "an old, longer secret").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&loose, "two").unwrap();
        assert_eq!((std::fs::read_to_string(&loose).unwrap().as_str(), mode(&loose)), ("two", 0o600));

        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "theirs").unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
        let symlink = dir.path().join("symlink");
        std::os::unix::fs::symlink(&elsewhere, &symlink).unwrap();
        let e = write_private(&symlink, "secret").unwrap_err().to_string();
        assert!(e.contains("it is a symbolic link"), "{e}");
        let hardlink = dir.path().join("hardlink");
        std::fs::hard_link(&elsewhere, &hardlink).unwrap();
        let e = write_private(&hardlink, "secret").unwrap_err().to_string();
        assert!(e.contains("another name links to it"), "{e}");
        assert_eq!((std::fs::read_to_string(&elsewhere).unwrap().as_str(), mode(&elsewhere)), ("theirs", 0o644));
    }
}
