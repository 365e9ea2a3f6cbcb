//! Accounts: creating and changing them, and the one sign-in policy every way of signing in
//! goes through.

use labhub_auth::PasswordPolicy;
use labhub_auth::oidc::{ExternalIdentity, Provider};
use labhub_core::{AccountState, Secret, UserName};
use labhub_db::users::{self, NewUser, User, UserFilter};
use labhub_db::{PgConnection, ResultExt};
use serde_json::json;

use crate::audit::Actor;
use crate::{Hub, Principal, ServiceError, SignupPolicy};

/// The one message for every failed password sign-in, so a failure never tells whether the
/// account exists.
pub const BAD_CREDENTIALS: &str = "Invalid user name or password.";

/// How a person proved who they are, as the sign-in policy sees it.
pub(crate) enum SignIn<'a> {
    /// The account's password matched.
    Password(User),
    /// A provider vouched for this identity.
    Provider(&'a Provider, &'a ExternalIdentity),
}

/// What the sign-in policy decided.
#[derive(Debug)]
pub(crate) enum Admission {
    /// In, as this account.
    Active(User),
    /// The account (perhaps created just now) waits for an admin's approval.
    Pending(User),
}

impl Admission {
    /// The account, if it may start a session now.
    pub(crate) fn into_active(self) -> Result<User, ServiceError> {
        match self {
            Admission::Active(user) => Ok(user),
            Admission::Pending(user) => Err(ServiceError::Forbidden(format!(
                "Your account {} is waiting for an admin's approval. You can sign in once it is approved.",
                user.name
            ))),
        }
    }
}

/// A new account, as an admin (or the CLI) asks for it.
#[derive(Debug)]
pub struct NewAccount {
    pub name: UserName,
    pub password: Option<Secret<String>>,
    pub admin: bool,
}

