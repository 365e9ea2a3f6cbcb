//! Opening the hub's database: the configured server, or the embedded cluster.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use labhub_db::embedded::{self, EmbeddedPostgres};
use labhub_db::{PgConnectOptions, PgPool, PoolSettings};

use crate::Config;

/// The hub's database, and the embedded cluster behind it when there is one.
pub struct Database {
    /// The connection pool.
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `database.url`, or starts (or adopts) the embedded cluster.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let settings = PoolSettings {
            max_connections: config.database.max_connections,
            acquire_timeout: config.database.acquire_timeout,
        };
        if let Some(url) = &config.database.url {
            let options = PgConnectOptions::from_str(url.expose())
                .map_err(|e| anyhow::anyhow!("database.url (or DATABASE_URL) is not a valid postgres:// URL: {e}"))?;
            return Ok(Self { pool: labhub_db::connect_lazy(options, settings), embedded: None });
        }
        let root = config.data_dir.join("postgres");
        tracing::info!(dir = %root.display(), "no database URL configured; using the embedded Postgres");
        let pg = EmbeddedPostgres::start_durable(&root, config.database.pg_bin.as_deref()).await?;
        pg.ensure_database(embedded::DATABASE).await?;
        let pool = labhub_db::connect_lazy(pg.connect_options(embedded::DATABASE), settings);
        Ok(Self { pool, embedded: Some(pg) })
    }

    /// Applies migrations, waiting up to `patience` for the database to accept connections.
    pub async fn migrate(&self, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match labhub_db::migrate(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_unavailable() && tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "waiting for the database");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e).context("could not prepare the database"),
            }
        }
    }

    /// Closes the pool and stops the embedded cluster when this process owns it: always for
    /// `serve` (`owner`: it adopts a cluster a crashed hub left running), and for a command only
    /// when the command started it — never the cluster of a hub that is running.
    pub async fn close(self, owner: bool) {
        self.pool.close().await;
        if let Some(pg) = self.embedded.filter(|pg| owner || !pg.adopted()) {
            if let Err(e) = pg.stop().await {
                tracing::warn!(error = %e, "the embedded database did not stop cleanly");
            } else {
                tracing::info!("embedded database stopped");
            }
        }
    }
}
