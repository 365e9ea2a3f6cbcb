//! `labhub group …`: groups, their leads and quotas from the command line.

use anyhow::{Context, bail};
use clap::Subcommand;
use labhub_core::UserName;
use labhub_service::Actor;
use labhub_service::model::StorageFate;

use super::name;

#[derive(Subcommand)]
pub(super) enum GroupCommand {
    /// Create a group (it follows the site default quota until one is set).
    Create { name: String },
    /// List groups with their members, leads and limits.
    List,
    /// Delete a group (refused while servers run under it). Its shared folder is kept as an
    /// orphan (listed under Storage for admins, never mounted for anyone) unless asked.
    Delete {
        name: String,
        /// Delete the group's shared folder too, for good.
        #[arg(long)]
        delete_files: bool,
    },
    /// Turn a group's shared folder (~/shared/GROUP in its members' servers) on or off.
    SharedFolder {
        group: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Members (not leads) get it read-only.
        #[arg(long)]
        read_only: bool,
    },
    /// Let a group's members build their own environments (on) or not (off).
    MembersBuildEnvironments {
        group: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Set which Swarm nodes a group's servers may run on (none: no constraint of its own),
    /// e.g. `labhub group placement gpu-lab node.labels.gpu==true`.
    Placement { group: String, constraints: Vec<String> },
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
        limits: Box<QuotaArgs>,
        /// Change the ceiling instead of the limits in force.
        #[arg(long)]
        ceiling: bool,
    },
}

/// The limits `group set-quota` changes; those left out keep their value.
#[derive(clap::Args)]
pub(super) struct QuotaArgs {
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
    /// Whether the idle timeout also stops servers with a busy kernel or an open terminal.
    #[arg(long, action = clap::ArgAction::Set)]
    cull_busy: Option<bool>,
    /// The longest one environment build may take (e.g. 20m), or "site" for the site's
    /// `environments.build_timeout`.
    #[arg(long)]
    build_timeout: Option<String>,
}

/// A limit that may be removed: `None` when not given, `Some(None)` for the `off` word.
pub(super) fn removable<T>(
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
            cull_busy: self.cull_busy,
            build_timeout: removable(&self.build_timeout, "site", duration)?,
        })
    }
}

pub(super) fn group_name(raw: &str) -> anyhow::Result<labhub_core::GroupName> {
    labhub_core::GroupName::parse(raw).with_context(|| format!("{raw:?} is not a valid group name"))
}

pub(super) fn names(raw: &[String]) -> anyhow::Result<Vec<UserName>> {
    raw.iter().map(|n| name(n)).collect()
}

pub(super) fn members_line(d: &labhub_service::model::GroupDetail) -> String {
    let n = d.members.len();
    format!("{} now has {n} member{}.", d.group.name, if n == 1 { "" } else { "s" })
}

pub(super) async fn group(hub: labhub_service::Hub, cmd: GroupCommand) -> anyhow::Result<()> {
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
        GroupCommand::Delete { name, delete_files } => {
            let name = group_name(&name)?;
            let fate = if delete_files { StorageFate::Delete } else { StorageFate::Keep };
            hub.groups().delete(actor, &name, fate).await?;
            match fate {
                StorageFate::Keep => {
                    println!("Deleted the group {name}; its shared folder, if any, is kept as an orphan.")
                }
                StorageFate::Delete => println!("Deleted the group {name} and its shared folder."),
            }
        }
        GroupCommand::SharedFolder { group, state, read_only } => {
            let name = group_name(&group)?;
            let on = state == "on";
            hub.groups().set_shared_folder(actor, &name, on, read_only).await?;
            match (on, read_only) {
                (true, false) => println!("{name} shares ~/shared/{name} with its members from their next start."),
                (true, true) => {
                    println!("{name} shares ~/shared/{name}, read-only for members, from their next start.")
                }
                (false, _) => println!("{name} has no shared folder from its members' next start; its files are kept."),
            }
        }
        GroupCommand::MembersBuildEnvironments { group, state } => {
            let name = group_name(&group)?;
            let on = state == "on";
            hub.environments().set_members_may_build(actor, &name, on).await?;
            if on {
                println!("{name}'s members may build their own environments.");
            } else {
                println!("{name}'s members no longer build their own environments (what they built stays).");
            }
        }
        GroupCommand::Placement { group, constraints } => {
            let placement =
                constraints.iter().map(|c| labhub_core::Placement::parse(c)).collect::<Result<Vec<_>, _>>()?;
            let g = hub.groups().set_placement(actor, &group_name(&group)?, &placement).await?;
            if g.placement.is_empty() {
                println!("{}'s servers may run on any node.", g.group.name);
            } else {
                let list: Vec<&str> = g.placement.iter().map(|p| p.as_str()).collect();
                println!("{}'s servers run where {}.", g.group.name, list.join(" and "));
            }
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
