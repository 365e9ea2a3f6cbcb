//! The `sessions` table: browser sessions, stored by the SHA-256 of their cookie token.

use labhub_core::{SessionId, UserId};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;
use crate::users::{self, User};

/// One browser session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub user_agent: String,
    pub client_addr: String,
    /// The session that handed this one to a user server's host, if it is such a child.
    pub parent_session_id: Option<SessionId>,
    /// The user server's host a child session was handed to (none for the hub's sessions).
    pub host: Option<String>,
}

/// The columns of a [`Session`].
macro_rules! columns {
    () => {
        "session_id, user_id, created_at, last_seen_at, expires_at, user_agent, client_addr, parent_session_id, host"
    };
}

/// A new session.
#[derive(Debug)]
pub struct NewSession<'a> {
    pub token_hash: &'a [u8; 32],
    pub user_id: UserId,
    pub now: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub user_agent: &'a str,
    pub client_addr: &'a str,
}

/// Stores a session.
pub async fn insert(db: impl PgExecutor<'_>, new: &NewSession<'_>) -> Result<SessionId, DbError> {
    Ok(sqlx::query_scalar(
        "insert into sessions (token_hash, user_id, created_at, last_seen_at, expires_at, user_agent, client_addr)
         values ($1, $2, $3, $3, $4, $5, $6) returning session_id",
    )
    .bind(&new.token_hash[..])
    .bind(new.user_id)
    .bind(new.now)
    .bind(new.expires_at)
    .bind(new.user_agent)
    .bind(new.client_addr)
    .fetch_one(db)
    .await?)
}

/// The session with this token hash and its user, whatever their state (the caller checks expiry).
pub async fn by_token_hash(db: impl PgExecutor<'_>, hash: &[u8; 32]) -> Result<Option<(Session, User)>, DbError> {
    use sqlx::FromRow;
    let row = sqlx::query(concat!(
        "select s.session_id, s.user_id, s.created_at, s.last_seen_at, s.expires_at, s.user_agent, s.client_addr, \
         s.parent_session_id, s.host, ",
        users::prefixed_user_columns!(),
        " from sessions s join users u on u.user_id = s.user_id where s.token_hash = $1"
    ))
    .bind(&hash[..])
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((Session::from_row(&row)?, users::from_prefixed_row(&row)?)))
}

/// Of `ids`, the sessions that still exist, of accounts still active (a WebSocket opened with
/// any other closes). Expiry is not looked at here: an expired session is removed by the
/// reaper, and that removal is announced like a sign-out.
pub async fn live_ids(db: impl PgExecutor<'_>, ids: &[SessionId]) -> Result<Vec<SessionId>, DbError> {
    Ok(sqlx::query_scalar(
        "select s.session_id from sessions s join users u on u.user_id = s.user_id
         where s.session_id = any($1) and u.state = 'active'",
    )
    .bind(ids)
    .fetch_all(db)
    .await?)
}

