//! API tokens: issuing them, recognising them (with a short cache that revocation empties at
//! once), listing and revoking them, and recording when they were last used.

use std::time::Duration;

use labhub_auth::{TokenHash, new_token, sha256, tokens::looks_like_token};
use labhub_core::{AccountState, Scope, Secret, TokenId, UserId, UserName};
use labhub_db::tokens;

use crate::access::Actor;
use crate::model::TokenInfo;
use crate::roles::Resource;
use crate::sessions::CACHE_TTL;
use crate::state::{CachedToken, TokensState};
use crate::words::format_duration;
use crate::{AuthVia, Hub, Principal, ServiceError};

impl Hub {
    /// API tokens.
    pub fn tokens(&self) -> Tokens<'_> {
        Tokens::new(self)
    }
}

/// API tokens.
#[derive(Clone, Copy)]
pub struct Tokens<'h> {
    hub: &'h Hub,
}

impl<'h> Tokens<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    fn state(&self) -> &'h TokensState {
        &self.hub.0.tokens
    }

    /// What [`Tokens::principal`] would answer (recording the token's use, as it does), when
    /// memory alone can say it: `None` when the database must be asked (not cached, stale, or
    /// expired).
    pub fn principal_cached(&self, token: &str) -> Option<Option<Principal>> {
        if !looks_like_token(token) {
            return Some(None);
        }
        let now = self.hub.now();
        let hit = self.state().cache.get(&sha256(token))?;
        if now - hit.fetched >= CACHE_TTL || hit.expires_at.is_some_and(|e| e <= now) {
            return None;
        }
        self.record_use(&hit.principal);
        Some(Some(hit.principal.clone()))
    }

    fn record_use(&self, principal: &Principal) {
        if let AuthVia::Token { token_id } = principal.via {
            self.state().used.insert(token_id);
        }
    }

    /// The user behind an API token, if it is valid and the user active.
    pub async fn principal(&self, token: &str) -> Result<Option<Principal>, ServiceError> {
        if let Some(known) = self.principal_cached(token) {
            return Ok(known);
        }
        let hash = sha256(token);
        let now = self.hub.now();
        let cache = &self.state().cache;
        let epoch = self.state().epoch.now();
        let Some((tok, user)) = tokens::by_token_hash(self.hub.db(), &hash).await? else {
            cache.remove(&hash);
            return Ok(None);
        };
        if tok.expires_at.is_some_and(|e| e <= now) || user.state != AccountState::Active {
            cache.remove(&hash);
            return Ok(None);
        }
        let via = AuthVia::Token { token_id: tok.token_id };
        let principal = self.hub.roles().principal(user, via, Some(&tok.scopes)).await?;
        self.record_use(&principal);
        let entry = CachedToken { principal: principal.clone(), expires_at: tok.expires_at, fetched: now };
        self.state().epoch.remember(epoch, cache, hash, entry);
        Ok(Some(principal))
    }

    /// Forgets every cached token, after a change of roles (their scopes are worked out again).
    pub(crate) fn forget_all(&self) {
        self.state().epoch.bump();
        self.state().cache.clear();
    }

    /// Forgets every cached token of a user, after a change to their account.
    pub(crate) fn forget_user(&self, user: UserId) {
        self.state().epoch.bump();
        self.state().cache.retain(|_, t| t.principal.user_id != user);
    }

    /// Issues an API token for `owner`; returns the token (shown once) and its record.
    pub async fn create(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        note: &str,
        expires_in: Option<Duration>,
        scopes: Option<&[String]>,
    ) -> Result<(Secret<String>, TokenInfo), ServiceError> {
        let user = self.hub.user_row(owner).await?;
        self.require(actor, Scope::Tokens, owner).await?;
        // No scopes: the owner's (`inherit`), as tokens always were; but a narrowed token
        // mints nothing beyond itself.
        let narrowed = match actor {
            Actor::User(p) if !p.full => Some(p.scopes.as_ref()),
            _ => None,
        };
        let scopes = match (scopes, narrowed) {
            (None, Some(mine)) => mine.names(),
            (None, None) => vec!["inherit".to_string()],
            (Some(asked), _) => self.hub.roles().check_token_scopes(&user, asked, narrowed).await?,
        };
        if user.state != AccountState::Active {
            return Err(ServiceError::Conflict(format!("{owner} is not an active account")));
        }
        let note = note.trim();
        if note.chars().count() > 200 {
            return Err(ServiceError::Invalid("the note must be at most 200 characters".into()));
        }
        if let (Some(max), want) = (self.hub.account_settings().max_token_lifetime, expires_in)
            && want.is_none_or(|w| w > max)
        {
            return Err(ServiceError::Invalid(format!(
                "tokens may live at most {}; choose a shorter expiry",
                format_duration(max)
            )));
        }
        if expires_in.is_some_and(|d| d.is_zero() || d > Duration::from_secs(10 * 365 * 86400)) {
            return Err(ServiceError::Invalid("the expiry must be between 1 second and 10 years".into()));
        }
        let now = self.hub.now();
        let expires_at = expires_in.map(|d| now + time::Duration::try_from(d).unwrap_or(time::Duration::DAY));
        let (token, hash) = new_token();
        let new = tokens::NewToken {
            token_hash: &hash,
            prefix: &token[..4],
            user_id: user.user_id,
            note,
            created_at: now,
            expires_at,
            scopes: &scopes,
        };
        let row = tokens::insert(self.hub.db(), &new).await?;
        if !actor.is(user.user_id) {
            let detail = serde_json::json!({ "token_id": row.token_id, "note": note, "scopes": scopes });
            self.hub.audit().record(self.hub.db(), actor, "token.create", owner.as_str(), detail).await?;
        }
        Ok((Secret::new(token), row.into()))
    }

    /// A user's tokens.
    pub async fn list(&self, actor: Actor<'_>, owner: &UserName) -> Result<Vec<TokenInfo>, ServiceError> {
        let user = self.hub.user_row(owner).await?;
        self.require(actor, Scope::ReadTokens, owner).await?;
        Ok(tokens::list_for_user(self.hub.db(), user.user_id).await?.into_iter().map(TokenInfo::from).collect())
    }

    /// One of a user's tokens.
    pub async fn get(&self, actor: Actor<'_>, owner: &UserName, token: TokenId) -> Result<TokenInfo, ServiceError> {
        let user = self.hub.user_row(owner).await?;
        self.require(actor, Scope::ReadTokens, owner).await?;
        tokens::get_for_user(self.hub.db(), user.user_id, token)
            .await?
            .map(TokenInfo::from)
            .ok_or_else(|| ServiceError::NotFound(format!("{owner} has no token {token}")))
    }

    /// Revokes one of a user's tokens; it stops working at once.
    pub async fn revoke(&self, actor: Actor<'_>, owner: &UserName, token: TokenId) -> Result<(), ServiceError> {
        let user = self.hub.user_row(owner).await?;
        self.require(actor, Scope::Tokens, owner).await?;
        let hash = tokens::delete_for_user(self.hub.db(), user.user_id, token)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{owner} has no token {token}")))?;
        self.state().epoch.bump();
        if let Ok(h) = <TokenHash>::try_from(hash.as_slice()) {
            self.state().cache.remove(&h);
        }
        if !actor.is(user.user_id) {
            let detail = serde_json::json!({ "token_id": token });
            self.hub.audit().record(self.hub.db(), actor, "token.revoke", owner.as_str(), detail).await?;
        }
        Ok(())
    }

    /// Who may see (`read:tokens`) or make and revoke (`tokens`) a user's tokens: the one
    /// scope check (the user themselves, admins, or what a role or token says).
    async fn require(&self, actor: Actor<'_>, scope: Scope, owner: &UserName) -> Result<(), ServiceError> {
        self.hub.roles().require_of(actor, &[scope], &Resource::User(owner.clone())).await
    }

    /// Writes the batched "last used" times of API tokens.
    pub(crate) async fn flush_use(&self) -> Result<(), ServiceError> {
        let used = &self.state().used;
        if used.is_empty() {
            return Ok(());
        }
        let ids: Vec<TokenId> = used.iter().map(|r| *r).collect();
        for id in &ids {
            used.remove(id);
        }
        if let Err(e) = tokens::touch_many(self.hub.db(), &ids, self.hub.now()).await {
            // Put them back so the next flush writes them.
            for id in ids {
                used.insert(id);
            }
            return Err(e.into());
        }
        Ok(())
    }
}
