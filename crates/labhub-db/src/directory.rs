//! Group memberships a directory gives (`group_members.from_directory`), for `sync_groups`.

use labhub_core::{GroupId, GroupName, UserId};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;
use crate::groups::Group;

/// A group by name, created (with the site default quota) if there is none; `true` when it
/// was created now. Safe against a concurrent creation of the same name.
pub async fn ensure_group(
    db: &mut sqlx::PgConnection,
    name: &GroupName,
    now: OffsetDateTime,
) -> Result<(Group, bool), DbError> {
    let created: Option<Group> = sqlx::query_as(
        "insert into groups (name, created_at) values ($1, $2) on conflict (name) do nothing
         returning group_id, name, created_at, shared_folder, shared_read_only",
    )
    .bind(name.as_str())
    .bind(now)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(group) = created {
        return Ok((group, true));
    }
    let group = crate::groups::by_name(&mut *db, name)
        .await?
        .ok_or_else(|| DbError::Other(format!("the group {name} vanished while it was being joined")))?;
    Ok((group, false))
}

/// The groups (id and name) the directory put a user in.
pub async fn groups_given(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<(GroupId, String)>, DbError> {
    Ok(sqlx::query_as(
        "select g.group_id, g.name from group_members m join groups g on g.group_id = m.group_id
         where m.user_id = $1 and m.from_directory order by g.name",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?)
}

/// Puts a user in a group as a member the directory gave; `false` when they were in it
/// already (however they got there: such a membership is left as it is).
pub async fn give(
    db: impl PgExecutor<'_>,
    group_id: GroupId,
    user_id: UserId,
    now: OffsetDateTime,
) -> Result<bool, DbError> {
    let r = sqlx::query(
        "insert into group_members (group_id, user_id, role, added_at, from_directory) values ($1, $2, 'member', $3, true)
         on conflict (group_id, user_id) do nothing",
    )
    .bind(group_id)
    .bind(user_id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Takes a user out of a group the directory had put them in; `false` when it had not.
pub async fn take_back(db: impl PgExecutor<'_>, group_id: GroupId, user_id: UserId) -> Result<bool, DbError> {
    let r = sqlx::query("delete from group_members where group_id = $1 and user_id = $2 and from_directory")
        .bind(group_id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}
