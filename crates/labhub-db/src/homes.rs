//! The `legacy_homes` table: homes made before homes were keyed by account id, each adopted
//! by the account it belongs to.

use labhub_core::UserId;
use sqlx::PgExecutor;

use crate::DbError;

/// One adopted legacy home.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LegacyHome {
    pub volume: String,
    pub user_id: UserId,
    /// `""` for the home shared by all of the account's servers.
    pub server_name: String,
}

/// Records that `volume` is `user_id`'s home (for `server_name`); a volume adopted already,
/// or an account that has such a home already, is left as it is. Returns whether it was
/// recorded.
pub async fn adopt(db: impl PgExecutor<'_>, volume: &str, user_id: UserId, server_name: &str) -> Result<bool, DbError> {
    let r = sqlx::query(
        "insert into legacy_homes (volume, user_id, server_name) values ($1, $2, $3) on conflict do nothing",
    )
    .bind(volume)
    .bind(user_id)
    .bind(server_name)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The legacy home of an account (for `server_name`), if it adopted one.
pub async fn of_user(db: impl PgExecutor<'_>, user_id: UserId, server_name: &str) -> Result<Option<String>, DbError> {
    Ok(sqlx::query_scalar("select volume from legacy_homes where user_id = $1 and server_name = $2")
        .bind(user_id)
        .bind(server_name)
        .fetch_optional(db)
        .await?)
}

/// Every adopted legacy home.
pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<LegacyHome>, DbError> {
    Ok(sqlx::query_as("select volume, user_id, server_name from legacy_homes order by volume").fetch_all(db).await?)
}

/// Forgets an adopted home (it was removed).
pub async fn forget(db: impl PgExecutor<'_>, volume: &str) -> Result<(), DbError> {
    sqlx::query("delete from legacy_homes where volume = $1").bind(volume).execute(db).await?;
    Ok(())
}
