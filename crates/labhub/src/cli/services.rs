//! `labhub service …`: external services registered with the hub (JupyterHub's services),
//! each with an API token (printed once) and roles; `--url` makes `/services/{name}/` reach it.

use anyhow::Context;
use clap::Subcommand;
use labhub_core::{RoleName, ServiceName};
use labhub_service::Actor;

#[derive(Subcommand)]
pub(super) enum ServiceCommand {
    /// Register a service and print its API token (shown only this once).
    Add {
        name: String,
        /// Where the proxy sends /services/NAME/: http://ADDRESS:PORT on the hub's host network.
        #[arg(long)]
        url: Option<String>,
        /// A role to give it (repeat for more), e.g. one with list:users and delete:servers.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List the services with their roles and URLs.
    List,
    /// Set (or with no --url, clear) where /services/NAME/ goes.
    SetUrl {
        name: String,
        #[arg(long)]
        url: Option<String>,
    },
    /// Remove a service: its token is refused at once.
    Remove { name: String },
}

fn service_name(raw: &str) -> anyhow::Result<ServiceName> {
    ServiceName::parse(raw).with_context(|| format!("{raw:?} is not a service name"))
}

/// Runs a `labhub service` command as the system.
pub(super) async fn service(hub: labhub_service::Hub, cmd: ServiceCommand) -> anyhow::Result<()> {
    let services = hub.services();
    match cmd {
        ServiceCommand::Add { name, url, roles } => {
            let roles = roles
                .iter()
                .map(|r| RoleName::parse(r).with_context(|| format!("{r:?} is not a role name")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (token, s) = services.add(Actor::System, &service_name(&name)?, url.as_deref(), &roles).await?;
            eprintln!("Registered service {}; its API token (shown only now):", s.name);
            println!("{}", token.expose());
        }
        ServiceCommand::List => {
            for s in services.list(Actor::System).await? {
                let url = s.url.as_deref().unwrap_or("(no URL)");
                println!("{} {url} roles: {}", s.name, s.roles.join(" "));
            }
        }
        ServiceCommand::SetUrl { name, url } => {
            services.set_url(Actor::System, &service_name(&name)?, url.as_deref()).await?;
            println!("{name}: {}", url.as_deref().unwrap_or("no URL"));
        }
        ServiceCommand::Remove { name } => {
            services.remove(Actor::System, &service_name(&name)?).await?;
            println!("Removed service {name}; its token no longer works.");
        }
    }
    Ok(())
}
