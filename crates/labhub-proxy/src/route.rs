//! The in-memory route table: which running server answers for `/user/{name}/[{server}/]`,
//! how to reach it, and when it last saw traffic.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::closer::Closer;
use crate::path::UserPath;
use crate::pool::Pool;
use crate::settings::ProxySettings;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use http::HeaderValue;
use labhub_core::{Clock, Contract, Credential, ImageKind, Secret, ServerName, UserId, UserName};
use time::OffsetDateTime;

/// Activity timestamps are written at most this often per route (or tunnel): the culler
/// works in minutes, and a store per byte would only cost.
const ACTIVITY_RESOLUTION_MS: i64 = 1_000;

/// No activity recorded since the last `take_activity`.
const NO_ACTIVITY: i64 = i64::MIN;

/// Which server: a user's default server (`server: None`) or a named one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    /// The server's owner.
    pub user: UserName,
    /// The server's name; `None` for the default server.
    pub server: Option<ServerName>,
}

impl RouteKey {
    /// The key of `user`'s default server (`None`) or of a named one.
    pub fn new(user: UserName, server: Option<ServerName>) -> Self {
        Self { user, server }
    }

    /// The URL prefix the hub serves this server under: `/user/alice/` or `/user/alice/gpu/`.
    pub fn prefix(&self) -> String {
        match &self.server {
            None => format!("/user/{}/", self.user),
            Some(s) => format!("/user/{}/{s}/", self.user),
        }
    }

    fn table_key(&self) -> String {
        format!("{}/{}", self.user, self.server.as_ref().map_or("", ServerName::as_str))
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.server {
            None => write!(f, "{}", self.user),
            Some(s) => write!(f, "{}/{s}", self.user),
        }
    }
}

/// Where a running server is reached and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Which server this is, by the names in its URL.
    pub key: RouteKey,
    /// Whose it is, by account id: what access is decided on (a name may have passed to
    /// another account since the server started).
    pub owner: UserId,
    /// The server's address on the hub's network.
    pub endpoint: SocketAddr,
    /// The server's secret, sent upstream as `Authorization: token …`.
    pub token: Secret<String>,
    /// What runs there; RStudio gets its prefix stripped and `X-RStudio-Root-Path`.
    pub kind: ImageKind,
    /// The path the hub serves it under, starting and ending with `/`: `/user/alice/`.
    pub prefix: String,
    /// The contract it speaks: a server of JupyterHub's signs its users in itself (through the
    /// hub's OAuth provider), so the proxy sends it no `Authorization` of its own.
    pub contract: Contract,
}

impl Route {
    /// A route under the standard prefix for its key.
    pub fn new(key: RouteKey, owner: UserId, endpoint: SocketAddr, token: Secret<String>, kind: ImageKind) -> Self {
        let prefix = key.prefix();
        Self { key, owner, endpoint, token, kind, prefix, contract: Contract::Labhub }
    }

    /// The same route, for a server that speaks `contract`.
    pub fn speaking(self, contract: Contract) -> Self {
        Self { contract, ..self }
    }
}

/// Why a route could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("a route prefix must be printable ASCII starting and ending with '/', not {0:?}")]
    BadPrefix(String),
    #[error("the server's token cannot be sent in an HTTP header (non-empty, printable ASCII only)")]
    BadToken,
}

/// What every route shares with its table.
pub(crate) struct TableShared {
    clock: Arc<dyn Clock>,
    /// Open WebSocket tunnels over all routes.
    pub(crate) open_tunnels: AtomicUsize,
}

/// What closes a WebSocket when the access or the credential it was opened with ends
/// ([`RouteEntry::watch_holder`], [`crate::ServiceTarget::watch_holder`]).
pub struct TunnelWatch(pub(crate) Arc<crate::closer::Watch>);

/// A route as the proxy uses it: the route plus its pool, what closes its sockets, its
/// counters and its last activity. Handed out as `Arc`; stays usable (but closed) after
/// removal, so in-flight requests finish with an error rather than a panic.
pub struct RouteEntry {
    route: Route,
    pub(crate) internal_origin: String,
    /// What the proxy sends as `Authorization`: the server's token, or nothing (a client's
    /// own is never sent on) for a server of JupyterHub's contract.
    pub(crate) authorization: Option<HeaderValue>,
    pub(crate) root_path: Option<HeaderValue>,
    pool: OnceLock<Arc<Pool>>,
    pub(crate) closer: Arc<Closer>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) tunnels: AtomicUsize,
    last_activity_ms: AtomicI64,
    /// The latest traffic ever recorded (never drained), for readers that want the freshest
    /// time without taking it from the next flush.
    latest_activity_ms: AtomicI64,
    pub(crate) shared: Arc<TableShared>,
}

