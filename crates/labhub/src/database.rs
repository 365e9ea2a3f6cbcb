//! Opening the hub's database: the configured server, or the embedded cluster, which the hub
//! then supervises: killed behind its back (the OOM killer, a crash) it is started again.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use labhub_db::embedded::{self, EmbeddedPostgres};
use labhub_db::{PgConnectOptions, PgPool, PoolSettings};
use labhub_service::Hub;

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

    /// Watches the embedded cluster (if there is one) until `shutdown` resolves, restarting it
    /// whenever its postmaster is found dead: each attempt logged, waiting longer after each
    /// failure (1 s doubling to 1 min), the hub's `database_health` and the metrics
    /// `labhub_database_up` / `labhub_database_restarts_total` kept current. Await the task
    /// before [`Database::close`], so a restart cannot race the shutdown's stop.
    pub fn supervise(
        &self,
        hub: Hub,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let pg = self.embedded.clone()?;
        Some(tokio::spawn(supervise(pg, hub, shutdown)))
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

/// How often the supervisor looks at the postmaster (reading `/proc`, nothing more).
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// The longest wait between two restart attempts.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

async fn supervise(pg: EmbeddedPostgres, hub: Hub, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    metrics::gauge!("labhub_database_up").set(1.0);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if pg.postmaster_alive() {
            continue;
        }
        metrics::gauge!("labhub_database_up").set(0.0);
        hub.database_health().down(hub.now(), 0);
        tracing::error!(
            log = %pg.log_file().display(),
            "the embedded database stopped behind the hub's back (killed? out of memory?); restarting it"
        );
        let mut backoff = Duration::from_secs(1);
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            match pg.restart().await {
                Ok(()) => break,
                Err(e) => {
                    hub.database_health().down(hub.now(), attempts);
                    tracing::warn!(attempt = attempts, retry_in = ?backoff, error = %e, "the embedded database did not start yet");
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        }
        hub.database_health().restarted(hub.now());
        metrics::gauge!("labhub_database_up").set(1.0);
        metrics::counter!("labhub_database_restarts_total").increment(1);
        tracing::warn!(
            attempts,
            log = %pg.log_file().display(),
            "the embedded database runs again (Postgres recovered from its own log); the hub serves as before"
        );
    }
}
