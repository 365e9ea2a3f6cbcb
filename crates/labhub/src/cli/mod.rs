//! The command line. Errors are one sentence on stderr and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use labhub_core::UserName;

use crate::app::{self, Overrides};
use crate::config::{Config, LogFormat};
use crate::database::Database;

mod accounts;
mod backups;
mod catalogue;
mod datasets;
mod environments;
mod groups;
mod ldap;
mod roles;
mod services;
mod transfer;

use accounts::{TokenCommand, UserCommand, token, user};
use backups::{BackupCommand, backup};
use catalogue::{ImageCommand, image};
use datasets::{DatasetCommand, dataset};
use environments::{EnvCommand, env};
use groups::{GroupCommand, group};
use ldap::{LdapCommand, ldap};
use roles::{RoleCommand, role};
use services::{ServiceCommand, service};

/// labhub: a multi-user lab server for Jupyter and RStudio.
#[derive(Parser)]
#[command(name = "labhub", version)]
struct Cli {
    /// Configuration file (TOML). `LABHUB_*` variables override it.
    #[arg(long, global = true, env = "LABHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the image catalogue.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage groups, their leads and their quotas.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Manage datasets: data mounted read-only at ~/datasets/NAME in servers.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Back up homes and shared folders, list, verify and restore the archives.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Build environments from repositories, and list, show and pin their builds.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Manage roles (JupyterHub's named lists of scopes) and whom they are given to.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Register external services (JupyterHub's), their tokens, roles and URLs.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check the directory configuration ([auth.ldap]).
    #[command(subcommand)]
    Ldap(LdapCommand),
    /// Swarm mode on several nodes.
    #[command(subcommand)]
    Swarm(SwarmCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration with secrets redacted.
    Check,
}

#[derive(Subcommand)]
enum SwarmCommand {
    /// Keep servers apart on this node with labhub's rules, until stopped: run it (as root)
    /// on every node of [[docker.swarm_nodes]], with the hub's [docker] settings. Needs no
    /// database.
    Guard {
        /// How often the rules are looked at besides every attachment to a network.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        interval: Duration,
    },
}

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("labhub: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init_logging(if cli.log_json { LogFormat::Json } else { config.log_format });
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        builder.worker_threads(threads.get());
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("labhub: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("labhub: {}", sentence(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes as one sentence.
fn sentence(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    let mut s = parts.join(": ");
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Config(ConfigCommand::Check) => {
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Ldap(cmd) => ldap(&config, cmd).await,
        Command::Swarm(SwarmCommand::Guard { interval }) => {
            tracing::info!(network = %config.docker.swarm_network, "keeping servers apart on this node");
            labhub_spawner::SwarmSpawner::guard_node(config.docker.clone(), interval).await?;
            Ok(())
        }
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let db = Database::open(&config).await?;
            let r = db.migrate(Duration::from_secs(10)).await;
            db.close(false).await;
            r?;
            println!("The database is up to date.");
            Ok(())
        }
        Command::User(cmd) => {
            let docker = cmd.needs_runtime();
            with_hub(&config, docker, |hub| async move { user(hub, cmd).await }).await
        }
        Command::Token(cmd) => with_hub(&config, false, |hub| async move { token(hub, cmd).await }).await,
        Command::Role(cmd) => with_hub(&config, false, |hub| async move { role(hub, cmd).await }).await,
        Command::Service(cmd) => with_hub(&config, false, |hub| async move { service(hub, cmd).await }).await,
        Command::Image(cmd) => with_hub(&config, true, |hub| async move { image(hub, cmd).await }).await,
        Command::Group(cmd) => with_hub(&config, true, |hub| async move { group(hub, cmd).await }).await,
        Command::Dataset(cmd) => with_hub(&config, true, |hub| async move { dataset(hub, cmd).await }).await,
        Command::Backup(cmd) => with_hub(&config, true, |hub| async move { backup(hub, cmd).await }).await,
        Command::Env(cmd) => {
            let docker = config.docker.clone();
            with_hub(&config, true, |hub| async move { env(hub, cmd, &docker).await }).await
        }
    }
}

/// Opens the database and the hub's services (with the Docker engine when `docker`) for one
/// command, then closes them.
async fn with_hub<F, Fut>(config: &Config, docker: bool, f: F) -> anyhow::Result<()>
where
    F: FnOnce(labhub_service::Hub) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let db = Database::open(config).await?;
    let result = async {
        db.migrate(Duration::from_secs(10)).await?;
        let key = app::load_key(config)?;
        let runtime = if docker { app::Runtime::docker(&config.docker).await } else { app::Runtime::default() };
        let built = app::build(config, db.pool.clone(), key, runtime, Overrides::default())?;
        f(built.hub).await
    }
    .await;
    db.close(false).await;
    result
}

/// A user name given on the command line.
fn name(raw: &str) -> anyhow::Result<UserName> {
    UserName::parse(raw).with_context(|| format!("{raw:?} is not a valid user name"))
}

/// `labhub serve`.
async fn serve(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("could not listen on {} (is another program using it? set 'bind')", config.bind))?;
    let db = Database::open(&config).await?;
    let result = serve_on(&config, &db, listener, started).await;
    db.close(true).await;
    result
}

