//! Accounts: creating and changing them (admins, the CLI, their owners), and the one view of
//! a user the API shows. How people get in is `admission.rs` (with `identity.rs` for
//! identities vouched for from outside, `directory.rs` for the directory's passwords).

mod admission;
mod directory;
mod identity;

use std::sync::Arc;

use labhub_auth::PasswordPolicy;
use labhub_core::listing::UserFilter;
use labhub_core::{AccountState, Secret, ServerState, UserId, UserName};
use labhub_db::users::{self, NewUser};
use labhub_db::{ResultExt, groups, servers};
use serde_json::json;

pub(crate) use admission::SignIn;
pub use admission::{BAD_CREDENTIALS, LoginClient, SignedIn};
pub(crate) use identity::{START_AGAIN, Source};

use crate::access::Actor;
use crate::hub::{HubTx, no_user};
use crate::model::{Account, ServerView, StopReason, StorageFate};
use crate::state::AccountsState;
use crate::views::UserView;
use crate::{AuthVia, Hub, Principal, ServiceError};

/// A new account, as an admin (or the CLI) asks for it.
#[derive(Debug)]
pub struct NewAccount {
    pub name: UserName,
    pub password: Option<Secret<String>>,
    pub admin: bool,
    /// For an account without a password: the identity provider whose identity of this name
    /// may claim it at its first sign-in. Without one, no provider can claim it by its name.
    pub provider: Option<String>,
}

impl Hub {
    /// Accounts: creating and changing them, the sign-in policy.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts::new(self)
    }
}

/// Accounts.
#[derive(Clone, Copy)]
pub struct Accounts<'h> {
    hub: &'h Hub,
}

