//! Servers as the culler and the usage view see them, and the `group_usage_samples` and
//! `server_usage` tables.

use labhub_core::{GroupId, ServerId, ServerState, UserId, UserName};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// An active server with the group it is charged to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChargedServer {
    pub server_id: ServerId,
    #[sqlx(try_from = "String")]
    pub owner: UserName,
    pub user_id: UserId,
    /// `""` for the default server.
    pub name: String,
    #[sqlx(try_from = "String")]
    pub state: ServerState,
    pub group_id: Option<GroupId>,
    pub image_ref: Option<String>,
    pub cpu_millis: Option<i32>,
    pub memory_bytes: Option<i64>,
    pub gpus: i32,
    pub spawn_id: Option<uuid::Uuid>,
    pub started_at: Option<OffsetDateTime>,
    pub last_activity: Option<OffsetDateTime>,
    /// The latest live use the sampler saw, if any.
    pub used_cpu_millis: Option<i64>,
    pub used_memory_bytes: Option<i64>,
}

macro_rules! charged_select {
    () => {
        "select s.server_id, u.name as owner, s.user_id, s.name, s.state, s.group_id, s.image_ref, s.cpu_millis,
                s.memory_bytes, s.gpus, s.spawn_id, s.started_at, s.last_activity,
                su.cpu_millis as used_cpu_millis, su.memory_bytes as used_memory_bytes
         from servers s join users u on u.user_id = s.user_id
         left join server_usage su on su.server_id = s.server_id
         where s.state <> 'stopped'"
    };
}

/// Every active server, with its group and latest live use.
pub async fn active(db: impl PgExecutor<'_>) -> Result<Vec<ChargedServer>, DbError> {
    Ok(sqlx::query_as(concat!(charged_select!(), " order by u.name, s.name")).fetch_all(db).await?)
}

/// The active servers charged to one group.
pub async fn active_in_group(db: impl PgExecutor<'_>, group_id: GroupId) -> Result<Vec<ChargedServer>, DbError> {
    Ok(sqlx::query_as(concat!(charged_select!(), " and s.group_id = $1 order by u.name, s.name"))
        .bind(group_id)
        .fetch_all(db)
        .await?)
}

/// One group's use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Sample {
    pub at: OffsetDateTime,
    /// CPU in use, in millicores.
    pub cpu_millis: i64,
    /// Memory in use, in bytes.
    pub memory_bytes: i64,
    /// CPU its active servers reserved (their limits).
    pub cpu_reserved: i64,
    /// Memory its active servers reserved.
    pub memory_reserved: i64,
}

/// Records one sample per group.
pub async fn insert_samples(db: impl PgExecutor<'_>, rows: &[(GroupId, Sample)]) -> Result<(), DbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.0.get()).collect();
    let at: Vec<OffsetDateTime> = rows.iter().map(|r| r.1.at).collect();
    let col = |f: fn(&Sample) -> i64| rows.iter().map(|r| f(&r.1)).collect::<Vec<i64>>();
    sqlx::query(
        "insert into group_usage_samples (group_id, at, cpu_millis, memory_bytes, cpu_reserved, memory_reserved)
         select * from unnest($1::bigint[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
         on conflict (group_id, at) do nothing",
    )
    .bind(&ids)
    .bind(&at)
    .bind(col(|s| s.cpu_millis))
    .bind(col(|s| s.memory_bytes))
    .bind(col(|s| s.cpu_reserved))
    .bind(col(|s| s.memory_reserved))
    .execute(db)
    .await?;
    Ok(())
}

/// Replaces the latest live use of servers: `(server_id, cpu_millis, memory_bytes)`, and
/// forgets that of servers no longer active.
pub async fn put_server_usage(
    db: &sqlx::PgPool,
    at: OffsetDateTime,
    rows: &[(ServerId, i64, i64)],
) -> Result<(), DbError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.0.get()).collect();
    let cpu: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let mem: Vec<i64> = rows.iter().map(|r| r.2).collect();
    let mut tx = db.begin().await?;
    sqlx::query("delete from server_usage su using servers s where s.server_id = su.server_id and s.state = 'stopped'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into server_usage (server_id, at, cpu_millis, memory_bytes)
         select t.id, $4, t.cpu, t.mem from unnest($1::bigint[], $2::bigint[], $3::bigint[]) as t(id, cpu, mem)
         where exists (select 1 from servers s where s.server_id = t.id)
         on conflict (server_id) do update set at = excluded.at, cpu_millis = excluded.cpu_millis,
                memory_bytes = excluded.memory_bytes",
    )
    .bind(&ids)
    .bind(&cpu)
    .bind(&mem)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes samples taken before `cutoff`, keeping the table bounded.
pub async fn delete_samples_before(db: impl PgExecutor<'_>, cutoff: OffsetDateTime) -> Result<u64, DbError> {
    Ok(sqlx::query("delete from group_usage_samples where at < $1").bind(cutoff).execute(db).await?.rows_affected())
}

/// A group's samples since `since`, averaged over buckets of `bucket_seconds`, oldest first.
pub async fn series(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    since: OffsetDateTime,
    bucket_seconds: i64,
) -> Result<Vec<Sample>, DbError> {
    Ok(sqlx::query_as(
        "select date_bin(make_interval(secs => $3), at, $2) as at,
                avg(cpu_millis)::bigint as cpu_millis, avg(memory_bytes)::bigint as memory_bytes,
                avg(cpu_reserved)::bigint as cpu_reserved, avg(memory_reserved)::bigint as memory_reserved
         from group_usage_samples where group_id = $1 and at >= $2
         group by 1 order by 1",
    )
    .bind(group_id)
    .bind(since)
    .bind(bucket_seconds as f64)
    .fetch_all(db)
    .await?)
}

/// Every group's id (the sampler records zeros for idle groups, so charts show them idle).
pub async fn group_ids(db: impl PgExecutor<'_>) -> Result<Vec<GroupId>, DbError> {
    Ok(sqlx::query_scalar("select group_id from groups order by group_id").fetch_all(db).await?)
}
