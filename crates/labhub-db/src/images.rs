//! The `images` table: the catalogue.

use labhub_core::{Contract, ImageFields, ImageId, ImageKind, ImageRef, Placement};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// One catalogue entry.
#[derive(Debug, Clone)]
pub struct Image {
    pub image_id: ImageId,
    pub name: String,
    pub fields: ImageFields,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct Row {
    image_id: ImageId,
    name: String,
    display_name: String,
    description: String,
    reference: String,
    kind: String,
    port: Option<i32>,
    command: Option<sqlx::types::Json<Vec<String>>>,
    cpu_millis: i32,
    memory_bytes: i64,
    enabled: bool,
    recipe: Option<String>,
    contract: String,
    placement: Vec<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl TryFrom<Row> for Image {
    type Error = DbError;
    fn try_from(r: Row) -> Result<Self, DbError> {
        let bad = |what: &str| DbError::Other(format!("image {} has an invalid {what}", r.name));
        let fields = ImageFields {
            reference: ImageRef::parse(&r.reference).map_err(|_| bad("reference"))?,
            kind: ImageKind::parse(&r.kind).ok_or_else(|| bad("kind"))?,
            port: r.port.map(|p| u16::try_from(p).map_err(|_| bad("port"))).transpose()?,
            command: r.command.map(|c| c.0),
            cpu_millis: u32::try_from(r.cpu_millis).map_err(|_| bad("cpu"))?,
            memory_bytes: u64::try_from(r.memory_bytes).map_err(|_| bad("memory"))?,
            display_name: r.display_name,
            description: r.description,
            enabled: r.enabled,
            recipe: r.recipe,
            contract: Contract::parse(&r.contract).ok_or_else(|| bad("contract"))?,
            placement: r
                .placement
                .iter()
                .map(|p| Placement::parse(p))
                .collect::<Result<_, _>>()
                .map_err(|_| bad("placement"))?,
        };
        Ok(Image { image_id: r.image_id, name: r.name, fields, created_at: r.created_at, updated_at: r.updated_at })
    }
}

macro_rules! columns {
    () => {
        "image_id, name, display_name, description, reference, kind, port, command, cpu_millis, memory_bytes, \
         enabled, recipe, contract, placement, created_at, updated_at"
    };
}

/// The unique index on names.
pub const NAME_KEY: &str = "images_name_key";

type RowQuery<'q> = sqlx::query::QueryAs<'q, sqlx::Postgres, Row, sqlx::postgres::PgArguments>;

/// Binds `$1`..`$14` — the name, every field, the time — in the order insert and update share.
fn bind_fields<'q>(q: RowQuery<'q>, name: &'q str, f: &'q ImageFields, now: OffsetDateTime) -> RowQuery<'q> {
    q.bind(name)
        .bind(&f.display_name)
        .bind(&f.description)
        .bind(f.reference.as_str())
        .bind(f.kind.as_str())
        .bind(f.port.map(i32::from))
        .bind(f.command.clone().map(sqlx::types::Json))
        .bind(f.cpu_millis as i32)
        .bind(f.memory_bytes as i64)
        .bind(f.enabled)
        .bind(&f.recipe)
        .bind(now)
        .bind(f.contract.as_str())
        .bind(f.placement.iter().map(Placement::as_str).collect::<Vec<_>>())
}

/// Adds an entry.
pub async fn insert(
    db: impl PgExecutor<'_>,
    name: &str,
    f: &ImageFields,
    now: OffsetDateTime,
) -> Result<Image, DbError> {
    let q = sqlx::query_as(concat!(
        "insert into images (name, display_name, description, reference, kind, port, command, cpu_millis, memory_bytes,
                             enabled, recipe, created_at, updated_at, contract, placement)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14) returning ",
        columns!()
    ));
    let row: Row = bind_fields(q, name, f, now).fetch_one(db).await?;
    row.try_into()
}

/// Changes an entry; `None` if there is none by that name.
pub async fn update(
    db: impl PgExecutor<'_>,
    name: &str,
    f: &ImageFields,
    now: OffsetDateTime,
) -> Result<Option<Image>, DbError> {
    let q = sqlx::query_as(concat!(
        "update images set display_name = $2, description = $3, reference = $4, kind = $5, port = $6, command = $7,
                cpu_millis = $8, memory_bytes = $9, enabled = $10, recipe = $11, updated_at = $12,
                contract = $13, placement = $14
         where name = $1 returning ",
        columns!()
    ));
    let row: Option<Row> = bind_fields(q, name, f, now).fetch_optional(db).await?;
    row.map(Image::try_from).transpose()
}

/// Every entry, by display name.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Image>, DbError> {
    let rows: Vec<Row> = sqlx::query_as(concat!("select ", columns!(), " from images order by display_name, name"))
        .fetch_all(db)
        .await?;
    rows.into_iter().map(Image::try_from).collect()
}

/// One entry by name.
pub async fn by_name(db: impl PgExecutor<'_>, name: &str) -> Result<Option<Image>, DbError> {
    let row: Option<Row> = sqlx::query_as(concat!("select ", columns!(), " from images where name = $1"))
        .bind(name)
        .fetch_optional(db)
        .await?;
    row.map(Image::try_from).transpose()
}

/// Removes an entry (servers that ran it keep what they recorded).
pub async fn delete(db: impl PgExecutor<'_>, name: &str) -> Result<bool, DbError> {
    Ok(sqlx::query("delete from images where name = $1").bind(name).execute(db).await?.rows_affected() > 0)
}

/// How many entries there are.
pub async fn count(db: impl PgExecutor<'_>) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("select count(*) from images").fetch_one(db).await?)
}
