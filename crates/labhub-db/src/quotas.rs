//! The `group_quotas` and `storage_usage` tables, and what servers charge to a group.

use labhub_core::{GroupId, ImageAllowance, Quota, ServerId, UserId};
use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// Which of a group's two records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// The limits in force, which the group's leads may change within the ceiling.
    Quota,
    /// The most an admin lets the leads grant.
    Ceiling,
}

impl QuotaKind {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Quota => "quota",
            QuotaKind::Ceiling => "ceiling",
        }
    }

    fn parse(s: &str) -> Result<Self, DbError> {
        match s {
            "quota" => Ok(QuotaKind::Quota),
            "ceiling" => Ok(QuotaKind::Ceiling),
            other => Err(DbError::Other(format!("unknown quota kind {other:?}"))),
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    group_id: GroupId,
    kind: String,
    max_cpu_millis: i32,
    max_memory_bytes: i64,
    max_gpus: i32,
    images: Option<Vec<String>>,
    max_servers_per_member: i32,
    budget_cpu_millis: Option<i64>,
    budget_memory_bytes: Option<i64>,
    storage_bytes: Option<i64>,
    idle_timeout_seconds: Option<i32>,
    max_lifetime_seconds: Option<i32>,
    cull_busy: bool,
    build_timeout_seconds: Option<i32>,
}

impl Row {
    fn quota(&self) -> Result<Quota, DbError> {
        let bad = |what: &str| DbError::Other(format!("group {} has an invalid {what}", self.group_id));
        let unsigned = |v: Option<i64>, what: &str| v.map(|v| u64::try_from(v).map_err(|_| bad(what))).transpose();
        let seconds = |v: Option<i32>, what: &str| {
            v.map(|v| u64::try_from(v).map(Duration::from_secs).map_err(|_| bad(what))).transpose()
        };
        Ok(Quota {
            max_cpu_millis: u32::try_from(self.max_cpu_millis).map_err(|_| bad("CPU limit"))?,
            max_memory_bytes: u64::try_from(self.max_memory_bytes).map_err(|_| bad("memory limit"))?,
            max_gpus: u32::try_from(self.max_gpus).map_err(|_| bad("GPU limit"))?,
            images: self.images.clone().map_or(ImageAllowance::All, ImageAllowance::Only),
            max_servers_per_member: u32::try_from(self.max_servers_per_member).map_err(|_| bad("server limit"))?,
            budget_cpu_millis: unsigned(self.budget_cpu_millis, "CPU budget")?,
            budget_memory_bytes: unsigned(self.budget_memory_bytes, "memory budget")?,
            storage_bytes: unsigned(self.storage_bytes, "storage limit")?,
            idle_timeout: seconds(self.idle_timeout_seconds, "idle timeout")?,
            max_lifetime: seconds(self.max_lifetime_seconds, "lifetime")?,
            cull_busy: self.cull_busy,
            build_timeout: seconds(self.build_timeout_seconds, "build time limit")?,
        })
    }
}

macro_rules! columns {
    () => {
        "group_id, kind, max_cpu_millis, max_memory_bytes, max_gpus, images, max_servers_per_member,
         budget_cpu_millis, budget_memory_bytes, storage_bytes, idle_timeout_seconds, max_lifetime_seconds,
         cull_busy, build_timeout_seconds"
    };
}

/// The records set for many groups at once, by group and kind.
pub async fn of_groups(
    db: impl PgExecutor<'_>,
    group_ids: &[GroupId],
) -> Result<HashMap<(GroupId, QuotaKind), Quota>, DbError> {
    let rows: Vec<Row> = sqlx::query_as(concat!("select ", columns!(), " from group_quotas where group_id = any($1)"))
        .bind(group_ids)
        .fetch_all(db)
        .await?;
    rows.iter().map(|r| Ok(((r.group_id, QuotaKind::parse(&r.kind)?), r.quota()?))).collect()
}

fn signed(v: u64, what: &str) -> Result<i64, DbError> {
    i64::try_from(v).map_err(|_| DbError::Other(format!("{what} is too large")))
}

fn seconds(d: Option<Duration>, what: &str) -> Result<Option<i32>, DbError> {
    d.map(|d| i32::try_from(d.as_secs().max(1)).map_err(|_| DbError::Other(format!("{what} is too long")))).transpose()
}

/// Writes a group's record of one kind.
pub async fn put(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    kind: QuotaKind,
    q: &Quota,
    now: OffsetDateTime,
) -> Result<(), DbError> {
    let images = match &q.images {
        ImageAllowance::All => None,
        ImageAllowance::Only(names) => Some(names.clone()),
    };
    let opt = |v: Option<u64>, what: &str| v.map(|v| signed(v, what)).transpose();
    sqlx::query(
        "insert into group_quotas (group_id, kind, max_cpu_millis, max_memory_bytes, max_gpus, images,
                max_servers_per_member, budget_cpu_millis, budget_memory_bytes, storage_bytes,
                idle_timeout_seconds, max_lifetime_seconds, updated_at, cull_busy, build_timeout_seconds)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         on conflict (group_id, kind) do update set
                max_cpu_millis = excluded.max_cpu_millis, max_memory_bytes = excluded.max_memory_bytes,
                max_gpus = excluded.max_gpus, images = excluded.images,
                max_servers_per_member = excluded.max_servers_per_member,
                budget_cpu_millis = excluded.budget_cpu_millis, budget_memory_bytes = excluded.budget_memory_bytes,
                storage_bytes = excluded.storage_bytes, idle_timeout_seconds = excluded.idle_timeout_seconds,
                max_lifetime_seconds = excluded.max_lifetime_seconds, updated_at = excluded.updated_at,
                cull_busy = excluded.cull_busy, build_timeout_seconds = excluded.build_timeout_seconds",
    )
    .bind(group_id)
    .bind(kind.as_str())
    .bind(i32::try_from(q.max_cpu_millis).map_err(|_| DbError::Other("the CPU limit is too large".into()))?)
    .bind(signed(q.max_memory_bytes, "the memory limit")?)
    .bind(i32::try_from(q.max_gpus).map_err(|_| DbError::Other("the GPU limit is too large".into()))?)
    .bind(images)
    .bind(i32::try_from(q.max_servers_per_member).map_err(|_| DbError::Other("the server limit is too large".into()))?)
    .bind(opt(q.budget_cpu_millis, "the CPU budget")?)
    .bind(opt(q.budget_memory_bytes, "the memory budget")?)
    .bind(opt(q.storage_bytes, "the storage limit")?)
    .bind(seconds(q.idle_timeout, "the idle timeout")?)
    .bind(seconds(q.max_lifetime, "the lifetime")?)
    .bind(now)
    .bind(q.cull_busy)
    .bind(seconds(q.build_timeout, "the build time limit")?)
    .execute(db)
    .await?;
    Ok(())
}

