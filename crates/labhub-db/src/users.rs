//! The `users` table.

use labhub_core::listing::{ServerStateFilter, UserFilter, UserSort};
use labhub_core::{AccountState, UserId, UserName};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use time::OffsetDateTime;

use crate::DbError;

/// One account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub user_id: UserId,
    #[sqlx(try_from = "String")]
    pub name: UserName,
    pub admin: bool,
    #[sqlx(try_from = "String")]
    pub state: AccountState,
    pub password_hash: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_activity: Option<OffsetDateTime>,
    /// The provider whose identity of this name may claim the account while it has no password
    /// and no identity.
    pub link_provider: Option<String>,
}

macro_rules! columns {
    () => {
        "user_id, name, admin, state, password_hash, created_at, last_activity, link_provider"
    };
}

/// The user columns as selected by joins, prefixed `u_` so they cannot clash with the joined table's.
macro_rules! prefixed_user_columns {
    () => {
        "u.user_id as u_user_id, u.name as u_name, u.admin as u_admin, u.state as u_state, \
         u.password_hash as u_password_hash, u.created_at as u_created_at, u.last_activity as u_last_activity, \
         u.link_provider as u_link_provider"
    };
}
pub(crate) use prefixed_user_columns;

/// Reads a user selected with `prefixed_user_columns!()`.
pub(crate) fn from_prefixed_row(row: &sqlx::postgres::PgRow) -> Result<User, sqlx::Error> {
    use sqlx::Row;
    let decode = |col: &str, e: String| sqlx::Error::ColumnDecode { index: col.to_string(), source: e.into() };
    Ok(User {
        user_id: row.try_get("u_user_id")?,
        name: UserName::parse(row.try_get::<&str, _>("u_name")?).map_err(|e| decode("u_name", e.to_string()))?,
        admin: row.try_get("u_admin")?,
        state: AccountState::try_from(row.try_get::<String, _>("u_state")?).map_err(|e| decode("u_state", e))?,
        password_hash: row.try_get("u_password_hash")?,
        created_at: row.try_get("u_created_at")?,
        last_activity: row.try_get("u_last_activity")?,
        link_provider: row.try_get("u_link_provider")?,
    })
}

/// A new account.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub name: &'a UserName,
    pub admin: bool,
    pub state: AccountState,
    pub password_hash: Option<&'a str>,
    pub created_at: OffsetDateTime,
    /// The provider whose identity of this name may claim the account (see [`User`]).
    pub link_provider: Option<&'a str>,
}

/// The unique index that makes two spellings of a name one user.
pub const NAME_KEY: &str = "users_name_key";

/// Inserts an account; a taken name is `DbError::Constraint { constraint: NAME_KEY }`.
pub async fn insert(db: impl PgExecutor<'_>, new: &NewUser<'_>) -> Result<User, DbError> {
    Ok(sqlx::query_as(concat!(
        "insert into users (name, admin, state, password_hash, created_at, link_provider) \
         values ($1, $2, $3, $4, $5, $6) returning ",
        columns!()
    ))
    .bind(new.name.as_str())
    .bind(new.admin)
    .bind(new.state.as_str())
    .bind(new.password_hash)
    .bind(new.created_at)
    .bind(new.link_provider)
    .fetch_one(db)
    .await?)
}

/// Finds an account by name.
pub async fn by_name(db: impl PgExecutor<'_>, name: &UserName) -> Result<Option<User>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from users where name = $1"))
        .bind(name.as_str())
        .fetch_optional(db)
        .await?)
}

/// Finds an account by name and locks its row until the transaction ends.
pub async fn by_name_for_update(db: impl PgExecutor<'_>, name: &UserName) -> Result<Option<User>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from users where name = $1 for update"))
        .bind(name.as_str())
        .fetch_optional(db)
        .await?)
}

/// Finds an account by id.
pub async fn by_id(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Option<User>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from users where user_id = $1"))
        .bind(user_id)
        .fetch_optional(db)
        .await?)
}

