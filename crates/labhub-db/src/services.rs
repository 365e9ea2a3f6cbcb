//! The `services` and `service_roles` tables: external services registered with the hub,
//! their API tokens (by SHA-256) and the roles given to them.

use labhub_core::ServiceId;
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// A registered service (never its token), with the names of its roles.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Service {
    pub service_id: ServiceId,
    pub name: String,
    /// Where the proxy sends `/services/{name}/`; none when it only calls the API.
    pub url: Option<String>,
    pub token_prefix: String,
    pub created_at: OffsetDateTime,
    pub last_activity: Option<OffsetDateTime>,
    /// Its roles' names, sorted.
    pub roles: Vec<String>,
}

macro_rules! select {
    ($where:literal) => {
        concat!(
            "select s.service_id, s.name, s.url, s.token_prefix, s.created_at, s.last_activity,
                    coalesce(array(select r.name from service_roles sr join roles r on r.role_id = sr.role_id
                                   where sr.service_id = s.service_id order by r.name), '{}') as roles
             from services s ",
            $where
        )
    };
}

/// Registers a service; `None` when the name is taken.
pub async fn insert(
    db: impl PgExecutor<'_>,
    name: &str,
    url: Option<&str>,
    token_hash: &[u8; 32],
    token_prefix: &str,
    now: OffsetDateTime,
) -> Result<Option<ServiceId>, DbError> {
    Ok(sqlx::query_scalar(
        "insert into services (name, url, token_hash, token_prefix, created_at) values ($1, $2, $3, $4, $5)
         on conflict (name) do nothing returning service_id",
    )
    .bind(name)
    .bind(url)
    .bind(&token_hash[..])
    .bind(token_prefix)
    .bind(now)
    .fetch_optional(db)
    .await?)
}

/// Every service, by name.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Service>, DbError> {
    Ok(sqlx::query_as(select!("order by s.name")).fetch_all(db).await?)
}

/// The service of this name.
pub async fn by_name(db: impl PgExecutor<'_>, name: &str) -> Result<Option<Service>, DbError> {
    Ok(sqlx::query_as(select!("where s.name = $1")).bind(name).fetch_optional(db).await?)
}

/// The service whose API token has this hash.
pub async fn by_token_hash(db: impl PgExecutor<'_>, token_hash: &[u8; 32]) -> Result<Option<Service>, DbError> {
    Ok(sqlx::query_as(select!("where s.token_hash = $1")).bind(&token_hash[..]).fetch_optional(db).await?)
}

/// The scopes of every role given to a service, as written.
pub async fn scopes(db: impl PgExecutor<'_>, service_id: ServiceId) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "select unnest(r.scopes) from service_roles sr join roles r on r.role_id = sr.role_id where sr.service_id = $1",
    )
    .bind(service_id)
    .fetch_all(db)
    .await?)
}

/// Removes a service (and, by the cascade, its roles); whether there was one.
pub async fn delete(db: impl PgExecutor<'_>, name: &str) -> Result<bool, DbError> {
    let r = sqlx::query("delete from services where name = $1").bind(name).execute(db).await?;
    Ok(r.rows_affected() > 0)
}

/// Sets or clears where the proxy sends a service's route; the service's id, if there is one.
pub async fn set_url(db: impl PgExecutor<'_>, name: &str, url: Option<&str>) -> Result<Option<ServiceId>, DbError> {
    Ok(sqlx::query_scalar("update services set url = $2 where name = $1 returning service_id")
        .bind(name)
        .bind(url)
        .fetch_optional(db)
        .await?)
}

/// Gives a role to a service (again: no change).
pub async fn assign(db: impl PgExecutor<'_>, role_id: i64, service_id: ServiceId) -> Result<(), DbError> {
    sqlx::query("insert into service_roles (service_id, role_id) values ($1, $2) on conflict do nothing")
        .bind(service_id)
        .bind(role_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Takes a role from a service; whether it had it.
pub async fn unassign(db: impl PgExecutor<'_>, role_id: i64, service_id: ServiceId) -> Result<bool, DbError> {
    let r = sqlx::query("delete from service_roles where service_id = $1 and role_id = $2")
        .bind(service_id)
        .bind(role_id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Records that a service used its token at `at` (never moving the time backwards).
pub async fn touch(db: impl PgExecutor<'_>, service_id: ServiceId, at: OffsetDateTime) -> Result<(), DbError> {
    sqlx::query(
        "update services set last_activity = $2 where service_id = $1
         and (last_activity is null or last_activity < $2)",
    )
    .bind(service_id)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}
