//! The `environments` and `environment_builds` tables: catalogue entries the hub builds from
//! a source, and every build with its provenance.

use labhub_core::{BuildId, EnvironmentId, GroupId, ImageId, UserId};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// One environment, with its catalogue entry's name and its owner's names.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Environment {
    pub environment_id: EnvironmentId,
    pub image_id: ImageId,
    pub name: String,
    pub source: String,
    #[sqlx(rename = "ref")]
    pub git_ref: String,
    pub group_id: Option<GroupId>,
    pub group_name: Option<String>,
    pub owner_id: Option<UserId>,
    pub owner_name: Option<String>,
    pub pinned_build_id: Option<BuildId>,
    /// The catalogue entry it builds on; `None`: the lab's default.
    pub base: Option<String>,
    pub created_at: OffsetDateTime,
    /// Saved from a running server, not built from its source.
    pub snapshot: bool,
    /// Built from uploaded files (its ref is the upload's `sha256:`), not from git.
    pub uploaded: bool,
}

/// One build.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Build {
    pub build_id: BuildId,
    pub environment_id: EnvironmentId,
    #[sqlx(rename = "ref")]
    pub git_ref: String,
    pub status: String,
    pub commit: Option<String>,
    pub recipe_hash: Option<String>,
    pub base_image_id: Option<String>,
    pub image_id: Option<String>,
    pub tag: String,
    pub builder_version: String,
    pub built_by_name: String,
    pub started_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    pub error: Option<String>,
    /// The earlier build whose image this one reused instead of building.
    pub reused_build_id: Option<BuildId>,
}

macro_rules! environments {
    () => {
        "select e.environment_id, e.image_id, i.name, e.source, e.ref, e.group_id, g.name as group_name,
                e.owner_id, u.name as owner_name, e.pinned_build_id, e.base, e.created_at, e.snapshot, e.uploaded
         from environments e join images i on i.image_id = e.image_id
         left join groups g on g.group_id = e.group_id left join users u on u.user_id = e.owner_id "
    };
}

macro_rules! build_columns {
    () => {
        "build_id, environment_id, ref, status, commit, recipe_hash, base_image_id, image_id, tag,
         builder_version, built_by_name, started_at, finished_at, error, reused_build_id"
    };
}

/// Whose a new environment is.
#[derive(Debug, Clone, Copy)]
pub enum Holder {
    Lab,
    Group(GroupId),
    Owner(UserId),
}

/// Adds an environment for a catalogue entry just made.
pub async fn insert(
    db: impl PgExecutor<'_>,
    image_id: ImageId,
    source: &str,
    git_ref: &str,
    holder: Holder,
    base: Option<&str>,
    now: OffsetDateTime,
) -> Result<EnvironmentId, DbError> {
    let (group, owner) = match holder {
        Holder::Lab => (None, None),
        Holder::Group(g) => (Some(g), None),
        Holder::Owner(u) => (None, Some(u)),
    };
    Ok(sqlx::query_scalar(
        "insert into environments (image_id, source, ref, group_id, owner_id, base, created_at)
         values ($1, $2, $3, $4, $5, $6, $7) returning environment_id",
    )
    .bind(image_id)
    .bind(source)
    .bind(git_ref)
    .bind(group)
    .bind(owner)
    .bind(base)
    .bind(now)
    .fetch_one(db)
    .await?)
}

/// Marks an environment just inserted as a snapshot of a running server.
pub async fn mark_snapshot(db: impl PgExecutor<'_>, id: EnvironmentId) -> Result<(), DbError> {
    sqlx::query("update environments set snapshot = true where environment_id = $1").bind(id).execute(db).await?;
    Ok(())
}

/// Marks an environment just inserted as built from uploads.
pub async fn mark_uploaded(db: impl PgExecutor<'_>, id: EnvironmentId) -> Result<(), DbError> {
    sqlx::query("update environments set uploaded = true where environment_id = $1").bind(id).execute(db).await?;
    Ok(())
}

