//! What the hub keeps in memory, capability by capability: caches of what Postgres holds and
//! work in flight. Each handle (`accounts`, `sessions`, …) reads its own part; the holder,
//! `Hub`, owns them all.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dashmap::{DashMap, DashSet};
use labhub_auth::ldap::Directory;
use labhub_auth::{LoginThrottle, PasswordHasher, TokenHash};
use labhub_core::spawner::ImageBuilder;
use labhub_core::{Clock, ServerId, SessionId, TokenId};
use labhub_proxy::RouteTable;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::progress::ProgressLog;
use crate::{AccountSettings, Principal, ServerSettings};

/// What the accounts capability keeps: its rules, password hashing, the sign-in throttle and
/// the directory that checks passwords too, if one is configured.
pub(crate) struct AccountsState {
    pub(crate) settings: AccountSettings,
    pub(crate) passwords: PasswordHasher,
    pub(crate) throttle: LoginThrottle,
    pub(crate) directory: Option<Directory>,
}

impl AccountsState {
    pub(crate) fn new(
        settings: AccountSettings,
        passwords: PasswordHasher,
        directory: Option<Directory>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let throttle = LoginThrottle::new(settings.throttle, clock);
        Self { settings, passwords, throttle, directory }
    }
}

/// A recognised session, trusted for a short time.
#[derive(Clone)]
pub(crate) struct CachedSession {
    pub(crate) session_id: SessionId,
    pub(crate) principal: Principal,
    /// The only host the session works on.
    pub(crate) bound: crate::sessions::Bound,
    pub(crate) expires_at: OffsetDateTime,
    pub(crate) last_seen: OffsetDateTime,
    pub(crate) fetched: OffsetDateTime,
}

/// Recognised sessions, by their hashes.
#[derive(Default)]
pub(crate) struct SessionsState {
    pub(crate) cache: DashMap<TokenHash, CachedSession>,
    /// Bumped before every forgetting (see [`Epoch`]).
    pub(crate) epoch: Epoch,
}

/// A count of a credential cache's forgettings. A lookup reads it before asking Postgres and
/// again after caching the answer, and takes the answer back out when it moved: a revoke
/// forgotten while the lookup was on its way (bump, then forget) never leaves the old answer
/// cached behind it.
#[derive(Default)]
pub(crate) struct Epoch(std::sync::atomic::AtomicU64);

impl Epoch {
    /// The count now.
    pub(crate) fn now(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks a forgetting about to happen.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Caches `value` under `key` unless a forgetting began since `read_at` (this lookup's
    /// [`Epoch::now`] from before it asked Postgres); a full cache is emptied first.
    pub(crate) fn remember<V>(&self, read_at: u64, cache: &DashMap<TokenHash, V>, key: TokenHash, value: V) {
        if cache.len() >= crate::sessions::CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, value);
        if self.now() != read_at {
            // Forgotten while it was read: not cached (this request was already on its way).
            cache.remove(&key);
        }
    }
}

/// A recognised token, trusted for a short time.
#[derive(Clone)]
pub(crate) struct CachedToken {
    pub(crate) principal: Principal,
    pub(crate) expires_at: Option<OffsetDateTime>,
    pub(crate) fetched: OffsetDateTime,
}

/// Recognised tokens by their hash, and those used since the last flush of their use times.
#[derive(Default)]
pub(crate) struct TokensState {
    pub(crate) cache: DashMap<TokenHash, CachedToken>,
    /// Bumped before every forgetting (see [`Epoch`]).
    pub(crate) epoch: Epoch,
    pub(crate) used: DashSet<TokenId>,
}

/// The servers capability's state: how traffic reaches servers, and what is in flight.
pub(crate) struct ServerRuntime {
    pub(crate) routes: RouteTable,
    pub(crate) settings: ServerSettings,
    /// Starts in flight (and recently finished, so late watchers see the outcome), by server.
    pub(crate) spawns: DashMap<ServerId, Arc<Spawn>>,
    pub(crate) spawn_slots: Arc<Semaphore>,
    /// Containers labelled for this hub that match no server row, found at the last reconcile.
    pub(crate) strangers: std::sync::Mutex<Vec<String>>,
}

impl ServerRuntime {
    pub(crate) fn new(routes: RouteTable, settings: ServerSettings) -> Self {
        let slots = Arc::new(Semaphore::new(settings.concurrent_spawn_limit.max(1)));
        Self {
            routes,
            settings,
            spawns: DashMap::new(),
            spawn_slots: slots,
            strangers: std::sync::Mutex::new(Vec::new()),
        }
    }
}

/// One start in flight.
pub(crate) struct Spawn {
    pub(crate) spawn_id: Uuid,
    pub(crate) progress: Arc<ProgressLog>,
    /// Set when someone asks to stop the server while it is still starting.
    pub(crate) cancelled: AtomicBool,
}

/// What the catalogue keeps: the builder, and builds in flight or finished by image reference.
pub(crate) struct CatalogueState {
    pub(crate) builder: Option<Arc<dyn ImageBuilder>>,
    pub(crate) builds: DashMap<String, Arc<ProgressLog>>,
}

impl CatalogueState {
    pub(crate) fn new(builder: Option<Arc<dyn ImageBuilder>>) -> Self {
        Self { builder, builds: DashMap::new() }
    }
}

/// The sharing capability's state: the index the one gate reads, and the lock that keeps
/// reloads in order (a slower, older reload never replaces a newer one).
#[derive(Default)]
pub(crate) struct SharesState {
    pub(crate) index: std::sync::RwLock<Arc<crate::shares::ShareIndex>>,
    pub(crate) reload: tokio::sync::Mutex<()>,
}
