//! The `server_sessions` table: every server start that came up, opened and closed by the
//! statements that mark servers running and stopped (`servers.rs`).

use labhub_core::{BuildId, GroupId, ImageId, UserId};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// One session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerSession {
    pub session_id: i64,
    pub user_id: UserId,
    pub user_name: String,
    pub server_name: String,
    pub image_id: Option<ImageId>,
    pub image_name: Option<String>,
    pub image_ref: String,
    pub image_digest: String,
    /// The image's repository digest, when it had one.
    pub repo_digest: Option<String>,
    pub build_id: Option<BuildId>,
    pub environment: Option<String>,
    pub cpu_millis: i32,
    pub memory_bytes: i64,
    pub gpus: i32,
    pub group_id: Option<GroupId>,
    pub group_name: Option<String>,
    pub started_at: OffsetDateTime,
    pub stopped_at: Option<OffsetDateTime>,
    pub stop_reason: Option<String>,
}

macro_rules! sessions {
    () => {
        "select x.session_id, x.user_id, u.name as user_name, x.server_name, x.image_id, x.image_name, x.image_ref,
                x.image_digest, x.repo_digest, x.build_id, ei.name as environment, x.cpu_millis, x.memory_bytes, x.gpus,
                x.group_id, x.group_name, x.started_at, x.stopped_at, x.stop_reason
         from server_sessions x join users u on u.user_id = x.user_id
         left join environment_builds b on b.build_id = x.build_id
         left join environments e on e.environment_id = b.environment_id
         left join images ei on ei.image_id = e.image_id "
    };
}

/// A page of sessions, newest first: one user's, or everyone's (`None`); and how many there are.
pub async fn page(
    db: &sqlx::PgPool,
    user: Option<UserId>,
    offset: i64,
    limit: i64,
) -> Result<(Vec<ServerSession>, i64), DbError> {
    let rows = sqlx::query_as(concat!(
        sessions!(),
        "where ($1::bigint is null or x.user_id = $1) order by x.session_id desc offset $2 limit $3"
    ))
    .bind(user)
    .bind(offset)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar("select count(*) from server_sessions where ($1::bigint is null or user_id = $1)")
        .bind(user)
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}

/// One session.
pub async fn get(db: impl PgExecutor<'_>, session_id: i64) -> Result<Option<ServerSession>, DbError> {
    Ok(sqlx::query_as(concat!(sessions!(), "where x.session_id = $1")).bind(session_id).fetch_optional(db).await?)
}

/// The session a user's server runs now (its newest one not stopped), if any.
pub async fn open_session(db: impl PgExecutor<'_>, user_id: UserId, server: &str) -> Result<Option<i64>, DbError> {
    Ok(sqlx::query_scalar(
        "select session_id from server_sessions
         where user_id = $1 and server_name = $2 and stopped_at is null
         order by session_id desc limit 1",
    )
    .bind(user_id)
    .bind(server)
    .fetch_optional(db)
    .await?)
}

/// The image ids of sessions started since `since` or still running: kept from pruning.
pub async fn images_since(db: impl PgExecutor<'_>, since: OffsetDateTime) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "select distinct image_digest from server_sessions where started_at >= $1 or stopped_at is null",
    )
    .bind(since)
    .fetch_all(db)
    .await?)
}
