//! `[environments]`: building environments from repositories and uploaded files.

use std::path::PathBuf;
use std::time::Duration;

use labhub_core::environment::PackageIndexes;
use serde::{Deserialize, Serialize};

use super::Config;

/// `[environments]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentsConfig {
    /// The catalogue entry environments build on unless an admin names another.
    pub base: String,
    /// Folders of this machine whose git repositories leads and members may build from
    /// (admins may use any folder; everyone may use repository URLs).
    pub local_sources: Vec<PathBuf>,
    /// pip's index (a PyPI mirror for air-gapped labs); unset: PyPI.
    pub pip_index_url: Option<String>,
    /// A CA bundle pip trusts while downloading (kept out of the built images).
    pub pip_cert: Option<PathBuf>,
    /// A Debian mirror for `apt.txt`; unset: the base image's own sources.
    pub debian_mirror: Option<String>,
    /// The longest a build may take.
    #[serde(with = "humantime_serde")]
    pub build_timeout: Duration,
    /// How long images that sessions ran are kept from the image collector.
    #[serde(with = "humantime_serde")]
    pub keep_session_images: Duration,
    /// How many snapshots of running servers one member may hold.
    pub snapshots_per_member: u32,
    /// The most one snapshot may save ("20GiB"): what its server wrote outside the home.
    pub snapshot_max_size: String,
    /// The largest upload of a repository's files ("32MiB", the tar or tar.gz as sent) a build takes.
    pub max_upload: String,
}

impl Default for EnvironmentsConfig {
    fn default() -> Self {
        let d = labhub_service::environments::EnvironmentSettings::default();
        Self {
            base: d.base,
            local_sources: d.local_sources,
            pip_index_url: None,
            pip_cert: None,
            debian_mirror: None,
            build_timeout: d.build_timeout,
            keep_session_images: d.keep_session_images,
            snapshots_per_member: d.snapshots_per_member,
            snapshot_max_size: "20GiB".into(),
            max_upload: "32MiB".into(),
        }
    }
}

impl Config {
    /// How environments are built, for the service; their images are tagged under the hub's id.
    pub fn environment_settings(&self) -> labhub_service::environments::EnvironmentSettings {
        let e = &self.environments;
        labhub_service::environments::EnvironmentSettings {
            base: e.base.clone(),
            repository: format!("{}-env", self.docker.hub_id),
            local_sources: e.local_sources.clone(),
            indexes: PackageIndexes {
                pip_index_url: e.pip_index_url.clone(),
                pip_cert: e.pip_cert.clone(),
                debian_mirror: e.debian_mirror.clone(),
            },
            build_timeout: e.build_timeout,
            keep_session_images: e.keep_session_images,
            snapshots_per_member: e.snapshots_per_member,
            // Checked when the configuration is read (`Config::validate`).
            snapshot_max_bytes: labhub_core::resources::parse_memory(&e.snapshot_max_size).unwrap_or(20 << 30),
            max_upload_bytes: labhub_core::resources::parse_memory(&e.max_upload).unwrap_or(32 << 20),
        }
    }
}
