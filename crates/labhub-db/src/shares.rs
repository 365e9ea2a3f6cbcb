//! The `shares` and `share_codes` tables: who besides its owner may reach a server.

use labhub_core::{GroupId, ServerId, ServerState, ShareCodeId, UserId};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// To whom a share grants: one user, or every member of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantee {
    User(UserId),
    Group(GroupId),
}

impl Grantee {
    fn ids(self) -> (Option<UserId>, Option<GroupId>) {
        match self {
            Grantee::User(u) => (Some(u), None),
            Grantee::Group(g) => (None, Some(g)),
        }
    }
}

/// A share with the names to show it by.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Share {
    pub share_id: i64,
    pub server_id: ServerId,
    pub owner_id: UserId,
    pub owner_name: String,
    /// `""` for the default server.
    pub server_name: String,
    #[sqlx(try_from = "String")]
    pub server_state: ServerState,
    pub user_id: Option<UserId>,
    pub user_name: Option<String>,
    pub group_id: Option<GroupId>,
    pub group_name: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
}

const SHARE_SELECT: &str = "select sh.share_id, sh.server_id, s.user_id as owner_id, o.name as owner_name, \
     s.name as server_name, s.state as server_state, sh.user_id, u.name as user_name, sh.group_id, \
     g.name as group_name, sh.scopes, sh.created_at \
     from shares sh join servers s on s.server_id = sh.server_id join users o on o.user_id = s.user_id \
     left join users u on u.user_id = sh.user_id left join groups g on g.group_id = sh.group_id";

/// Grants `scopes` on a server, adding them to an existing share of the same grantee.
pub async fn grant(
    db: &mut sqlx::PgConnection,
    server_id: ServerId,
    to: Grantee,
    scopes: &[String],
    now: OffsetDateTime,
) -> Result<Share, DbError> {
    let (user_id, group_id) = to.ids();
    let conflict = match to {
        Grantee::User(_) => "(server_id, user_id) where user_id is not null",
        Grantee::Group(_) => "(server_id, group_id) where group_id is not null",
    };
    let sql = format!(
        "insert into shares (server_id, user_id, group_id, scopes, created_at) values ($1, $2, $3, $4, $5) \
         on conflict {conflict} do update set scopes = \
         (select array_agg(distinct x order by x) from unnest(shares.scopes || excluded.scopes) x) \
         returning share_id"
    );
    let share_id: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(server_id)
        .bind(user_id)
        .bind(group_id)
        .bind(scopes)
        .bind(now)
        .fetch_one(&mut *db)
        .await?;
    by_id(&mut *db, share_id).await?.ok_or_else(|| DbError::Other("a share vanished while granted".into()))
}

/// One share by id.
pub async fn by_id(db: impl PgExecutor<'_>, share_id: i64) -> Result<Option<Share>, DbError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("{SHARE_SELECT} where sh.share_id = $1")))
        .bind(share_id)
        .fetch_optional(db)
        .await?)
}

/// The share of a server to one grantee, locked until the transaction ends.
pub async fn find_for_update(
    db: impl PgExecutor<'_>,
    server_id: ServerId,
    to: Grantee,
) -> Result<Option<Share>, DbError> {
    let (user_id, group_id) = to.ids();
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SHARE_SELECT} where sh.server_id = $1 and sh.user_id is not distinct from $2 \
         and sh.group_id is not distinct from $3 for update of sh"
    )))
    .bind(server_id)
    .bind(user_id)
    .bind(group_id)
    .fetch_optional(db)
    .await?)
}

/// The share of a server to one grantee.
pub async fn find(db: impl PgExecutor<'_>, server_id: ServerId, to: Grantee) -> Result<Option<Share>, DbError> {
    let (user_id, group_id) = to.ids();
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SHARE_SELECT} where sh.server_id = $1 and sh.user_id is not distinct from $2 \
         and sh.group_id is not distinct from $3"
    )))
    .bind(server_id)
    .bind(user_id)
    .bind(group_id)
    .fetch_optional(db)
    .await?)
}

/// Replaces a share's scopes (never with none: the caller deletes it instead).
pub async fn set_scopes(db: impl PgExecutor<'_>, share_id: i64, scopes: &[String]) -> Result<(), DbError> {
    sqlx::query("update shares set scopes = $2 where share_id = $1").bind(share_id).bind(scopes).execute(db).await?;
    Ok(())
}

/// Removes one share.
pub async fn delete(db: impl PgExecutor<'_>, share_id: i64) -> Result<bool, DbError> {
    let r = sqlx::query("delete from shares where share_id = $1").bind(share_id).execute(db).await?;
    Ok(r.rows_affected() > 0)
}

