//! The `backups` and `backup_runs` tables: the index of the backup directory, and each run.

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// One backup: an archive in the backup directory.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Backup {
    pub backup_id: i64,
    /// `home`, `group` or `orphan`.
    pub kind: String,
    /// The user's or group's id (none for an orphan).
    pub owner_id: Option<i64>,
    /// Its owner's name when it was made.
    pub owner_name: String,
    pub server_name: String,
    pub volume: String,
    /// Its file, relative to the backup directory.
    pub file: String,
    pub bytes: i64,
    /// SHA-256 of the file, in hex.
    pub sha256: String,
    pub created_at: OffsetDateTime,
    pub labhub_version: String,
}

/// A backup to record (what [`Backup`] holds, but its id).
#[derive(Debug)]
pub struct NewBackup<'a> {
    pub kind: &'a str,
    pub owner_id: Option<i64>,
    pub owner_name: &'a str,
    pub server_name: &'a str,
    pub volume: &'a str,
    pub file: &'a str,
    pub bytes: i64,
    pub sha256: &'a str,
    pub created_at: OffsetDateTime,
    pub labhub_version: &'a str,
}

macro_rules! columns {
    () => {
        "backup_id, kind, owner_id, owner_name, server_name, volume, file, bytes, sha256, created_at, labhub_version"
    };
}

/// Records a backup.
pub async fn insert(db: impl PgExecutor<'_>, b: &NewBackup<'_>) -> Result<Backup, DbError> {
    Ok(sqlx::query_as(concat!(
        "insert into backups (kind, owner_id, owner_name, server_name, volume, file, bytes, sha256, created_at,
                              labhub_version)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning ",
        columns!()
    ))
    .bind(b.kind)
    .bind(b.owner_id)
    .bind(b.owner_name)
    .bind(b.server_name)
    .bind(b.volume)
    .bind(b.file)
    .bind(b.bytes)
    .bind(b.sha256)
    .bind(b.created_at)
    .bind(b.labhub_version)
    .fetch_one(db)
    .await?)
}

/// Every backup, newest first; only one kind's of one owner when given.
pub async fn list(db: impl PgExecutor<'_>, owner: Option<(&str, i64)>) -> Result<Vec<Backup>, DbError> {
    Ok(sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from backups where ($1::text is null or (kind = $1 and owner_id = $2)) order by created_at desc, backup_id desc"
    ))
    .bind(owner.map(|o| o.0))
    .bind(owner.map(|o| o.1))
    .fetch_all(db)
    .await?)
}

/// One backup by id.
pub async fn get(db: impl PgExecutor<'_>, backup_id: i64) -> Result<Option<Backup>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from backups where backup_id = $1"))
        .bind(backup_id)
        .fetch_optional(db)
        .await?)
}

/// Forgets a backup (its file was deleted).
pub async fn delete(db: impl PgExecutor<'_>, backup_id: i64) -> Result<(), DbError> {
    sqlx::query("delete from backups where backup_id = $1").bind(backup_id).execute(db).await?;
    Ok(())
}

/// One run of backups.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Run {
    pub run_id: i64,
    pub started_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    pub scheduled: bool,
    /// `None` while it runs (or when it was cut short by the hub stopping).
    pub ok: Option<bool>,
    pub detail: String,
}

/// Records that a run begins; returns its id.
pub async fn begin_run(db: impl PgExecutor<'_>, at: OffsetDateTime, scheduled: bool) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("insert into backup_runs (started_at, scheduled) values ($1, $2) returning run_id")
        .bind(at)
        .bind(scheduled)
        .fetch_one(db)
        .await?)
}

/// Records how a run ended.
pub async fn end_run(
    db: impl PgExecutor<'_>,
    run_id: i64,
    at: OffsetDateTime,
    ok: bool,
    detail: &str,
) -> Result<(), DbError> {
    sqlx::query("update backup_runs set finished_at = $2, ok = $3, detail = $4 where run_id = $1")
        .bind(run_id)
        .bind(at)
        .bind(ok)
        .bind(detail)
        .execute(db)
        .await?;
    Ok(())
}

/// The latest run, and the latest successful scheduled one.
pub async fn last_runs(db: impl PgExecutor<'_> + Copy) -> Result<(Option<Run>, Option<Run>), DbError> {
    let last = sqlx::query_as(
        "select run_id, started_at, finished_at, scheduled, ok, detail from backup_runs order by run_id desc limit 1",
    )
    .fetch_optional(db)
    .await?;
    let good = sqlx::query_as(
        "select run_id, started_at, finished_at, scheduled, ok, detail from backup_runs
         where scheduled and ok order by run_id desc limit 1",
    )
    .fetch_optional(db)
    .await?;
    Ok((last, good))
}

