//! The holder of the hub's state.
//!
//! `Hub` owns what every capability shares (the database, the clock, the key, the view cache)
//! and each capability's own state (`state.rs`). The capabilities are cheap borrowed handles,
//! one module each, that do the work; each module also defines its accessor, so `hub.servers()`
//! is in `servers/`, `hub.accounts()` in `accounts/`.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use labhub_auth::{HubKey, PasswordHasher};
use labhub_core::{Clock, UserName};
use labhub_db::{PgConnection, PgPool, users};
use time::OffsetDateTime;

use crate::state::{AccountsState, CatalogueState, ServerRuntime, SessionsState, SharesState, TokensState};
use crate::views::ViewCache;
use crate::{AccountSettings, QuotaSettings, ServerSettings, ServiceError};

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
    /// The directory (`[auth.ldap]`) that checks passwords, if one is configured.
    pub directory: Option<labhub_auth::ldap::Directory>,
    /// The site default quota, and how often servers are culled, sampled and measured.
    pub quotas: QuotaSettings,
    /// Where backups go, when they run and how many are kept.
    pub backups: crate::backups::BackupSettings,
    /// How environments are built.
    pub environments: crate::environments::EnvironmentSettings,
}

/// The hub's services. Cheap to clone; every clone shares the same state.
#[derive(Clone)]
pub struct Hub(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) db: PgPool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) key: HubKey,
    pub(crate) views: ViewCache,
    pub(crate) database_health: crate::health::DatabaseHealth,
    pub(crate) isolation_health: crate::health::IsolationHealth,
    /// Where servers run; `None` when the container runtime is unreachable.
    pub(crate) spawner: Option<Arc<dyn labhub_core::spawner::Spawner>>,
    pub(crate) catalogue: CatalogueState,
    pub(crate) accounts: AccountsState,
    pub(crate) sessions: SessionsState,
    pub(crate) tokens: TokensState,
    pub(crate) services: crate::services::ServicesState,
    pub(crate) servers: ServerRuntime,
    pub(crate) shares: SharesState,
    pub(crate) quotas: QuotaSettings,
    pub(crate) backups: crate::backups::BackupsState,
    pub(crate) providers: labhub_auth::oidc::Providers,
    pub(crate) environments: crate::environments::EnvironmentsState,
    /// This process among the replicas sharing the database.
    pub(crate) replica: crate::replicas::ReplicaState,
    /// The passes over open WebSockets, counted.
    pub(crate) tunnels: crate::tunnels::TunnelsState,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// Assembles the hub's services.
    pub fn new(parts: HubParts) -> Self {
        let booted = parts.clock.now();
        Self(Arc::new(Inner {
            accounts: AccountsState::new(parts.accounts, parts.passwords, parts.directory, parts.clock.clone()),
            sessions: SessionsState::default(),
            tokens: TokensState::default(),
            services: crate::services::ServicesState::default(),
            db: parts.db,
            key: parts.key,
            views: ViewCache::default(),
            database_health: crate::health::DatabaseHealth::default(),
            isolation_health: crate::health::IsolationHealth::default(),
            clock: parts.clock,
            spawner: parts.spawner,
            catalogue: CatalogueState::new(parts.builder),
            servers: ServerRuntime::new(parts.routes, parts.servers),
            shares: SharesState::default(),
            providers: parts.providers,
            quotas: parts.quotas,
            backups: crate::backups::BackupsState::new(parts.backups, booted),
            environments: crate::environments::EnvironmentsState::new(parts.environments),
            replica: crate::replicas::ReplicaState::new(booted),
            tunnels: crate::tunnels::TunnelsState::default(),
        }))
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
        &self.0.accounts.settings
    }

    /// The quota rules in force.
    pub fn quota_settings(&self) -> &QuotaSettings {
        &self.0.quotas
    }

    /// The server settings in force.
    pub fn server_settings(&self) -> &ServerSettings {
        &self.0.servers.settings
    }

    /// The identity providers people may sign in with.
    pub fn providers(&self) -> &labhub_auth::oidc::Providers {
        &self.0.providers
    }

    /// The directory that checks passwords, if one is configured.
    pub fn directory(&self) -> Option<&labhub_auth::ldap::Directory> {
        self.0.accounts.directory.as_ref()
    }

    /// The route table the proxy reads.
    pub fn routes(&self) -> &labhub_proxy::RouteTable {
        &self.0.servers.routes
    }

    /// The embedded database's health, kept by its supervisor.
    pub fn database_health(&self) -> &crate::health::DatabaseHealth {
        &self.0.database_health
    }

    /// Whether users' servers can be isolated, as the last check found.
    pub fn isolation_health(&self) -> &crate::health::IsolationHealth {
        &self.0.isolation_health
    }

    /// Whether the database answers (for the health check).
    pub async fn database_answers(&self) -> bool {
        labhub_db::ping(self.db()).await
    }

    pub(crate) fn db(&self) -> &PgPool {
        &self.0.db
    }

    /// Begins a transaction whose commit also drops the cached views it may have changed.
    pub(crate) async fn begin(&self) -> Result<HubTx<'_>, ServiceError> {
        Ok(HubTx { tx: labhub_db::begin(self.db()).await?, views: &self.0.views })
    }

    /// Forgets every cached view, after a write the hub made outside a transaction of its
    /// own (the proxy's activity).
    pub(crate) fn views_changed(&self) {
        self.0.views.clear();
    }

    /// An account's row by name, or `NotFound` naming it.
    pub(crate) async fn user_row(&self, name: &UserName) -> Result<users::User, ServiceError> {
        users::by_name(self.db(), name).await?.ok_or_else(|| no_user(name))
    }
}

/// `NotFound` for an account name.
pub(crate) fn no_user(name: &UserName) -> ServiceError {
    ServiceError::NotFound(format!("no user named {name}"))
}

/// A transaction of the hub's: its commit drops the cached views (users, their groups and
/// servers), so whoever reads next sees the write. Dropped uncommitted, it rolls back and
/// leaves the views as they were.
pub(crate) struct HubTx<'h> {
    tx: labhub_db::Tx,
    views: &'h ViewCache,
}

impl HubTx<'_> {
    /// Commits, then forgets the cached views.
    pub(crate) async fn commit(self) -> Result<(), ServiceError> {
        labhub_db::commit(self.tx).await?;
        self.views.clear();
        Ok(())
    }
}

impl Deref for HubTx<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for HubTx<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}
