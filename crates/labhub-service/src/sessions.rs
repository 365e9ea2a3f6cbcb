//! Browser sessions: issuing them, recognising them, ending them, and the one-time codes that
//! give a user server's own host a session of its own.
//!
//! A session works only on the host it was made for: one of the hub's host there (and, without
//! origin isolation, for everything), one handed to a user server's host only there. So a
//! session for a user's host, however that host's pages come by it, is never the hub's.
//!
//! Recognising a session is on every request's path, so answers are cached in memory for a
//! short time. Every change that could make a cached answer wrong (logout, a disabled or
//! deleted user, a change of admin rights) empties the affected entries at once.

use labhub_auth::{TokenHash, new_token, sha256, tokens::looks_like_token};
use labhub_core::{AccountState, Secret, SessionId, UserId, UserName};
use labhub_db::{sessions, users};

use crate::access::Actor;
use crate::model::{Account, SessionInfo};
use crate::state::{CachedSession, SessionsState};
use crate::{AuthVia, Hub, Principal, ServiceError};

/// How long a cached answer is trusted before the database is asked again.
pub(crate) const CACHE_TTL: time::Duration = time::Duration::seconds(30);
/// A session's last-seen time is written at most this often.
const TOUCH_EVERY: time::Duration = time::Duration::seconds(60);
/// Entries kept at most; past it the cache is cleared (it refills from the database).
pub(crate) const CACHE_MAX: usize = 50_000;
/// How long a code for a server's own host stays valid.
const HOST_CODE_LIFETIME: time::Duration = time::Duration::seconds(60);

/// Which host a session cookie was sent to, as the web layer reads the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionHost {
    /// The hub's own host (or any host but a user's).
    Hub,
    /// A user server's own host (origin isolation), by name: lower case, without the port.
    User(String),
}

/// The host a stored session is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bound {
    /// A session of the hub's host.
    Hub,
    /// A session handed to this user server's host.
    User(String),
    /// A session handed to a user's host before sessions were bound: accepted nowhere.
    Nowhere,
}

impl Bound {
    fn of(session: &sessions::Session) -> Self {
        match (session.parent_session_id, &session.host) {
            (None, _) => Bound::Hub,
            (Some(_), Some(host)) => Bound::User(host.clone()),
            (Some(_), None) => Bound::Nowhere,
        }
    }

    /// Whether a cookie sent to `host` may be this session. Host names are compared byte for
    /// byte, as the web layer and the hand-off both write them (lower case, no port).
    fn admits(&self, host: &SessionHost) -> bool {
        match (self, host) {
            (Bound::Hub, SessionHost::Hub) => true,
            (Bound::User(bound), SessionHost::User(sent)) => bound == sent,
            _ => false,
        }
    }
}

impl Hub {
    /// Browser sessions: starting, recognising and ending them.
    pub fn sessions(&self) -> Sessions<'_> {
        Sessions::new(self)
    }
}

/// Browser sessions.
#[derive(Clone, Copy)]
pub struct Sessions<'h> {
    hub: &'h Hub,
}

