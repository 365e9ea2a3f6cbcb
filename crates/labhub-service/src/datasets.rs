//! Datasets: data an admin registers — a folder of the machine or a volume of the engine —
//! mounted read-only at `~/datasets/{name}` in the servers of the groups it is granted to, or
//! of everyone.
//!
//! A source is checked through the runtime when registered (a missing one is refused with a
//! reason) and again whenever admins list datasets (a source gone since is a warning there). A
//! start never fails for a dataset: a missing one is left out, with a line in the progress.
//! Folders that would hand a server the machine (its system folders, the engine's socket and
//! state) are refused whatever an admin asks.

use labhub_core::GroupRole;
use labhub_core::{DatasetName, ExtraMount, GroupName, MountSource, Storage, UserId};
use labhub_db::ResultExt;
use labhub_db::datasets::{self, NewDataset};
use labhub_db::groups;
use serde_json::json;
use time::OffsetDateTime;

use crate::access::Actor;
use crate::{Hub, ServiceError};

impl Hub {
    /// Datasets: registered, listed, removed, and mounted.
    pub fn datasets(&self) -> Datasets<'_> {
        Datasets { hub: self }
    }
}

/// Where a dataset's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSource {
    /// An absolute folder of the machine the servers run on.
    HostPath(String),
    /// A volume of the container engine.
    Volume(String),
}

impl DatasetSource {
    fn kind(&self) -> &'static str {
        match self {
            Self::HostPath(_) => "path",
            Self::Volume(_) => "volume",
        }
    }

    fn text(&self) -> &str {
        match self {
            Self::HostPath(s) | Self::Volume(s) => s,
        }
    }

    fn mount(&self) -> MountSource {
        match self {
            Self::HostPath(p) => MountSource::HostPath(p.clone()),
            Self::Volume(v) => MountSource::Volume(v.clone()),
        }
    }
}

impl std::fmt::Display for DatasetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HostPath(p) => write!(f, "folder {p}"),
            Self::Volume(v) => write!(f, "volume {v}"),
        }
    }
}

/// A registered dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub name: DatasetName,
    pub source: DatasetSource,
    pub description: String,
    /// The groups it is granted to; empty: everyone.
    pub groups: Vec<GroupName>,
    pub created_at: OffsetDateTime,
}

impl TryFrom<datasets::Dataset> for Dataset {
    type Error = ServiceError;

    fn try_from(d: datasets::Dataset) -> Result<Self, ServiceError> {
        let source = match d.source_kind.as_str() {
            "path" => DatasetSource::HostPath(d.source),
            _ => DatasetSource::Volume(d.source),
        };
        let groups =
            if d.everyone { Vec::new() } else { d.groups.iter().filter_map(|g| GroupName::parse(g).ok()).collect() };
        Ok(Self { name: d.name, source, description: d.description, groups, created_at: d.created_at })
    }
}

/// A dataset as admins see it: whether its source is there now.
#[derive(Debug, Clone)]
pub struct DatasetStatus {
    pub dataset: Dataset,
    /// Why servers cannot mount it now, when they cannot.
    pub problem: Option<String>,
}

/// What an admin registers.
#[derive(Debug, Clone)]
pub struct NewDatasetRequest {
    pub name: DatasetName,
    pub source: DatasetSource,
    pub description: String,
    /// Granted to these groups; empty: everyone.
    pub groups: Vec<GroupName>,
}

/// Datasets.
#[derive(Clone, Copy)]
pub struct Datasets<'h> {
    hub: &'h Hub,
}

/// Folders no dataset may be, or be inside: they would hand a server the machine.
const FORBIDDEN_ROOTS: &[&str] =
    &["/proc", "/sys", "/dev", "/run", "/var/run", "/var/lib/docker", "/var/lib/containerd", "/etc", "/boot", "/root"];

/// Refuses a host folder that is not absolute and plain, or that is or holds a system folder.
fn check_host_path(path: &str) -> Result<(), ServiceError> {
    let plain = path.starts_with('/')
        && !path.split('/').any(|p| p == "." || p == "..")
        && !path.contains("//")
        && !path.chars().any(|c| c.is_control() || c == ':' || c == ',');
    if !plain {
        return Err(ServiceError::Invalid(format!("{path:?} is not an absolute folder without '..', ':' or ','")));
    }
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Err(ServiceError::Invalid("the machine's root folder cannot be a dataset".into()));
    }
    let under = |root: &str| path == root || path.starts_with(&format!("{root}/"));
    let holds = |root: &str| root.starts_with(&format!("{path}/"));
    if let Some(root) = FORBIDDEN_ROOTS.iter().find(|r| under(r) || holds(r)) {
        return Err(ServiceError::Invalid(format!(
            "{path} cannot be a dataset: it is or holds {root}, which would give servers the machine"
        )));
    }
    Ok(())
}

/// Refuses a volume name the engine would not accept.
fn check_volume(name: &str) -> Result<(), ServiceError> {
    let ok = name.len() >= 2
        && name.len() <= 255
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok { Ok(()) } else { Err(ServiceError::Invalid(format!("{name:?} is not a volume name"))) }
}

