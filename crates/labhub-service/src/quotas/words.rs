//! Quotas in words: the one place a quota, a refusal, a storage warning or a limit above a
//! ceiling is written for people (and, as JSON, for the API and the audit log).

use std::time::Duration;

use labhub_core::resources::{format_bytes, format_cpu};
use labhub_core::{GroupName, ImageAllowance, Quota};
use serde_json::{Value, json};

use super::policy::{Ask, Refusal, within};
use crate::ServiceError;
use crate::words::{capitalise, format_duration, plural};

/// A quota as JSON: the API's model and the audit log's before/after.
pub fn describe(q: &Quota) -> Value {
    json!({
        "max_cpu_millis": q.max_cpu_millis,
        "max_memory_bytes": q.max_memory_bytes,
        "max_gpus": q.max_gpus,
        "images": match &q.images {
            ImageAllowance::All => Value::Null,
            ImageAllowance::Only(names) => json!(names),
        },
        "max_servers_per_member": q.max_servers_per_member,
        "budget_cpu_millis": q.budget_cpu_millis,
        "budget_memory_bytes": q.budget_memory_bytes,
        "storage_bytes": q.storage_bytes,
        "idle_timeout_seconds": q.idle_timeout.map(|d| d.as_secs()),
        "max_lifetime_seconds": q.max_lifetime.map(|d| d.as_secs()),
        "cull_busy": q.cull_busy,
        "build_timeout_seconds": q.build_timeout.map(|d| d.as_secs()),
    })
}

/// A quota in one line for people: "up to 2 CPU and 4 GiB per server · 4 servers per member · …".
pub fn summary(q: &Quota) -> String {
    let mut parts = vec![
        match q.max_gpus {
            0 => format!(
                "up to {} CPU and {} per server",
                format_cpu(q.max_cpu_millis),
                format_bytes(q.max_memory_bytes)
            ),
            n => format!(
                "up to {} CPU, {} and {} per server",
                format_cpu(q.max_cpu_millis),
                format_bytes(q.max_memory_bytes),
                plural(u64::from(n), "GPU")
            ),
        },
        format!("{} per member", plural(u64::from(q.max_servers_per_member), "server")),
    ];
    match (q.budget_cpu_millis, q.budget_memory_bytes) {
        (None, None) => parts.push("no group budget".into()),
        (c, m) => parts.push(format!(
            "a budget of {} CPU and {}",
            c.map_or_else(|| "unlimited".into(), cpu_text),
            m.map_or_else(|| "unlimited memory".into(), format_bytes)
        )),
    }
    parts.push(match q.storage_bytes {
        Some(s) => format!("{} of storage", format_bytes(s)),
        None => "unlimited storage".into(),
    });
    parts.push(match q.idle_timeout {
        Some(d) => format!("stopped after {} idle", format_duration(d)),
        None => "never stopped when idle".into(),
    });
    if let Some(d) = q.max_lifetime {
        parts.push(format!("stopped after running {}", format_duration(d)));
    }
    if q.idle_timeout.is_some() {
        parts.push(if q.cull_busy { "busy servers stopped too" } else { "busy servers kept" }.into());
    }
    if let Some(d) = q.build_timeout {
        parts.push(format!("environment builds stopped after {}", format_duration(d)));
    }
    parts.join(" · ")
}

/// A CPU amount of a budget (millicores, possibly past what one server may have).
pub fn cpu_text(millis: u64) -> String {
    format_cpu(u32::try_from(millis).unwrap_or(u32::MAX))
}

impl Ask {
    /// "ask bob (lead of lab)", "ask bob or carol (leads of lab)", "ask an admin".
    pub(crate) fn text(&self) -> String {
        match (&self.group, self.leads.as_slice()) {
            (Some(g), [one]) => format!("ask {one} (lead of {g})"),
            (Some(g), [rest @ .., last]) => {
                let rest: Vec<&str> = rest.iter().map(|n| n.as_str()).collect();
                format!("ask {} or {last} (leads of {g})", rest.join(", "))
            }
            _ => "ask an admin".to_string(),
        }
    }
}