async fn serve_on(
    config: &Config,
    db: &Database,
    listener: tokio::net::TcpListener,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    db.migrate(Duration::from_secs(30)).await?;
    let key = app::load_key(config)?;
    let mut runtime = app::Runtime::docker(&config.docker).await;
    let internal = match config.docker.hub_api_port {
        Some(port) => runtime.bind_hub_api(port).await?,
        None => None,
    };
    let hub_api = runtime.hub_api;
    let built = app::build(config, db.pool.clone(), key, runtime, Overrides::default())?;
    if let Some((admin, password)) = built.hub.accounts().bootstrap_admins().await? {
        let path = config.data_dir.join("initial-admin-password");
        std::fs::create_dir_all(&config.data_dir)?;
        app::write_private(&path, &format!("{}\n", password.expose()))?;
        tracing::warn!(
            user = %admin,
            file = %path.display(),
            "no admin existed: created account '{admin}' with a random password, written to {}",
            path.display()
        );
    }
    if config.proxy.user_subdomains && config.public_url().scheme() != "https" {
        tracing::warn!(
            "proxy.user_subdomains over plain http: browsers refuse the __Host- cookie prefix \
             without https, so a user's server could plant cookies for the hub's host; serve \
             the hub over https for full origin isolation"
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Registered before the boot's reconcile, so other replicas' starts in flight are told
    // apart from those of dead ones.
    built.hub.replicas().beat().await?;
    let heartbeat = tokio::spawn(built.hub.clone().run_heartbeat(wait_true(stop_rx.clone())));
    app::boot(&built.hub, config.servers.build_missing_images_at_boot, wait_true(stop_rx.clone())).await?;
    tokio::spawn(built.hub.clone().follow_replicas(wait_true(stop_rx.clone())));
    let maintenance = tokio::spawn(built.hub.clone().run_maintenance(wait_true(stop_rx.clone())));
    tokio::spawn(built.hub.clone().follow_shares(wait_true(stop_rx.clone())));
    let supervisor = db.supervise(built.hub.clone(), wait_true(stop_rx.clone()));
    if let Some(listener) = internal {
        tracing::info!(address = ?hub_api, "serving the single-user API to users' servers");
        let served = app::serve_internal(listener, built.internal.clone(), wait_true(stop_rx.clone()));
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the single-user API stopped");
            }
        });
    }
    tokio::spawn(built.hub.clone().run_usage_sampler(wait_true(stop_rx.clone())));
    if config.culler.enabled {
        tokio::spawn(built.hub.clone().run_culler(wait_true(stop_rx.clone())));
    }
    tracing::info!(
        url = %config.public_url(),
        bind = %config.bind,
        ms = started.elapsed().as_millis() as u64,
        "labhub is ready"
    );
    let server = app::serve(listener, built.service, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing open requests; user servers keep running");
    });
    let result = server.await.context("the HTTP server failed");
    let _ = stop_tx.send(true);
    let _ = maintenance.await;
    let _ = heartbeat.await;
    if let Some(s) = supervisor {
        let _ = s.await;
    }
    result
}

async fn wait_true(mut rx: tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}