/// Keeps an uploaded archive under the SHA-256 of its files (an equal one already kept stays).
pub async fn insert_upload(
    db: impl PgExecutor<'_>,
    sha256: &str,
    archive: &[u8],
    by: Option<UserId>,
    now: OffsetDateTime,
) -> Result<(), DbError> {
    sqlx::query(
        "insert into environment_uploads (sha256, archive, uploaded_by, uploaded_at) values ($1, $2, $3, $4)
         on conflict (sha256) do nothing",
    )
    .bind(sha256)
    .bind(archive)
    .bind(by)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Removes the uploads no environment can build from any more (not an uploaded environment's
/// ref nor any of its builds': their environments are gone) kept since before `before`; how many.
pub async fn delete_unused_uploads(db: impl PgExecutor<'_>, before: OffsetDateTime) -> Result<u64, DbError> {
    let r = sqlx::query(
        "delete from environment_uploads u where u.uploaded_at < $1
         and not exists (select 1 from environments e where e.uploaded and e.ref = u.sha256)
         and not exists (select 1 from environment_builds b join environments e on e.environment_id = b.environment_id
                         where e.uploaded and b.ref = u.sha256)",
    )
    .bind(before)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// An uploaded archive, as it was sent.
pub async fn upload(db: impl PgExecutor<'_>, sha256: &str) -> Result<Option<Vec<u8>>, DbError> {
    Ok(sqlx::query_scalar("select archive from environment_uploads where sha256 = $1")
        .bind(sha256)
        .fetch_optional(db)
        .await?)
}

/// How many snapshots `owner` holds.
pub async fn count_snapshots(db: impl PgExecutor<'_>, owner: UserId) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("select count(*) from environments where owner_id = $1 and snapshot")
        .bind(owner)
        .fetch_one(db)
        .await?)
}

/// Every environment, by name.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Environment>, DbError> {
    Ok(sqlx::query_as(concat!(environments!(), "order by i.name")).fetch_all(db).await?)
}

/// One environment by its catalogue name.
pub async fn by_name(db: impl PgExecutor<'_>, name: &str) -> Result<Option<Environment>, DbError> {
    Ok(sqlx::query_as(concat!(environments!(), "where i.name = $1")).bind(name).fetch_optional(db).await?)
}

/// The environment a catalogue entry is, if it is one.
pub async fn by_image(db: impl PgExecutor<'_>, image_id: ImageId) -> Result<Option<Environment>, DbError> {
    Ok(sqlx::query_as(concat!(environments!(), "where e.image_id = $1")).bind(image_id).fetch_optional(db).await?)
}

/// Changes the ref later builds use by default.
pub async fn set_ref(db: impl PgExecutor<'_>, id: EnvironmentId, git_ref: &str) -> Result<(), DbError> {
    sqlx::query("update environments set ref = $2 where environment_id = $1")
        .bind(id)
        .bind(git_ref)
        .execute(db)
        .await?;
    Ok(())
}

/// Pins a build (or unpins with `None`).
pub async fn set_pin(db: impl PgExecutor<'_>, id: EnvironmentId, build: Option<BuildId>) -> Result<(), DbError> {
    sqlx::query("update environments set pinned_build_id = $2 where environment_id = $1")
        .bind(id)
        .bind(build)
        .execute(db)
        .await?;
    Ok(())
}

/// What a new build starts with.
pub struct NewBuild<'a> {
    pub environment_id: EnvironmentId,
    pub git_ref: &'a str,
    pub tag: &'a str,
    pub builder_version: &'a str,
    pub built_by: Option<UserId>,
    pub built_by_name: &'a str,
    pub started_at: OffsetDateTime,
}

/// Records a build as building.
pub async fn insert_build(db: impl PgExecutor<'_>, b: &NewBuild<'_>) -> Result<BuildId, DbError> {
    Ok(sqlx::query_scalar(
        "insert into environment_builds (environment_id, ref, status, tag, builder_version, built_by, built_by_name, started_at)
         values ($1, $2, 'building', $3, $4, $5, $6, $7) returning build_id",
    )
    .bind(b.environment_id)
    .bind(b.git_ref)
    .bind(b.tag)
    .bind(b.builder_version)
    .bind(b.built_by)
    .bind(b.built_by_name)
    .bind(b.started_at)
    .fetch_one(db)
    .await?)
}

