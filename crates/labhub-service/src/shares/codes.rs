//! Share codes: a link the owner hands out; each signed-in user who accepts it before it
//! expires gets a share with its scopes. Only the code's SHA-256 is stored and looked up (the
//! code never meets a comparison an attacker could time); the code is shown once.

use labhub_core::{Secret, ServerName, ShareCodeId, UserName};
use labhub_db::shares::{self, CodeSelector, Grantee};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::{Authority, OwnerServers, ShareView, Shares, filtered, no_server, owner_and_server, view};
use crate::access::Actor;
use crate::model::server_label;
use crate::{Principal, ServiceError};

/// A code lives a day unless asked otherwise, as in JupyterHub.
const DEFAULT_LIFETIME: u64 = 86_400;
/// At least a minute, at most a year.
const LIFETIMES: std::ops::RangeInclusive<u64> = 60..=525_600 * 60;

/// A share code, without the code.
#[derive(Debug, Clone)]
pub struct ShareCodeView {
    pub id: ShareCodeId,
    pub owner: UserName,
    /// `None` for the default server.
    pub server: Option<ServerName>,
    pub ready: bool,
    /// JupyterHub's scope names, without their filter.
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub exchange_count: i64,
    pub last_exchanged_at: Option<OffsetDateTime>,
}

impl ShareCodeView {
    /// The scopes as JupyterHub shows them, filtered to the server.
    pub fn filtered_scopes(&self) -> Vec<String> {
        filtered(&self.scopes, &self.owner, self.server.as_ref())
    }

    /// The server's address under the hub.
    pub fn url(&self) -> String {
        crate::model::route_prefix(&self.owner, self.server.as_ref())
    }
}

/// A code just made: the code itself (shown this once) and its record.
#[derive(Debug)]
pub struct NewShareCode {
    pub code: Secret<String>,
    pub view: ShareCodeView,
}