/// The most recent scheduled run (finished or not).
pub async fn last_scheduled(db: impl PgExecutor<'_>) -> Result<Option<Run>, DbError> {
    Ok(sqlx::query_as(
        "select run_id, started_at, finished_at, scheduled, ok, detail from backup_runs
         where scheduled order by started_at desc, run_id desc limit 1",
    )
    .fetch_optional(db)
    .await?)
}

/// The most recent finished scheduled run (what the admins' banner is about).
pub async fn last_finished_scheduled(db: impl PgExecutor<'_>) -> Result<Option<Run>, DbError> {
    Ok(sqlx::query_as(
        "select run_id, started_at, finished_at, scheduled, ok, detail from backup_runs
         where scheduled and finished_at is not null order by started_at desc, run_id desc limit 1",
    )
    .fetch_optional(db)
    .await?)
}

/// Marks runs that never finished as failed with `detail` (call only while holding the
/// [`RunLock`]: then no run is in progress anywhere); returns how many there were.
pub async fn close_unfinished(db: impl PgExecutor<'_>, at: OffsetDateTime, detail: &str) -> Result<u64, DbError> {
    let done =
        sqlx::query("update backup_runs set finished_at = $1, ok = false, detail = $2 where finished_at is null")
            .bind(at)
            .bind(detail)
            .execute(db)
            .await?;
    Ok(done.rows_affected())
}

/// The key of the advisory lock that backup runs take (any fixed number, the same for every
/// process on the database).
const RUN_LOCK_KEY: i64 = 0x6c61_6268_7562_626b;

/// The hub-wide lock on backup runs: a Postgres advisory lock held by a connection of its
/// own, so one run at a time across every process using the database (replicas, the CLI).
/// [`RunLock::release`] gives it back at once; dropping it closes the connection, which
/// releases the lock as soon as the server notices (also when the holder dies).
pub struct RunLock {
    conn: sqlx::PgConnection,
}

impl RunLock {
    /// Gives the lock back and closes its connection.
    pub async fn release(mut self) {
        let unlocked = sqlx::query("select pg_advisory_unlock($1)").bind(RUN_LOCK_KEY).execute(&mut self.conn).await;
        if let Err(e) = unlocked {
            tracing::debug!(error = %e, "the backup lock goes with its connection");
        }
        let _ = sqlx::Connection::close(self.conn).await;
    }
}

impl std::fmt::Debug for RunLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunLock")
    }
}

/// Takes the lock on backup runs, or `None` when another process (or task) holds it.
pub async fn try_lock_runs(pool: &sqlx::PgPool) -> Result<Option<RunLock>, DbError> {
    // Detached: the connection never goes back to the pool with the lock held.
    let mut conn = pool.acquire().await?.detach();
    let got: bool =
        sqlx::query_scalar("select pg_try_advisory_lock($1)").bind(RUN_LOCK_KEY).fetch_one(&mut conn).await?;
    Ok(got.then_some(RunLock { conn }))
}

/// A volume of an account's besides its home (a backup restored for it).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Attached {
    pub user_id: i64,
    /// What names the volume.
    pub key: String,
    /// Where it is mounted, under `~/restored/`.
    pub folder: String,
    pub backup_id: Option<i64>,
    pub created_at: OffsetDateTime,
}

/// Records a volume attached to an account.
pub async fn attach(db: impl PgExecutor<'_>, a: &Attached) -> Result<(), DbError> {
    sqlx::query(
        "insert into attached_volumes (user_id, key, folder, backup_id, created_at) values ($1, $2, $3, $4, $5)",
    )
    .bind(a.user_id)
    .bind(&a.key)
    .bind(&a.folder)
    .bind(a.backup_id)
    .bind(a.created_at)
    .execute(db)
    .await?;
    Ok(())
}

/// The volumes attached to an account, oldest first.
pub async fn attached_to(db: impl PgExecutor<'_>, user_id: i64) -> Result<Vec<Attached>, DbError> {
    Ok(sqlx::query_as(
        "select user_id, key, folder, backup_id, created_at from attached_volumes where user_id = $1 order by created_at, key",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?)
}
