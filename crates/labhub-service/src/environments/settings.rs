//! What the configuration says about building environments.

use std::path::PathBuf;
use std::time::Duration;

use labhub_core::environment::PackageIndexes;

/// Settings of environment builds (`[environments]`).
#[derive(Debug, Clone)]
pub struct EnvironmentSettings {
    /// The catalogue entry environments build on unless an admin names another.
    pub base: String,
    /// The image repository builds are tagged in (`{repository}/{name}:b{build}`).
    pub repository: String,
    /// Folders of the machine whose git repositories anyone who may build may use (admins
    /// may use any folder).
    pub local_sources: Vec<PathBuf>,
    /// Where pip and apt find packages.
    pub indexes: PackageIndexes,
    /// The longest a build may take.
    pub build_timeout: Duration,
    /// How long images that sessions ran are kept from the image collector.
    pub keep_session_images: Duration,
    /// How many snapshots of running servers one member may hold.
    pub snapshots_per_member: u32,
    /// The most one snapshot may save: the files its server wrote outside the home and mounts.
    pub snapshot_max_bytes: u64,
    /// The largest upload (a tar or tar.gz of a repository's files, as sent) a build takes.
    pub max_upload_bytes: u64,
}

impl Default for EnvironmentSettings {
    fn default() -> Self {
        Self {
            base: crate::catalogue::DEFAULT_IMAGE_NAME.to_string(),
            repository: "labhub-env".to_string(),
            local_sources: Vec::new(),
            indexes: PackageIndexes::default(),
            build_timeout: Duration::from_secs(30 * 60),
            keep_session_images: Duration::from_secs(30 * 24 * 3600),
            snapshots_per_member: 3,
            snapshot_max_bytes: 20 << 30,
            max_upload_bytes: 32 << 20,
        }
    }
}
