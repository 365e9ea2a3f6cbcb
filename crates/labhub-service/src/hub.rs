use std::sync::Arc;

use labhub_auth::{HubKey, LoginThrottle, PasswordHasher};
use labhub_core::Clock;
use labhub_db::PgPool;
use time::OffsetDateTime;

use crate::auth::AuthCache;
use crate::servers::ServerRuntime;
use crate::{AccountSettings, QuotaSettings, ServerSettings};

/// What the hub is built from.
pub struct HubParts {
    /// The database.
    pub db: PgPool,
    /// What time it is.
    pub clock: Arc<dyn Clock>,
    /// Password hashing (cost chosen by the caller: real, or cheap in tests).
    pub passwords: PasswordHasher,
    /// The hub's secret key.
    pub key: HubKey,
    /// Account and session rules.
    pub accounts: AccountSettings,
    /// Where servers run; `None` when the container runtime is unreachable (servers then
    /// cannot start, everything else works).
    pub spawner: Option<Arc<dyn labhub_core::spawner::Spawner>>,
    /// Builds catalogue images from recipes.
    pub builder: Option<Arc<dyn labhub_core::spawner::ImageBuilder>>,
    /// The proxy's route table, filled as servers start and at reconcile.
    pub routes: labhub_proxy::RouteTable,
    /// Rules for servers.
    pub servers: ServerSettings,
    /// The identity providers people may sign in with.
    pub providers: labhub_auth::oidc::Providers,
    /// The site default quota, and how often servers are culled, sampled and measured.
    pub quotas: QuotaSettings,
}

/// The hub's services. Cheap to clone; every clone shares the same caches.
#[derive(Clone)]
pub struct Hub(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) db: PgPool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) passwords: PasswordHasher,
    pub(crate) throttle: LoginThrottle,
    pub(crate) key: HubKey,
    pub(crate) accounts: AccountSettings,
    pub(crate) auth_cache: AuthCache,
    pub(crate) views: crate::views::ViewCache,
    pub(crate) servers: ServerRuntime,
    pub(crate) providers: labhub_auth::oidc::Providers,
    pub(crate) quotas: QuotaSettings,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// Assembles the hub's services.
    pub fn new(parts: HubParts) -> Self {
        let throttle = LoginThrottle::new(parts.accounts.throttle, parts.clock.clone());
        Self(Arc::new(Inner {
            db: parts.db,
            throttle,
            passwords: parts.passwords,
            key: parts.key,
            auth_cache: AuthCache::default(),
            views: crate::views::ViewCache::default(),
            clock: parts.clock,
            accounts: parts.accounts,
            servers: ServerRuntime::new(parts.spawner, parts.builder, parts.routes, parts.servers),
            providers: parts.providers,
            quotas: parts.quotas,
        }))
    }

    /// The database pool.
    pub fn db(&self) -> &PgPool {
        &self.0.db
    }

    /// The current time from the hub's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.0.clock.now()
    }

    /// The hub's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.0.clock
    }

    /// The hub's secret key.
    pub fn key(&self) -> &HubKey {
        &self.0.key
    }

    /// The account rules in force.
    pub fn account_settings(&self) -> &AccountSettings {
        &self.0.accounts
    }

    /// The quota rules in force.
    pub fn quota_settings(&self) -> &QuotaSettings {
        &self.0.quotas
    }

    /// The identity providers people may sign in with.
    pub fn providers(&self) -> &labhub_auth::oidc::Providers {
        &self.0.providers
    }

    /// Periodic housekeeping: flushes token use times and proxied activity, removes expired
    /// sessions, refreshes the session gauge. Runs until `shutdown` resolves, then flushes once more.
    pub async fn run_maintenance(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut flush = tokio::time::interval(std::time::Duration::from_secs(10));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = flush.tick() => {}
            }
            ticks += 1;
            if let Err(e) = self.flush_token_use().await {
                tracing::debug!(error = %e, "token use not flushed yet");
            }
            if let Err(e) = self.flush_activity().await {
                tracing::debug!(error = %e, "activity not flushed yet");
            }
            if ticks % 30 == 1
                && let Err(e) = self.expire_sessions().await
            {
                tracing::debug!(error = %e, "sessions not expired yet");
            }
        }
        let _ = self.flush_token_use().await;
        let _ = self.flush_activity().await;
    }
}
