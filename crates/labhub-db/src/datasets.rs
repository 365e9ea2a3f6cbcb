//! The `datasets` and `dataset_groups` tables: data an admin registers for servers to read.

use labhub_core::{DatasetName, GroupId, UserId};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// One registered dataset.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Dataset {
    pub dataset_id: i64,
    #[sqlx(try_from = "String")]
    pub name: DatasetName,
    /// `path` or `volume`.
    pub source_kind: String,
    pub source: String,
    pub description: String,
    /// Granted to everyone, or only to the groups listed for it.
    pub everyone: bool,
    pub created_at: OffsetDateTime,
    /// The names of the groups it is granted to.
    pub groups: Vec<String>,
}

/// A new dataset.
#[derive(Debug)]
pub struct NewDataset<'a> {
    pub name: &'a DatasetName,
    pub source_kind: &'a str,
    pub source: &'a str,
    pub description: &'a str,
    pub groups: &'a [GroupId],
    pub now: OffsetDateTime,
}

/// The unique index on names.
pub const NAME_KEY: &str = "datasets_name_key";

macro_rules! select {
    () => {
        "select d.dataset_id, d.name, d.source_kind, d.source, d.description, d.everyone, d.created_at,
                array(select g.name from dataset_groups dg join groups g on g.group_id = dg.group_id
                      where dg.dataset_id = d.dataset_id order by g.name) as groups
         from datasets d"
    };
}

/// Registers a dataset: for everyone when `groups` is empty, else for those groups.
pub async fn insert(db: &mut sqlx::PgConnection, new: &NewDataset<'_>) -> Result<i64, DbError> {
    let id: i64 = sqlx::query_scalar(
        "insert into datasets (name, source_kind, source, description, everyone, created_at)
         values ($1, $2, $3, $4, $5, $6) returning dataset_id",
    )
    .bind(new.name.as_str())
    .bind(new.source_kind)
    .bind(new.source)
    .bind(new.description)
    .bind(new.groups.is_empty())
    .bind(new.now)
    .fetch_one(&mut *db)
    .await?;
    sqlx::query("insert into dataset_groups (dataset_id, group_id) select $1, unnest($2::bigint[])")
        .bind(id)
        .bind(new.groups.iter().map(|g| g.get()).collect::<Vec<_>>())
        .execute(&mut *db)
        .await?;
    Ok(id)
}

/// Every dataset, by name.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Dataset>, DbError> {
    Ok(sqlx::query_as(concat!(select!(), " order by d.name")).fetch_all(db).await?)
}

/// One dataset by name.
pub async fn by_name(db: impl PgExecutor<'_>, name: &DatasetName) -> Result<Option<Dataset>, DbError> {
    Ok(sqlx::query_as(concat!(select!(), " where d.name = $1")).bind(name.as_str()).fetch_optional(db).await?)
}

/// The datasets a user may read: those for everyone and those of their groups.
pub async fn for_user(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<Dataset>, DbError> {
    Ok(sqlx::query_as(concat!(
        select!(),
        " where d.everyone or exists (select 1 from dataset_groups dg join group_members m
          on m.group_id = dg.group_id where dg.dataset_id = d.dataset_id and m.user_id = $1)
          order by d.name"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await?)
}

/// Removes a dataset (its data stays where it is); whether it existed.
pub async fn delete(db: impl PgExecutor<'_>, name: &DatasetName) -> Result<bool, DbError> {
    Ok(sqlx::query("delete from datasets where name = $1").bind(name.as_str()).execute(db).await?.rows_affected() > 0)
}
