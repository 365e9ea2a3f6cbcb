//! Several hub processes on one database: the `hub_replicas` table, the announcements each
//! replica listens for (`labhub_servers`, `labhub_credentials`), the stored progress of
//! starts (`spawn_events`) and the advisory locks that keep background jobs to one replica.

use labhub_core::ServerId;
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::DbError;

/// A server's state or address changed (payload: its id).
const SERVERS: &str = "labhub_servers";
/// A session or token ended, or an account's rights changed (no payload).
const CREDENTIALS: &str = "labhub_credentials";

/// What another process (or this one) announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// This server's row changed state, address or start.
    Server(ServerId),
    /// Some session or token ended, or some account's rights changed.
    Credentials,
}

/// A connection listening for server and credential changes.
pub async fn listen(pool: &sqlx::PgPool) -> Result<sqlx::postgres::PgListener, DbError> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen_all([SERVERS, CREDENTIALS]).await?;
    Ok(listener)
}

/// Waits for the next announcement; `None` when the connection was lost (what was announced
/// meanwhile did not reach this listener; it reconnects at the next call).
pub async fn next(listener: &mut sqlx::postgres::PgListener) -> Result<Option<Option<Heard>>, DbError> {
    let Some(n) = listener.try_recv().await? else { return Ok(None) };
    Ok(Some(match n.channel() {
        SERVERS => n.payload().parse::<i64>().ok().map(|id| Heard::Server(ServerId::new(id))),
        CREDENTIALS => Some(Heard::Credentials),
        _ => None,
    }))
}

/// One hub process, as it registered.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Replica {
    pub replica_id: Uuid,
    pub host: String,
    pub version: String,
    pub started_at: OffsetDateTime,
    pub last_heartbeat: OffsetDateTime,
}

/// Registers a replica, or records that it is alive.
pub async fn heartbeat(db: impl PgExecutor<'_>, r: &Replica) -> Result<(), DbError> {
    sqlx::query(
        "insert into hub_replicas (replica_id, host, version, started_at, last_heartbeat) values ($1, $2, $3, $4, $5)
         on conflict (replica_id) do update set last_heartbeat = greatest(hub_replicas.last_heartbeat, $5)",
    )
    .bind(r.replica_id)
    .bind(&r.host)
    .bind(&r.version)
    .bind(r.started_at)
    .bind(r.last_heartbeat)
    .execute(db)
    .await?;
    Ok(())
}

/// Every registered replica, the most recently heard first.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Replica>, DbError> {
    Ok(sqlx::query_as(
        "select replica_id, host, version, started_at, last_heartbeat from hub_replicas
         order by last_heartbeat desc, started_at",
    )
    .fetch_all(db)
    .await?)
}

/// Removes a replica's registration (a clean exit, or one long dead).
pub async fn forget(db: impl PgExecutor<'_>, replica_id: Uuid) -> Result<(), DbError> {
    sqlx::query("delete from hub_replicas where replica_id = $1").bind(replica_id).execute(db).await?;
    Ok(())
}

/// Forgets replicas not heard from since `before`.
pub async fn forget_silent_since(db: impl PgExecutor<'_>, before: OffsetDateTime) -> Result<u64, DbError> {
    let r = sqlx::query("delete from hub_replicas where last_heartbeat < $1").bind(before).execute(db).await?;
    Ok(r.rows_affected())
}

/// Records which replica runs a server's start (in the start's transaction).
pub async fn claim_start(db: impl PgExecutor<'_>, server_id: ServerId, replica_id: Uuid) -> Result<(), DbError> {
    sqlx::query("update servers set replica_id = $2 where server_id = $1")
        .bind(server_id)
        .bind(replica_id)
        .execute(db)
        .await?;
    Ok(())
}

/// A start left behind by a replica that went silent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Orphaned {
    pub server_id: ServerId,
    pub spawn_id: Uuid,
    pub spawner_state: serde_json::Value,
}

/// Pending or stopping servers whose start belongs to a replica not heard from since `before`
/// (or to none registered any more).
pub async fn orphaned_starts(db: impl PgExecutor<'_>, before: OffsetDateTime) -> Result<Vec<Orphaned>, DbError> {
    Ok(sqlx::query_as(
        "select s.server_id, s.spawn_id, s.spawner_state from servers s
         left join hub_replicas r on r.replica_id = s.replica_id
         where s.state in ('pending', 'stopping') and s.replica_id is not null and s.spawn_id is not null
           and (r.replica_id is null or r.last_heartbeat < $1)",
    )
    .bind(before)
    .fetch_all(db)
    .await?)
}