impl<'h> Sessions<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    fn state(&self) -> &'h SessionsState {
        &self.hub.0.sessions
    }

    fn idle_limit(&self) -> time::Duration {
        time::Duration::try_from(self.hub.account_settings().session_idle).unwrap_or(time::Duration::HOUR)
    }

    /// Starts a browser session for a user who just proved who they are; returns the cookie value.
    pub async fn start(
        &self,
        account: &Account,
        user_agent: &str,
        client_addr: &str,
    ) -> Result<Secret<String>, ServiceError> {
        let (token, hash) = new_token();
        let now = self.hub.now();
        let absolute =
            time::Duration::try_from(self.hub.account_settings().session_absolute).unwrap_or(time::Duration::DAY);
        let ua: String = user_agent.chars().take(256).collect();
        let new = sessions::NewSession {
            token_hash: &hash,
            user_id: account.id,
            now,
            expires_at: now + absolute,
            user_agent: &ua,
            client_addr,
        };
        sessions::insert(self.hub.db(), &new).await?;
        users::touch_activity(self.hub.db(), account.id, now).await?;
        Ok(Secret::new(token))
    }

    /// What [`Sessions::principal`] would answer, when memory alone can say it: `None` when the
    /// database must be asked (not cached, stale, ended, or its last-seen time due).
    pub fn principal_cached(&self, token: &str, host: &SessionHost) -> Option<Option<Principal>> {
        if !looks_like_token(token) {
            return Some(None);
        }
        let now = self.hub.now();
        let hit = self.state().cache.get(&sha256(token))?;
        let since_seen = now - hit.last_seen;
        let live = now - hit.fetched < CACHE_TTL
            && hit.expires_at > now
            && since_seen < TOUCH_EVERY
            && since_seen <= self.idle_limit();
        live.then(|| hit.bound.admits(host).then(|| hit.principal.clone()))
    }

    /// The user behind a session cookie sent to `host`, if the session is live, bound to that
    /// host, and the user active. A session shown on another host is no session there (and
    /// stays as it is where it belongs).
    pub async fn principal(&self, token: &str, host: &SessionHost) -> Result<Option<Principal>, ServiceError> {
        if let Some(known) = self.principal_cached(token, host) {
            return Ok(known);
        }
        let hash = sha256(token);
        let now = self.hub.now();
        let cache = &self.state().cache;
        if let Some(mut hit) = cache.get_mut(&hash)
            && now - hit.fetched < CACHE_TTL
        {
            if hit.expires_at <= now || now - hit.last_seen > self.idle_limit() {
                drop(hit);
                self.end_by_hash(&hash).await?;
                return Ok(None);
            }
            if !hit.bound.admits(host) {
                return Ok(None);
            }
            if now - hit.last_seen >= TOUCH_EVERY {
                hit.last_seen = now;
                let session_id = hit.session_id;
                drop(hit);
                sessions::touch(self.hub.db(), session_id, now).await?;
                return Ok(cache.get(&hash).map(|h| h.principal.clone()));
            }
            return Ok(Some(hit.principal.clone()));
        }
        let epoch = self.state().epoch.now();
        let Some((session, user)) = sessions::by_token_hash(self.hub.db(), &hash).await? else {
            cache.remove(&hash);
            return Ok(None);
        };
        if session.expires_at <= now || now - session.last_seen_at > self.idle_limit() {
            self.end_by_hash(&hash).await?;
            return Ok(None);
        }
        let bound = Bound::of(&session);
        if user.state != AccountState::Active || !bound.admits(host) {
            return Ok(None);
        }
        let mut last_seen = session.last_seen_at;
        if now - last_seen >= TOUCH_EVERY {
            sessions::touch(self.hub.db(), session.session_id, now).await?;
            last_seen = now;
        }
        let principal =
            self.hub.roles().principal(user, AuthVia::Session { session_id: session.session_id }, None).await?;
        let entry = CachedSession {
            session_id: session.session_id,
            principal: principal.clone(),
            bound,
            expires_at: session.expires_at,
            last_seen,
            fetched: now,
        };
        self.state().epoch.remember(epoch, cache, hash, entry);
        Ok(Some(principal))
    }

    /// Ends the session behind a cookie (logout), with the sessions it handed to users' server
    /// hosts. Unknown cookies are ignored.
    pub async fn end(&self, token: &str) -> Result<(), ServiceError> {
        self.end_by_hash(&sha256(token)).await
    }

    async fn end_by_hash(&self, hash: &TokenHash) -> Result<(), ServiceError> {
        self.state().epoch.bump();
        self.state().cache.remove(hash);
        let ended = sessions::delete_by_token_hash(self.hub.db(), hash).await?;
        self.forget(ended);
        Ok(())
    }

    /// Forgets cached sessions by their token hashes.
    pub(crate) fn forget(&self, hashes: Vec<Vec<u8>>) {
        self.state().epoch.bump();
        for h in hashes {
            if let Ok(h) = <TokenHash>::try_from(h.as_slice()) {
                self.state().cache.remove(&h);
            }
        }
    }

    /// Forgets every cached session, after a change of roles (their scopes are worked out again).
    pub(crate) fn forget_all(&self) {
        self.state().epoch.bump();
        self.state().cache.clear();
    }

    /// Forgets every cached session of a user, after a change to their account.
    pub(crate) fn forget_user(&self, user: UserId) {
        self.state().epoch.bump();
        self.state().cache.retain(|_, s| s.principal.user_id != user);
    }

    /// A one-time code (valid for a minute) that a user server's own host `host` exchanges,
    /// with [`Sessions::redeem_host_code`], for a session of its own tied to `principal`'s hub
    /// session and working only on that host. Only browser sessions can hand out codes.
    pub async fn host_code(&self, principal: &Principal, host: &str) -> Result<String, ServiceError> {
        let AuthVia::Session { session_id } = principal.via else {
            return Err(ServiceError::Forbidden("only a signed-in browser can open a server on its own host".into()));
        };
        let (code, hash) = new_token();
        let now = self.hub.now();
        // In Postgres, not in memory: the browser may reach another replica with it.
        sessions::insert_host_code(self.hub.db(), &hash, session_id, host, now, now + HOST_CODE_LIFETIME).await?;
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
        let (session_id, issued_for, expires_at) =
            sessions::take_host_code(self.hub.db(), &sha256(code)).await?.ok_or_else(refused)?;
        let now = self.hub.now();
        if expires_at <= now || issued_for != host {
            return Err(refused());
        }
        let (token, hash) = new_token();
        sessions::insert_child(self.hub.db(), session_id, &hash, &issued_for, now).await?.ok_or_else(refused)?;
        Ok(Secret::new(token))
    }

    /// Ends every session of a user ("log out everywhere", or an admin's action); returns how many.
    pub async fn end_all(&self, actor: Actor<'_>, name: &UserName) -> Result<u64, ServiceError> {
        let user = self.hub.user_row(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        let n = sessions::delete_for_user(self.hub.db(), user.user_id).await?;
        self.forget_user(user.user_id);
        if !actor.is(user.user_id) {
            let detail = serde_json::json!({ "sessions": n });
            self.hub.audit().record(self.hub.db(), actor, "user.sessions_ended", name.as_str(), detail).await?;
        }
        Ok(n)
    }

    /// A user's live sessions (their own, or any user's for an admin).
    pub async fn list(&self, actor: Actor<'_>, name: &UserName) -> Result<Vec<SessionInfo>, ServiceError> {
        let user = self.hub.user_row(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        let rows = sessions::list_for_user(self.hub.db(), user.user_id, self.hub.now()).await?;
        Ok(rows.into_iter().map(SessionInfo::from).collect())
    }

    /// Ends one of a user's sessions by id (another browser of theirs).
    pub async fn end_by_id(&self, actor: Actor<'_>, name: &UserName, session: SessionId) -> Result<(), ServiceError> {
        let user = self.hub.user_row(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        let ended = sessions::delete_for_user_by_id(self.hub.db(), user.user_id, session).await?;
        if ended.is_empty() {
            return Err(ServiceError::NotFound("that session has already ended".into()));
        }
        self.forget(ended);
        Ok(())
    }

    /// Deletes expired sessions and refreshes the live-session gauge.
    pub(crate) async fn expire(&self) -> Result<(), ServiceError> {
        let now = self.hub.now();
        let idle_cutoff = now - self.idle_limit();
        let ended = sessions::delete_expired(self.hub.db(), now, idle_cutoff).await?;
        self.forget(ended);
        let live = sessions::count_live(self.hub.db(), now, idle_cutoff).await?;
        metrics::gauge!("labhub_active_sessions").set(live as f64);
        Ok(())
    }

    /// Live sessions now (for the metrics endpoint).
    pub async fn count_live(&self) -> Result<i64, ServiceError> {
        let now = self.hub.now();
        Ok(sessions::count_live(self.hub.db(), now, now - self.idle_limit()).await?)
    }
}