/// What the active servers charged to a group (or, for `None`, to no group) hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Charged {
    pub servers: i64,
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

/// The reservations of the active (not stopped) servers charged to `group_id`; `None` sums the
/// servers charged to no group.
pub async fn charged(db: impl PgExecutor<'_>, group_id: Option<GroupId>) -> Result<Charged, DbError> {
    Ok(sqlx::query_as(
        "select count(*) as servers, coalesce(sum(cpu_millis), 0)::bigint as cpu_millis,
                coalesce(sum(memory_bytes), 0)::bigint as memory_bytes
         from servers where state <> 'stopped' and group_id is not distinct from $1",
    )
    .bind(group_id)
    .fetch_one(db)
    .await?)
}

/// How many active servers a user runs charged to `group_id` (`None`: to no group).
pub async fn member_servers(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    group_id: Option<GroupId>,
) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "select count(*) from servers where user_id = $1 and state <> 'stopped' and group_id is not distinct from $2",
    )
    .bind(user_id)
    .bind(group_id)
    .fetch_one(db)
    .await?)
}

/// Records which group a start is charged to.
pub async fn set_server_group(
    db: impl PgExecutor<'_>,
    server_id: ServerId,
    group_id: Option<GroupId>,
) -> Result<(), DbError> {
    sqlx::query("update servers set group_id = $2 where server_id = $1")
        .bind(server_id)
        .bind(group_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The group a server's latest start was charged to.
pub async fn server_group(db: impl PgExecutor<'_>, server_id: ServerId) -> Result<Option<GroupId>, DbError> {
    Ok(sqlx::query_scalar("select group_id from servers where server_id = $1")
        .bind(server_id)
        .fetch_optional(db)
        .await?
        .flatten())
}

/// An arbitrary fixed key for the transaction lock that stands in for a group row when starts
/// are charged to no group (the site default's budget).
const UNGROUPED_LOCK_KEY: i64 = 0x6c61_6268_7562_0001;

/// Serialises starts charged to no group until the transaction ends, as locking a group's
/// row does for a group.
pub async fn lock_ungrouped(db: impl PgExecutor<'_>) -> Result<(), DbError> {
    sqlx::query("select pg_advisory_xact_lock($1)").bind(UNGROUPED_LOCK_KEY).execute(db).await?;
    Ok(())
}

/// One measurement of a user's storage.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StorageUse {
    /// `""` for the default server's (or the shared) storage.
    pub server_name: String,
    pub bytes: i64,
    pub measured_at: OffsetDateTime,
}

/// Records a measurement of a user's storage.
pub async fn put_storage(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    server_name: &str,
    bytes: u64,
    now: OffsetDateTime,
) -> Result<(), DbError> {
    sqlx::query(
        "insert into storage_usage (user_id, server_name, bytes, measured_at) values ($1, $2, $3, $4)
         on conflict (user_id, server_name) do update set bytes = excluded.bytes, measured_at = excluded.measured_at",
    )
    .bind(user_id)
    .bind(server_name)
    .bind(signed(bytes, "a storage size")?)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// The last measurements of a user's storage.
pub async fn storage_of_user(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<StorageUse>, DbError> {
    Ok(sqlx::query_as(
        "select server_name, bytes, measured_at from storage_usage where user_id = $1 order by server_name",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?)
}

/// Every (user, server name) whose storage may exist: each server row's owner and name.
pub async fn storage_owners(db: impl PgExecutor<'_>) -> Result<Vec<(UserId, String, String)>, DbError> {
    Ok(sqlx::query_as(
        "select s.user_id, u.name, s.name from servers s join users u on u.user_id = s.user_id order by s.user_id, s.name",
    )
    .fetch_all(db)
    .await?)
}