/// Removes every share of a server; how many there were.
pub async fn delete_for_server(db: impl PgExecutor<'_>, server_id: ServerId) -> Result<u64, DbError> {
    let r = sqlx::query("delete from shares where server_id = $1").bind(server_id).execute(db).await?;
    Ok(r.rows_affected())
}

/// Which shares a list is of.
#[derive(Debug, Clone, Copy)]
pub enum ShareFilter {
    /// One owner's, of one server or all of theirs.
    Owner { owner: UserId, server: Option<ServerId> },
    /// Those reaching a user, directly or through a group they are in.
    Reaching(UserId),
    /// Those granted to one group.
    Group(GroupId),
}

/// The condition of a filter and its parameters (`$1`, `$2`, …).
fn share_condition(filter: ShareFilter) -> (&'static str, Vec<i64>) {
    match filter {
        ShareFilter::Owner { owner, server: None } => ("s.user_id = $1", vec![owner.get()]),
        ShareFilter::Owner { owner, server: Some(server) } => {
            ("s.user_id = $1 and sh.server_id = $2", vec![owner.get(), server.get()])
        }
        ShareFilter::Reaching(user) => (
            "(sh.user_id = $1 or sh.group_id in (select group_id from group_members where user_id = $1))",
            vec![user.get()],
        ),
        ShareFilter::Group(group) => ("sh.group_id = $1", vec![group.get()]),
    }
}

/// One page of shares (oldest first) and how many match in all.
pub async fn list(
    db: impl PgExecutor<'_> + Copy,
    filter: ShareFilter,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Share>, i64), DbError> {
    let (cond, params) = share_condition(filter);
    let count_sql = format!("select count(*) from shares sh join servers s on s.server_id = sh.server_id where {cond}");
    let mut count = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql));
    for p in &params {
        count = count.bind(*p);
    }
    let total: i64 = count.fetch_one(db).await?;
    let n = params.len();
    let page_sql = format!("{SHARE_SELECT} where {cond} order by sh.share_id offset ${} limit ${}", n + 1, n + 2);
    let mut page = sqlx::query_as(sqlx::AssertSqlSafe(page_sql));
    for p in &params {
        page = page.bind(*p);
    }
    let rows = page.bind(offset).bind(limit).fetch_all(db).await?;
    Ok((rows, total))
}

/// One visitor's scopes on one server, as the in-memory index holds them: every share
/// resolved to the users it reaches (a group's to its members).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reach {
    pub owner_id: UserId,
    pub server_name: String,
    pub visitor_id: UserId,
    pub scopes: Vec<String>,
}

/// Every share, resolved to the users it reaches.
pub async fn all_reach(db: impl PgExecutor<'_>) -> Result<Vec<Reach>, DbError> {
    Ok(sqlx::query_as(
        "select s.user_id as owner_id, s.name as server_name, coalesce(sh.user_id, gm.user_id) as visitor_id, \
         sh.scopes from shares sh join servers s on s.server_id = sh.server_id \
         left join group_members gm on gm.group_id = sh.group_id \
         where coalesce(sh.user_id, gm.user_id) is not null",
    )
    .fetch_all(db)
    .await?)
}

/// A share code (never the code itself), with the names to show it by.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShareCode {
    pub share_code_id: ShareCodeId,
    pub server_id: ServerId,
    pub owner_id: UserId,
    pub owner_name: String,
    pub server_name: String,
    #[sqlx(try_from = "String")]
    pub server_state: ServerState,
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub exchange_count: i32,
    pub last_exchanged_at: Option<OffsetDateTime>,
}

const CODE_SELECT: &str = "select c.share_code_id, c.server_id, s.user_id as owner_id, o.name as owner_name, \
     s.name as server_name, s.state as server_state, c.scopes, c.created_at, c.expires_at, c.exchange_count, \
     c.last_exchanged_at from share_codes c join servers s on s.server_id = c.server_id \
     join users o on o.user_id = s.user_id";

