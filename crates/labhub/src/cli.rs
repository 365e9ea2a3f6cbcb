//! The command line. Errors are one sentence on stderr and a non-zero exit.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use labhub_core::listing::UserFilter;
use labhub_core::{ImageFields, ImageKind, ImageRef, Secret, UserName};
use labhub_service::Actor;
use labhub_service::accounts::NewAccount;

use crate::app::{self, Overrides};
use crate::config::{Config, LogFormat};
use crate::database::Database;

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
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// A catalogue entry's fields on the command line.
#[derive(clap::Args)]
struct ImageArgs {
    /// What members see, e.g. "Python 3 (JupyterLab)".
    #[arg(long)]
    display_name: Option<String>,
    /// A sentence about the environment.
    #[arg(long)]
    description: Option<String>,
    /// The container image reference, e.g. registry.example.org/lab/scipy:2026.1.
    #[arg(long)]
    reference: Option<String>,
    /// jupyter, rstudio or custom.
    #[arg(long)]
    kind: Option<String>,
    /// For custom images: the port the server listens on.
    #[arg(long)]
    port: Option<u16>,
    /// For custom images: the command, one word per --command ({base_url} and {port} are filled in).
    #[arg(long = "command", num_args = 1..)]
    command: Option<Vec<String>>,
    /// Default CPUs, e.g. 1 or 0.5.
    #[arg(long)]
    cpu: Option<String>,
    /// Default memory, e.g. 2G.
    #[arg(long)]
    memory: Option<String>,
    /// A built-in recipe that can build the image locally (jupyterlab).
    #[arg(long)]
    recipe: Option<String>,
    /// Whether members can start it.
    #[arg(long)]
    enabled: Option<bool>,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List the catalogue and whether each image is on this machine.
    List,
    /// Add an entry (needs --display-name, --reference, --kind, --cpu and --memory).
    Add {
        /// Short name used in forms and the API, e.g. scipy.
        name: String,
        #[command(flatten)]
        fields: ImageArgs,
    },
    /// Change an entry; only the options given change.
    Set {
        name: String,
        #[command(flatten)]
        fields: ImageArgs,
    },
    /// Remove an entry (running servers keep running).
    Remove { name: String },
    /// Build an entry's image from its recipe, printing the progress (takes minutes).
    Build { name: String },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. Without --password-stdin a random password is generated and printed.
    Add {
        name: String,
        /// Make the account an admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// Create the account without a password (it signs in through an identity provider).
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
    },
    /// List accounts.
    List,
    /// Set an account's password (read from standard input, or generated and printed).
    SetPassword {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account with its sessions and tokens.
    Delete { name: String },
    /// Grant (true) or revoke (false) admin rights.
    SetAdmin {
        name: String,
        #[arg(action = clap::ArgAction::Set)]
        admin: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new API token for a user (for automation).
    Create {
        name: String,
        /// What the token is for.
        #[arg(long, default_value = "")]
        note: String,
        /// Expiry such as 30d or 12h; no expiry when left out.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group (it follows the site default quota until one is set).
    Create { name: String },
    /// List groups with their members, leads and limits.
    List,
    /// Delete a group (refused while servers run under it).
    Delete { name: String },
    /// Rename a group.
    Rename { name: String, new_name: String },
    /// Add users to a group.
    AddMember {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Take users out of a group.
    RemoveMember {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Make a user a lead of the group, joining it (true), or a plain member again (false).
    SetLead {
        group: String,
        user: String,
        #[arg(action = clap::ArgAction::Set)]
        lead: bool,
    },
    /// Change some of a group's limits; with --ceiling, the most its leads may grant (the
    /// limits in force are lowered to fit).
    SetQuota {
        group: String,
        #[command(flatten)]
        limits: QuotaArgs,
        /// Change the ceiling instead of the limits in force.
        #[arg(long)]
        ceiling: bool,
    },
}

/// The limits `group set-quota` changes; those left out keep their value.
#[derive(clap::Args)]
struct QuotaArgs {
    /// CPU per server, in cores (e.g. 2 or 0.5).
    #[arg(long)]
    max_cpu: Option<String>,
    /// Memory per server (e.g. 4G).
    #[arg(long)]
    max_memory: Option<String>,
    /// GPUs per server.
    #[arg(long)]
    max_gpus: Option<u32>,
    /// Catalogue images the group may start, comma-separated, or "all".
    #[arg(long)]
    images: Option<String>,
    /// Servers one member may run at once under the group.
    #[arg(long)]
    max_servers_per_member: Option<u32>,
    /// CPU all the group's servers may reserve together, in cores, or "none".
    #[arg(long)]
    budget_cpu: Option<String>,
    /// Memory all the group's servers may reserve together (e.g. 64G), or "none".
    #[arg(long)]
    budget_memory: Option<String>,
    /// Storage per member (e.g. 20G), or "none".
    #[arg(long)]
    storage: Option<String>,
    /// Stop servers idle this long (e.g. 1h), or "never".
    #[arg(long)]
    idle_timeout: Option<String>,
    /// Stop servers running this long (e.g. 12h), or "never".
    #[arg(long)]
    max_lifetime: Option<String>,
}

/// A limit that may be removed: `None` when not given, `Some(None)` for the `off` word.
fn removable<T>(
    raw: &Option<String>,
    off: &str,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<Option<Option<T>>> {
    raw.as_deref().map(|r| if r.eq_ignore_ascii_case(off) { Ok(None) } else { parse(r).map(Some) }).transpose()
}

impl QuotaArgs {
    fn patch(&self) -> anyhow::Result<labhub_service::quotas::QuotaPatch> {
        use labhub_core::ImageAllowance;
        use labhub_core::resources::{parse_cpu, parse_memory};
        let cpu = |r: &str| parse_cpu(r).map_err(anyhow::Error::from);
        let memory = |r: &str| parse_memory(r).map_err(anyhow::Error::from);
        let duration =
            |r: &str| humantime::parse_duration(r).with_context(|| format!("{r:?} is not a duration such as 1h"));
        Ok(labhub_service::quotas::QuotaPatch {
            max_cpu_millis: self.max_cpu.as_deref().map(cpu).transpose()?,
            max_memory_bytes: self.max_memory.as_deref().map(memory).transpose()?,
            max_gpus: self.max_gpus,
            images: self.images.as_deref().map(|i| {
                if i.eq_ignore_ascii_case("all") {
                    ImageAllowance::All
                } else {
                    ImageAllowance::Only(
                        i.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect(),
                    )
                }
            }),
            max_servers_per_member: self.max_servers_per_member,
            budget_cpu_millis: removable(&self.budget_cpu, "none", |r| cpu(r).map(u64::from))?,
            budget_memory_bytes: removable(&self.budget_memory, "none", memory)?,
            storage_bytes: removable(&self.storage, "none", memory)?,
            idle_timeout: removable(&self.idle_timeout, "never", duration)?,
            max_lifetime: removable(&self.max_lifetime, "never", duration)?,
        })
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration with secrets redacted.
    Check,
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let db = Database::open(&config).await?;
            let r = db.migrate(Duration::from_secs(10)).await;
            db.close(false).await;
            r?;
            println!("The database is up to date.");
            Ok(())
        }
        Command::User(cmd) => with_hub(&config, false, |hub| async move { user(hub, cmd).await }).await,
        Command::Token(cmd) => with_hub(&config, false, |hub| async move { token(hub, cmd).await }).await,
        Command::Image(cmd) => with_hub(&config, true, |hub| async move { image(hub, cmd).await }).await,
        Command::Group(cmd) => with_hub(&config, false, |hub| async move { group(hub, cmd).await }).await,
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

fn name(raw: &str) -> anyhow::Result<UserName> {
    UserName::parse(raw).with_context(|| format!("{raw:?} is not a valid user name"))
}

fn read_password_stdin() -> anyhow::Result<Secret<String>> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("could not read the password from standard input")?;
    let line = s.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!("standard input held no password");
    }
    Ok(Secret::new(line))
}

fn generated_password() -> Secret<String> {
    Secret::new(labhub_auth::new_token().0[..20].to_string())
}

async fn user(hub: labhub_service::Hub, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { name: raw, admin, password_stdin, no_password } => {
            let name = name(&raw)?;
            let (password, show) = match (password_stdin, no_password) {
                (true, _) => (Some(read_password_stdin()?), false),
                (false, true) => (None, false),
                (false, false) => (Some(generated_password()), true),
            };
            let user =
                hub.accounts().create(Actor::System, NewAccount { name, password: password.clone(), admin }).await?;
            println!("Created {}{}.", user.name, if user.admin { " (admin)" } else { "" });
            if let (true, Some(p)) = (show, password) {
                println!("Password: {}", p.expose());
            }
        }
        UserCommand::List => {
            let filter = UserFilter { limit: i64::MAX, ..UserFilter::default() };
            let (users, _) = hub.accounts().list(Actor::System, &filter).await?;
            println!("{:<32} {:<6} {:<9} created", "name", "admin", "state");
            for u in users {
                println!(
                    "{:<32} {:<6} {:<9} {}",
                    u.name.as_str(),
                    if u.admin { "yes" } else { "no" },
                    u.state.as_str(),
                    u.created_at.date()
                );
            }
        }
        UserCommand::SetPassword { name: raw, password_stdin } => {
            let name = name(&raw)?;
            let (password, show) =
                if password_stdin { (read_password_stdin()?, false) } else { (generated_password(), true) };
            hub.accounts().set_password(Actor::System, &name, password.clone()).await?;
            println!("Password of {name} changed; their sessions ended.");
            if show {
                println!("Password: {}", password.expose());
            }
        }
        UserCommand::Delete { name: raw } => {
            let name = name(&raw)?;
            hub.accounts().delete(Actor::System, &name).await?;
            println!("Deleted {name}.");
        }
        UserCommand::SetAdmin { name: raw, admin } => {
            let name = name(&raw)?;
            hub.accounts().set_admin(Actor::System, &name, admin).await?;
            println!("{name} is {}an admin.", if admin { "now " } else { "no longer " });
        }
    }
    Ok(())
}

async fn token(hub: labhub_service::Hub, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name: raw, note, expires_in } => {
            let name = name(&raw)?;
            let (token, _) = hub.tokens().create(Actor::System, &name, &note, expires_in).await?;
            println!("{}", token.expose());
        }
    }
    Ok(())
}

fn image_fields(args: ImageArgs, base: Option<ImageFields>) -> anyhow::Result<ImageFields> {
    let missing = |what: &str| anyhow::anyhow!("--{what} is required to add an image");
    let reference = match (args.reference, &base) {
        (Some(r), _) => ImageRef::parse(&r)?,
        (None, Some(b)) => b.reference.clone(),
        (None, None) => return Err(missing("reference")),
    };
    let kind = match (args.kind, &base) {
        (Some(k), _) => {
            ImageKind::parse(&k).with_context(|| format!("--kind must be jupyter, rstudio or custom, not {k:?}"))?
        }
        (None, Some(b)) => b.kind,
        (None, None) => return Err(missing("kind")),
    };
    let cpu_millis = match (args.cpu, &base) {
        (Some(c), _) => labhub_core::resources::parse_cpu(&c)?,
        (None, Some(b)) => b.cpu_millis,
        (None, None) => return Err(missing("cpu")),
    };
    let memory_bytes = match (args.memory, &base) {
        (Some(m), _) => labhub_core::resources::parse_memory(&m)?,
        (None, Some(b)) => b.memory_bytes,
        (None, None) => return Err(missing("memory")),
    };
    let display_name = match (args.display_name, &base) {
        (Some(d), _) => d,
        (None, Some(b)) => b.display_name.clone(),
        (None, None) => return Err(missing("display-name")),
    };
    Ok(ImageFields {
        display_name,
        description: args.description.or_else(|| base.as_ref().map(|b| b.description.clone())).unwrap_or_default(),
        reference,
        kind,
        port: args.port.or_else(|| base.as_ref().and_then(|b| b.port)),
        command: args.command.or_else(|| base.as_ref().and_then(|b| b.command.clone())),
        cpu_millis,
        memory_bytes,
        enabled: args.enabled.or_else(|| base.as_ref().map(|b| b.enabled)).unwrap_or(true),
        recipe: args.recipe.filter(|r| !r.is_empty()).or_else(|| base.as_ref().and_then(|b| b.recipe.clone())),
    })
}

async fn image(hub: labhub_service::Hub, cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::List => {
            println!("{:<16} {:<8} {:<8} {:<40} on this machine", "name", "kind", "enabled", "reference");
            for s in hub.catalogue().list().await? {
                let local =
                    s.local.map_or_else(|| "missing".to_string(), |l| labhub_service::catalogue::short_id(&l.digest));
                println!(
                    "{:<16} {:<8} {:<8} {:<40} {local}",
                    s.image.name,
                    s.image.fields.kind.as_str(),
                    if s.image.fields.enabled { "yes" } else { "no" },
                    s.image.fields.reference.as_str()
                );
            }
        }
        ImageCommand::Add { name, fields } => {
            let image = hub.catalogue().add(Actor::System, &name, image_fields(fields, None)?).await?;
            println!("Added {} ({}).", image.name, image.fields.reference);
        }
        ImageCommand::Set { name, fields } => {
            let base = hub.catalogue().get(&name).await?.fields;
            let image = hub.catalogue().update(Actor::System, &name, image_fields(fields, Some(base))?).await?;
            println!("Saved {} ({}).", image.name, image.fields.reference);
        }
        ImageCommand::Remove { name } => {
            hub.catalogue().remove(Actor::System, &name).await?;
            println!("Removed {name} from the catalogue.");
        }
        ImageCommand::Build { name } => {
            let log = hub.catalogue().build(Actor::System, &name).await?;
            let mut rx = log.subscribe();
            let mut seen = 0;
            loop {
                let (new, done) = {
                    let all = rx.borrow_and_update();
                    (all[seen..].to_vec(), all.last().is_some_and(|e| e.is_final()))
                };
                seen += new.len();
                for e in &new {
                    println!("[{:>3}%] {}", e.progress, e.message);
                    if e.failed {
                        bail!("{}", e.message);
                    }
                }
                if done || rx.changed().await.is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn group_name(raw: &str) -> anyhow::Result<labhub_core::GroupName> {
    labhub_core::GroupName::parse(raw).with_context(|| format!("{raw:?} is not a valid group name"))
}

fn names(raw: &[String]) -> anyhow::Result<Vec<UserName>> {
    raw.iter().map(|n| name(n)).collect()
}

fn members_line(d: &labhub_service::model::GroupDetail) -> String {
    let n = d.members.len();
    format!("{} now has {n} member{}.", d.group.name, if n == 1 { "" } else { "s" })
}

async fn group(hub: labhub_service::Hub, cmd: GroupCommand) -> anyhow::Result<()> {
    let actor = Actor::System;
    match cmd {
        GroupCommand::Create { name } => {
            let g = hub.groups().create(actor, &group_name(&name)?).await?;
            println!("Created the group {}.", g.name);
        }
        GroupCommand::List => {
            let (groups, _) = hub.groups().list(actor, 0, i64::MAX).await?;
            println!("{:<24} {:<7} {:<24} limits", "name", "members", "leads");
            for d in groups {
                let leads: Vec<String> = d.leads().iter().map(ToString::to_string).collect();
                println!(
                    "{:<24} {:<7} {:<24} {}",
                    d.group.name.as_str(),
                    d.members.len(),
                    if leads.is_empty() { "-".to_string() } else { leads.join(",") },
                    labhub_service::quotas::describe(&d.quota)
                );
            }
        }
        GroupCommand::Delete { name } => {
            let name = group_name(&name)?;
            hub.groups().delete(actor, &name).await?;
            println!("Deleted the group {name}.");
        }
        GroupCommand::Rename { name, new_name } => {
            let g = hub.groups().rename(actor, &group_name(&name)?, &group_name(&new_name)?).await?;
            println!("Renamed {name} to {}.", g.name);
        }
        GroupCommand::AddMember { group, users } => {
            println!(
                "{}",
                members_line(&hub.groups().add_members(actor, &group_name(&group)?, &names(&users)?).await?)
            );
        }
        GroupCommand::RemoveMember { group, users } => {
            println!(
                "{}",
                members_line(&hub.groups().remove_members(actor, &group_name(&group)?, &names(&users)?).await?)
            );
        }
        GroupCommand::SetLead { group, user, lead } => {
            let (g, u) = (group_name(&group)?, name(&user)?);
            hub.groups().set_lead(actor, &g, &u, lead).await?;
            println!("{u} {} {g}.", if lead { "now leads" } else { "no longer leads" });
        }
        GroupCommand::SetQuota { group, limits, ceiling } => {
            let g = group_name(&group)?;
            let patch = limits.patch()?;
            if patch.is_empty() {
                bail!("give at least one limit to change (see --help)");
            }
            let d = if ceiling {
                hub.quotas().set_group_ceiling(actor, &g, &patch).await?
            } else {
                hub.quotas().set_group_quota(actor, &g, &patch).await?
            };
            let (what, q) = if ceiling { ("ceiling", &d.ceiling) } else { ("limits", &d.quota) };
            println!("The {what} of {g}: {}", labhub_service::quotas::describe(q));
        }
    }
    Ok(())
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
    let runtime = app::Runtime::docker(&config.docker).await;
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
    app::boot(&built.hub, config.servers.build_missing_images_at_boot, wait_true(stop_rx.clone())).await?;
    let maintenance = tokio::spawn(built.hub.clone().run_maintenance(wait_true(stop_rx.clone())));
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
