//! The `identities` table (accounts' identities at providers) and `oauth_states` (sign-ins
//! waiting for a provider to send the browser back).

use labhub_core::UserId;
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;
use crate::users::{self, User};

/// An account's identity at a provider.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Identity {
    pub identity_id: i64,
    pub user_id: UserId,
    pub provider: String,
    pub subject: String,
    pub username: String,
    pub email: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_login_at: OffsetDateTime,
}

macro_rules! columns {
    () => {
        "identity_id, user_id, provider, subject, username, email, created_at, last_login_at"
    };
}

/// A new identity, linked to an account at its first sign-in.
#[derive(Debug)]
pub struct NewIdentity<'a> {
    pub user_id: UserId,
    pub provider: &'a str,
    pub subject: &'a str,
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub now: OffsetDateTime,
}

/// The constraint that makes one identity belong to one account.
pub const PROVIDER_SUBJECT_KEY: &str = "identities_provider_subject_key";

/// Links an identity; an identity linked already is `DbError::Constraint { PROVIDER_SUBJECT_KEY }`.
pub async fn insert(db: impl PgExecutor<'_>, new: &NewIdentity<'_>) -> Result<Identity, DbError> {
    Ok(sqlx::query_as(concat!(
        "insert into identities (user_id, provider, subject, username, email, created_at, last_login_at)
         values ($1, $2, $3, $4, $5, $6, $6) returning ",
        columns!()
    ))
    .bind(new.user_id)
    .bind(new.provider)
    .bind(new.subject)
    .bind(new.username)
    .bind(new.email)
    .bind(new.now)
    .fetch_one(db)
    .await?)
}

/// The identity (provider, subject) and its account, the account's row locked until the
/// transaction ends.
pub async fn by_subject_for_update(
    db: impl PgExecutor<'_>,
    provider: &str,
    subject: &str,
) -> Result<Option<(Identity, User)>, DbError> {
    use sqlx::FromRow;
    let row = sqlx::query(concat!(
        "select i.identity_id, i.user_id, i.provider, i.subject, i.username, i.email, i.created_at, i.last_login_at, ",
        users::prefixed_user_columns!(),
        " from identities i join users u on u.user_id = i.user_id where i.provider = $1 and i.subject = $2
         for update of u"
    ))
    .bind(provider)
    .bind(subject)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((Identity::from_row(&row)?, users::from_prefixed_row(&row)?)))
}

/// Records a sign-in with an identity, and what the provider calls the person now.
pub async fn touch(
    db: impl PgExecutor<'_>,
    identity_id: i64,
    username: &str,
    email: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), DbError> {
    sqlx::query("update identities set username = $2, email = $3, last_login_at = $4 where identity_id = $1")
        .bind(identity_id)
        .bind(username)
        .bind(email)
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

/// An account's identities, oldest first.
pub async fn list_for_user(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<Identity>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from identities where user_id = $1 order by identity_id"))
        .bind(user_id)
        .fetch_all(db)
        .await?)
}

/// How many identities an account has.
pub async fn count_for_user(db: impl PgExecutor<'_>, user_id: UserId) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("select count(*) from identities where user_id = $1").bind(user_id).fetch_one(db).await?)
}

/// Unlinks one of an account's identities; returns it, or `None` if the account has no such identity.
pub async fn delete_for_user(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    identity_id: i64,
) -> Result<Option<Identity>, DbError> {
    Ok(sqlx::query_as(concat!("delete from identities where user_id = $1 and identity_id = $2 returning ", columns!()))
        .bind(user_id)
        .bind(identity_id)
        .fetch_optional(db)
        .await?)
}

/// A sign-in waiting for its provider.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OAuthState {
    pub provider: String,
    pub binding_hash: Vec<u8>,
    pub next: String,
    pub created_at: OffsetDateTime,
}

/// A sign-in about to be sent to its provider.
#[derive(Debug)]
pub struct NewOAuthState<'a> {
    pub state_hash: &'a [u8; 32],
    pub provider: &'a str,
    pub binding_hash: &'a [u8; 32],
    pub next: &'a str,
    pub now: OffsetDateTime,
}

/// Remembers a sign-in in flight.
pub async fn insert_state(db: impl PgExecutor<'_>, new: &NewOAuthState<'_>) -> Result<(), DbError> {
    sqlx::query(
        "insert into oauth_states (state_hash, provider, binding_hash, next, created_at) values ($1, $2, $3, $4, $5)",
    )
    .bind(&new.state_hash[..])
    .bind(new.provider)
    .bind(&new.binding_hash[..])
    .bind(new.next)
    .bind(new.now)
    .execute(db)
    .await?;
    Ok(())
}

/// Takes the sign-in with this state hash: returns it and deletes it in one statement, so a
/// state can be used once, even by two requests at the same moment.
pub async fn take_state(db: impl PgExecutor<'_>, state_hash: &[u8; 32]) -> Result<Option<OAuthState>, DbError> {
    Ok(sqlx::query_as(
        "delete from oauth_states where state_hash = $1 returning provider, binding_hash, next, created_at",
    )
    .bind(&state_hash[..])
    .fetch_optional(db)
    .await?)
}

/// Forgets sign-ins started before `cutoff`; returns how many.
pub async fn delete_states_before(db: impl PgExecutor<'_>, cutoff: OffsetDateTime) -> Result<u64, DbError> {
    Ok(sqlx::query("delete from oauth_states where created_at < $1").bind(cutoff).execute(db).await?.rows_affected())
}