/// The SQL order of a sort.
fn order_by(sort: UserSort) -> &'static str {
    match sort {
        UserSort::Name => "name asc",
        UserSort::NameDesc => "name desc",
        UserSort::Created => "created_at asc, name asc",
        UserSort::CreatedDesc => "created_at desc, name asc",
        UserSort::LastActivity => "last_activity asc nulls first, name asc",
        UserSort::LastActivityDesc => "last_activity desc nulls last, name asc",
    }
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn push_where(q: &mut QueryBuilder<Postgres>, f: &UserFilter) {
    q.push(" where true");
    if let Some(p) = &f.name_prefix {
        q.push(" and name like ").push_bind(format!("{}%", like_escape(&p.to_ascii_lowercase())));
    }
    if let Some(c) = &f.name_contains {
        q.push(" and name like ").push_bind(format!("%{}%", like_escape(&c.to_ascii_lowercase())));
    }
    if let Some(s) = f.account_state {
        q.push(" and state = ").push_bind(s.as_str());
    }
    match f.server_state {
        None => {}
        Some(ServerStateFilter::Ready) => {
            q.push(" and exists (select 1 from servers s where s.user_id = users.user_id and s.state = 'running')");
        }
        Some(ServerStateFilter::Active) => {
            q.push(" and exists (select 1 from servers s where s.user_id = users.user_id and s.state <> 'stopped')");
        }
        Some(ServerStateFilter::Inactive) => {
            q.push(
                " and not exists (select 1 from servers s where s.user_id = users.user_id and s.state <> 'stopped')",
            );
        }
    }
}

/// One page of users and the total number matching the filter.
pub async fn list(db: &sqlx::PgPool, f: &UserFilter) -> Result<(Vec<User>, i64), DbError> {
    let mut q = QueryBuilder::<Postgres>::new(concat!("select ", columns!(), " from users"));
    push_where(&mut q, f);
    q.push(" order by ").push(order_by(f.sort));
    q.push(" offset ").push_bind(f.offset).push(" limit ").push_bind(f.limit);
    let rows = q.build_query_as::<User>().fetch_all(db).await?;

    let mut c = QueryBuilder::<Postgres>::new("select count(*) from users");
    push_where(&mut c, f);
    let total: i64 = c.build_query_scalar().fetch_one(db).await?;
    Ok((rows, total))
}

/// Sets or clears a password hash.
pub async fn set_password_hash(db: impl PgExecutor<'_>, user_id: UserId, hash: Option<&str>) -> Result<(), DbError> {
    sqlx::query("update users set password_hash = $2 where user_id = $1").bind(user_id).bind(hash).execute(db).await?;
    Ok(())
}

/// Names the provider whose identity of the account's name may claim it (`None`: none may).
pub async fn set_link_provider(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    provider: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query("update users set link_provider = $2 where user_id = $1")
        .bind(user_id)
        .bind(provider)
        .execute(db)
        .await?;
    Ok(())
}

/// Grants or revokes admin rights.
pub async fn set_admin(db: impl PgExecutor<'_>, user_id: UserId, admin: bool) -> Result<(), DbError> {
    sqlx::query("update users set admin = $2 where user_id = $1").bind(user_id).bind(admin).execute(db).await?;
    Ok(())
}

/// Changes whether the account may sign in.
pub async fn set_state(db: impl PgExecutor<'_>, user_id: UserId, state: AccountState) -> Result<(), DbError> {
    sqlx::query("update users set state = $2 where user_id = $1")
        .bind(user_id)
        .bind(state.as_str())
        .execute(db)
        .await?;
    Ok(())
}

/// Renames an account; a taken name is `DbError::Constraint { constraint: NAME_KEY }`.
pub async fn rename(db: impl PgExecutor<'_>, user_id: UserId, name: &UserName) -> Result<(), DbError> {
    sqlx::query("update users set name = $2 where user_id = $1").bind(user_id).bind(name.as_str()).execute(db).await?;
    Ok(())
}

/// Deletes an account with its sessions and tokens; false if it did not exist.
pub async fn delete(db: impl PgExecutor<'_>, user_id: UserId) -> Result<bool, DbError> {
    let r = sqlx::query("delete from users where user_id = $1").bind(user_id).execute(db).await?;
    Ok(r.rows_affected() > 0)
}

/// How many active admins there are (the hub refuses to remove the last one).
pub async fn count_active_admins(db: impl PgExecutor<'_>) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("select count(*) from users where admin and state = 'active'").fetch_one(db).await?)
}

/// Records activity, never moving it backwards.
pub async fn touch_activity(db: impl PgExecutor<'_>, user_id: UserId, at: OffsetDateTime) -> Result<(), DbError> {
    sqlx::query("update users set last_activity = greatest(last_activity, $2) where user_id = $1")
        .bind(user_id)
        .bind(at)
        .execute(db)
        .await?;
    Ok(())
}

/// Locks every admin's row until the transaction ends, so concurrent changes cannot together
/// remove the last admin.
pub async fn lock_admins(db: impl PgExecutor<'_>) -> Result<(), DbError> {
    sqlx::query("select 1 from users where admin for update").execute(db).await?;
    Ok(())
}

/// How many accounts were active at or after `since`.
pub async fn count_active_since(db: impl PgExecutor<'_>, since: OffsetDateTime) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("select count(*) from users where last_activity >= $1").bind(since).fetch_one(db).await?)
}