/// Whether the replica running a server's start is another one that is alive (heard since `after`).
pub async fn started_elsewhere(
    db: impl PgExecutor<'_>,
    server_id: ServerId,
    me: Uuid,
    after: OffsetDateTime,
) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from servers s join hub_replicas r on r.replica_id = s.replica_id
                        where s.server_id = $1 and s.replica_id <> $2 and r.last_heartbeat >= $3)",
    )
    .bind(server_id)
    .bind(me)
    .bind(after)
    .fetch_one(db)
    .await?)
}

/// Drops the stored progress of a server's earlier starts (in a new start's transaction).
pub async fn clear_events(db: impl PgExecutor<'_>, server_id: ServerId) -> Result<(), DbError> {
    sqlx::query("delete from spawn_events where server_id = $1").bind(server_id).execute(db).await?;
    Ok(())
}

/// Stores one progress event of a start.
pub async fn add_event(
    db: impl PgExecutor<'_>,
    server_id: ServerId,
    spawn_id: Uuid,
    seq: i32,
    event: &serde_json::Value,
    at: OffsetDateTime,
) -> Result<(), DbError> {
    sqlx::query(
        "insert into spawn_events (server_id, spawn_id, seq, event, at) values ($1, $2, $3, $4, $5)
         on conflict do nothing",
    )
    .bind(server_id)
    .bind(spawn_id)
    .bind(seq)
    .bind(event)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// The stored events of a server's latest start after `after` (its sequence number), in order;
/// with the start's id.
pub async fn events_after(
    db: impl PgExecutor<'_>,
    server_id: ServerId,
    after: i32,
) -> Result<Vec<(Uuid, i32, serde_json::Value)>, DbError> {
    Ok(sqlx::query_as(
        "select e.spawn_id, e.seq, e.event from spawn_events e join servers s on s.server_id = e.server_id
         where e.server_id = $1 and e.spawn_id = s.spawn_id and e.seq > $2 order by e.seq",
    )
    .bind(server_id)
    .bind(after)
    .fetch_all(db)
    .await?)
}

/// The next sequence number for a start's events (for a replica that ends another's start).
pub async fn next_seq(db: impl PgExecutor<'_>, server_id: ServerId, spawn_id: Uuid) -> Result<i32, DbError> {
    Ok(sqlx::query_scalar("select coalesce(max(seq) + 1, 0) from spawn_events where server_id = $1 and spawn_id = $2")
        .bind(server_id)
        .bind(spawn_id)
        .fetch_one(db)
        .await?)
}

/// Background jobs that one replica at a time runs; each is a Postgres advisory lock key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// A pass of the culler.
    Culler,
    /// The boot reconcile of rows with the runtime.
    Reconcile,
    /// A usage sample.
    UsageSample,
    /// A storage measurement.
    StorageMeasure,
    /// The image collector.
    ImageCollector,
    /// Failing the starts of replicas that went silent.
    Orphans,
}

impl Job {
    /// The lock's key: a fixed prefix ("labhub" in ASCII) and the job's number; the backup
    /// runs' lock (`backups.rs`) is another number of the same kind.
    fn key(self) -> i64 {
        let n = match self {
            Job::Culler => 1,
            Job::Reconcile => 2,
            Job::UsageSample => 3,
            Job::StorageMeasure => 4,
            Job::ImageCollector => 5,
            Job::Orphans => 6,
        };
        0x6c61_6268_7562_0000 | n
    }
}

/// A held job lock: a transaction holding the advisory lock, on a pooled connection.
/// Released when dropped (or the holder dies: the transaction ends with its connection).
pub struct JobLock {
    tx: crate::Tx,
}

impl JobLock {
    /// Lets the lock go now. Dropped instead, it goes only when its connection is next used
    /// (the rollback of a dropped transaction waits for that), so a job run right after would
    /// find it still held and skip its turn.
    pub async fn release(self) -> Result<(), DbError> {
        Ok(self.tx.rollback().await?)
    }
}

impl std::fmt::Debug for JobLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobLock")
    }
}

/// Takes a job's lock, or `None` when another process (or task) holds it.
pub async fn try_lock(pool: &sqlx::PgPool, job: Job) -> Result<Option<JobLock>, DbError> {
    let mut tx = pool.begin().await?;
    let got: bool =
        sqlx::query_scalar("select pg_try_advisory_xact_lock($1)").bind(job.key()).fetch_one(&mut *tx).await?;
    Ok(got.then_some(JobLock { tx }))
}
