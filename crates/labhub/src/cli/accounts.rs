//! `labhub user …` and `labhub token …`: accounts and API tokens from the command line.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use labhub_core::listing::UserFilter;
use labhub_core::{NodeName, Secret};
use labhub_service::Actor;
use labhub_service::accounts::NewAccount;
use labhub_service::model::StorageFate;

use super::name;

#[derive(Subcommand)]
pub(super) enum UserCommand {
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
        /// With --no-password: the identity provider (its id) whose identity of this name may
        /// claim the account at its first sign-in. Without it, no provider can claim it.
        #[arg(long, requires = "no_password")]
        provider: Option<String>,
    },
    /// List accounts.
    List,
    /// Set an account's password (read from standard input, or generated and printed).
    SetPassword {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account with its sessions and tokens. Its home is kept as an orphan (listed
    /// on the admin's Storage page, never mounted for anyone) unless --delete-files is given.
    Delete {
        name: String,
        /// Delete the account's files too, for good.
        #[arg(long)]
        delete_files: bool,
    },
    /// Grant (true) or revoke (false) admin rights.
    SetAdmin {
        name: String,
        #[arg(action = clap::ArgAction::Set)]
        admin: bool,
    },
    /// Swarm mode with swarm_homes = "pinned": run this user's servers on the node HOSTNAME
    /// from their next start (refused while one runs; their files do not move with them).
    Pin { name: String, hostname: String },
}

impl UserCommand {
    /// Whether the command reaches users' files (through the container runtime).
    pub(super) fn needs_runtime(&self) -> bool {
        matches!(self, Self::Delete { delete_files: true, .. })
    }
}

#[derive(Subcommand)]
pub(super) enum TokenCommand {
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

pub(super) fn read_password_stdin() -> anyhow::Result<Secret<String>> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("could not read the password from standard input")?;
    let line = s.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!("standard input held no password");
    }
    Ok(Secret::new(line))
}

pub(super) fn generated_password() -> Secret<String> {
    Secret::new(labhub_auth::new_token().0[..20].to_string())
}

pub(super) async fn user(hub: labhub_service::Hub, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { name: raw, admin, password_stdin, no_password, provider } => {
            let name = name(&raw)?;
            let (password, show) = match (password_stdin, no_password) {
                (true, _) => (Some(read_password_stdin()?), false),
                (false, true) => (None, false),
                (false, false) => (Some(generated_password()), true),
            };
            let new = NewAccount { name, password: password.clone(), admin, provider };
            let user = hub.accounts().create(Actor::System, new).await?;
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
        UserCommand::Delete { name: raw, delete_files } => {
            let name = name(&raw)?;
            let fate = if delete_files { StorageFate::Delete } else { StorageFate::Keep };
            hub.accounts().delete(Actor::System, &name, fate).await?;
            match fate {
                StorageFate::Keep => println!("Deleted {name}; their files are kept as an orphan for an admin."),
                StorageFate::Delete => println!("Deleted {name} and their files."),
            }
        }
        UserCommand::SetAdmin { name: raw, admin } => {
            let name = name(&raw)?;
            hub.accounts().set_admin(Actor::System, &name, admin).await?;
            println!("{name} is {}an admin.", if admin { "now " } else { "no longer " });
        }
        UserCommand::Pin { name: raw, hostname } => {
            let name = name(&raw)?;
            let node = NodeName::parse(&hostname).with_context(|| format!("{hostname:?} is not a node's host name"))?;
            match hub.node_pins().pin(Actor::System, &name, &node).await? {
                Some(before) if before != node => println!("{name} moves from node {before} to node {node}."),
                Some(_) => println!("{name} is pinned to node {node} already."),
                None => println!("{name} is pinned to node {node}."),
            }
        }
    }
    Ok(())
}

pub(super) async fn token(hub: labhub_service::Hub, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name: raw, note, expires_in } => {
            let name = name(&raw)?;
            let (token, _) = hub.tokens().create(Actor::System, &name, &note, expires_in, None).await?;
            println!("{}", token.expose());
        }
    }
    Ok(())
}