impl RouteEntry {
    fn new(route: Route, shared: Arc<TableShared>) -> Result<Self, RouteError> {
        let p = &route.prefix;
        let printable = p.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if !p.starts_with('/') || !p.ends_with('/') || !printable {
            return Err(RouteError::BadPrefix(p.clone()));
        }
        let bad_prefix = || RouteError::BadPrefix(p.clone());
        let token = route.token.expose();
        if token.is_empty() || !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(RouteError::BadToken);
        }
        let mut authorization = HeaderValue::try_from(format!("token {token}")).map_err(|_| RouteError::BadToken)?;
        // Kept out of hyper's header debug output and HPACK tables.
        authorization.set_sensitive(true);
        // rserver strips a trailing slash from the root path itself (Request::rootPath);
        // Posit's own proxy examples send it without one, so do we.
        let root_path = match route.kind {
            ImageKind::Rstudio => {
                let bare = p.trim_end_matches('/');
                Some(HeaderValue::from_str(if bare.is_empty() { "/" } else { bare }).map_err(|_| bad_prefix())?)
            }
            ImageKind::Jupyter | ImageKind::Custom => None,
        };
        let authorization = (route.contract == Contract::Labhub).then_some(authorization);
        Ok(Self {
            internal_origin: format!("http://{}", route.endpoint),
            route,
            authorization,
            root_path,
            pool: OnceLock::new(),
            closer: Arc::new(Closer::default()),
            in_flight: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            last_activity_ms: AtomicI64::new(NO_ACTIVITY),
            latest_activity_ms: AtomicI64::new(NO_ACTIVITY),
            shared,
        })
    }

    /// The route this entry serves.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Which server this is.
    pub fn key(&self) -> &RouteKey {
        &self.route.key
    }

    /// The path prefix, ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.route.prefix
    }

    /// Requests and tunnels currently holding one of this route's connection slots.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// WebSocket tunnels currently open to this server.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Acquire)
    }

    /// The hold on this route of `user`, let in with `credential`, to be taken BEFORE the gate
    /// lets them in: the credential ending (through [`RouteTable::close_credentials_where`])
    /// trips it, and so does, unless `user` owns the server, a share or role revoked after
    /// this call (through [`RouteTable::close_visitors_where`]), so a WebSocket opened with
    /// it closes even if that landed while its upgrade was still on its way to the server.
    /// Dropped, it is forgotten.
    pub fn watch_holder(&self, user: UserId, credential: Option<Credential>) -> TunnelWatch {
        let visitor = (user != self.route.owner).then_some(user);
        TunnelWatch(self.closer.watch_for(visitor, credential))
    }

    /// Whether the route was removed or replaced: its sockets and tunnels are closed.
    pub fn is_removed(&self) -> bool {
        self.closer.is_closed()
    }

    /// The route's connections, made on first use (with the settings of the proxy that used
    /// it first: one proxy per table is the design).
    pub(crate) fn pool(&self, settings: &ProxySettings) -> &Arc<Pool> {
        self.pool.get_or_init(|| {
            Arc::new(Pool::new(
                self.route.endpoint,
                settings.connect_timeout,
                settings.max_connections_per_server,
                self.closer.clone(),
            ))
        })
    }

    /// Records traffic now (at most once per second actually writes).
    pub(crate) fn touch(&self) {
        let now = self.shared.clock.now();
        let ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        if last == NO_ACTIVITY || ms < last || ms >= last.saturating_add(ACTIVITY_RESOLUTION_MS) {
            self.last_activity_ms.store(ms, Ordering::Relaxed);
            self.latest_activity_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// The latest traffic this route saw, flushed or not (the API shows it before the database has it).
    pub fn last_activity(&self) -> Option<OffsetDateTime> {
        ms_time(self.latest_activity_ms.load(Ordering::Relaxed))
    }

    /// The activity recorded since the last call, if any.
    fn take_activity(&self) -> Option<OffsetDateTime> {
        ms_time(self.last_activity_ms.swap(NO_ACTIVITY, Ordering::Relaxed))
    }
}

fn ms_time(ms: i64) -> Option<OffsetDateTime> {
    if ms == NO_ACTIVITY {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

impl fmt::Debug for RouteEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteEntry")
            .field("route", &self.route)
            .field("in_flight", &self.in_flight())
            .field("open_tunnels", &self.open_tunnels())
            .field("removed", &self.is_removed())
            .finish()
    }
}

struct TableInner {
    /// Keyed by `user/server` (`user/` for the default server), so that a lookup by two
    /// `&str`s needs no allocation.
    routes: DashMap<String, Arc<RouteEntry>>,
    shared: Arc<TableShared>,
    /// Activity of routes removed since the last `take_activity`, so none is lost.
    departed: Mutex<Vec<(RouteKey, OffsetDateTime)>>,
}

/// The routes of all running servers. Cheap to clone; clones share the table.
#[derive(Clone)]
pub struct RouteTable {
    inner: Arc<TableInner>,
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable").field("routes", &self.len()).field("open_tunnels", &self.open_tunnels()).finish()
    }
}