/// Sets a new build's tag (made from its id).
pub async fn set_tag(db: impl PgExecutor<'_>, id: BuildId, tag: &str) -> Result<(), DbError> {
    sqlx::query("update environment_builds set tag = $2 where build_id = $1").bind(id).bind(tag).execute(db).await?;
    Ok(())
}

/// How a build ended.
pub struct Finished<'a> {
    pub ready: bool,
    pub commit: Option<&'a str>,
    pub recipe_hash: Option<&'a str>,
    pub base_image_id: Option<&'a str>,
    pub image_id: Option<&'a str>,
    pub reused: Option<BuildId>,
    pub error: Option<&'a str>,
    pub log: &'a str,
    pub finished_at: OffsetDateTime,
}

/// Records how a build ended.
pub async fn finish_build(db: impl PgExecutor<'_>, id: BuildId, f: &Finished<'_>) -> Result<(), DbError> {
    sqlx::query(
        "update environment_builds set status = $2, commit = $3, recipe_hash = $4, base_image_id = $5, image_id = $6,
                error = $7, log = $8, finished_at = $9, reused_build_id = $10
         where build_id = $1",
    )
    .bind(id)
    .bind(if f.ready { "ready" } else { "failed" })
    .bind(f.commit)
    .bind(f.recipe_hash)
    .bind(f.base_image_id)
    .bind(f.image_id)
    .bind(f.error)
    .bind(f.log)
    .bind(f.finished_at)
    .bind(f.reused)
    .execute(db)
    .await?;
    Ok(())
}

/// Builds still marked building (at boot: the hub that ran them stopped).
pub async fn fail_unfinished(db: impl PgExecutor<'_>, now: OffsetDateTime) -> Result<u64, DbError> {
    let r = sqlx::query(
        "update environment_builds set status = 'failed', error = 'the hub stopped during the build', finished_at = $1
         where status = 'building'",
    )
    .bind(now)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// Locks an environment's row for the transaction (a build's row, which references it,
/// waits meanwhile) and says whether one of its builds is running.
pub async fn lock_and_building(db: impl PgExecutor<'_>, id: EnvironmentId) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from environment_builds b where b.environment_id = e.environment_id
                                                       and b.status = 'building')
         from environments e where e.environment_id = $1 for update of e",
    )
    .bind(id)
    .fetch_optional(db)
    .await?
    .unwrap_or(false))
}

/// An environment's builds, newest first.
pub async fn builds(db: impl PgExecutor<'_>, id: EnvironmentId) -> Result<Vec<Build>, DbError> {
    let sql = concat!(
        "select ",
        build_columns!(),
        " from environment_builds where environment_id = $1 order by build_id desc"
    );
    Ok(sqlx::query_as(sql).bind(id).fetch_all(db).await?)
}

/// One build and its stored log.
pub async fn build_with_log(db: impl PgExecutor<'_>, id: BuildId) -> Result<Option<(Build, String)>, DbError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        build: Build,
        log: String,
    }
    let sql = concat!("select ", build_columns!(), ", log from environment_builds where build_id = $1");
    let row: Option<Row> = sqlx::query_as(sql).bind(id).fetch_optional(db).await?;
    Ok(row.map(|r| (r.build, r.log)))
}

/// Whether a group lets its members build personal environments.
pub async fn members_may_build(db: impl PgExecutor<'_>, group: GroupId) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar("select members_build_environments from groups where group_id = $1")
        .bind(group)
        .fetch_optional(db)
        .await?
        .unwrap_or(false))
}

/// Lets a group's members build personal environments, or stops them.
pub async fn set_members_may_build(db: impl PgExecutor<'_>, group: GroupId, allowed: bool) -> Result<(), DbError> {
    sqlx::query("update groups set members_build_environments = $2 where group_id = $1")
        .bind(group)
        .bind(allowed)
        .execute(db)
        .await?;
    Ok(())
}
