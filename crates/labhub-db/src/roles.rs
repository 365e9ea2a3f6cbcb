//! The `roles`, `user_roles` and `group_roles` tables: named lists of scopes, and whom they
//! are given to.

use labhub_core::{GroupId, UserId};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// A role: its scopes as written.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Role {
    pub role_id: i64,
    pub name: String,
    pub description: String,
    pub scopes: Vec<String>,
    pub builtin: bool,
}

macro_rules! columns {
    () => {
        "role_id, name, description, scopes, builtin"
    };
}

/// Every role, by name.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Role>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from roles order by name")).fetch_all(db).await?)
}

/// The role of this name.
pub async fn by_name(db: impl PgExecutor<'_>, name: &str) -> Result<Option<Role>, DbError> {
    Ok(sqlx::query_as(concat!("select ", columns!(), " from roles where name = $1"))
        .bind(name)
        .fetch_optional(db)
        .await?)
}

/// Creates a role, or replaces the description and scopes of an existing one (built-in ones
/// included: JupyterHub lets a deployment redefine them too).
pub async fn upsert(
    db: impl PgExecutor<'_>,
    name: &str,
    description: &str,
    scopes: &[String],
    now: OffsetDateTime,
) -> Result<Role, DbError> {
    Ok(sqlx::query_as(concat!(
        "insert into roles (name, description, scopes, created_at) values ($1, $2, $3, $4)
         on conflict (name) do update set description = excluded.description, scopes = excluded.scopes
         returning ",
        columns!()
    ))
    .bind(name)
    .bind(description)
    .bind(scopes)
    .bind(now)
    .fetch_one(db)
    .await?)
}

/// Removes a role that is not built in; whether there was one.
pub async fn delete(db: impl PgExecutor<'_>, name: &str) -> Result<bool, DbError> {
    let r = sqlx::query("delete from roles where name = $1 and not builtin").bind(name).execute(db).await?;
    Ok(r.rows_affected() > 0)
}

/// Gives a role to a user (again: no change).
pub async fn assign_user(db: impl PgExecutor<'_>, role_id: i64, user_id: UserId) -> Result<(), DbError> {
    sqlx::query("insert into user_roles (user_id, role_id) values ($1, $2) on conflict do nothing")
        .bind(user_id)
        .bind(role_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Takes a role from a user; whether they had it.
pub async fn unassign_user(db: impl PgExecutor<'_>, role_id: i64, user_id: UserId) -> Result<bool, DbError> {
    let r = sqlx::query("delete from user_roles where user_id = $1 and role_id = $2")
        .bind(user_id)
        .bind(role_id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Gives a role to every member of a group.
pub async fn assign_group(db: impl PgExecutor<'_>, role_id: i64, group_id: GroupId) -> Result<(), DbError> {
    sqlx::query("insert into group_roles (group_id, role_id) values ($1, $2) on conflict do nothing")
        .bind(group_id)
        .bind(role_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Takes a role from a group; whether it had it.
pub async fn unassign_group(db: impl PgExecutor<'_>, role_id: i64, group_id: GroupId) -> Result<bool, DbError> {
    let r = sqlx::query("delete from group_roles where group_id = $1 and role_id = $2")
        .bind(group_id)
        .bind(role_id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// The roles a user holds: `user` (everyone's), `admin` when `admin` (the account's flag),
/// and those given to them directly or through a group.
pub async fn of_user(db: impl PgExecutor<'_>, user_id: UserId, admin: bool) -> Result<Vec<Role>, DbError> {
    Ok(sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from roles where name = 'user' or (name = 'admin' and $2) or role_id in (
             select role_id from user_roles where user_id = $1
             union
             select r.role_id from group_roles r join group_members m on m.group_id = r.group_id where m.user_id = $1
         ) order by name"
    ))
    .bind(user_id)
    .bind(admin)
    .fetch_all(db)
    .await?)
}

/// The names of the groups a user belongs to, each with whether they lead it.
pub async fn groups_of(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<(String, bool)>, DbError> {
    Ok(sqlx::query_as(
        "select g.name, m.role = 'lead' from group_members m join groups g on g.group_id = m.group_id
         where m.user_id = $1 order by g.name",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?)
}

/// Who of these users belongs to which of these groups, as (user, group) names.
pub async fn memberships(db: impl PgExecutor<'_>, groups: &[String]) -> Result<Vec<(String, String)>, DbError> {
    Ok(sqlx::query_as(
        "select u.name, g.name from group_members m join groups g on g.group_id = m.group_id
         join users u on u.user_id = m.user_id where g.name = any($1)",
    )
    .bind(groups)
    .fetch_all(db)
    .await?)
}

/// The names of the groups a user belongs to.
pub async fn group_names_of(db: impl PgExecutor<'_>, user: &str) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "select g.name from group_members m join groups g on g.group_id = m.group_id
         join users u on u.user_id = m.user_id where u.name = $1 order by g.name",
    )
    .bind(user)
    .fetch_all(db)
    .await?)
}

/// The channel every change of roles and their assignments is announced on.
pub const CHANGED: &str = "labhub_roles";
