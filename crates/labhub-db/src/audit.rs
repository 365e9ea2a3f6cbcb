//! The append-only `audit_log` table.

use sqlx::{PgExecutor, Postgres, QueryBuilder};
use time::OffsetDateTime;

use labhub_core::listing::AuditFilter;

use crate::DbError;

/// One recorded action.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditEntry {
    pub audit_id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// Appends a record.
pub async fn record(
    db: impl PgExecutor<'_>,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    target: &str,
    detail: &serde_json::Value,
) -> Result<(), DbError> {
    sqlx::query("insert into audit_log (at, actor, action, target, detail) values ($1, $2, $3, $4, $5)")
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(db)
        .await?;
    Ok(())
}

fn push_where(q: &mut QueryBuilder<Postgres>, f: &AuditFilter) {
    q.push(" where true");
    if let Some(a) = &f.actor {
        q.push(" and actor = ").push_bind(a.clone());
    }
    if let Some(a) = &f.action {
        if a.ends_with('.') {
            q.push(" and starts_with(action, ").push_bind(a.clone()).push(")");
        } else {
            q.push(" and action = ").push_bind(a.clone());
        }
    }
    if let Some(t) = &f.target {
        q.push(" and target = ").push_bind(t.clone());
    }
    if let Some(s) = f.since {
        q.push(" and at >= ").push_bind(s);
    }
    if let Some(u) = f.until {
        q.push(" and at < ").push_bind(u);
    }
}

/// One page of records, newest first, and the total matching.
pub async fn list(db: &sqlx::PgPool, f: &AuditFilter) -> Result<(Vec<AuditEntry>, i64), DbError> {
    let mut q = QueryBuilder::<Postgres>::new("select audit_id, at, actor, action, target, detail from audit_log");
    push_where(&mut q, f);
    q.push(" order by at desc, audit_id desc offset ").push_bind(f.offset).push(" limit ").push_bind(f.limit);
    let rows = q.build_query_as().fetch_all(db).await?;
    let mut c = QueryBuilder::<Postgres>::new("select count(*) from audit_log");
    push_where(&mut c, f);
    let total = c.build_query_scalar().fetch_one(db).await?;
    Ok((rows, total))
}
