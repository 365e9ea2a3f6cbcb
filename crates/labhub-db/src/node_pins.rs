//! The `swarm_node_pins` table: the Swarm node each user's homes live on.

use labhub_core::{NodeName, UserId};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// A user's node, if they have one.
pub async fn get(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Option<NodeName>, DbError> {
    let node: Option<String> = sqlx::query_scalar("select node from swarm_node_pins where user_id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    node.map(parse).transpose()
}

/// How many users each node holds.
pub async fn counts(db: impl PgExecutor<'_>) -> Result<Vec<(NodeName, u64)>, DbError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("select node, count(*) from swarm_node_pins group by node").fetch_all(db).await?;
    rows.into_iter().map(|(node, n)| Ok((parse(node)?, n.max(0) as u64))).collect()
}

/// Pins a user who has no node yet; returns the node they are pinned to (theirs already when
/// another start pinned them first).
pub async fn pin_if_absent(
    db: &mut sqlx::PgConnection,
    user_id: UserId,
    node: &NodeName,
    at: OffsetDateTime,
) -> Result<NodeName, DbError> {
    sqlx::query("insert into swarm_node_pins (user_id, node, pinned_at) values ($1, $2, $3) on conflict do nothing")
        .bind(user_id)
        .bind(node.as_str())
        .bind(at)
        .execute(&mut *db)
        .await?;
    Ok(get(&mut *db, user_id).await?.unwrap_or_else(|| node.clone()))
}

/// Pins a user to a node, replacing their pin; returns the node they were on.
pub async fn set(
    db: &mut sqlx::PgConnection,
    user_id: UserId,
    node: &NodeName,
    at: OffsetDateTime,
) -> Result<Option<NodeName>, DbError> {
    let before = get(&mut *db, user_id).await?;
    sqlx::query(
        "insert into swarm_node_pins (user_id, node, pinned_at) values ($1, $2, $3)
         on conflict (user_id) do update set node = $2, pinned_at = $3",
    )
    .bind(user_id)
    .bind(node.as_str())
    .bind(at)
    .execute(&mut *db)
    .await?;
    Ok(before)
}

fn parse(raw: String) -> Result<NodeName, DbError> {
    NodeName::parse(&raw).map_err(|e| DbError::Other(format!("swarm_node_pins.node {raw:?}: {e}")))
}