impl Refusal {
    /// The refusal as the member reads it.
    pub(crate) fn message(&self) -> String {
        match self {
            Refusal::NoCpu => "give the server some CPU, e.g. 0.5".into(),
            Refusal::TooLittleMemory => {
                format!("give the server at least {} of memory", format_bytes(super::policy::MIN_MEMORY_BYTES))
            }
            Refusal::Storage { used, limit, ask } => format!(
                "Your storage holds {}, more than your limit of {}: free at least {} before starting. To delete files, {} to raise the limit for a while.",
                format_bytes(*used),
                format_bytes(*limit),
                format_bytes(used - limit),
                ask.text()
            ),
            Refusal::Image { image, under, allowed, ask } => {
                let allowed = match allowed {
                    ImageAllowance::Only(names) if !names.is_empty() => names.join(", "),
                    _ => "none".to_string(),
                };
                let m = format!("The image '{image}' is not one that {under} may use (allowed: {allowed}).");
                format!("{m} {}.", capitalise(&ask.text()))
            }
            Refusal::Cpu { asked, limit, under, ask } => format!(
                "{} CPU is more than the limit of {} CPU per server in {under}. Choose a smaller size. {}.",
                format_cpu(*asked),
                format_cpu(*limit),
                capitalise(&ask.text())
            ),
            Refusal::Memory { asked, limit, under, ask } => format!(
                "{} of memory is more than the limit of {} per server in {under}. Choose a smaller size. {}.",
                format_bytes(*asked),
                format_bytes(*limit),
                capitalise(&ask.text())
            ),
            Refusal::Gpus { asked, limit, under, ask } => format!(
                "{} is more than the limit of {} per server in {under}. {}.",
                plural(u64::from(*asked), "GPU"),
                plural(u64::from(*limit), "GPU"),
                capitalise(&ask.text())
            ),
            Refusal::Servers { user, running, limit, under, ask } => format!(
                "{user} already runs {} under {under}, its limit per member of {limit}. Stop a server first, or {}.",
                plural(*running, "server"),
                ask.text()
            ),
            Refusal::CpuBudget { budget, used, asked, under, ask } => format!(
                "The CPU budget of {under} is {} CPU and its running servers reserve {} CPU, so {} CPU more does not fit. Stop a server first, or {}.",
                cpu_text(*budget),
                cpu_text(*used),
                format_cpu(*asked),
                ask.text()
            ),
            Refusal::MemoryBudget { budget, used, asked, under, ask } => format!(
                "The memory budget of {under} is {} and its running servers reserve {}, so {} more does not fit. Stop a server first, or {}.",
                format_bytes(*budget),
                format_bytes(*used),
                format_bytes(*asked),
                ask.text()
            ),
            Refusal::Snapshots { held, limit } => format!(
                "You hold {}, the limit per member of {limit}: ask an admin to remove one or to raise the limit.",
                plural(*held, "saved environment")
            ),
            Refusal::SnapshotSize { size, limit } => format!(
                "This server's changes outside your home folder hold {}, more than the {} a saved environment may hold. Remove files you do not need to keep (outside the home), or ask an admin.",
                format_bytes(*size),
                format_bytes(*limit)
            ),
        }
    }

    /// The refusal as the service's error: a bad request, never allowed (403), or not now (409).
    pub(crate) fn into_error(self) -> ServiceError {
        let message = self.message();
        match self {
            Refusal::NoCpu | Refusal::TooLittleMemory => ServiceError::Invalid(message),
            Refusal::Image { .. } | Refusal::Cpu { .. } | Refusal::Memory { .. } | Refusal::Gpus { .. } => {
                ServiceError::Forbidden(message)
            }
            Refusal::Storage { .. }
            | Refusal::Servers { .. }
            | Refusal::CpuBudget { .. }
            | Refusal::MemoryBudget { .. }
            | Refusal::Snapshots { .. }
            | Refusal::SnapshotSize { .. } => ServiceError::Conflict(message),
        }
    }
}

/// The home page's warning when a member's storage is near or past their limit; `None` below
/// `warn_percent` of it.
pub(crate) fn storage_warning(used: u64, limit: u64, warn_percent: u8, ask: &Ask) -> Option<String> {
    if used > limit {
        Some(format!(
            "Your storage holds {}, more than your limit of {}: servers cannot start until you free at least {}. To delete files, {} to raise the limit for a while.",
            format_bytes(used),
            format_bytes(limit),
            format_bytes(used - limit),
            ask.text()
        ))
    } else if u128::from(used) * 100 >= u128::from(limit) * u128::from(warn_percent) {
        Some(format!(
            "Your storage holds {} of your {} limit. Delete files you no longer need: past the limit, servers cannot start. For more space, {}.",
            format_bytes(used),
            format_bytes(limit),
            ask.text()
        ))
    } else {
        None
    }
}

