//! The `servers` table.

use labhub_core::{GroupId, ImageId, ServerId, ServerState, UserId, UserName};
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::DbError;

/// One of a user's servers, with what it last ran.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Server {
    pub server_id: ServerId,
    pub user_id: UserId,
    /// `""` for the default server.
    pub name: String,
    #[sqlx(try_from = "String")]
    pub state: ServerState,
    pub image_id: Option<ImageId>,
    pub image_ref: Option<String>,
    pub image_digest: Option<String>,
    pub kind: Option<String>,
    pub cpu_millis: Option<i32>,
    pub memory_bytes: Option<i64>,
    pub gpus: i32,
    pub spawn_id: Option<Uuid>,
    pub spawner_state: serde_json::Value,
    pub endpoint: Option<String>,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub last_activity: Option<OffsetDateTime>,
    pub stopped_at: Option<OffsetDateTime>,
    pub stop_reason: Option<String>,
    /// The group its latest start was charged to.
    pub group_id: Option<GroupId>,
    /// The contract its latest start speaks (`labhub` or `jupyterhub`).
    pub contract: String,
}

macro_rules! columns {
    () => {
        "server_id, user_id, name, state, image_id, image_ref, image_digest, kind, cpu_millis, memory_bytes, gpus, \
         spawn_id, spawner_state, endpoint, created_at, started_at, last_activity, stopped_at, stop_reason, group_id, \
         contract"
    };
}

/// A user's server row, locked until the transaction ends; created (stopped) if it does not exist.
pub async fn get_or_create_locked(
    db: &mut sqlx::PgConnection,
    user_id: UserId,
    name: &str,
    now: OffsetDateTime,
) -> Result<Server, DbError> {
    sqlx::query(
        "insert into servers (user_id, name, created_at) values ($1, $2, $3) on conflict (user_id, name) do nothing",
    )
    .bind(user_id)
    .bind(name)
    .bind(now)
    .execute(&mut *db)
    .await?;
    Ok(sqlx::query_as(concat!("select ", columns!(), " from servers where user_id = $1 and name = $2 for update"))
        .bind(user_id)
        .bind(name)
        .fetch_one(&mut *db)
        .await?)
}

/// A user's server row, if it exists.
pub async fn get(db: impl PgExecutor<'_>, user_id: UserId, name: &str) -> Result<Option<Server>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from servers where user_id = $1 and name = $2"))
        .bind(user_id)
        .bind(name)
        .fetch_optional(db)
        .await?)
}

/// What a start records while it is pending.
#[derive(Debug)]
pub struct Pending<'a> {
    pub image_id: ImageId,
    pub image_ref: &'a str,
    pub kind: &'a str,
    pub cpu_millis: i32,
    pub memory_bytes: i64,
    pub gpus: i32,
    pub spawn_id: Uuid,
    pub contract: &'a str,
}

/// Marks a server as starting.
pub async fn mark_pending(db: impl PgExecutor<'_>, server_id: ServerId, p: &Pending<'_>) -> Result<(), DbError> {
    sqlx::query(
        "update servers set state = 'pending', image_id = $2, image_ref = $3, kind = $4, cpu_millis = $5,
                memory_bytes = $6, gpus = $7, spawn_id = $8, image_digest = null, endpoint = null,
                spawner_state = '{}', started_at = null, stopped_at = null, stop_reason = null, contract = $9
         where server_id = $1",
    )
    .bind(server_id)
    .bind(p.image_id)
    .bind(p.image_ref)
    .bind(p.kind)
    .bind(p.cpu_millis)
    .bind(p.memory_bytes)
    .bind(p.gpus)
    .bind(p.spawn_id)
    .bind(p.contract)
    .execute(db)
    .await?;
    Ok(())
}

/// The image a start runs: its content id, and its repository digest when it has one.
#[derive(Debug, Clone, Copy)]
pub struct RanImage<'a> {
    pub digest: &'a str,
    pub repo_digest: Option<&'a str>,
}

