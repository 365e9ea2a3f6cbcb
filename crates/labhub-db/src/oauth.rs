//! The OAuth provider's tables: `oauth_clients` (a running server of JupyterHub's contract, or
//! a registered service with a URL, whose secret is its API token), `oauth_codes` and
//! `oauth_tokens`, all by SHA-256.

use labhub_core::{ServerId, ServiceId, UserId};
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::DbError;

/// A server's registered client (never its secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Client {
    pub client_id: String,
    pub server_id: ServerId,
    pub redirect_uri: String,
    /// The scopes of its API token.
    pub scopes: Vec<String>,
}

/// Whose a client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A running server's.
    Server(ServerId),
    /// A registered service's, by its name.
    Service(String),
}

/// A client, a server's or a service's, with the hash of its secret (a service's is its API
/// token's), for the authorization and the token exchange.
#[derive(Debug, Clone)]
pub struct ClientWithSecret {
    pub client_id: String,
    pub holder: Holder,
    pub redirect_uri: String,
    pub secret_hash: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct ClientRow {
    client_id: String,
    server_id: Option<ServerId>,
    service: Option<String>,
    redirect_uri: String,
    secret_hash: Vec<u8>,
}

/// Registers a server as a client, replacing what its previous run registered (and, by the
/// cascade, that run's codes and tokens). `false`, with nothing changed, when another server
/// holds the client id (`a`'s server `b` and the account `a-b`'s default one are both
/// `jupyterhub-user-a-b`): never another server's client is taken over.
pub async fn register_server(
    db: &mut sqlx::PgConnection,
    client: &Client,
    secret_hash: &[u8; 32],
    now: OffsetDateTime,
) -> Result<bool, DbError> {
    let taken: bool =
        sqlx::query_scalar("select exists (select 1 from oauth_clients where client_id = $2 and server_id <> $1)")
            .bind(client.server_id)
            .bind(&client.client_id)
            .fetch_one(&mut *db)
            .await?;
    if taken {
        return Ok(false);
    }
    sqlx::query("delete from oauth_clients where server_id = $1").bind(client.server_id).execute(&mut *db).await?;
    sqlx::query(
        "insert into oauth_clients (client_id, server_id, secret_hash, redirect_uri, scopes, created_at)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&client.client_id)
    .bind(client.server_id)
    .bind(&secret_hash[..])
    .bind(&client.redirect_uri)
    .bind(&client.scopes)
    .bind(now)
    .execute(&mut *db)
    .await?;
    Ok(true)
}

/// Forgets a server's client, its API token and every code and token issued to it.
pub async fn remove_server(db: impl PgExecutor<'_>, server_id: ServerId) -> Result<(), DbError> {
    sqlx::query("delete from oauth_clients where server_id = $1").bind(server_id).execute(db).await?;
    Ok(())
}

/// A client by its id, with its secret's hash.
pub async fn client(db: impl PgExecutor<'_>, client_id: &str) -> Result<Option<ClientWithSecret>, DbError> {
    let row: Option<ClientRow> = sqlx::query_as(
        "select c.client_id, c.server_id, s.name as service, c.redirect_uri,
                coalesce(s.token_hash, c.secret_hash) as secret_hash
         from oauth_clients c left join services s on s.service_id = c.service_id where c.client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|r| {
        let holder = match (r.server_id, r.service) {
            (Some(server), _) => Holder::Server(server),
            (None, Some(service)) => Holder::Service(service),
            (None, None) => return None,
        };
        Some(ClientWithSecret {
            client_id: r.client_id,
            holder,
            redirect_uri: r.redirect_uri,
            secret_hash: r.secret_hash,
        })
    }))
}

/// The server client whose secret (its server's API token) has this hash.
pub async fn client_by_secret(db: impl PgExecutor<'_>, secret_hash: &[u8; 32]) -> Result<Option<Client>, DbError> {
    Ok(sqlx::query_as(
        "select client_id, server_id, redirect_uri, scopes from oauth_clients
         where secret_hash = $1 and server_id is not null",
    )
    .bind(&secret_hash[..])
    .fetch_optional(db)
    .await?)
}

/// Registers a service as the client `client_id` with this redirect URI, replacing its
/// previous registration (and, by the cascade, the codes and tokens issued to it). Its
/// `secret_hash` is `unused`, a random value: a service's secret is its API token. `false`,
/// with nothing changed, when another holder has the client id.
pub async fn register_service(
    db: &mut sqlx::PgConnection,
    service_id: ServiceId,
    client_id: &str,
    redirect_uri: &str,
    unused: &[u8; 32],
    now: OffsetDateTime,
) -> Result<bool, DbError> {
    let taken: bool = sqlx::query_scalar(
        "select exists (select 1 from oauth_clients where client_id = $2 and service_id is distinct from $1)",
    )
    .bind(service_id)
    .bind(client_id)
    .fetch_one(&mut *db)
    .await?;
    if taken {
        return Ok(false);
    }
    remove_service(&mut *db, service_id).await?;
    sqlx::query(
        "insert into oauth_clients (client_id, service_id, secret_hash, redirect_uri, scopes, created_at)
         values ($1, $2, $3, $4, '{}', $5)",
    )
    .bind(client_id)
    .bind(service_id)
    .bind(&unused[..])
    .bind(redirect_uri)
    .bind(now)
    .execute(&mut *db)
    .await?;
    Ok(true)
}

/// Forgets a service's client and every code and token issued to it.
pub async fn remove_service(db: impl PgExecutor<'_>, service_id: ServiceId) -> Result<(), DbError> {
    sqlx::query("delete from oauth_clients where service_id = $1").bind(service_id).execute(db).await?;
    Ok(())
}

/// A code to store.
#[derive(Debug)]
pub struct NewCode<'a> {
    pub code_hash: &'a [u8; 32],
    pub client_id: &'a str,
    pub user_id: UserId,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Stores a code.
pub async fn insert_code(db: impl PgExecutor<'_>, c: &NewCode<'_>) -> Result<(), DbError> {
    sqlx::query(
        "insert into oauth_codes (code_hash, client_id, user_id, redirect_uri, scopes, created_at, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&c.code_hash[..])
    .bind(c.client_id)
    .bind(c.user_id)
    .bind(c.redirect_uri)
    .bind(c.scopes)
    .bind(c.created_at)
    .bind(c.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// A code as it was stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Code {
    pub client_id: String,
    pub user_id: UserId,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub expires_at: OffsetDateTime,
}

/// Takes a code: deletes it and returns what it was, so it serves one exchange at most
/// (whatever the exchange then decides).
pub async fn take_code(db: impl PgExecutor<'_>, code_hash: &[u8; 32]) -> Result<Option<Code>, DbError> {
    Ok(sqlx::query_as(
        "delete from oauth_codes where code_hash = $1 returning client_id, user_id, redirect_uri, scopes, expires_at",
    )
    .bind(&code_hash[..])
    .fetch_optional(db)
    .await?)
}

/// Stores an access token.
pub async fn insert_token(
    db: impl PgExecutor<'_>,
    token_hash: &[u8; 32],
    client_id: &str,
    user_id: UserId,
    scopes: &[String],
    now: OffsetDateTime,
) -> Result<(), DbError> {
    sqlx::query(
        "insert into oauth_tokens (token_hash, client_id, user_id, scopes, created_at) values ($1, $2, $3, $4, $5)",
    )
    .bind(&token_hash[..])
    .bind(client_id)
    .bind(user_id)
    .bind(scopes)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// An access token as it was stored, with its client's holder: a server's id, or a
/// service's name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Token {
    pub client_id: String,
    pub server_id: Option<ServerId>,
    pub service: Option<String>,
    pub user_id: UserId,
    pub scopes: Vec<String>,
}

/// The access token with this hash.
pub async fn token(db: impl PgExecutor<'_>, token_hash: &[u8; 32]) -> Result<Option<Token>, DbError> {
    Ok(sqlx::query_as(
        "select t.client_id, c.server_id, s.name as service, t.user_id, t.scopes
         from oauth_tokens t join oauth_clients c on c.client_id = t.client_id
         left join services s on s.service_id = c.service_id where t.token_hash = $1",
    )
    .bind(&token_hash[..])
    .fetch_optional(db)
    .await?)
}
