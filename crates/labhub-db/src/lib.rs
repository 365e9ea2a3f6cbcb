//! Postgres for labhub: the pool, the migrations, the embedded cluster used when no
//! `DATABASE_URL` is given, and one module of small query functions per table family.
//!
//! Query functions take any executor (`&PgPool`, `&mut PgConnection`, a transaction), so
//! the service decides what runs in one transaction.

pub mod audit;
pub mod backups;
pub mod datasets;
pub mod directory;
pub mod embedded;
pub mod environments;
mod error;
pub mod groups;
pub mod history;
pub mod homes;
pub mod identities;
pub mod images;
pub mod node_pins;
pub mod oauth;
pub mod quotas;
pub mod replicas;
pub mod roles;
pub mod servers;
pub mod services;
pub mod sessions;
pub mod shares;
pub mod tokens;
pub mod usage;
pub mod users;

use std::time::Duration;

pub use error::{DbError, ResultExt};
/// The SQL toolkit itself, for tests and tools that need a query of their own.
pub use sqlx;
pub use sqlx::{AssertSqlSafe, Executor, PgConnection, PgExecutor, PgPool};

/// A transaction on the hub's database.
pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Begins a transaction.
pub async fn begin(pool: &PgPool) -> Result<Tx, DbError> {
    Ok(pool.begin().await?)
}

/// Commits a transaction (dropping one uncommitted rolls it back).
pub async fn commit(tx: Tx) -> Result<(), DbError> {
    Ok(tx.commit().await?)
}
pub use sqlx::postgres::PgConnectOptions;
use sqlx::postgres::PgPoolOptions;

/// How the hub's pool behaves when the database is slow or gone.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Most connections held open.
    pub max_connections: u32,
    /// How long a request waits for a connection before it is answered 503.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self { max_connections: 16, acquire_timeout: Duration::from_secs(3) }
    }
}

/// Opens a pool lazily: the hub starts even when the database is briefly away, answers 503
/// meanwhile, and recovers by itself when it comes back.
pub fn connect_lazy(options: PgConnectOptions, settings: PoolSettings) -> PgPool {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        // Test connections before handing them out, so a restarted server costs one retry, not errors.
        .test_before_acquire(true)
        .connect_lazy_with(options)
}

/// Applies every pending migration (from the top-level `migrations/` folder, embedded in the
/// binary). Migrations a newer version applied are let be: during a
/// rolling upgrade a replica of the older version (re)starts against the newer schema, which
/// stays backward compatible for one version.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    let mut migrator = sqlx::migrate!("../../migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => DbError::from(e),
        other => DbError::Migration(other.to_string()),
    })
}

/// Whether the database answers a trivial query.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("select 1").execute(pool).await.is_ok()
}