impl<'h> Accounts<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    fn state(&self) -> &'h AccountsState {
        &self.hub.0.accounts
    }

    /// Forgets every cached credential (sessions, tokens) of a user, after a change to their
    /// account.
    fn forget_credentials(&self, user: UserId) {
        self.hub.sessions().forget_user(user);
        self.hub.tokens().forget_user(user);
    }

    fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy { min_len: self.state().settings.password_min_len }
    }

    /// The provider an admin names for an account, checked: it must be configured (an
    /// identity provider, or `ldap` with a directory).
    fn known_provider<'p>(&self, provider: Option<&'p str>) -> Result<Option<&'p str>, ServiceError> {
        let directory = |p: &str| p == labhub_auth::ldap::LDAP_ID && self.state().directory.is_some();
        match provider {
            Some(p) if self.hub.providers().get(p).is_none() && !directory(p) => {
                Err(ServiceError::Invalid(format!("there is no identity provider called '{p}' on this hub")))
            }
            other => Ok(other),
        }
    }

    /// Creates an account (admins, the CLI).
    pub async fn create(&self, actor: Actor<'_>, new: NewAccount) -> Result<Account, ServiceError> {
        actor.require_admin()?;
        let provider = self.known_provider(new.provider.as_deref())?;
        if provider.is_some() && new.password.is_some() {
            return Err(ServiceError::Invalid(
                "an account signs in with a password or through an identity provider: give a password or a provider, not both".into(),
            ));
        }
        let hash = match &new.password {
            Some(p) => {
                self.password_policy().check(p.expose())?;
                Some(self.state().passwords.hash(p.clone()).await?)
            }
            None => None,
        };
        let admin = new.admin || self.state().settings.lists_admin(&new.name, provider);
        let mut tx = self.hub.begin().await?;
        let user = users::insert(
            &mut *tx,
            &NewUser {
                name: &new.name,
                admin,
                state: AccountState::Active,
                password_hash: hash.as_deref(),
                created_at: self.hub.now(),
                link_provider: provider,
            },
        )
        .await
        .on_constraint(users::NAME_KEY, || ServiceError::Conflict(format!("the name {} is taken", new.name)))?;
        let detail = json!({ "admin": admin, "provider": provider });
        self.hub.audit().record(&mut *tx, actor, "user.create", new.name.as_str(), detail).await?;
        tx.commit().await?;
        Ok(user.into())
    }

    /// One page of accounts and the total matching (admins).
    pub async fn list(&self, actor: Actor<'_>, filter: &UserFilter) -> Result<(Vec<Account>, i64), ServiceError> {
        actor.require_admin()?;
        let (rows, total) = users::list(self.hub.db(), filter).await?;
        Ok((rows.into_iter().map(Account::from).collect(), total))
    }

    /// An account, as seen by its owner or an admin.
    pub async fn get(&self, actor: Actor<'_>, name: &UserName) -> Result<Account, ServiceError> {
        let user = self.hub.user_row(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        Ok(user.into())
    }

    /// A user as the API shows them, with their groups and every server slot (that user or an
    /// admin). Reused for a moment: clients poll it.
    pub async fn view(&self, actor: Actor<'_>, name: &UserName) -> Result<Arc<UserView>, ServiceError> {
        let views = &self.hub.0.views;
        let view = match views.get(name) {
            Some(view) => view,
            None => {
                let mut list = self.views_of(vec![self.hub.user_row(name).await?.into()]).await?;
                let view = Arc::new(list.remove(0));
                views.put(view.clone());
                view
            }
        };
        actor.require_self_or_admin(view.account.id)?;
        Ok(Arc::new(view.freshened(self.hub.culler())))
    }

    /// The views of one page of accounts and the total matching (admins): the API's user list.
    pub async fn list_views(
        &self,
        actor: Actor<'_>,
        filter: &UserFilter,
    ) -> Result<(Vec<UserView>, i64), ServiceError> {
        let (accounts, total) = self.list(actor, filter).await?;
        let culler = self.hub.culler();
        Ok((self.views_of(accounts).await?.iter().map(|v| v.freshened(culler)).collect(), total))
    }

    /// Each account with its groups and server slots, in two queries for all of them.
    async fn views_of(&self, accounts: Vec<Account>) -> Result<Vec<UserView>, ServiceError> {
        let ids: Vec<UserId> = accounts.iter().map(|a| a.id).collect();
        let mut groups = groups::names_of_users(self.hub.db(), &ids).await?;
        let rows = servers::list_for_users(self.hub.db(), &ids).await?;
        let mut views: Vec<UserView> = accounts
            .into_iter()
            .map(|account| {
                let mine: Vec<_> = rows.iter().filter(|r| r.user_id == account.id).cloned().collect();
                UserView {
                    groups: groups.remove(&account.id).unwrap_or_default(),
                    servers: ServerView::slots(&account.name, &mine),
                    account,
                }
            })
            .collect();
        self.hub.culler().attach_policies(views.iter_mut().flat_map(|v| v.servers.iter_mut())).await?;
        Ok(views)
    }

    /// Sets a password (admins for anyone; the CLI). Ends the user's sessions.
    pub async fn set_password(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        password: Secret<String>,
    ) -> Result<(), ServiceError> {
        actor.require_admin()?;
        self.password_policy().check(password.expose())?;
        let user = self.hub.user_row(name).await?;
        let hash = self.state().passwords.hash(password).await?;
        let mut tx = self.hub.begin().await?;
        users::set_password_hash(&mut *tx, user.user_id, Some(&hash)).await?;
        labhub_db::sessions::delete_for_user(&mut *tx, user.user_id).await?;
        self.hub.audit().record(&mut *tx, actor, "user.set_password", name.as_str(), json!({})).await?;
        tx.commit().await?;
        self.forget_credentials(user.user_id);
        Ok(())
    }

    /// Names the identity provider whose identity of the account's name may claim it while it
    /// has no password and no linked identity (admins); `None`: no provider may.
    pub async fn set_link_provider(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        provider: Option<&str>,
    ) -> Result<Account, ServiceError> {
        actor.require_admin()?;
        let provider = self.known_provider(provider)?;
        let user = self.hub.user_row(name).await?;
        let mut tx = self.hub.begin().await?;
        users::set_link_provider(&mut *tx, user.user_id, provider).await?;
        let detail = json!({ "before": user.link_provider, "after": provider });
        self.hub.audit().record(&mut *tx, actor, "user.set_provider", name.as_str(), detail).await?;
        tx.commit().await?;
        Ok(users::User { link_provider: provider.map(str::to_string), ..user }.into())
    }

    /// Changes one's own password after checking the current one, and ends every other session
    /// of the account (a browser where someone else may still be signed in), keeping the one
    /// that made the change.
    pub async fn change_own_password(
        &self,
        principal: &Principal,
        current: Secret<String>,
        new: Secret<String>,
    ) -> Result<(), ServiceError> {
        let user = self.hub.user_row(&principal.name).await?;
        let passwords = &self.state().passwords;
        if user.password_hash.is_some() && !passwords.verify(current, user.password_hash.clone()).await? {
            return Err(ServiceError::Invalid("the current password is not right".into()));
        }
        self.password_policy().check(new.expose())?;
        let hash = passwords.hash(new).await?;
        let mut tx = self.hub.begin().await?;
        users::set_password_hash(&mut *tx, user.user_id, Some(&hash)).await?;
        let current = match principal.via {
            AuthVia::Session { session_id } => Some(session_id),
            AuthVia::Token { .. } | AuthVia::Recheck | AuthVia::SingleUser => None,
        };
        let ended = labhub_db::sessions::delete_for_user_except(&mut *tx, user.user_id, current).await?;
        let actor = Actor::User(principal);
        let detail = json!({ "sessions_ended": ended.len() });
        self.hub.audit().record(&mut *tx, actor, "user.change_password", principal.name.as_str(), detail).await?;
        tx.commit().await?;
        self.hub.sessions().forget(ended);
        Ok(())
    }

    /// Refuses a change that would leave the hub without an active admin.
    async fn keep_an_admin(&self, tx: &mut HubTx<'_>, user: &users::User, what: &str) -> Result<(), ServiceError> {
        if user.admin && user.state == AccountState::Active && users::count_active_admins(&mut **tx).await? <= 1 {
            return Err(ServiceError::Conflict(format!(
                "{} is the last active admin; make someone else an admin before you {what}",
                user.name
            )));
        }
        Ok(())
    }

    /// Opens a transaction holding every admin's row and `name`'s row, so concurrent changes
    /// cannot together pass the last-admin check.
    async fn lock_for_admin_change(&self, name: &UserName) -> Result<(HubTx<'h>, users::User), ServiceError> {
        let mut tx = self.hub.begin().await?;
        users::lock_admins(&mut *tx).await?;
        let user = users::by_name_for_update(&mut *tx, name).await?.ok_or_else(|| no_user(name))?;
        Ok((tx, user))
    }

    /// Grants or revokes admin rights.
    pub async fn set_admin(&self, actor: Actor<'_>, name: &UserName, admin: bool) -> Result<Account, ServiceError> {
        actor.require_admin()?;
        let (mut tx, user) = self.lock_for_admin_change(name).await?;
        if user.admin == admin {
            return Ok(user.into());
        }
        if !admin {
            if self.state().settings.names_admin(name) {
                return Err(ServiceError::Conflict(format!(
                    "{name} is listed in admin_users in the configuration; remove it there first"
                )));
            }
            self.keep_an_admin(&mut tx, &user, "remove their admin rights").await?;
        }
        users::set_admin(&mut *tx, user.user_id, admin).await?;
        let detail = json!({ "before": user.admin, "after": admin });
        self.hub.audit().record(&mut *tx, actor, "user.set_admin", name.as_str(), detail).await?;
        tx.commit().await?;
        self.forget_credentials(user.user_id);
        if !admin {
            // What they opened to others' servers as an admin closes.
            self.hub.shares().changed().await;
        }
        Ok(users::User { admin, ..user }.into())
    }

    /// Approves, disables or re-enables an account. Disabling ends its sessions at once.
    pub async fn set_state(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        state: AccountState,
    ) -> Result<Account, ServiceError> {
        actor.require_admin()?;
        let (mut tx, user) = self.lock_for_admin_change(name).await?;
        if user.state == state {
            return Ok(user.into());
        }
        if state != AccountState::Active {
            self.keep_an_admin(&mut tx, &user, "disable them").await?;
        }
        users::set_state(&mut *tx, user.user_id, state).await?;
        if state == AccountState::Disabled {
            labhub_db::sessions::delete_for_user(&mut *tx, user.user_id).await?;
        }
        let action = match (user.state, state) {
            (AccountState::Pending, AccountState::Active) => "user.approve",
            (_, AccountState::Disabled) => "user.disable",
            _ => "user.enable",
        };
        let detail = json!({ "before": user.state.as_str(), "after": state.as_str() });
        self.hub.audit().record(&mut *tx, actor, action, name.as_str(), detail).await?;
        tx.commit().await?;
        self.forget_credentials(user.user_id);
        if state != AccountState::Active {
            // What they opened to others' servers closes (their own servers are theirs).
            self.hub.shares().changed().await;
        }
        Ok(users::User { state, ..user }.into())
    }

    /// Renames an account. Refused while one of its servers is active: a server's address
    /// (and the prefix it serves itself under) holds its owner's name.
    pub async fn rename(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        new_name: &UserName,
    ) -> Result<Account, ServiceError> {
        actor.require_admin()?;
        let user = self.hub.user_row(name).await?;
        if name == new_name {
            return Ok(user.into());
        }
        let mut tx = self.hub.begin().await?;
        // The user's row lock keeps a start from slipping in between the check and the rename.
        users::by_name_for_update(&mut *tx, name).await?;
        if servers::list_for_user(&mut *tx, user.user_id).await?.iter().any(|s| s.state != ServerState::Stopped) {
            return Err(ServiceError::Conflict(format!(
                "{name} has a server running, whose address holds the name; stop it before renaming the account"
            )));
        }
        users::rename(&mut *tx, user.user_id, new_name)
            .await
            .on_constraint(users::NAME_KEY, || ServiceError::Conflict(format!("the name {new_name} is taken")))?;
        let detail = json!({ "before": name, "after": new_name });
        self.hub.audit().record(&mut *tx, actor, "user.rename", new_name.as_str(), detail).await?;
        tx.commit().await?;
        self.forget_credentials(user.user_id);
        Ok(users::User { name: new_name.clone(), ..user }.into())
    }

    /// Deletes an account with its sessions and tokens, stopping its servers first. Its home
    /// is kept as an orphan (never mounted for anyone, not even a later account of the same
    /// name) or, when asked, deleted first.
    pub async fn delete(&self, actor: Actor<'_>, name: &UserName, storage: StorageFate) -> Result<(), ServiceError> {
        actor.require_admin()?;
        if let Actor::User(p) = actor
            && &p.name == name
        {
            return Err(ServiceError::Conflict("you cannot delete your own account while signed in to it".into()));
        }
        if let Some(user) = users::by_name(self.hub.db(), name).await? {
            for s in servers::list_for_user(self.hub.db(), user.user_id).await? {
                if s.state != ServerState::Stopped {
                    let server = labhub_core::ServerName::parse_optional(&s.name)?;
                    let reason = StopReason::Hub("the account was deleted".into());
                    self.hub.servers().stop_for(name, server.as_ref(), reason).await?;
                }
            }
        }
        // The homes go before the account (a failure then leaves the account, to try again),
        // and outside its transaction: no row stays locked while the runtime works.
        let removed_homes = match storage {
            StorageFate::Keep => 0,
            StorageFate::Delete => {
                let (mut tx, user) = self.lock_for_admin_change(name).await?;
                self.keep_an_admin(&mut tx, &user, "delete them").await?;
                drop(tx);
                self.hub.homes().remove_all_of(user.user_id).await?
            }
        };
        let (mut tx, user) = self.lock_for_admin_change(name).await?;
        self.keep_an_admin(&mut tx, &user, "delete them").await?;
        users::delete(&mut *tx, user.user_id).await?;
        let detail = json!({ "admin": user.admin, "user_id": user.user_id, "storage": storage.as_str(),
                             "homes_removed": removed_homes });
        self.hub.audit().record(&mut *tx, actor, "user.delete", name.as_str(), detail).await?;
        tx.commit().await?;
        self.forget_credentials(user.user_id);
        Ok(())
    }
}
