//! The `groups` and `group_members` tables.

use labhub_core::{GroupId, GroupName, GroupRole, Placement, UserId, UserName};
use std::collections::HashMap;

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// One group.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Group {
    pub group_id: GroupId,
    #[sqlx(try_from = "String")]
    pub name: GroupName,
    pub created_at: OffsetDateTime,
    /// Whether the group has a shared folder.
    pub shared_folder: bool,
    /// Whether members (not leads) get it read-only.
    pub shared_read_only: bool,
}

/// One member of a group.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: UserId,
    pub name: UserName,
    pub role: GroupRole,
    pub added_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    user_id: UserId,
    #[sqlx(try_from = "String")]
    name: UserName,
    role: String,
    added_at: OffsetDateTime,
}

fn role(raw: &str) -> Result<GroupRole, DbError> {
    GroupRole::parse(raw).ok_or_else(|| DbError::Other(format!("unknown group role {raw:?}")))
}

impl TryFrom<MemberRow> for Member {
    type Error = DbError;
    fn try_from(r: MemberRow) -> Result<Self, DbError> {
        Ok(Member { role: role(&r.role)?, user_id: r.user_id, name: r.name, added_at: r.added_at })
    }
}

/// The unique index on names.
pub const NAME_KEY: &str = "groups_name_key";

/// Adds a group; a taken name is `DbError::Constraint { constraint: NAME_KEY }`.
pub async fn insert(db: impl PgExecutor<'_>, name: &GroupName, now: OffsetDateTime) -> Result<Group, DbError> {
    Ok(sqlx::query_as("insert into groups (name, created_at) values ($1, $2) returning group_id, name, created_at, shared_folder, shared_read_only")
        .bind(name.as_str())
        .bind(now)
        .fetch_one(db)
        .await?)
}

/// One group by name.
pub async fn by_name(db: impl PgExecutor<'_>, name: &GroupName) -> Result<Option<Group>, DbError> {
    Ok(sqlx::query_as("select group_id, name, created_at, shared_folder, shared_read_only from groups where name = $1")
        .bind(name.as_str())
        .fetch_optional(db)
        .await?)
}

/// One group by id.
pub async fn by_id(db: impl PgExecutor<'_>, group_id: GroupId) -> Result<Option<Group>, DbError> {
    Ok(sqlx::query_as(
        "select group_id, name, created_at, shared_folder, shared_read_only from groups where group_id = $1",
    )
    .bind(group_id)
    .fetch_optional(db)
    .await?)
}

/// One group by name, locked until the transaction ends.
pub async fn by_name_for_update(db: impl PgExecutor<'_>, name: &GroupName) -> Result<Option<Group>, DbError> {
    Ok(sqlx::query_as(
        "select group_id, name, created_at, shared_folder, shared_read_only from groups where name = $1 for update",
    )
    .bind(name.as_str())
    .fetch_optional(db)
    .await?)
}

/// Locks groups' rows until the transaction ends, in id order so that two transactions
/// locking overlapping sets cannot deadlock.
pub async fn lock(db: impl PgExecutor<'_>, group_ids: &[GroupId]) -> Result<(), DbError> {
    sqlx::query("select 1 from groups where group_id = any($1) order by group_id for update")
        .bind(group_ids)
        .execute(db)
        .await?;
    Ok(())
}

/// The condition "led by `$1`, or `$1` is null" on `groups`.
macro_rules! led_by {
    () => {
        "($1::bigint is null or exists (select 1 from group_members m
          where m.group_id = groups.group_id and m.user_id = $1 and m.role = 'lead'))"
    };
}

/// One page of groups by name (and the total), optionally only those `lead_id` leads.
pub async fn list(
    db: &sqlx::PgPool,
    lead_id: Option<UserId>,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Group>, i64), DbError> {
    let rows = sqlx::query_as(concat!(
        "select group_id, name, created_at, shared_folder, shared_read_only from groups where ",
        led_by!(),
        " order by name offset $2 limit $3"
    ))
    .bind(lead_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(concat!("select count(*) from groups where ", led_by!()))
        .bind(lead_id)
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}

/// Renames a group; a taken name is `DbError::Constraint { constraint: NAME_KEY }`.
pub async fn rename(db: impl PgExecutor<'_>, group_id: GroupId, name: &GroupName) -> Result<(), DbError> {
    sqlx::query("update groups set name = $2 where group_id = $1")
        .bind(group_id)
        .bind(name.as_str())
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes a group with its memberships and quotas.
pub async fn delete(db: impl PgExecutor<'_>, group_id: GroupId) -> Result<bool, DbError> {
    Ok(sqlx::query("delete from groups where group_id = $1").bind(group_id).execute(db).await?.rows_affected() > 0)
}

/// A group's members, leads first, then by name.
pub async fn members(db: impl PgExecutor<'_>, group_id: GroupId) -> Result<Vec<Member>, DbError> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "select m.user_id, u.name, m.role, m.added_at from group_members m join users u on u.user_id = m.user_id
         where m.group_id = $1 order by m.role = 'lead' desc, u.name",
    )
    .bind(group_id)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Member::try_from).collect()
}