/// The longest `user/server` key (names are ASCII, so bytes are characters).
const KEY_MAX: usize = UserName::MAX_LEN + 1 + ServerName::MAX_LEN;

impl RouteTable {
    /// An empty table; activity times are read from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let shared = Arc::new(TableShared { clock, open_tunnels: AtomicUsize::new(0) });
        Self { inner: Arc::new(TableInner { routes: DashMap::new(), shared, departed: Mutex::new(Vec::new()) }) }
    }

    /// Adds a route, or replaces the key's route and closes the old one's tunnels and
    /// sockets. Inserting a route equal to the current one keeps it (and its tunnels).
    pub fn insert(&self, route: Route) -> Result<(), RouteError> {
        let key = route.key.table_key();
        let entry = Arc::new(RouteEntry::new(route, self.inner.shared.clone())?);
        let replaced = match self.inner.routes.entry(key) {
            Entry::Occupied(o) if o.get().route == entry.route => return Ok(()),
            Entry::Occupied(mut o) => Some(o.insert(entry)),
            Entry::Vacant(v) => {
                v.insert(entry);
                None
            }
        };
        if let Some(old) = replaced {
            self.retire(&old);
        }
        Ok(())
    }

    /// Removes a route, closing its open tunnels and its pooled upstream connections at once.
    pub fn remove(&self, key: &RouteKey) -> bool {
        match self.inner.routes.remove(&key.table_key()) {
            Some((_, old)) => {
                self.retire(&old);
                true
            }
            None => false,
        }
    }

    fn retire(&self, old: &RouteEntry) {
        old.closer.close();
        if let Some(at) = old.take_activity() {
            self.departed().push((old.key().clone(), at));
        }
    }

    fn departed(&self) -> std::sync::MutexGuard<'_, Vec<(RouteKey, OffsetDateTime)>> {
        self.inner.departed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The keys of every route (to match the table with what the database says runs).
    pub fn keys(&self) -> Vec<RouteKey> {
        self.inner.routes.iter().map(|e| e.value().key().clone()).collect()
    }

    /// The route of `user`'s default server (`None`) or named server; exact on both segments.
    pub fn get(&self, user: &str, server: Option<&str>) -> Option<Arc<RouteEntry>> {
        let server = server.unwrap_or("");
        let len = user.len() + 1 + server.len();
        if len > KEY_MAX {
            return None;
        }
        let mut buf = [0u8; KEY_MAX];
        buf[..user.len()].copy_from_slice(user.as_bytes());
        buf[user.len()] = b'/';
        buf[user.len() + 1..len].copy_from_slice(server.as_bytes());
        let key = std::str::from_utf8(&buf[..len]).ok()?;
        self.inner.routes.get(key).map(|e| e.value().clone())
    }

    /// The route a parsed path goes to: the named server its second segment names, when the
    /// user has one running under that name, else the user's default server.
    pub fn resolve(&self, path: &UserPath<'_>) -> Option<Arc<RouteEntry>> {
        let user = path.user.as_str();
        path.server.as_ref().and_then(|s| self.get(user, Some(s.as_str()))).or_else(|| self.get(user, None))
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.inner.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.inner.routes.is_empty()
    }

    /// WebSocket tunnels open over all routes.
    pub fn open_tunnels(&self) -> usize {
        self.inner.shared.open_tunnels.load(Ordering::Acquire)
    }

    /// Everyone other than the owners holding a WebSocket (or its upgrade) open to a server:
    /// whom a change of shares or roles must decide again.
    pub fn visitors(&self) -> std::collections::HashSet<UserId> {
        self.inner.routes.iter().flat_map(|entry| entry.value().closer.visitors()).collect()
    }

    /// Closes the WebSocket tunnels that visitors opened where `lost(route, visitor)` says
    /// their access ended; how many it closed. The owners' tunnels are untouched.
    pub fn close_visitors_where(&self, lost: impl Fn(&RouteEntry, UserId) -> bool) -> usize {
        self.inner.routes.iter().map(|entry| entry.value().closer.close_visitors(|v| lost(entry.value(), v))).sum()
    }

    /// The credentials that WebSockets (or their upgrades) to any server were opened with.
    pub fn credentials(&self) -> std::collections::HashSet<Credential> {
        self.inner.routes.iter().flat_map(|entry| entry.value().closer.credentials()).collect()
    }

    /// Closes the WebSocket tunnels opened with a credential `ended` picks, the owners' too;
    /// how many it closed.
    pub fn close_credentials_where(&self, ended: impl Fn(Credential) -> bool) -> usize {
        self.inner.routes.iter().map(|entry| entry.value().closer.close_credentials(&ended)).sum()
    }

    /// The last traffic time of each route that saw traffic since the previous call
    /// (including routes removed meanwhile), for a batched write to the database.
    pub fn take_activity(&self) -> Vec<(RouteKey, OffsetDateTime)> {
        let mut out = std::mem::take(&mut *self.departed());
        for entry in self.inner.routes.iter() {
            if let Some(at) = entry.value().take_activity() {
                out.push((entry.value().key().clone(), at));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labhub_core::ManualClock;

    fn key(user: &str, server: Option<&str>) -> RouteKey {
        RouteKey::new(UserName::parse(user).unwrap(), server.map(|s| ServerName::parse(s).unwrap()))
    }

    fn route(user: &str, server: Option<&str>, port: u16) -> Route {
        Route::new(
            key(user, server),
            UserId::new(1),
            ([127, 0, 0, 1], port).into(),
            Secret::new("t0k".into()),
            ImageKind::Jupyter,
        )
    }

    fn table() -> (RouteTable, ManualClock) {
        let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
        (RouteTable::new(Arc::new(clock.clone())), clock)
    }

    #[test]
    fn a_visitor_watch_taken_before_the_gate_sees_a_revoke_that_lands_before_the_tunnel() {
        let (t, _) = table();
        t.insert(route("alice", None, 1)).unwrap();
        let entry = t.get("alice", None).unwrap();
        let (bob, carol) = (UserId::new(2), UserId::new(3));
        // Taken, then the gate let them in; the upgrade is still on its way when the share ends.
        let carols_token = Credential::Token(labhub_core::TokenId::new(5));
        let bobs = entry.watch_holder(bob, None);
        let carols = entry.watch_holder(carol, Some(carols_token));
        // The owner's own: no visitor, whatever the recheck says of her.
        let alices = entry.watch_holder(UserId::new(1), None);
        assert_eq!(t.visitors(), [bob, carol].into());
        assert_eq!(t.close_visitors_where(|_, v| v == bob || v == UserId::new(1)), 1);
        assert!(!alices.0.closed.load(std::sync::atomic::Ordering::Acquire));
        assert!(bobs.0.closed.load(std::sync::atomic::Ordering::Acquire), "the revoke reached the tunnel-to-be");
        assert!(!carols.0.closed.load(std::sync::atomic::Ordering::Acquire), "only the visitor who lost access");
        assert_eq!(t.credentials(), [carols_token].into());
        assert_eq!(t.close_credentials_where(|c| c == carols_token), 1, "her token was revoked");
        assert!(carols.0.closed.load(std::sync::atomic::Ordering::Acquire));
        drop(carols);
        assert_eq!(t.close_visitors_where(|_, _| true), 0, "a dropped watch is forgotten");
    }

    #[test]
    fn lookups_are_exact_on_user_and_server() {
        let (t, _) = table();
        t.insert(route("alice", None, 1)).unwrap();
        t.insert(route("alice", Some("gpu"), 2)).unwrap();
        t.insert(route("alice2", None, 3)).unwrap();
        let port = |e: Option<Arc<RouteEntry>>| e.map(|e| e.route().endpoint.port());
        assert_eq!(port(t.get("alice", None)), Some(1));
        assert_eq!(port(t.get("alice", Some("gpu"))), Some(2));
        assert_eq!(port(t.get("alice2", None)), Some(3));
        assert_eq!(port(t.get("alice", Some("gp"))), None);
        assert_eq!(port(t.get("alic", None)), None);
        assert_eq!(port(t.get("alice/gpu", None)), None);
        assert_eq!(port(t.get("alice", Some(""))), Some(1), "the empty server name is the default server");
        assert_eq!(port(t.get(&"a".repeat(200), None)), None);
        assert_eq!(t.len(), 3);

        let resolve = |p: &str| port(t.resolve(&crate::parse_user_path(p).unwrap()));
        assert_eq!(resolve("/user/alice/gpu/x"), Some(2));
        assert_eq!(resolve("/user/alice/lab/x"), Some(1));
        assert_eq!(resolve("/user/alice2/gpu/x"), Some(3));
        assert_eq!(resolve("/user/bob/"), None);
    }

    #[test]
    fn replacing_a_route_closes_the_old_one_but_an_equal_insert_keeps_it() {
        let (t, _) = table();
        t.insert(route("alice", None, 1)).unwrap();
        let first = t.get("alice", None).unwrap();
        t.insert(route("alice", None, 1)).unwrap();
        assert!(!first.is_removed());
        assert!(Arc::ptr_eq(&first, &t.get("alice", None).unwrap()));
        t.insert(route("alice", None, 9)).unwrap();
        assert!(first.is_removed());
        assert_eq!(t.get("alice", None).unwrap().route().endpoint.port(), 9);
        assert!(t.remove(&key("alice", None)));
        assert!(!t.remove(&key("alice", None)));
        assert!(t.is_empty());
    }

    #[test]
    fn bad_prefixes_and_tokens_are_refused() {
        let (t, _) = table();
        let mut r = route("alice", None, 1);
        r.prefix = "/user/alice".into();
        assert!(matches!(t.insert(r), Err(RouteError::BadPrefix(_))));
        let mut r = route("alice", None, 1);
        r.token = Secret::new("a b".into());
        assert_eq!(t.insert(r), Err(RouteError::BadToken));
        let mut r = route("alice", None, 1);
        r.token = Secret::new("a\nb".into());
        assert_eq!(t.insert(r), Err(RouteError::BadToken));
    }

    #[test]
    fn activity_is_drained_once_and_survives_removal() {
        let (t, clock) = table();
        t.insert(route("alice", None, 1)).unwrap();
        t.insert(route("bob", None, 2)).unwrap();
        assert!(t.take_activity().is_empty());
        let alice = t.get("alice", None).unwrap();
        alice.touch();
        clock.advance(time::Duration::minutes(5));
        alice.touch();
        let got = t.take_activity();
        assert_eq!(got, vec![(key("alice", None), time::macros::datetime!(2026-01-01 0:05 UTC))]);
        assert!(t.take_activity().is_empty());
        assert_eq!(alice.last_activity(), Some(time::macros::datetime!(2026-01-01 0:05 UTC)), "a flush keeps it");
        assert_eq!(t.get("bob", None).unwrap().last_activity(), None);

        alice.touch();
        t.remove(&key("alice", None));
        assert_eq!(t.take_activity(), vec![(key("alice", None), time::macros::datetime!(2026-01-01 0:05 UTC))]);
    }

    #[test]
    fn prefixes_and_root_paths() {
        assert_eq!(key("alice", None).prefix(), "/user/alice/");
        assert_eq!(key("alice", Some("gpu")).prefix(), "/user/alice/gpu/");
        let (t, _) = table();
        let mut r = route("alice", Some("rs"), 1);
        r.kind = ImageKind::Rstudio;
        t.insert(r).unwrap();
        let e = t.get("alice", Some("rs")).unwrap();
        assert_eq!(e.root_path.as_ref().map(|v| v.as_bytes()), Some(&b"/user/alice/rs"[..]));
        assert!(format!("{e:?}").contains("[redacted]"));
        assert!(!format!("{e:?}").contains("t0k"));
    }
}
