//! The `api_tokens` table: API tokens, stored by their SHA-256.

use labhub_core::{TokenId, UserId};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;
use crate::users::{self, User};

/// One API token (never the token itself).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiToken {
    pub token_id: TokenId,
    pub user_id: UserId,
    pub prefix: String,
    pub note: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    /// The token's scopes as written (`{inherit}`: its owner's).
    pub scopes: Vec<String>,
}

macro_rules! columns {
    () => {
        "token_id, user_id, prefix, note, created_at, expires_at, last_used_at, scopes"
    };
}

/// A new token.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub token_hash: &'a [u8; 32],
    pub prefix: &'a str,
    pub user_id: UserId,
    pub note: &'a str,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    /// Scopes as written; `["inherit"]` for the owner's.
    pub scopes: &'a [String],
}

/// Stores a token.
pub async fn insert(db: impl PgExecutor<'_>, new: &NewToken<'_>) -> Result<ApiToken, DbError> {
    Ok(sqlx::query_as(concat!(
        "insert into api_tokens (token_hash, prefix, user_id, note, created_at, expires_at, scopes)
         values ($1, $2, $3, $4, $5, $6, $7) returning ",
        columns!()
    ))
    .bind(&new.token_hash[..])
    .bind(new.prefix)
    .bind(new.user_id)
    .bind(new.note)
    .bind(new.created_at)
    .bind(new.expires_at)
    .bind(new.scopes)
    .fetch_one(db)
    .await?)
}

/// The token with this hash and its owner (the caller checks expiry and the owner's state).
pub async fn by_token_hash(db: impl PgExecutor<'_>, hash: &[u8; 32]) -> Result<Option<(ApiToken, User)>, DbError> {
    use sqlx::FromRow;
    let row = sqlx::query(concat!(
        "select t.token_id, t.user_id, t.prefix, t.note, t.created_at, t.expires_at, t.last_used_at, t.scopes, ",
        users::prefixed_user_columns!(),
        " from api_tokens t join users u on u.user_id = t.user_id where t.token_hash = $1"
    ))
    .bind(&hash[..])
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((ApiToken::from_row(&row)?, users::from_prefixed_row(&row)?)))
}

/// Of `ids`, the tokens that still exist, unexpired at `now`, of accounts still active (a
/// WebSocket opened with any other closes).
pub async fn live_ids(db: impl PgExecutor<'_>, ids: &[TokenId], now: OffsetDateTime) -> Result<Vec<TokenId>, DbError> {
    Ok(sqlx::query_scalar(
        "select t.token_id from api_tokens t join users u on u.user_id = t.user_id
         where t.token_id = any($1) and (t.expires_at is null or t.expires_at > $2) and u.state = 'active'",
    )
    .bind(ids)
    .bind(now)
    .fetch_all(db)
    .await?)
}

/// A user's tokens, newest first.
pub async fn list_for_user(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<ApiToken>, DbError> {
    Ok(sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from api_tokens where user_id = $1 order by created_at desc, token_id desc"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await?)
}

/// One of a user's tokens.
pub async fn get_for_user(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    token_id: TokenId,
) -> Result<Option<ApiToken>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from api_tokens where user_id = $1 and token_id = $2"))
        .bind(user_id)
        .bind(token_id)
        .fetch_optional(db)
        .await?)
}

/// Revokes one of a user's tokens; returns its hash so caches can forget it.
pub async fn delete_for_user(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    token_id: TokenId,
) -> Result<Option<Vec<u8>>, DbError> {
    Ok(sqlx::query_scalar("delete from api_tokens where user_id = $1 and token_id = $2 returning token_hash")
        .bind(user_id)
        .bind(token_id)
        .fetch_optional(db)
        .await?)
}

/// Records that tokens were used (batched by the caller), never moving the time backwards.
pub async fn touch_many(db: impl PgExecutor<'_>, token_ids: &[TokenId], at: OffsetDateTime) -> Result<(), DbError> {
    sqlx::query(
        "update api_tokens set last_used_at = $2
         where token_id = any($1) and (last_used_at is null or last_used_at < $2)",
    )
    .bind(token_ids)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}