/// Someone's role in a group, if they are in it.
pub async fn role_of(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    user_id: UserId,
) -> Result<Option<GroupRole>, DbError> {
    let raw: Option<String> = sqlx::query_scalar("select role from group_members where group_id = $1 and user_id = $2")
        .bind(group_id)
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    raw.as_deref().map(role).transpose()
}

/// Puts someone in a group with a role, or changes their role there.
pub async fn set_member(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    user_id: UserId,
    role: GroupRole,
    now: OffsetDateTime,
) -> Result<(), DbError> {
    sqlx::query(
        "insert into group_members (group_id, user_id, role, added_at) values ($1, $2, $3, $4)
         on conflict (group_id, user_id) do update set role = excluded.role",
    )
    .bind(group_id)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Takes someone out of a group; false if they were not in it.
pub async fn remove_member(db: impl PgExecutor<'_>, group_id: GroupId, user_id: UserId) -> Result<bool, DbError> {
    let r = sqlx::query("delete from group_members where group_id = $1 and user_id = $2")
        .bind(group_id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// A group someone belongs to, with their role there.
#[derive(Debug, Clone)]
pub struct Membership {
    pub group: Group,
    pub role: GroupRole,
}

/// The groups a user belongs to, by name.
pub async fn of_user(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<Membership>, DbError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        group: Group,
        role: String,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "select g.group_id, g.name, g.created_at, g.shared_folder, g.shared_read_only, m.role from group_members m join groups g on g.group_id = m.group_id
         where m.user_id = $1 order by g.name",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(|r| Ok(Membership { role: role(&r.role)?, group: r.group })).collect()
}

/// The names of the groups of many users at once (for user lists), by user id.
pub async fn names_of_users(
    db: impl PgExecutor<'_>,
    user_ids: &[UserId],
) -> Result<HashMap<UserId, Vec<String>>, DbError> {
    let rows: Vec<(UserId, String)> = sqlx::query_as(
        "select m.user_id, g.name from group_members m join groups g on g.group_id = m.group_id
         where m.user_id = any($1) order by g.name",
    )
    .bind(user_ids)
    .fetch_all(db)
    .await?;
    let mut map: HashMap<UserId, Vec<String>> = HashMap::new();
    for (user_id, name) in rows {
        map.entry(user_id).or_default().push(name);
    }
    Ok(map)
}

/// Turns a group's shared folder on or off, and whether members get it read-only.
/// The Swarm placement constraints of a group's servers (checked when written; one that no
/// longer reads is an error, never a constraint silently dropped).
pub async fn placement(db: impl PgExecutor<'_>, group_id: GroupId) -> Result<Vec<Placement>, DbError> {
    let stored: Vec<String> = sqlx::query_scalar("select placement from groups where group_id = $1")
        .bind(group_id)
        .fetch_optional(db)
        .await?
        .unwrap_or_default();
    stored
        .iter()
        .map(|p| Placement::parse(p).map_err(|e| DbError::Other(format!("group {group_id}'s placement: {e}"))))
        .collect()
}

/// Replaces a group's Swarm placement constraints.
pub async fn set_placement(db: impl PgExecutor<'_>, group_id: GroupId, placement: &[&str]) -> Result<(), DbError> {
    sqlx::query("update groups set placement = $2 where group_id = $1")
        .bind(group_id)
        .bind(placement)
        .execute(db)
        .await?;
    Ok(())
}

/// Sets whether a group has a shared folder and whether members get it read-only.
pub async fn set_shared_folder(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    shared_folder: bool,
    read_only: bool,
) -> Result<(), DbError> {
    sqlx::query("update groups set shared_folder = $2, shared_read_only = $3 where group_id = $1")
        .bind(group_id)
        .bind(shared_folder)
        .bind(read_only)
        .execute(db)
        .await?;
    Ok(())
}

/// Every group with a shared folder on.
pub async fn with_shared_folder(db: impl PgExecutor<'_>) -> Result<Vec<Group>, DbError> {
    Ok(sqlx::query_as(
        "select group_id, name, created_at, shared_folder, shared_read_only from groups where shared_folder order by group_id",
    )
    .fetch_all(db)
    .await?)
}

/// Records the measured size of a group's shared folder.
pub async fn put_shared_bytes(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    bytes: i64,
    now: OffsetDateTime,
) -> Result<(), DbError> {
    sqlx::query(
        "insert into group_storage (group_id, bytes, measured_at) values ($1, $2, $3)
         on conflict (group_id) do update set bytes = excluded.bytes, measured_at = excluded.measured_at",
    )
    .bind(group_id)
    .bind(bytes)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// The last measured size of a group's shared folder, if any.
pub async fn shared_bytes(db: impl PgExecutor<'_>, group_id: GroupId) -> Result<Option<i64>, DbError> {
    Ok(sqlx::query_scalar("select bytes from group_storage where group_id = $1")
        .bind(group_id)
        .fetch_optional(db)
        .await?)
}
