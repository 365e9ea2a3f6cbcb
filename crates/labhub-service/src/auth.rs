//! Sessions and API tokens: issuing them, recognising them, ending them.
//!
//! Recognising a credential is on every request's path, so results are cached in memory
//! for a short time. Every change that could make a cached answer wrong (logout, revocation,
//! a disabled or deleted user, a change of admin rights) empties the affected entries at once.

use std::time::Duration;

use dashmap::{DashMap, DashSet};
use labhub_auth::{TokenHash, new_token, sha256, tokens::looks_like_token};
use labhub_core::{AccountState, Secret, UserName};
use labhub_db::{sessions, tokens, users};
use time::OffsetDateTime;

use crate::audit::Actor;
use crate::{AuthVia, Hub, Principal, ServiceError};

/// How long a cached answer is trusted before the database is asked again.
const CACHE_TTL: time::Duration = time::Duration::seconds(30);
/// A session's last-seen time is written at most this often.
const TOUCH_EVERY: time::Duration = time::Duration::seconds(60);
/// Entries kept at most; past it the cache is cleared (it refills from the database).
const CACHE_MAX: usize = 50_000;

#[derive(Clone)]
struct CachedSession {
    session_id: i64,
    principal: Principal,
    expires_at: OffsetDateTime,
    last_seen: OffsetDateTime,
    fetched: OffsetDateTime,
}

#[derive(Clone)]
struct CachedToken {
    principal: Principal,
    expires_at: Option<OffsetDateTime>,
    fetched: OffsetDateTime,
}

/// How long a code for a server's own host stays valid.
const HOST_CODE_LIFETIME: time::Duration = time::Duration::seconds(60);

/// A code a user server's host may exchange once for a session of its own.
struct HostCode {
    session_id: i64,
    host: String,
    expires_at: OffsetDateTime,
}

/// The in-memory cache of recognised credentials.
#[derive(Default)]
pub(crate) struct AuthCache {
    sessions: DashMap<TokenHash, CachedSession>,
    /// Codes handed out for users' server hosts, by their hash.
    host_codes: DashMap<TokenHash, HostCode>,
    tokens: DashMap<TokenHash, CachedToken>,
    /// Tokens used since the last flush of `last_used_at`.
    used_tokens: DashSet<i64>,
}

impl AuthCache {
    fn forget_user(&self, user_id: i64) {
        self.sessions.retain(|_, s| s.principal.user_id != user_id);
        self.tokens.retain(|_, t| t.principal.user_id != user_id);
    }
}

/// A token as shown to its owner (never the token itself).
pub type ApiToken = tokens::ApiToken;

impl Hub {
    /// Starts a browser session for a user who just proved who they are; returns the cookie value.
    pub async fn start_session(
        &self,
        user: &users::User,
        user_agent: &str,
        client_addr: &str,
    ) -> Result<Secret<String>, ServiceError> {
        let (token, hash) = new_token();
        let now = self.now();
        let absolute = time::Duration::try_from(self.0.accounts.session_absolute).unwrap_or(time::Duration::DAY);
        let ua: String = user_agent.chars().take(256).collect();
        sessions::insert(
            self.db(),
            &sessions::NewSession {
                token_hash: &hash,
                user_id: user.user_id,
                now,
                expires_at: now + absolute,
                user_agent: &ua,
                client_addr,
            },
        )
        .await?;
        users::touch_activity(self.db(), user.user_id, now).await?;
        Ok(Secret::new(token))
    }

    fn idle_limit(&self) -> time::Duration {
        time::Duration::try_from(self.0.accounts.session_idle).unwrap_or(time::Duration::HOUR)
    }

    /// What [`Hub::session_principal`] would answer, when memory alone can say it: `None`
    /// when the database must be asked (not cached, stale, ended, or its last-seen time due).
    pub fn session_principal_cached(&self, token: &str) -> Option<Option<Principal>> {
        if !looks_like_token(token) {
            return Some(None);
        }
        let now = self.now();
        let hit = self.0.auth_cache.sessions.get(&sha256(token))?;
        let since_seen = now - hit.last_seen;
        let live = now - hit.fetched < CACHE_TTL
            && hit.expires_at > now
            && since_seen < TOUCH_EVERY
            && since_seen <= self.idle_limit();
        live.then(|| Some(hit.principal.clone()))
    }

