//! `labhub image …`: the image catalogue from the command line.

use anyhow::Context;
use clap::Subcommand;
use labhub_core::{Contract, ImageFields, ImageKind, ImageRef};
use labhub_service::Actor;

/// A catalogue entry's fields on the command line.
#[derive(clap::Args)]
pub(super) struct ImageArgs {
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
    /// The contract its servers speak: labhub (the default) or jupyterhub (jupyterhub-singleuser,
    /// signing in through the hub's OAuth).
    #[arg(long)]
    contract: Option<String>,
    /// In Swarm mode, a node its servers may run on, one constraint per --placement (e.g.
    /// node.labels.gpu==true); --placement '' clears them.
    #[arg(long = "placement")]
    placement: Option<Vec<String>>,
}

#[derive(Subcommand)]
pub(super) enum ImageCommand {
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

pub(super) fn image_fields(args: ImageArgs, base: Option<ImageFields>) -> anyhow::Result<ImageFields> {
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
    let contract = match (args.contract, &base) {
        (Some(c), _) => {
            Contract::parse(&c).with_context(|| format!("--contract must be labhub or jupyterhub, not {c:?}"))?
        }
        (None, Some(b)) => b.contract,
        (None, None) => Contract::default(),
    };
    let placement = match (args.placement, &base) {
        (Some(p), _) => p
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| labhub_core::Placement::parse(p))
            .collect::<Result<_, _>>()?,
        (None, Some(b)) => b.placement.clone(),
        (None, None) => Vec::new(),
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
        contract,
        placement,
    })
}

pub(super) async fn image(hub: labhub_service::Hub, cmd: ImageCommand) -> anyhow::Result<()> {
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
            super::environments::print_live(&log).await?;
        }
    }
    Ok(())
}
