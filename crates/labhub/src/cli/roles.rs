//! `labhub role …`: JupyterHub's roles (named lists of scopes) and whom they are given to.
//! Changes reach running hubs at once (Postgres announces them).

use anyhow::{Context, bail};
use clap::Subcommand;
use labhub_core::{GroupName, RoleName, ServiceName, UserName};
use labhub_service::Actor;
use labhub_service::roles::Assignee;

#[derive(Subcommand)]
pub(super) enum RoleCommand {
    /// List the roles with their scopes.
    List,
    /// Define a role, or redefine one, with its scopes (repeat --scope).
    Put {
        name: String,
        /// A scope as JupyterHub writes it, e.g. read:users!group=lab (repeat for more).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Remove a role that is not built in.
    Remove { name: String },
    /// Give a role to a user (--user), to every member of a group (--group) or to a
    /// registered service (--service).
    Assign {
        name: String,
        #[command(flatten)]
        to: Target,
    },
    /// Take a role back from a user (--user), a group (--group) or a service (--service).
    Unassign {
        name: String,
        #[command(flatten)]
        to: Target,
    },
}

/// Exactly one of `--user`, `--group`, `--service`.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub(super) struct Target {
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    group: Option<String>,
    #[arg(long)]
    service: Option<String>,
}

fn role_name(raw: &str) -> anyhow::Result<RoleName> {
    RoleName::parse(raw).with_context(|| format!("{raw:?} is not a role name"))
}

fn assignee(to: Target) -> anyhow::Result<Assignee> {
    Ok(match (to.user, to.group, to.service) {
        (Some(u), None, None) => {
            Assignee::User(UserName::parse(&u).with_context(|| format!("{u:?} is not a user name"))?)
        }
        (None, Some(g), None) => {
            Assignee::Group(GroupName::parse(&g).with_context(|| format!("{g:?} is not a group name"))?)
        }
        (None, None, Some(s)) => {
            Assignee::Service(ServiceName::parse(&s).with_context(|| format!("{s:?} is not a service name"))?)
        }
        _ => bail!("give exactly one of --user, --group and --service"),
    })
}

/// Runs a `labhub role` command as the system.
pub(super) async fn role(hub: labhub_service::Hub, cmd: RoleCommand) -> anyhow::Result<()> {
    let roles = hub.roles();
    match cmd {
        RoleCommand::List => {
            for r in roles.list(Actor::System).await? {
                let builtin = if r.builtin { " (built in)" } else { "" };
                println!("{}{builtin}: {}", r.name, r.scopes.join(" "));
            }
        }
        RoleCommand::Put { name, scopes, description } => {
            let r = roles.put(Actor::System, &role_name(&name)?, &description, &scopes).await?;
            println!("Role {} grants {}; in effect now.", r.name, r.scopes.join(" "));
        }
        RoleCommand::Remove { name } => {
            roles.delete(Actor::System, &role_name(&name)?).await?;
            println!("Removed role {name}.");
        }
        RoleCommand::Assign { name, to } => {
            roles.assign(Actor::System, &role_name(&name)?, &assignee(to)?, true).await?;
            println!("Gave {name}; in effect now.");
        }
        RoleCommand::Unassign { name, to } => {
            roles.assign(Actor::System, &role_name(&name)?, &assignee(to)?, false).await?;
            println!("Took {name} back; in effect now.");
        }
    }
    Ok(())
}
