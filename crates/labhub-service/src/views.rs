//! One user as the API shows them — account, groups, servers — kept for a moment.
//!
//! JupyterHub's clients poll `GET /hub/api/user` and `/hub/api/users/{name}` in tight loops,
//! and each view costs three queries. Every commit of the hub's (see `HubTx::commit`) empties
//! the cache, so a client always reads its own writes; the short lifetime bounds what writes
//! from elsewhere (another hub process, manual SQL) can leave unseen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use labhub_core::UserName;

use crate::culler::Culler;
use crate::model::{Account, ServerView};

/// How long a view is reused at most.
const VIEW_TTL: Duration = Duration::from_millis(500);
/// Views kept at most; past it the cache starts again empty.
const VIEW_MAX: usize = 10_000;

/// A user with their groups' names (sorted) and every server slot (the default one first).
#[derive(Debug, Clone)]
pub struct UserView {
    pub account: Account,
    /// The names of the groups they are in.
    pub groups: Vec<String>,
    /// Every server slot, stopped ones included.
    pub servers: Vec<ServerView>,
}

impl UserView {
    /// A copy with the hub's freshest activity (the proxy's stamps not yet written) and when
    /// the culler will stop each server: a cached view is fresh on every read.
    pub(crate) fn freshened(&self, culler: Culler<'_>) -> UserView {
        let mut view = self.clone();
        view.servers.iter_mut().for_each(|s| culler.freshen(s));
        let latest = view.servers.iter().filter_map(|s| s.last_activity).max();
        view.account.last_activity = view.account.last_activity.max(latest);
        view
    }
}

/// Recent views by user name.
#[derive(Default)]
pub(crate) struct ViewCache {
    entries: DashMap<UserName, (Instant, Arc<UserView>)>,
}

impl ViewCache {
    /// A view of `name` made less than [`VIEW_TTL`] ago.
    pub(crate) fn get(&self, name: &UserName) -> Option<Arc<UserView>> {
        self.entries.get(name).filter(|e| e.0.elapsed() < VIEW_TTL).map(|e| e.1.clone())
    }

    /// Keeps a fresh view.
    pub(crate) fn put(&self, view: Arc<UserView>) {
        if self.entries.len() >= VIEW_MAX {
            self.entries.clear();
        }
        self.entries.insert(view.account.name.clone(), (Instant::now(), view));
    }

    /// Forgets every view, after a write to servers, groups or accounts.
    pub(crate) fn clear(&self) {
        self.entries.clear();
    }
}