impl Hub {
    fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy { min_len: self.0.accounts.password_min_len }
    }

    /// An existing account, or `NotFound` naming it.
    pub async fn user_by_name(&self, name: &UserName) -> Result<User, ServiceError> {
        users::by_name(self.db(), name).await?.ok_or_else(|| ServiceError::NotFound(format!("no user named {name}")))
    }

    /// Creates an account (admins, the CLI).
    pub async fn create_user(&self, actor: Actor<'_>, new: NewAccount) -> Result<User, ServiceError> {
        actor.require_admin()?;
        let hash = match &new.password {
            Some(p) => {
                self.password_policy().check(p.expose())?;
                Some(self.0.passwords.hash(p.clone()).await?)
            }
            None => None,
        };
        let admin = new.admin || self.0.accounts.admin_users.contains(&new.name);
        let mut tx = labhub_db::begin(self.db()).await?;
        let user = users::insert(
            &mut *tx,
            &NewUser {
                name: &new.name,
                admin,
                state: AccountState::Active,
                password_hash: hash.as_deref(),
                created_at: self.now(),
            },
        )
        .await
        .on_constraint(users::NAME_KEY, || ServiceError::Conflict(format!("the name {} is taken", new.name)))?;
        self.audit(&mut *tx, actor, "user.create", new.name.as_str(), json!({ "admin": admin })).await?;
        labhub_db::commit(tx).await?;
        Ok(user)
    }

    /// One page of accounts (admins).
    pub async fn list_users(&self, actor: Actor<'_>, filter: &UserFilter) -> Result<(Vec<User>, i64), ServiceError> {
        actor.require_admin()?;
        Ok(users::list(self.db(), filter).await?)
    }

    /// An account, as seen by its owner or an admin.
    pub async fn get_user(&self, actor: Actor<'_>, name: &UserName) -> Result<User, ServiceError> {
        let user = self.user_by_name(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        Ok(user)
    }

    /// Sets a password (admins for anyone; the CLI). Ends the user's other sessions.
    pub async fn set_password(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        password: Secret<String>,
    ) -> Result<(), ServiceError> {
        actor.require_admin()?;
        self.password_policy().check(password.expose())?;
        let user = self.user_by_name(name).await?;
        let hash = self.0.passwords.hash(password).await?;
        users::set_password_hash(self.db(), user.user_id, Some(&hash)).await?;
        labhub_db::sessions::delete_for_user(self.db(), user.user_id).await?;
        self.forget_cached(user.user_id);
        self.audit(self.db(), actor, "user.set_password", name.as_str(), json!({})).await
    }

    /// Changes one's own password after checking the current one.
    pub async fn change_own_password(
        &self,
        principal: &Principal,
        current: Secret<String>,
        new: Secret<String>,
    ) -> Result<(), ServiceError> {
        let user = self.user_by_name(&principal.name).await?;
        if user.password_hash.is_some() && !self.0.passwords.verify(current, user.password_hash.clone()).await {
            return Err(ServiceError::Invalid("the current password is not right".into()));
        }
        self.password_policy().check(new.expose())?;
        let hash = self.0.passwords.hash(new).await?;
        users::set_password_hash(self.db(), user.user_id, Some(&hash)).await?;
        self.audit(self.db(), Actor::User(principal), "user.change_password", principal.name.as_str(), json!({})).await
    }

    /// Refuses a change that would leave the hub without an active admin.
    async fn keep_an_admin(
        &self,
        db: &mut labhub_db::PgConnection,
        user: &User,
        what: &str,
    ) -> Result<(), ServiceError> {
        if user.admin && user.state == AccountState::Active && users::count_active_admins(db).await? <= 1 {
            return Err(ServiceError::Conflict(format!(
                "{} is the last active admin; make someone else an admin before you {what}",
                user.name
            )));
        }
        Ok(())
    }

    /// Opens a transaction holding every admin's row and `name`'s row, so concurrent changes
    /// cannot together pass the last-admin check.
    async fn lock_for_admin_change(&self, name: &UserName) -> Result<(labhub_db::Tx, User), ServiceError> {
        let mut tx = labhub_db::begin(self.db()).await?;
        users::lock_admins(&mut *tx).await?;
        let user = users::by_name_for_update(&mut *tx, name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no user named {name}")))?;
        Ok((tx, user))
    }

    /// Grants or revokes admin rights.
    pub async fn set_admin(&self, actor: Actor<'_>, name: &UserName, admin: bool) -> Result<User, ServiceError> {
        actor.require_admin()?;
        let (mut tx, user) = self.lock_for_admin_change(name).await?;
        if user.admin == admin {
            return Ok(user);
        }
        if !admin {
            if self.0.accounts.admin_users.contains(name) {
                return Err(ServiceError::Conflict(format!(
                    "{name} is listed in admin_users in the configuration; remove it there first"
                )));
            }
            self.keep_an_admin(&mut tx, &user, "remove their admin rights").await?;
        }
        users::set_admin(&mut *tx, user.user_id, admin).await?;
        self.audit(&mut *tx, actor, "user.set_admin", name.as_str(), json!({ "before": user.admin, "after": admin }))
            .await?;
        labhub_db::commit(tx).await?;
        self.forget_cached(user.user_id);
        Ok(User { admin, ..user })
    }

    /// Approves, disables or re-enables an account. Disabling ends its sessions at once.
    pub async fn set_account_state(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        state: AccountState,
    ) -> Result<User, ServiceError> {
        actor.require_admin()?;
        let (mut tx, user) = self.lock_for_admin_change(name).await?;
        if user.state == state {
            return Ok(user);
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
        self.audit(
            &mut *tx,
            actor,
            action,
            name.as_str(),
            json!({ "before": user.state.as_str(), "after": state.as_str() }),
        )
        .await?;
        labhub_db::commit(tx).await?;
        self.forget_cached(user.user_id);
        Ok(User { state, ..user })
    }

    /// Renames an account.
    pub async fn rename_user(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        new_name: &UserName,
    ) -> Result<User, ServiceError> {
        actor.require_admin()?;
        let user = self.user_by_name(name).await?;
        if name == new_name {
            return Ok(user);
        }
        let mut tx = labhub_db::begin(self.db()).await?;
        users::rename(&mut *tx, user.user_id, new_name)
            .await
            .on_constraint(users::NAME_KEY, || ServiceError::Conflict(format!("the name {new_name} is taken")))?;
        self.audit(&mut *tx, actor, "user.rename", new_name.as_str(), json!({ "before": name, "after": new_name }))
            .await?;
        labhub_db::commit(tx).await?;
        self.forget_cached(user.user_id);
        Ok(User { name: new_name.clone(), ..user })
    }

    /// Deletes an account with its sessions and tokens, stopping its servers first (their
    /// storage is kept until an admin removes it).
    pub async fn delete_user(&self, actor: Actor<'_>, name: &UserName) -> Result<(), ServiceError> {
        actor.require_admin()?;
        if let Actor::User(p) = actor
            && &p.name == name
        {
            return Err(ServiceError::Conflict("you cannot delete your own account while signed in to it".into()));
        }
        if let Some(user) = users::by_name(self.db(), name).await? {
            for s in labhub_db::servers::list_for_user(self.db(), user.user_id).await? {
                if s.state != labhub_core::ServerState::Stopped {
                    let server = labhub_core::ServerName::parse_optional(&s.name)?;
                    self.stop_as(
                        name,
                        server.as_ref(),
                        crate::servers::StopReason::Hub("the account was deleted".into()),
                    )
                    .await?;
                }
            }
        }
        let mut tx = labhub_db::begin(self.db()).await?;
        users::lock_admins(&mut *tx).await?;
        let user = users::by_name_for_update(&mut *tx, name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no user named {name}")))?;
        self.keep_an_admin(&mut tx, &user, "delete them").await?;
        users::delete(&mut *tx, user.user_id).await?;
        self.audit(&mut *tx, actor, "user.delete", name.as_str(), json!({ "admin": user.admin })).await?;
        labhub_db::commit(tx).await?;
        self.forget_cached(user.user_id);
        Ok(())
    }

    /// Signs in with a name and a password. Every failure that could reveal whether the account
    /// exists gives the same message after the same work; repeated failures are throttled per
    /// name and per client address.
    pub async fn password_login(
        &self,
        raw_name: &str,
        password: Secret<String>,
        client_addr: &str,
    ) -> Result<User, ServiceError> {
        if !self.0.accounts.password_login {
            return Err(ServiceError::Forbidden("password sign-in is turned off on this hub".into()));
        }
        let name = UserName::parse(raw_name.trim()).ok();
        // Throttle by the normalised name when there is one, so "Alice" and "alice" share a budget.
        let throttle_key = name.as_ref().map_or_else(|| raw_name.trim().to_ascii_lowercase(), |n| n.to_string());
        if let Some(wait) = self.0.throttle.retry_after(&throttle_key, client_addr) {
            metrics::counter!("labhub_logins_total", "result" => "throttled").increment(1);
            return Err(ServiceError::TooMany {
                message: format!("Too many failed sign-in attempts. Try again in {} seconds.", wait.as_secs()),
                retry_after: wait,
            });
        }
        let user = match &name {
            Some(n) => users::by_name(self.db(), n).await?,
            None => None,
        };
        let ok = self.0.passwords.verify(password, user.as_ref().and_then(|u| u.password_hash.clone())).await;
        let Some(user) = user.filter(|_| ok) else {
            self.0.throttle.record_failure(&throttle_key, client_addr);
            metrics::counter!("labhub_logins_total", "result" => "failed").increment(1);
            return Err(ServiceError::Unauthenticated(BAD_CREDENTIALS.into()));
        };
        self.0.throttle.record_success(&throttle_key);
        let mut tx = labhub_db::begin(self.db()).await?;
        let admission = self.admit(&mut tx, SignIn::Password(user)).await?;
        labhub_db::commit(tx).await?;
        let user = admission.into_active()?;
        metrics::counter!("labhub_logins_total", "result" => "ok").increment(1);
        Ok(user)
    }

    /// The one sign-in policy, for every way of signing in. For a provider's identity, in order:
    /// the claimed name must pass the account name rule; the provider's allowed users and groups
    /// (admins by `admin_users` or `admin_groups` always pass); then the account the identity
    /// belongs to is found, linked or created (see `account_for_identity`). For everyone: a
    /// disabled account is refused, a pending one waits, and admin rights are set from
    /// `admin_users` and, for a provider with `admin_groups`, from membership at this sign-in.
    /// Runs in the caller's transaction, so a refusal leaves nothing behind.
    pub(crate) async fn admit(&self, tx: &mut PgConnection, sign_in: SignIn<'_>) -> Result<Admission, ServiceError> {
        let (user, in_admin_group) = match sign_in {
            SignIn::Password(user) => (user, None),
            SignIn::Provider(provider, identity) => {
                let via = provider.display_name();
                let name = UserName::parse(identity.username.trim()).map_err(|e| {
                    ServiceError::Forbidden(format!(
                        "{via} calls you '{}', which is not a valid account name on this hub ({e}). Ask an admin.",
                        identity.username
                    ))
                })?;
                let rules = provider.rules();
                let member_of = |groups: &[String]| identity.groups.iter().any(|g| groups.contains(g));
                let in_admin_group = (!rules.admin_groups.is_empty()).then(|| member_of(&rules.admin_groups));
                let restricted = !rules.allowed_users.is_empty() || !rules.allowed_groups.is_empty();
                let allowed = self.0.accounts.admin_users.contains(&name)
                    || in_admin_group == Some(true)
                    || rules.allowed_users.contains(&name)
                    || member_of(&rules.allowed_groups);
                if restricted && !allowed {
                    return Err(ServiceError::Forbidden(format!(
                        "{name} may not sign in to this hub with {via}: neither the name nor any of your groups there is on the list of those allowed. Ask an admin if you think this is wrong."
                    )));
                }
                (self.account_for_identity(tx, provider, identity, &name).await?, in_admin_group)
            }
        };
        match user.state {
            AccountState::Active => {}
            AccountState::Pending => return Ok(Admission::Pending(user)),
            AccountState::Disabled => {
                return Err(ServiceError::Forbidden(
                    "This account is disabled. Ask an admin if you think this is wrong.".into(),
                ));
            }
        }
        let listed = self.0.accounts.admin_users.contains(&user.name);
        let admin = listed || in_admin_group.unwrap_or(user.admin);
        if admin != user.admin {
            users::set_admin(&mut *tx, user.user_id, admin).await?;
            let reason = if listed { "admin_users" } else { "admin_groups" };
            self.audit(
                &mut *tx,
                Actor::System,
                "user.set_admin",
                user.name.as_str(),
                json!({ "reason": reason, "after": admin }),
            )
            .await?;
            self.forget_cached(user.user_id);
        }
        Ok(Admission::Active(User { admin, ..user }))
    }

    /// Self-service sign-up, when the configuration allows it. Returns the new account (pending
    /// when approval is required).
    pub async fn sign_up(&self, raw_name: &str, password: Secret<String>) -> Result<User, ServiceError> {
        let state = match self.0.accounts.signup {
            SignupPolicy::Closed => {
                return Err(ServiceError::Forbidden(
                    "Sign-up is closed on this hub; ask an admin for an account.".into(),
                ));
            }
            SignupPolicy::Approval => AccountState::Pending,
            SignupPolicy::Open => AccountState::Active,
        };
        let name = UserName::parse(raw_name.trim())?;
        self.password_policy().check(password.expose())?;
        let hash = self.0.passwords.hash(password).await?;
        let mut tx = labhub_db::begin(self.db()).await?;
        let user = users::insert(
            &mut *tx,
            &NewUser { name: &name, admin: false, state, password_hash: Some(&hash), created_at: self.now() },
        )
        .await
        .on_constraint(users::NAME_KEY, || ServiceError::Conflict(format!("the name {name} is taken")))?;
        audit_signup(self, &mut tx, &name, state).await?;
        labhub_db::commit(tx).await?;
        Ok(user)
    }

    /// Makes sure someone can administer the hub: names in `admin_users` that exist become
    /// admins, and when there is no active admin at all, the first `admin_users` name (or
    /// `admin`) gets an account with a fresh random password, which is returned (once) so the
    /// operator can sign in.
    pub async fn bootstrap_admins(&self) -> Result<Option<(UserName, Secret<String>)>, ServiceError> {
        for name in &self.0.accounts.admin_users {
            if let Some(u) = users::by_name(self.db(), name).await?
                && !u.admin
            {
                users::set_admin(self.db(), u.user_id, true).await?;
                self.audit(
                    self.db(),
                    Actor::System,
                    "user.set_admin",
                    name.as_str(),
                    json!({ "reason": "admin_users" }),
                )
                .await?;
            }
        }
        if users::count_active_admins(self.db()).await? > 0 {
            return Ok(None);
        }
        let name = match self.0.accounts.admin_users.first() {
            Some(n) => n.clone(),
            None => UserName::parse("admin").expect("a valid name"),
        };
        let password = Secret::new(labhub_auth::new_token().0[..24].to_string());
        let hash = self.0.passwords.hash(password.clone()).await?;
        match users::by_name(self.db(), &name).await? {
            Some(u) => {
                users::set_password_hash(self.db(), u.user_id, Some(&hash)).await?;
                users::set_admin(self.db(), u.user_id, true).await?;
                users::set_state(self.db(), u.user_id, AccountState::Active).await?;
                self.forget_cached(u.user_id);
            }
            None => {
                users::insert(
                    self.db(),
                    &NewUser {
                        name: &name,
                        admin: true,
                        state: AccountState::Active,
                        password_hash: Some(&hash),
                        created_at: self.now(),
                    },
                )
                .await?;
            }
        }
        self.audit(self.db(), Actor::System, "user.bootstrap_admin", name.as_str(), json!({})).await?;
        Ok(Some((name, password)))
    }
}

async fn audit_signup(
    hub: &Hub,
    tx: &mut labhub_db::PgConnection,
    name: &UserName,
    state: AccountState,
) -> Result<(), ServiceError> {
    labhub_db::audit::record(
        tx,
        hub.now(),
        name.as_str(),
        "user.signup",
        name.as_str(),
        &json!({ "state": state.as_str() }),
    )
    .await?;
    Ok(())
}