/// Marks a start as done; only if the row still belongs to that start. Returns whether it did.
pub async fn mark_running(
    db: impl PgExecutor<'_>,
    server_id: ServerId,
    spawn_id: Uuid,
    endpoint: &str,
    spawner_state: &serde_json::Value,
    image: RanImage<'_>,
    now: OffsetDateTime,
) -> Result<bool, DbError> {
    // The same statement opens the start's session (`server_sessions`), once per start.
    let updated: i64 = sqlx::query_scalar(
        "with s as (
             update servers set state = 'running', endpoint = $3, spawner_state = $4, image_digest = $5,
                    started_at = $6, last_activity = $6
             where server_id = $1 and spawn_id = $2 and state = 'pending'
             returning *
         ), opened as (
             insert into server_sessions (server_id, spawn_id, user_id, server_name, image_id, image_name, image_ref,
                                          image_digest, repo_digest, build_id, cpu_millis, memory_bytes, gpus,
                                          group_id, group_name, started_at)
             select s.server_id, s.spawn_id, s.user_id, s.name, s.image_id, i.name, s.image_ref, s.image_digest, $7,
                    (select b.build_id from environment_builds b where b.image_id = s.image_digest
                     order by b.build_id desc limit 1),
                    s.cpu_millis, s.memory_bytes, s.gpus, s.group_id, g.name, s.started_at
             from s left join images i on i.image_id = s.image_id left join groups g on g.group_id = s.group_id
             on conflict (server_id, spawn_id) do nothing
         )
         select count(*) from s",
    )
    .bind(server_id)
    .bind(spawn_id)
    .bind(endpoint)
    .bind(spawner_state)
    .bind(image.digest)
    .bind(now)
    .bind(image.repo_digest)
    .fetch_one(db)
    .await?;
    Ok(updated == 1)
}

/// Records the spawner's state of a start still pending (so a stop can find its container).
pub async fn set_spawner_state(
    db: impl PgExecutor<'_>,
    server_id: ServerId,
    spawn_id: Uuid,
    spawner_state: &serde_json::Value,
) -> Result<(), DbError> {
    sqlx::query("update servers set spawner_state = $3 where server_id = $1 and spawn_id = $2")
        .bind(server_id)
        .bind(spawn_id)
        .bind(spawner_state)
        .execute(db)
        .await?;
    Ok(())
}

/// Marks a server as stopping.
pub async fn mark_stopping(db: impl PgExecutor<'_>, server_id: ServerId) -> Result<(), DbError> {
    sqlx::query("update servers set state = 'stopping' where server_id = $1").bind(server_id).execute(db).await?;
    Ok(())
}

/// Marks a server as stopped with the reason; with `spawn_id`, only if it still belongs to that
/// start (so a late event about an old container cannot stop a newer one). Returns whether it did.
pub async fn mark_stopped(
    db: impl PgExecutor<'_>,
    server_id: ServerId,
    spawn_id: Option<Uuid>,
    reason: &str,
    now: OffsetDateTime,
) -> Result<bool, DbError> {
    // The same statement closes the start's session, if it came up.
    let updated: i64 = sqlx::query_scalar(
        "with s as (
             update servers set state = 'stopped', stopped_at = $4, stop_reason = $3, endpoint = null
             where server_id = $1 and ($2::uuid is null or spawn_id = $2) and state <> 'stopped'
             returning server_id, spawn_id
         ), closed as (
             update server_sessions x set stopped_at = $4, stop_reason = $3
             from s where x.server_id = s.server_id and x.spawn_id = s.spawn_id and x.stopped_at is null
         ), revoked as (
             -- A server of JupyterHub's contract: its API token and every OAuth token die with it.
             delete from oauth_clients c using s where c.server_id = s.server_id
         )
         select count(*) from s",
    )
    .bind(server_id)
    .bind(spawn_id)
    .bind(reason)
    .bind(now)
    .fetch_one(db)
    .await?;
    Ok(updated == 1)
}

/// A user's servers, the default first.
pub async fn list_for_user(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<Server>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from servers where user_id = $1 order by name"))
        .bind(user_id)
        .fetch_all(db)
        .await?)
}

