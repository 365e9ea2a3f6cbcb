//! One user as the API shows them — account, groups, servers — kept for a moment.
//!
//! JupyterHub's clients poll `GET /hub/api/user` and `/hub/api/users/{name}` in tight loops,
//! and each view costs three queries. Every write this hub makes to servers, groups or an
//! account empties the cache, so a client always reads its own writes; the short lifetime
//! bounds what writes from elsewhere (another hub process, manual SQL) can leave unseen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use labhub_core::UserName;
use labhub_db::servers::{self, Server};
use labhub_db::users::User;

use crate::audit::Actor;
use crate::{Hub, ServiceError};

/// How long a view is reused at most.
const VIEW_TTL: Duration = Duration::from_millis(500);
/// Views kept at most; past it the cache starts again empty.
const VIEW_MAX: usize = 10_000;

/// A user with their groups' names (sorted) and their server rows.
#[derive(Debug, Clone)]
pub struct UserView {
    /// The account.
    pub user: User,
    /// The names of the groups they are in.
    pub groups: Vec<String>,
    /// Every server row, stopped ones included.
    pub servers: Vec<Server>,
}

/// Recent views by user name.
#[derive(Default)]
pub(crate) struct ViewCache {
    entries: DashMap<UserName, (Instant, Arc<UserView>)>,
}

impl Hub {
    /// A user as the API shows them (that user or an admin).
    pub async fn user_view(&self, actor: Actor<'_>, name: &UserName) -> Result<Arc<UserView>, ServiceError> {
        let cache = &self.0.views.entries;
        let hit = cache.get(name).filter(|e| e.0.elapsed() < VIEW_TTL).map(|e| e.1.clone());
        let view = match hit {
            Some(view) => view,
            None => {
                let user = self.user_by_name(name).await?;
                let ids = [user.user_id];
                let groups =
                    labhub_db::groups::names_of_users(self.db(), &ids).await?.remove(&user.user_id).unwrap_or_default();
                let servers = servers::list_for_users(self.db(), &ids).await?;
                let view = Arc::new(UserView { user, groups, servers });
                if cache.len() >= VIEW_MAX {
                    cache.clear();
                }
                cache.insert(name.clone(), (Instant::now(), view.clone()));
                view
            }
        };
        actor.require_self_or_admin(view.user.user_id)?;
        Ok(view)
    }

    /// Forgets every cached view, after a write to servers, groups or accounts.
    pub(crate) fn views_changed(&self) {
        self.0.views.entries.clear();
    }
}