/// Which of a server's codes to revoke.
#[derive(Debug, Clone, Copy)]
pub enum CodeChoice<'a> {
    All,
    /// By JupyterHub's id, `sc_<number>`.
    Id(&'a str),
    /// By the code itself.
    Code(&'a str),
}

fn code_view(row: shares::ShareCode) -> Result<ShareCodeView, ServiceError> {
    let (owner, server) = owner_and_server(row.owner_name, row.server_name)?;
    Ok(ShareCodeView {
        id: row.share_code_id,
        owner,
        server,
        ready: row.server_state == labhub_core::ServerState::Running,
        scopes: row.scopes,
        created_at: row.created_at,
        expires_at: row.expires_at,
        exchange_count: i64::from(row.exchange_count),
        last_exchanged_at: row.last_exchanged_at,
    })
}

fn invalid_code() -> ServiceError {
    ServiceError::NotFound("This share code is not valid or has expired.".into())
}

impl Shares<'_> {
    /// Makes a code for `owner`'s server (its owner and admins) that grants the scopes asked
    /// for (`access:servers` when none) to whoever accepts it within `expires_in` seconds.
    pub async fn create_code(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        scopes: Option<&[String]>,
        expires_in: Option<u64>,
    ) -> Result<NewShareCode, ServiceError> {
        let lifetime = expires_in.unwrap_or(DEFAULT_LIFETIME);
        if !LIFETIMES.contains(&lifetime) {
            return Err(ServiceError::Invalid(format!(
                "expires_in must be between {} and {} seconds (a year)",
                LIFETIMES.start(),
                LIFETIMES.end()
            )));
        }
        let owner_row = self.hub.user_row(owner).await?;
        let authority = self.authority(actor, &owner_row).await?;
        if !matches!(authority, Authority::Full { .. }) {
            return Err(ServiceError::Forbidden("only the owner or an admin makes share codes".into()));
        }
        let scopes = self.scopes(scopes, owner, server, &authority)?;
        let (code, hash) = labhub_auth::new_token();
        let now = self.hub.now();
        let expires_at = now + Duration::seconds(i64::try_from(lifetime).unwrap_or(i64::MAX));
        let mut tx = self.hub.begin().await?;
        let server_id = self.server_id(&mut tx, &owner_row, server).await?;
        let row = shares::insert_code(&mut tx, server_id, &hash, &scopes, now, expires_at).await?;
        let detail = json!({ "code": format!("sc_{}", row.share_code_id), "scopes": scopes, "expires_at": expires_at.unix_timestamp() });
        self.hub.audit().record(&mut *tx, actor, "share_code.create", &server_label(owner, server), detail).await?;
        tx.commit().await?;
        Ok(NewShareCode { code: Secret::new(code), view: code_view(row)? })
    }

    /// One page of the codes of `owner`'s servers that have not expired (the owner and admins).
    pub async fn codes(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        which: OwnerServers<'_>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ShareCodeView>, i64), ServiceError> {
        let owner_row = self.hub.user_row(owner).await?;
        if !matches!(self.authority(actor, &owner_row).await?, Authority::Full { .. }) {
            return Err(ServiceError::Forbidden("only the owner or an admin sees share codes".into()));
        }
        let server = match which {
            OwnerServers::All => None,
            OwnerServers::One(server) => {
                match labhub_db::servers::get(self.hub.db(), owner_row.user_id, server.map_or("", ServerName::as_str))
                    .await?
                {
                    Some(row) => Some(row.server_id),
                    None if server.is_none() => return Ok((Vec::new(), 0)),
                    None => return Err(no_server(owner, server)),
                }
            }
        };
        let (rows, total) =
            shares::list_codes(self.hub.db(), owner_row.user_id, server, self.hub.now(), offset, limit).await?;
        Ok((rows.into_iter().map(code_view).collect::<Result<_, _>>()?, total))
    }

    /// Revokes codes of `owner`'s server: one (by id or by the code) or all (the owner and
    /// admins). Naming one that does not exist is `NotFound`.
    pub async fn revoke_codes(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        which: CodeChoice<'_>,
    ) -> Result<(), ServiceError> {
        let owner_row = self.hub.user_row(owner).await?;
        if !matches!(self.authority(actor, &owner_row).await?, Authority::Full { .. }) {
            return Err(ServiceError::Forbidden("only the owner or an admin revokes share codes".into()));
        }
        let hash;
        let selector = match which {
            CodeChoice::All => CodeSelector::All,
            CodeChoice::Id(raw) => {
                let id = raw
                    .strip_prefix("sc_")
                    .and_then(|n| n.parse::<i64>().ok())
                    .ok_or_else(|| ServiceError::NotFound(format!("No code found matching id={raw}")))?;
                CodeSelector::Id(ShareCodeId::new(id))
            }
            CodeChoice::Code(code) => {
                hash = labhub_auth::sha256(code);
                CodeSelector::Hash(&hash)
            }
        };
        let mut tx = self.hub.begin().await?;
        let row = labhub_db::servers::get(&mut *tx, owner_row.user_id, server.map_or("", ServerName::as_str)).await?;
        let removed = match row {
            Some(row) => shares::delete_codes(&mut *tx, row.server_id, selector).await?,
            None if server.is_none() => 0,
            None => return Err(no_server(owner, server)),
        };
        match which {
            CodeChoice::Id(raw) if removed == 0 => {
                return Err(ServiceError::NotFound(format!("No code found matching id={raw}")));
            }
            CodeChoice::Code(_) if removed == 0 => return Err(ServiceError::NotFound("No matching code found".into())),
            _ => {}
        }
        if removed > 0 {
            let what = match which {
                CodeChoice::All => "all".to_string(),
                CodeChoice::Id(id) => id.to_string(),
                CodeChoice::Code(_) => "by code".to_string(),
            };
            let detail = json!({ "codes": what, "removed": removed });
            self.hub.audit().record(&mut *tx, actor, "share_code.revoke", &server_label(owner, server), detail).await?;
        }
        tx.commit().await
    }

    /// What a code would grant, if it is valid (for the page that asks the visitor to confirm).
    pub async fn peek_code(&self, code: &str) -> Result<ShareCodeView, ServiceError> {
        let row = shares::code_by_hash(self.hub.db(), &labhub_auth::sha256(code)).await?.ok_or_else(invalid_code)?;
        if row.expires_at <= self.hub.now() {
            return Err(invalid_code());
        }
        code_view(row)
    }

    /// Accepts a code for the signed-in `visitor`: they get a share with its scopes (added to
    /// one they have). An expired code is removed and refused.
    pub async fn exchange(&self, visitor: &Principal, code: &str) -> Result<ShareView, ServiceError> {
        let now = self.hub.now();
        let mut tx = self.hub.begin().await?;
        let row =
            shares::code_by_hash_for_update(&mut *tx, &labhub_auth::sha256(code)).await?.ok_or_else(invalid_code)?;
        if row.expires_at <= now {
            shares::delete_code(&mut *tx, row.share_code_id).await?;
            tx.commit().await?;
            return Err(invalid_code());
        }
        if row.owner_id == visitor.user_id {
            return Err(ServiceError::Invalid("This is your own server: a share code is for others.".into()));
        }
        let share = shares::grant(&mut tx, row.server_id, Grantee::User(visitor.user_id), &row.scopes, now).await?;
        shares::record_exchange(&mut *tx, row.share_code_id, now).await?;
        let target = format!("{}/{}", row.owner_name, row.server_name);
        let detail =
            json!({ "code": format!("sc_{}", row.share_code_id), "user": visitor.name.as_str(), "scopes": row.scopes });
        self.hub.audit().record(&mut *tx, Actor::User(visitor), "share_code.exchange", &target, detail).await?;
        tx.commit().await?;
        self.changed().await;
        view(share)
    }
}