/// The servers of several users (for user lists).
pub async fn list_for_users(db: impl PgExecutor<'_>, user_ids: &[UserId]) -> Result<Vec<Server>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from servers where user_id = any($1) order by user_id, name"))
        .bind(user_ids)
        .fetch_all(db)
        .await?)
}

/// A server and its owner's name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerWithOwner {
    #[sqlx(flatten)]
    pub server: Server,
    #[sqlx(try_from = "String")]
    pub owner: UserName,
}

/// Every server that is not stopped, with its owner.
pub async fn list_active(db: impl PgExecutor<'_>) -> Result<Vec<ServerWithOwner>, DbError> {
    Ok(sqlx::query_as(
        "select s.server_id, s.user_id, s.name, s.state, s.image_id, s.image_ref, s.image_digest, s.kind, s.cpu_millis,
                s.memory_bytes, s.gpus, s.spawn_id, s.spawner_state, s.endpoint, s.created_at, s.started_at,
                s.last_activity, s.stopped_at, s.stop_reason, s.group_id, s.contract, u.name as owner
         from servers s join users u on u.user_id = s.user_id
         where s.state <> 'stopped' order by u.name, s.name",
    )
    .fetch_all(db)
    .await?)
}

/// How many named servers a user has (any state).
pub async fn count_named(db: impl PgExecutor<'_>, user_id: UserId) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("select count(*) from servers where user_id = $1 and name <> ''")
        .bind(user_id)
        .fetch_one(db)
        .await?)
}

/// Forgets a stopped named server.
pub async fn delete(db: impl PgExecutor<'_>, server_id: ServerId) -> Result<bool, DbError> {
    let r = sqlx::query("delete from servers where server_id = $1 and state = 'stopped'")
        .bind(server_id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Records activity on one server now (its owner asked to keep it running), never moving
/// times backwards; the owner's activity moves with it.
pub async fn touch_one(db: impl PgExecutor<'_>, server_id: ServerId, at: OffsetDateTime) -> Result<(), DbError> {
    sqlx::query(
        "with s as (update servers set last_activity = greatest(last_activity, $2) where server_id = $1
                    returning user_id)
         update users u set last_activity = greatest(u.last_activity, $2) from s where u.user_id = s.user_id",
    )
    .bind(server_id)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// Records proxied activity for many servers at once (by owner name and server name), never
/// moving times backwards; the owners' activity moves with them.
pub async fn touch_activity(db: &sqlx::PgPool, seen: &[(String, String, OffsetDateTime)]) -> Result<(), DbError> {
    if seen.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    let names: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    let times: Vec<OffsetDateTime> = seen.iter().map(|s| s.2).collect();
    let mut tx = db.begin().await?;
    sqlx::query(
        "update servers s set last_activity = greatest(s.last_activity, t.at)
         from unnest($1::text[], $2::text[], $3::timestamptz[]) as t(owner, name, at), users u
         where u.name = t.owner and s.user_id = u.user_id and s.name = t.name",
    )
    .bind(&users)
    .bind(&names)
    .bind(&times)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update users u set last_activity = greatest(u.last_activity, t.at)
         from (select owner, max(at) as at from unnest($1::text[], $2::timestamptz[]) as x(owner, at) group by owner) t
         where u.name = t.owner",
    )
    .bind(&users)
    .bind(&times)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One server by id, with its owner's name.
pub async fn by_id_with_owner(
    db: impl PgExecutor<'_>,
    server_id: ServerId,
) -> Result<Option<ServerWithOwner>, DbError> {
    Ok(sqlx::query_as(
        "select s.server_id, s.user_id, s.name, s.state, s.image_id, s.image_ref, s.image_digest, s.kind, s.cpu_millis,
                s.memory_bytes, s.gpus, s.spawn_id, s.spawner_state, s.endpoint, s.created_at, s.started_at,
                s.last_activity, s.stopped_at, s.stop_reason, s.group_id, s.contract, u.name as owner
         from servers s join users u on u.user_id = s.user_id where s.server_id = $1",
    )
    .bind(server_id)
    .fetch_optional(db)
    .await?)
}
