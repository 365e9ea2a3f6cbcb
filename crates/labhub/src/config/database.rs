//! `[database]`: where the hub keeps its truth.

use std::path::PathBuf;
use std::time::Duration;

use labhub_core::Secret;
use serde::{Deserialize, Serialize};

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// A `postgres://` URL (or `DATABASE_URL`). Unset: the hub runs its own embedded Postgres
    /// under `<data_dir>/postgres`.
    pub url: Option<Secret<String>>,
    /// Folder with the Postgres server binaries for the embedded database (or `LABHUB_PG_BIN`).
    /// Unset: the newest `/usr/lib/postgresql/<v>/bin`, `pg_config --bindir`, or `PATH`.
    pub pg_bin: Option<PathBuf>,
    /// Most database connections.
    pub max_connections: u32,
    /// How long a request waits for a connection before the hub answers 503.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, pg_bin: None, max_connections: 16, acquire_timeout: Duration::from_secs(3) }
    }
}