    /// The user behind a session cookie, if the session is live and the user active.
    pub async fn session_principal(&self, token: &str) -> Result<Option<Principal>, ServiceError> {
        if let Some(known) = self.session_principal_cached(token) {
            return Ok(known);
        }
        let hash = sha256(token);
        let now = self.now();
        let cache = &self.0.auth_cache;
        if let Some(mut hit) = cache.sessions.get_mut(&hash)
            && now - hit.fetched < CACHE_TTL
        {
            if hit.expires_at <= now || now - hit.last_seen > self.idle_limit() {
                drop(hit);
                let ended = sessions::delete_by_token_hash(self.db(), &hash).await?;
                cache.sessions.remove(&hash);
                self.forget_sessions(ended);
                return Ok(None);
            }
            if now - hit.last_seen >= TOUCH_EVERY {
                hit.last_seen = now;
                let session_id = hit.session_id;
                drop(hit);
                sessions::touch(self.db(), session_id, now).await?;
                return Ok(cache.sessions.get(&hash).map(|h| h.principal.clone()));
            }
            return Ok(Some(hit.principal.clone()));
        }
        let Some((session, user)) = sessions::by_token_hash(self.db(), &hash).await? else {
            cache.sessions.remove(&hash);
            return Ok(None);
        };
        if session.expires_at <= now || now - session.last_seen_at > self.idle_limit() {
            let ended = sessions::delete_by_token_hash(self.db(), &hash).await?;
            cache.sessions.remove(&hash);
            self.forget_sessions(ended);
            return Ok(None);
        }
        if user.state != AccountState::Active {
            return Ok(None);
        }
        let mut last_seen = session.last_seen_at;
        if now - last_seen >= TOUCH_EVERY {
            sessions::touch(self.db(), session.session_id, now).await?;
            last_seen = now;
        }
        let principal = Principal {
            user_id: user.user_id,
            name: user.name,
            admin: user.admin,
            via: AuthVia::Session { session_id: session.session_id },
        };
        if cache.sessions.len() >= CACHE_MAX {
            cache.sessions.clear();
        }
        cache.sessions.insert(
            hash,
            CachedSession {
                session_id: session.session_id,
                principal: principal.clone(),
                expires_at: session.expires_at,
                last_seen,
                fetched: now,
            },
        );
        Ok(Some(principal))
    }

    /// Ends the session behind a cookie (logout), with the sessions it handed to users' server
    /// hosts. Unknown cookies are ignored.
    pub async fn end_session(&self, token: &str) -> Result<(), ServiceError> {
        let hash = sha256(token);
        self.0.auth_cache.sessions.remove(&hash);
        let ended = sessions::delete_by_token_hash(self.db(), &hash).await?;
        self.forget_sessions(ended);
        Ok(())
    }

    /// Forgets cached sessions by their token hashes.
    fn forget_sessions(&self, hashes: Vec<Vec<u8>>) {
        for h in hashes {
            if let Ok(h) = <TokenHash>::try_from(h.as_slice()) {
                self.0.auth_cache.sessions.remove(&h);
            }
        }
    }

    /// A one-time code (valid for a minute) that a user server's own host exchanges, with
    /// [`Hub::redeem_host_code`], for a session of its own tied to `principal`'s hub session.
    /// Only browser sessions can hand out codes.
    pub fn host_code(&self, principal: &Principal, host: &str) -> Result<String, ServiceError> {
        let AuthVia::Session { session_id } = principal.via else {
            return Err(ServiceError::Forbidden("only a signed-in browser can open a server on its own host".into()));
        };
        let (code, hash) = new_token();
        let now = self.now();
        let codes = &self.0.auth_cache.host_codes;
        if codes.len() >= CACHE_MAX {
            codes.retain(|_, c| c.expires_at > now);
            if codes.len() >= CACHE_MAX {
                return Err(ServiceError::TooMany {
                    message: "Too many servers are being opened right now. Try again in a minute.".into(),
                    retry_after: std::time::Duration::from_secs(60),
                });
            }
        }
        codes.insert(hash, HostCode { session_id, host: host.to_string(), expires_at: now + HOST_CODE_LIFETIME });
        Ok(code)
    }

    /// Exchanges a one-time code on the host it was issued for; returns the new session's cookie
    /// value. A code works once.
    pub async fn redeem_host_code(&self, code: &str, host: &str) -> Result<Secret<String>, ServiceError> {
        let refused = || {
            ServiceError::Unauthenticated("this sign-in link is unknown, used or expired; open the server again".into())
        };
        if !looks_like_token(code) {
            return Err(refused());
        }
        let (_, pending) = self.0.auth_cache.host_codes.remove(&sha256(code)).ok_or_else(refused)?;
        let now = self.now();
        if pending.expires_at <= now || pending.host != host {
            return Err(refused());
        }
        let (token, hash) = new_token();
        sessions::insert_child(self.db(), pending.session_id, &hash, now).await?.ok_or_else(refused)?;
        Ok(Secret::new(token))
    }