impl Datasets<'_> {
    /// Registers a dataset (admins): its source must exist now, and its groups.
    pub async fn add(&self, actor: Actor<'_>, new: NewDatasetRequest) -> Result<Dataset, ServiceError> {
        actor.require_admin()?;
        match &new.source {
            DatasetSource::HostPath(p) => check_host_path(p)?,
            DatasetSource::Volume(v) => check_volume(v)?,
        }
        let spawner = self.hub.0.spawner.as_ref().ok_or_else(|| {
            ServiceError::Unavailable("datasets cannot be checked: the container runtime is not reachable".into())
        })?;
        spawner
            .check_source(&new.source.mount())
            .await
            .map_err(|e| ServiceError::Invalid(format!("the {} cannot be used as a dataset: {e}", new.source)))?;
        let mut tx = self.hub.begin().await?;
        let mut group_ids = Vec::with_capacity(new.groups.len());
        for g in &new.groups {
            let group = groups::by_name(&mut *tx, g).await?;
            group_ids
                .push(group.ok_or_else(|| ServiceError::NotFound(format!("there is no group named {g}")))?.group_id);
        }
        let row = NewDataset {
            name: &new.name,
            source_kind: new.source.kind(),
            source: new.source.text(),
            description: new.description.trim(),
            groups: &group_ids,
            now: self.hub.now(),
        };
        datasets::insert(&mut tx, &row).await.on_constraint(datasets::NAME_KEY, || {
            ServiceError::Conflict(format!("there is already a dataset named {}", new.name))
        })?;
        let detail = json!({ "source": new.source.to_string(), "groups": new.groups });
        self.hub.audit().record(&mut *tx, actor, "dataset.add", new.name.as_str(), detail).await?;
        let added = datasets::by_name(&mut *tx, &new.name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(new.name.to_string()))?;
        tx.commit().await?;
        added.try_into()
    }

    /// Every dataset, each with why servers cannot mount it now, if so (admins).
    pub async fn list(&self, actor: Actor<'_>) -> Result<Vec<DatasetStatus>, ServiceError> {
        actor.require_admin()?;
        let mut out = Vec::new();
        for row in datasets::list(self.hub.db()).await? {
            let dataset = Dataset::try_from(row)?;
            let problem = match &self.hub.0.spawner {
                Some(spawner) => spawner.check_source(&dataset.source.mount()).await.err().map(|e| e.to_string()),
                None => Some("the container runtime is not reachable".into()),
            };
            out.push(DatasetStatus { dataset, problem });
        }
        Ok(out)
    }

    /// Unregisters a dataset (admins): servers no longer mount it from their next start; its
    /// files stay where they are.
    pub async fn remove(&self, actor: Actor<'_>, name: &DatasetName) -> Result<(), ServiceError> {
        actor.require_admin()?;
        let Some(row) = datasets::by_name(self.hub.db(), name).await? else {
            return Err(ServiceError::NotFound(format!("there is no dataset named {name}")));
        };
        let dataset = Dataset::try_from(row)?;
        let mut tx = self.hub.begin().await?;
        datasets::delete(&mut *tx, name).await?;
        let detail = json!({ "source": dataset.source.to_string(), "groups": dataset.groups });
        self.hub.audit().record(&mut *tx, actor, "dataset.remove", name.as_str(), detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// What a user's servers mount besides their home: the shared folder of each of their
    /// groups that has one (read-only for members when the group says so, never for its
    /// leads), then every dataset granted to them, read-only and left out when missing, then
    /// the backups restored for them (`~/restored/…`).
    pub(crate) async fn mounts_for(&self, user: UserId) -> Result<Vec<ExtraMount>, ServiceError> {
        let mut mounts = Vec::new();
        for m in groups::of_user(self.hub.db(), user).await? {
            if m.group.shared_folder {
                mounts.push(ExtraMount {
                    source: MountSource::Storage(Storage::Group(m.group.group_id)),
                    at: format!("shared/{}", m.group.name),
                    read_only: m.group.shared_read_only && m.role != GroupRole::Lead,
                    optional: false,
                });
            }
        }
        for row in datasets::for_user(self.hub.db(), user).await? {
            let d = Dataset::try_from(row)?;
            mounts.push(ExtraMount {
                source: d.source.mount(),
                at: format!("datasets/{}", d.name),
                read_only: true,
                optional: true,
            });
        }
        mounts.extend(self.hub.backups().mounts_for(user).await?);
        Ok(mounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_folders_that_would_give_away_the_machine_are_refused() {
        for bad in ["/", "/etc", "/etc/ssl", "/var", "/var/run", "/var/run/docker.sock", "/proc/1", "/var/lib/docker"] {
            assert!(check_host_path(bad).is_err(), "{bad} was accepted");
        }
        for bad in ["data", "/data/../etc", "/data//x", "/data:/x", "/a,b"] {
            assert!(check_host_path(bad).is_err(), "{bad} was accepted");
        }
        for good in ["/srv/census", "/data/reference/", "/var/lib/labhub-data", "/home/shared/genomes"] {
            assert!(check_host_path(good).is_ok(), "{good} was refused");
        }
    }

    #[test]
    fn volume_names_follow_the_engines_rule() {
        assert!(check_volume("census_2021").is_ok());
        assert!(check_volume("x").is_err());
        assert!(check_volume("-rf").is_err());
        assert!(check_volume("a/b").is_err());
    }
}