/// Marks a session, and the session it was handed out by, as used now (the idle limit counts
/// from here: working in a server on its own host keeps the hub session alive).
pub async fn touch(db: impl PgExecutor<'_>, session_id: SessionId, now: OffsetDateTime) -> Result<(), DbError> {
    sqlx::query(
        "update sessions set last_seen_at = $2
         where (session_id = $1 or session_id = (select parent_session_id from sessions where session_id = $1))
           and last_seen_at < $2",
    )
    .bind(session_id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Ends one session and the sessions it handed to users' server hosts; returns the token
/// hashes that ended, so caches can forget them.
pub async fn delete_by_token_hash(db: impl PgExecutor<'_>, hash: &[u8; 32]) -> Result<Vec<Vec<u8>>, DbError> {
    Ok(sqlx::query_scalar(
        "delete from sessions where token_hash = $1
            or parent_session_id = (select session_id from sessions where token_hash = $1)
         returning token_hash",
    )
    .bind(&hash[..])
    .fetch_all(db)
    .await?)
}

/// Stores a session for the user server's host `host`, ending with `parent` (a session of the
/// hub's host) and at its expiry.
pub async fn insert_child(
    db: impl PgExecutor<'_>,
    parent: SessionId,
    token_hash: &[u8; 32],
    host: &str,
    now: OffsetDateTime,
) -> Result<Option<SessionId>, DbError> {
    Ok(sqlx::query_scalar(
        "insert into sessions (token_hash, user_id, created_at, last_seen_at, expires_at, user_agent, client_addr,
                               parent_session_id, host)
         select $2, user_id, $3, $3, expires_at, user_agent, client_addr, session_id, $4
         from sessions where session_id = $1 and expires_at > $3 and parent_session_id is null
         returning session_id",
    )
    .bind(parent)
    .bind(&token_hash[..])
    .bind(now)
    .bind(host)
    .fetch_optional(db)
    .await?)
}

/// Ends one session by id (and its children), only if it belongs to `user_id`; returns the
/// token hashes that ended.
pub async fn delete_for_user_by_id(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    session_id: SessionId,
) -> Result<Vec<Vec<u8>>, DbError> {
    Ok(sqlx::query_scalar(
        "delete from sessions where user_id = $1 and (session_id = $2 or parent_session_id = $2) returning token_hash",
    )
    .bind(user_id)
    .bind(session_id)
    .fetch_all(db)
    .await?)
}

/// Ends every session of a user; returns how many browser sessions ended (not counting the
/// ones handed to server hosts, which end with them).
pub async fn delete_for_user(db: impl PgExecutor<'_>, user_id: UserId) -> Result<u64, DbError> {
    let n: i64 = sqlx::query_scalar(
        "with ended as (delete from sessions where user_id = $1 returning parent_session_id)
         select count(*) from ended where parent_session_id is null",
    )
    .bind(user_id)
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}

/// Ends every session of a user but `keep` and the sessions `keep` handed to users' server
/// hosts (all of them when `keep` is `None`); returns the token hashes that ended.
pub async fn delete_for_user_except(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    keep: Option<SessionId>,
) -> Result<Vec<Vec<u8>>, DbError> {
    Ok(sqlx::query_scalar(
        "delete from sessions where user_id = $1
            and session_id is distinct from $2 and parent_session_id is distinct from $2
         returning token_hash",
    )
    .bind(user_id)
    .bind(keep)
    .fetch_all(db)
    .await?)
}

/// Removes sessions past their absolute expiry or idle longer than allowed, with the child
/// sessions they handed out; returns the token hashes of all removed.
pub async fn delete_expired(
    db: impl PgExecutor<'_>,
    now: OffsetDateTime,
    idle_cutoff: OffsetDateTime,
) -> Result<Vec<Vec<u8>>, DbError> {
    Ok(sqlx::query_scalar(
        "delete from sessions where expires_at <= $1 or last_seen_at <= $2
            or parent_session_id in (select session_id from sessions where expires_at <= $1 or last_seen_at <= $2)
         returning token_hash",
    )
    .bind(now)
    .bind(idle_cutoff)
    .fetch_all(db)
    .await?)
}

/// A user's live browser sessions (not the ones handed to their servers' hosts), newest first.
pub async fn list_for_user(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    now: OffsetDateTime,
) -> Result<Vec<Session>, DbError> {
    Ok(sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from sessions where user_id = $1 and expires_at > $2 and parent_session_id is null
         order by last_seen_at desc"
    ))
    .bind(user_id)
    .bind(now)
    .fetch_all(db)
    .await?)
}

/// How many browser sessions are live (for the metrics gauge).
pub async fn count_live(
    db: impl PgExecutor<'_>,
    now: OffsetDateTime,
    idle_cutoff: OffsetDateTime,
) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "select count(*) from sessions where expires_at > $1 and last_seen_at > $2 and parent_session_id is null",
    )
    .bind(now)
    .bind(idle_cutoff)
    .fetch_one(db)
    .await?)
}

/// Records a one-time code for a user server's host (and drops codes already expired).
pub async fn insert_host_code(
    db: &sqlx::PgPool,
    code_hash: &[u8; 32],
    session_id: SessionId,
    host: &str,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    sqlx::query("delete from host_codes where expires_at <= $1").bind(now).execute(&mut *tx).await?;
    sqlx::query("insert into host_codes (code_hash, session_id, host, expires_at) values ($1, $2, $3, $4)")
        .bind(&code_hash[..])
        .bind(session_id)
        .bind(host)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Takes a one-time host code (it works once): its session, host and expiry, if it exists.
pub async fn take_host_code(
    db: impl PgExecutor<'_>,
    code_hash: &[u8; 32],
) -> Result<Option<(SessionId, String, OffsetDateTime)>, DbError> {
    Ok(sqlx::query_as("delete from host_codes where code_hash = $1 returning session_id, host, expires_at")
        .bind(&code_hash[..])
        .fetch_optional(db)
        .await?)
}