    /// Ends every session of a user ("log out everywhere", or an admin's action); returns how many.
    pub async fn end_all_sessions(&self, actor: Actor<'_>, name: &UserName) -> Result<u64, ServiceError> {
        let user = self.user_by_name(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        let n = sessions::delete_for_user(self.db(), user.user_id).await?;
        self.0.auth_cache.sessions.retain(|_, s| s.principal.user_id != user.user_id);
        if !matches!(actor, Actor::User(p) if p.user_id == user.user_id) {
            self.audit(self.db(), actor, "user.sessions_ended", name.as_str(), serde_json::json!({ "sessions": n }))
                .await?;
        }
        Ok(n)
    }

    /// Forgets every cached credential of a user, after a change to their account.
    pub(crate) fn forget_cached(&self, user_id: i64) {
        self.0.auth_cache.forget_user(user_id);
        self.views_changed();
    }

    /// What [`Hub::token_principal`] would answer (recording the token's use, as it does),
    /// when memory alone can say it: `None` when the database must be asked (not cached,
    /// stale, or expired).
    pub fn token_principal_cached(&self, token: &str) -> Option<Option<Principal>> {
        if !looks_like_token(token) {
            return Some(None);
        }
        let now = self.now();
        let cache = &self.0.auth_cache;
        let hit = cache.tokens.get(&sha256(token))?;
        if now - hit.fetched >= CACHE_TTL || hit.expires_at.is_some_and(|e| e <= now) {
            return None;
        }
        if let AuthVia::Token { token_id } = hit.principal.via {
            cache.used_tokens.insert(token_id);
        }
        Some(Some(hit.principal.clone()))
    }

    /// The user behind an API token, if it is valid and the user active.
    pub async fn token_principal(&self, token: &str) -> Result<Option<Principal>, ServiceError> {
        if let Some(known) = self.token_principal_cached(token) {
            return Ok(known);
        }
        let hash = sha256(token);
        let now = self.now();
        let cache = &self.0.auth_cache;
        if let Some(hit) = cache.tokens.get(&hash)
            && now - hit.fetched < CACHE_TTL
        {
            if hit.expires_at.is_some_and(|e| e <= now) {
                drop(hit);
                cache.tokens.remove(&hash);
                return Ok(None);
            }
            if let AuthVia::Token { token_id } = hit.principal.via {
                cache.used_tokens.insert(token_id);
            }
            return Ok(Some(hit.principal.clone()));
        }
        let Some((tok, user)) = tokens::by_token_hash(self.db(), &hash).await? else {
            cache.tokens.remove(&hash);
            return Ok(None);
        };
        if tok.expires_at.is_some_and(|e| e <= now) || user.state != AccountState::Active {
            cache.tokens.remove(&hash);
            return Ok(None);
        }
        let principal = Principal {
            user_id: user.user_id,
            name: user.name,
            admin: user.admin,
            via: AuthVia::Token { token_id: tok.token_id },
        };
        cache.used_tokens.insert(tok.token_id);
        if cache.tokens.len() >= CACHE_MAX {
            cache.tokens.clear();
        }
        cache
            .tokens
            .insert(hash, CachedToken { principal: principal.clone(), expires_at: tok.expires_at, fetched: now });
        Ok(Some(principal))
    }

    /// Issues an API token for `owner`; returns the token (shown once) and its record.
    pub async fn create_token(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        note: &str,
        expires_in: Option<Duration>,
    ) -> Result<(Secret<String>, ApiToken), ServiceError> {
        let user = self.user_by_name(owner).await?;
        actor.require_self_or_admin(user.user_id)?;
        if user.state != AccountState::Active {
            return Err(ServiceError::Conflict(format!("{owner} is not an active account")));
        }
        let note = note.trim();
        if note.chars().count() > 200 {
            return Err(ServiceError::Invalid("the note must be at most 200 characters".into()));
        }
        if let (Some(max), want) = (self.0.accounts.max_token_lifetime, expires_in)
            && want.is_none_or(|w| w > max)
        {
            return Err(ServiceError::Invalid(format!(
                "tokens may live at most {}; choose a shorter expiry",
                humanize(max)
            )));
        }
        if expires_in.is_some_and(|d| d.is_zero() || d > Duration::from_secs(10 * 365 * 86400)) {
            return Err(ServiceError::Invalid("the expiry must be between 1 second and 10 years".into()));
        }
        let now = self.now();
        let expires_at = expires_in.map(|d| now + time::Duration::try_from(d).unwrap_or(time::Duration::DAY));
        let (token, hash) = new_token();
        let row = tokens::insert(
            self.db(),
            &tokens::NewToken {
                token_hash: &hash,
                prefix: &token[..4],
                user_id: user.user_id,
                note,
                created_at: now,
                expires_at,
            },
        )
        .await?;
        if !matches!(actor, Actor::User(p) if p.user_id == user.user_id) {
            self.audit(
                self.db(),
                actor,
                "token.create",
                owner.as_str(),
                serde_json::json!({ "token_id": row.token_id, "note": note }),
            )
            .await?;
        }
        Ok((Secret::new(token), row))
    }

    /// A user's tokens.
    pub async fn list_tokens(&self, actor: Actor<'_>, owner: &UserName) -> Result<Vec<ApiToken>, ServiceError> {
        let user = self.user_by_name(owner).await?;
        actor.require_self_or_admin(user.user_id)?;
        Ok(tokens::list_for_user(self.db(), user.user_id).await?)
    }

    /// One of a user's tokens.
    pub async fn get_token(&self, actor: Actor<'_>, owner: &UserName, token_id: i64) -> Result<ApiToken, ServiceError> {
        let user = self.user_by_name(owner).await?;
        actor.require_self_or_admin(user.user_id)?;
        tokens::get_for_user(self.db(), user.user_id, token_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{owner} has no token {token_id}")))
    }

    /// Revokes one of a user's tokens; it stops working at once.
    pub async fn revoke_token(&self, actor: Actor<'_>, owner: &UserName, token_id: i64) -> Result<(), ServiceError> {
        let user = self.user_by_name(owner).await?;
        actor.require_self_or_admin(user.user_id)?;
        let hash = tokens::delete_for_user(self.db(), user.user_id, token_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{owner} has no token {token_id}")))?;
        if let Ok(h) = <[u8; 32]>::try_from(hash.as_slice()) {
            self.0.auth_cache.tokens.remove(&h);
        }
        if !matches!(actor, Actor::User(p) if p.user_id == user.user_id) {
            self.audit(self.db(), actor, "token.revoke", owner.as_str(), serde_json::json!({ "token_id": token_id }))
                .await?;
        }
        Ok(())
    }

    /// Writes the batched "last used" times of API tokens.
    pub(crate) async fn flush_token_use(&self) -> Result<(), ServiceError> {
        let used = &self.0.auth_cache.used_tokens;
        if used.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = used.iter().map(|r| *r).collect();
        for id in &ids {
            used.remove(id);
        }
        if let Err(e) = tokens::touch_many(self.db(), &ids, self.now()).await {
            // Put them back so the next flush writes them.
            for id in ids {
                used.insert(id);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Deletes expired sessions and refreshes the live-session gauge.
    pub(crate) async fn expire_sessions(&self) -> Result<(), ServiceError> {
        let now = self.now();
        let idle_cutoff = now - self.idle_limit();
        let ended = sessions::delete_expired(self.db(), now, idle_cutoff).await?;
        self.forget_sessions(ended);
        let live = sessions::count_live(self.db(), now, idle_cutoff).await?;
        metrics::gauge!("labhub_active_sessions").set(live as f64);
        Ok(())
    }

    /// Live sessions now (for the metrics endpoint).
    pub async fn count_live_sessions(&self) -> Result<i64, ServiceError> {
        let now = self.now();
        Ok(sessions::count_live(self.db(), now, now - self.idle_limit()).await?)
    }
}

/// "3 days", "2 hours": for messages.
pub fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        s if s >= 86400 && s % 86400 == 0 => (s / 86400, "day"),
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

impl Hub {
    /// A user's live sessions (their own, or any user's for an admin).
    pub async fn list_sessions(
        &self,
        actor: Actor<'_>,
        name: &UserName,
    ) -> Result<Vec<sessions::Session>, ServiceError> {
        let user = self.user_by_name(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        Ok(sessions::list_for_user(self.db(), user.user_id, self.now()).await?)
    }

    /// Ends one of a user's sessions by id (another browser of theirs).
    pub async fn end_session_by_id(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        session_id: i64,
    ) -> Result<(), ServiceError> {
        let user = self.user_by_name(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        let ended = sessions::delete_for_user_by_id(self.db(), user.user_id, session_id).await?;
        if ended.is_empty() {
            return Err(ServiceError::NotFound("that session has already ended".into()));
        }
        self.forget_sessions(ended);
        Ok(())
    }
}