/// Stores a new code by its hash.
pub async fn insert_code(
    db: &mut sqlx::PgConnection,
    server_id: ServerId,
    code_hash: &[u8; 32],
    scopes: &[String],
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<ShareCode, DbError> {
    let id: ShareCodeId = sqlx::query_scalar(
        "insert into share_codes (server_id, code_hash, scopes, created_at, expires_at) \
         values ($1, $2, $3, $4, $5) returning share_code_id",
    )
    .bind(server_id)
    .bind(&code_hash[..])
    .bind(scopes)
    .bind(now)
    .bind(expires_at)
    .fetch_one(&mut *db)
    .await?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{CODE_SELECT} where c.share_code_id = $1")))
        .bind(id)
        .fetch_optional(&mut *db)
        .await?
        .ok_or_else(|| DbError::Other("a share code vanished while made".into()))
}

/// One page of an owner's codes that have not expired (of one server, or all), and the total.
pub async fn list_codes(
    db: impl PgExecutor<'_> + Copy,
    owner: UserId,
    server: Option<ServerId>,
    now: OffsetDateTime,
    offset: i64,
    limit: i64,
) -> Result<(Vec<ShareCode>, i64), DbError> {
    let cond = "s.user_id = $1 and ($2::bigint is null or c.server_id = $2) and c.expires_at > $3";
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from share_codes c join servers s on s.server_id = c.server_id where {cond}"
    )))
    .bind(owner)
    .bind(server)
    .bind(now)
    .fetch_one(db)
    .await?;
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CODE_SELECT} where {cond} order by c.share_code_id offset $4 limit $5"
    )))
    .bind(owner)
    .bind(server)
    .bind(now)
    .bind(offset)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok((rows, total))
}

/// The code with this hash, locked until the transaction ends (expired or not: the caller decides).
pub async fn code_by_hash_for_update(
    db: impl PgExecutor<'_>,
    code_hash: &[u8; 32],
) -> Result<Option<ShareCode>, DbError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("{CODE_SELECT} where c.code_hash = $1 for update of c")))
        .bind(&code_hash[..])
        .fetch_optional(db)
        .await?)
}

/// The code with this hash, not locked.
pub async fn code_by_hash(db: impl PgExecutor<'_>, code_hash: &[u8; 32]) -> Result<Option<ShareCode>, DbError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("{CODE_SELECT} where c.code_hash = $1")))
        .bind(&code_hash[..])
        .fetch_optional(db)
        .await?)
}

/// Counts one exchange of a code.
pub async fn record_exchange(db: impl PgExecutor<'_>, id: ShareCodeId, now: OffsetDateTime) -> Result<(), DbError> {
    sqlx::query(
        "update share_codes set exchange_count = exchange_count + 1, last_exchanged_at = $2 where share_code_id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Which of a server's codes to remove.
#[derive(Debug, Clone, Copy)]
pub enum CodeSelector<'a> {
    All,
    Id(ShareCodeId),
    Hash(&'a [u8; 32]),
}

/// Removes a server's codes (one by id or hash, or all); how many went.
pub async fn delete_codes(
    db: impl PgExecutor<'_>,
    server_id: ServerId,
    which: CodeSelector<'_>,
) -> Result<u64, DbError> {
    let q = match which {
        CodeSelector::All => sqlx::query("delete from share_codes where server_id = $1").bind(server_id),
        CodeSelector::Id(id) => {
            sqlx::query("delete from share_codes where server_id = $1 and share_code_id = $2").bind(server_id).bind(id)
        }
        CodeSelector::Hash(h) => {
            sqlx::query("delete from share_codes where server_id = $1 and code_hash = $2").bind(server_id).bind(&h[..])
        }
    };
    Ok(q.execute(db).await?.rows_affected())
}

/// Removes one expired code (found at an exchange).
pub async fn delete_code(db: impl PgExecutor<'_>, id: ShareCodeId) -> Result<(), DbError> {
    sqlx::query("delete from share_codes where share_code_id = $1").bind(id).execute(db).await?;
    Ok(())
}

/// The people who share a group with a user (not the user), by name: whom they may share with.
pub async fn co_members(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<(UserId, String)>, DbError> {
    Ok(sqlx::query_as(
        "select distinct u.user_id, u.name from group_members mine \
         join group_members theirs on theirs.group_id = mine.group_id \
         join users u on u.user_id = theirs.user_id \
         where mine.user_id = $1 and theirs.user_id <> $1 order by u.name",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?)
}

/// The channel on which a trigger announces every change to shares and group memberships.
const CHANGED: &str = "labhub_shares";

/// A connection listening for changes to shares and group memberships.
pub async fn listen(pool: &sqlx::PgPool) -> Result<sqlx::postgres::PgListener, DbError> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    // Role changes are heard here too: both invalidate what the hub decided from memory.
    listener.listen_all([CHANGED, crate::roles::CHANGED]).await?;
    Ok(listener)
}

/// Waits for the next announced change: `true`, or `false` when the connection was lost (it is
/// reopened at the next call; what changed meanwhile was not announced to this listener).
pub async fn next_change(listener: &mut sqlx::postgres::PgListener) -> Result<bool, DbError> {
    Ok(listener.try_recv().await?.is_some())
}
