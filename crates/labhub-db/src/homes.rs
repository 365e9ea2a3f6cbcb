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

/// The first key of the advisory locks that mark a home being restored into (the second is
/// the account's id); any fixed number, the same for every process on the database.
const RESTORE_LOCK_KEY: i32 = 0x7265_7374;

/// The account id as the lock's second key (ids beyond 2^31 share a key with another
/// account: a start of theirs is then refused while the other's restore runs, never let in).
fn restore_key(user: UserId) -> i32 {
    user.get() as i32
}

/// A home marked as being restored into, in every process on the database: held by a
/// connection of its own for as long as it lives; dropping it closes the connection, which
/// lets the mark go (also when its holder dies).
pub struct RestoreMark {
    conn: sqlx::PgConnection,
    user: UserId,
}

impl RestoreMark {
    /// Lets the mark go at once and closes its connection.
    pub async fn release(mut self) {
        let unlocked = sqlx::query("select pg_advisory_unlock($1, $2)")
            .bind(RESTORE_LOCK_KEY)
            .bind(restore_key(self.user))
            .execute(&mut self.conn)
            .await;
        if let Err(e) = unlocked {
            tracing::debug!(error = %e, "the restore mark goes with its connection");
        }
        let _ = sqlx::Connection::close(self.conn).await;
    }
}

/// Marks `user`'s home as being restored into, or `None` when a restore (in any process)
/// already has it.
pub async fn mark_restoring(pool: &sqlx::PgPool, user: UserId) -> Result<Option<RestoreMark>, DbError> {
    // Detached: the connection never goes back to the pool holding the mark.
    let mut conn = pool.acquire().await?.detach();
    let got: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, $2)")
        .bind(RESTORE_LOCK_KEY)
        .bind(restore_key(user))
        .fetch_one(&mut conn)
        .await?;
    Ok(got.then_some(RestoreMark { conn, user }))
}

/// Whether a restore into `user`'s home runs in any process (a start checks it under the
/// account's row lock, which a restore holds while it sets the mark).
pub async fn is_restoring(db: impl PgExecutor<'_>, user: UserId) -> Result<bool, DbError> {
    // A shared lock is free exactly when no restore holds the exclusive one; taken for the
    // transaction only, so it never outlives the check.
    let free: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock_shared($1, $2)")
        .bind(RESTORE_LOCK_KEY)
        .bind(restore_key(user))
        .fetch_one(db)
        .await?;
    Ok(!free)
}