/// The warning for a group's shared folder near or past the group's storage limit.
pub(crate) fn shared_folder_warning(
    group: &GroupName,
    used: u64,
    limit: u64,
    warn_percent: u8,
    ask: &Ask,
) -> Option<String> {
    if used > limit {
        Some(format!(
            "The shared folder of {group} holds {}, more than the group's limit of {}: free at least {}, or {} to raise it.",
            format_bytes(used),
            format_bytes(limit),
            format_bytes(used - limit),
            ask.text()
        ))
    } else if u128::from(used) * 100 >= u128::from(limit) * u128::from(warn_percent) {
        Some(format!(
            "The shared folder of {group} holds {} of the group's {} limit. For more space, {}.",
            format_bytes(used),
            format_bytes(limit),
            ask.text()
        ))
    } else {
        None
    }
}

fn or_none<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "none".to_string(), f)
}

fn or_never(v: Option<Duration>) -> String {
    v.map_or_else(|| "never".to_string(), format_duration)
}

/// The first limit of `q` above `ceiling`, in words; `None` when all are within it.
pub fn above_ceiling(q: &Quota, ceiling: &Quota) -> Option<String> {
    let over =
        |what: &str, asked: String, most: String| Some(format!("{what} of {asked} is above the ceiling of {most}"));
    if q.max_cpu_millis > ceiling.max_cpu_millis {
        return over("a CPU limit per server", format_cpu(q.max_cpu_millis), format_cpu(ceiling.max_cpu_millis));
    }
    if q.max_memory_bytes > ceiling.max_memory_bytes {
        return over(
            "a memory limit per server",
            format_bytes(q.max_memory_bytes),
            format_bytes(ceiling.max_memory_bytes),
        );
    }
    if q.max_gpus > ceiling.max_gpus {
        return over("a GPU limit per server", q.max_gpus.to_string(), ceiling.max_gpus.to_string());
    }
    if q.max_servers_per_member > ceiling.max_servers_per_member {
        return over(
            "a limit of servers per member",
            q.max_servers_per_member.to_string(),
            ceiling.max_servers_per_member.to_string(),
        );
    }
    if let ImageAllowance::Only(allowed) = &ceiling.images {
        match &q.images {
            ImageAllowance::All => {
                return Some(format!(
                    "every catalogue image is more than the ceiling's images ({})",
                    allowed.join(", ")
                ));
            }
            ImageAllowance::Only(names) => {
                let extra: Vec<&str> = names.iter().filter(|n| !allowed.contains(n)).map(String::as_str).collect();
                if !extra.is_empty() {
                    return Some(format!(
                        "the image{} {} {} not among the ceiling's images ({})",
                        if extra.len() == 1 { "" } else { "s" },
                        extra.join(", "),
                        if extra.len() == 1 { "is" } else { "are" },
                        allowed.join(", ")
                    ));
                }
            }
        }
    }
    if !within(q.budget_cpu_millis, ceiling.budget_cpu_millis) {
        return over(
            "a group CPU budget",
            or_none(q.budget_cpu_millis, cpu_text),
            or_none(ceiling.budget_cpu_millis, cpu_text),
        );
    }
    if !within(q.budget_memory_bytes, ceiling.budget_memory_bytes) {
        return over(
            "a group memory budget",
            or_none(q.budget_memory_bytes, format_bytes),
            or_none(ceiling.budget_memory_bytes, format_bytes),
        );
    }
    if !within(q.storage_bytes, ceiling.storage_bytes) {
        return over(
            "a storage limit",
            or_none(q.storage_bytes, format_bytes),
            or_none(ceiling.storage_bytes, format_bytes),
        );
    }
    if !within(q.idle_timeout, ceiling.idle_timeout) {
        return over("an idle timeout", or_never(q.idle_timeout), or_never(ceiling.idle_timeout));
    }
    if !within(q.max_lifetime, ceiling.max_lifetime) {
        return over("a maximum lifetime", or_never(q.max_lifetime), or_never(ceiling.max_lifetime));
    }
    if !within(q.build_timeout, ceiling.build_timeout) {
        let or_site = |v: Option<Duration>| v.map_or_else(|| "the site's limit".to_string(), format_duration);
        return over("a build time limit", or_site(q.build_timeout), or_site(ceiling.build_timeout));
    }
    if ceiling.cull_busy && !q.cull_busy {
        return Some("keeping busy servers running is more than the ceiling allows (it stops them when idle)".into());
    }
    None
}
