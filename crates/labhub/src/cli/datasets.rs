//! `labhub dataset …`: data mounted read-only at `~/datasets/NAME` in servers.

use anyhow::{Context, bail};
use clap::Subcommand;
use labhub_core::{DatasetName, GroupName};
use labhub_service::Actor;
use labhub_service::datasets::{DatasetSource, NewDatasetRequest};

#[derive(Subcommand)]
pub(super) enum DatasetCommand {
    /// Register a dataset from a folder of this machine (--path) or a volume (--volume); it is
    /// for everyone unless given --group (repeatable). The source must exist.
    Add {
        name: String,
        /// A folder of the machine the servers run on (absolute).
        #[arg(long, conflicts_with = "volume", required_unless_present = "volume")]
        path: Option<String>,
        /// A volume of the container engine.
        #[arg(long)]
        volume: Option<String>,
        /// Only for this group (repeat for more).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// What it holds, for the admin page.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List datasets, with a warning for each whose source is missing now.
    List,
    /// Stop mounting a dataset in servers (its files are untouched).
    Remove { name: String },
}

fn dataset_name(raw: &str) -> anyhow::Result<DatasetName> {
    DatasetName::parse(raw).with_context(|| format!("{raw:?} is not a dataset name"))
}

/// Runs a `labhub dataset` command as the system.
pub(super) async fn dataset(hub: labhub_service::Hub, cmd: DatasetCommand) -> anyhow::Result<()> {
    let actor = Actor::System;
    match cmd {
        DatasetCommand::Add { name, path, volume, groups, description } => {
            let source = match (path, volume) {
                (Some(p), None) => DatasetSource::HostPath(p),
                (None, Some(v)) => DatasetSource::Volume(v),
                _ => bail!("give exactly one of --path and --volume"),
            };
            let groups = groups
                .iter()
                .map(|g| GroupName::parse(g).with_context(|| format!("{g:?} is not a group name")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let request = NewDatasetRequest { name: dataset_name(&name)?, source, description, groups };
            let d = hub.datasets().add(actor, request).await?;
            let who = if d.groups.is_empty() {
                "every server".to_string()
            } else {
                format!("the servers of {}", d.groups.iter().map(GroupName::as_str).collect::<Vec<_>>().join(", "))
            };
            println!("Added {}: {who} read it at ~/datasets/{} from their next start.", d.name, d.name);
        }
        DatasetCommand::List => {
            println!("{:<24} {:<40} {:<24} status", "name", "source", "for");
            for s in hub.datasets().list(actor).await? {
                let d = s.dataset;
                let who = if d.groups.is_empty() {
                    "everyone".to_string()
                } else {
                    d.groups.iter().map(GroupName::as_str).collect::<Vec<_>>().join(",")
                };
                let status = s.problem.map_or_else(|| "ok".to_string(), |p| format!("MISSING: {p}"));
                println!("{:<24} {:<40} {:<24} {status}", d.name.as_str(), d.source.to_string(), who);
            }
        }
        DatasetCommand::Remove { name } => {
            let name = dataset_name(&name)?;
            hub.datasets().remove(actor, &name).await?;
            println!("Removed {name}: servers no longer mount it from their next start.");
        }
    }
    Ok(())
}
