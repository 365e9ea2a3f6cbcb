//! The one sign-in policy every way of signing in goes through, password sign-in and sign-up,
//! and making sure someone can administer a fresh hub.

use labhub_auth::{DeviceKey, SignInClient};
use labhub_core::{AccountState, Secret, UserName};
use labhub_db::ResultExt;
use labhub_db::identities;
use labhub_db::users::{self, NewUser, User};
use serde_json::json;

use super::Accounts;
use crate::access::Actor;
use crate::hub::HubTx;
use crate::model::Account;
use crate::{ServiceError, SignupPolicy};

/// The one message for every failed password sign-in, so a failure never tells whether the
/// account exists.
pub const BAD_CREDENTIALS: &str = "Invalid user name or password.";

/// How a person proved who they are, as the sign-in policy sees it.
pub(crate) enum SignIn<'p> {
    /// The account's password matched.
    Password(User),
    /// The provider `provider` vouched for an identity linked to this account; with
    /// `admin_groups` set for the provider, whether the identity is in one of them at this
    /// sign-in.
    Provider { user: User, provider: &'p str, in_admin_group: Option<bool> },
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
    pub(crate) fn into_active(self) -> Result<Account, ServiceError> {
        match self {
            Admission::Active(user) => Ok(user.into()),
            Admission::Pending(user) => Err(ServiceError::Forbidden(format!(
                "Your account {} is waiting for an admin's approval. You can sign in once it is approved.",
                user.name
            ))),
        }
    }
}

/// What checking a name and password found.
pub(super) enum Checked {
    /// The local account's password matched.
    Local(User),
    /// The directory accepted the password of this person.
    Directory(labhub_auth::ldap::DirectoryPerson),
    /// No such account, or the wrong password.
    Wrong,
}

/// Who is signing in with a password, besides the name and the password.
#[derive(Debug, Clone, Copy)]
pub struct LoginClient<'a> {
    /// The client's address.
    pub address: &'a str,
    /// The browser's device cookie (every value sent under its name, joined by `.`).
    pub device_cookie: Option<&'a str>,
}

/// A successful password sign-in.
#[derive(Debug)]
pub struct SignedIn {
    /// Who signed in.
    pub account: Account,
    /// The browser's device cookie from now on: it makes this browser a known device of the
    /// account (see `labhub_auth::throttle`).
    pub device_cookie: String,
}

impl Accounts<'_> {
    /// Signs in with a name and a password: a local account's, or the directory's (as
    /// `password_login` says). Every failure that could reveal whether the account exists
    /// gives the same message. Attempts are throttled (see `labhub_auth::throttle`): counted
    /// before the password is checked, per known device, or per account, address and the pair
    /// of them; an attempt that could not be checked (the hub busy, the database or the
    /// directory away) is not counted.
    pub async fn password_login(
        &self,
        raw_name: &str,
        password: Secret<String>,
        client: LoginClient<'_>,
    ) -> Result<SignedIn, ServiceError> {
        let state = self.state();
        if !state.settings.password_login.form() {
            return Err(ServiceError::Forbidden("password sign-in is turned off on this hub".into()));
        }
        let name = UserName::parse(raw_name.trim()).ok();
        // Throttle by the normalised name when there is one, so "Alice" and "alice" share a budget.
        let throttle_key = name.as_ref().map_or_else(|| raw_name.trim().to_ascii_lowercase(), |n| n.to_string());
        let devices = DeviceKey::new(self.hub.key().clone());
        let device = client.device_cookie.and_then(|c| devices.device_for(c, &throttle_key));
        let who = SignInClient { account: &throttle_key, address: client.address, device };
        let attempt = state.throttle.begin_sign_in(&who).map_err(|wait| {
            metrics::counter!("labhub_logins_total", "result" => "throttled").increment(1);
            ServiceError::TooMany {
                message: format!("Too many failed sign-in attempts. Try again in {} seconds.", wait.as_secs()),
                retry_after: wait,
            }
        })?;
        let checked = match self.check_credentials(raw_name, name.as_ref(), password).await {
            Ok(checked) => checked,
            Err(e) => {
                // Not checked (the hub is busy, the database or the directory is away): not a guess.
                state.throttle.not_checked(attempt);
                metrics::counter!("labhub_logins_total", "result" => "unchecked").increment(1);
                return Err(e);
            }
        };
        let sign_in = match checked {
            Checked::Wrong => {
                metrics::counter!("labhub_logins_total", "result" => "failed").increment(1);
                return Err(ServiceError::Unauthenticated(BAD_CREDENTIALS.into()));
            }
            Checked::Local(user) => {
                state.throttle.succeeded(attempt);
                let mut tx = self.hub.begin().await?;
                let admission = self.admit(&mut tx, SignIn::Password(user)).await?;
                tx.commit().await?;
                admission
            }
            Checked::Directory(person) => {
                state.throttle.succeeded(attempt);
                self.admit_directory_person(&person).await?
            }
        };
        let account = sign_in.into_active()?;
        metrics::counter!("labhub_logins_total", "result" => "ok").increment(1);
        let device_cookie = devices.after_sign_in(client.device_cookie, &throttle_key);
        Ok(SignedIn { account, device_cookie })
    }

    /// Checks a password where `password_login` says: a local account that has a password by
    /// its hash (with `local+ldap`, such an account never asks the directory), anyone else by
    /// the directory. Locally, the same work whether the account exists or not.
    async fn check_credentials(
        &self,
        raw_name: &str,
        name: Option<&UserName>,
        password: Secret<String>,
    ) -> Result<Checked, ServiceError> {
        let mode = self.state().settings.password_login;
        let user = match name {
            Some(n) if mode.local() => users::by_name(self.hub.db(), n).await?,
            _ => None,
        };
        let local = user.as_ref().is_some_and(|u| u.password_hash.is_some());
        if mode.directory() && !local {
            return self.check_directory_password(raw_name, &password).await;
        }
        let ok = self.state().passwords.verify(password, user.as_ref().and_then(|u| u.password_hash.clone())).await?;
        Ok(match user.filter(|_| ok) {
            Some(user) => Checked::Local(user),
            None => Checked::Wrong,
        })
    }

    /// The rest of the policy, for every way of signing in, once the account is known: a
    /// disabled account is refused, a pending one waits, and admin rights are set from
    /// `admin_users` (the entry for the way this sign-in was made) and, for a provider with
    /// `admin_groups`, from membership at this sign-in. Runs in the caller's transaction, so a
    /// refusal leaves nothing behind.
    pub(crate) async fn admit(&self, tx: &mut HubTx<'_>, sign_in: SignIn<'_>) -> Result<Admission, ServiceError> {
        let (user, via, in_admin_group) = match sign_in {
            SignIn::Password(user) => (user, None, None),
            SignIn::Provider { user, provider, in_admin_group } => (user, Some(provider), in_admin_group),
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
        let listed = self.state().settings.lists_admin(&user.name, via);
        let admin = listed || in_admin_group.unwrap_or(user.admin);
        if admin != user.admin {
            users::set_admin(&mut **tx, user.user_id, admin).await?;
            let reason = if listed { "admin_users" } else { "admin_groups" };
            let detail = json!({ "reason": reason, "after": admin });
            self.hub.audit().record(&mut **tx, Actor::System, "user.set_admin", user.name.as_str(), detail).await?;
            self.forget_credentials(user.user_id);
        }
        Ok(Admission::Active(User { admin, ..user }))
    }

    /// Self-service sign-up, when the configuration allows it. Returns the new account (pending
    /// when approval is required). Sign-ups that get as far as hashing the password are
    /// throttled per client address.
    pub async fn sign_up(
        &self,
        raw_name: &str,
        password: Secret<String>,
        client_addr: &str,
    ) -> Result<Account, ServiceError> {
        let state = match self.state().settings.signup {
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
        let throttle = &self.state().throttle;
        let attempt = throttle.begin_sign_up(client_addr).map_err(|wait| ServiceError::TooMany {
            message: format!("Too many sign-ups from your address. Try again in {} seconds.", wait.as_secs()),
            retry_after: wait,
        })?;
        let hash = match self.state().passwords.hash(password).await {
            Ok(hash) => hash,
            Err(e) => {
                throttle.not_checked(attempt);
                return Err(e.into());
            }
        };
        throttle.succeeded(attempt);
        let mut tx = self.hub.begin().await?;
        let user = users::insert(
            &mut *tx,
            &NewUser {
                name: &name,
                admin: false,
                state,
                password_hash: Some(&hash),
                created_at: self.hub.now(),
                link_provider: None,
            },
        )
        .await
        .on_constraint(users::NAME_KEY, || ServiceError::Conflict(format!("the name {name} is taken")))?;
        self.record_signup(&mut tx, &name, json!({ "state": state.as_str() })).await?;
        tx.commit().await?;
        Ok(user.into())
    }

    /// Records a new account made by its owner (sign-up, or a provider's first sign-in); the
    /// actor is the new account itself.
    pub(crate) async fn record_signup(
        &self,
        tx: &mut HubTx<'_>,
        name: &UserName,
        detail: serde_json::Value,
    ) -> Result<(), ServiceError> {
        labhub_db::audit::record(&mut **tx, self.hub.now(), name.as_str(), "user.signup", name.as_str(), &detail)
            .await?;
        Ok(())
    }

    /// Makes sure someone can administer the hub: accounts `admin_users` names that exist
    /// become admins (a bare name only if the account has a password, `provider:name` only if
    /// it has an identity of that provider), and when there is no active admin at all, the
    /// first bare name (or `admin`) gets an account with a fresh random password, which is
    /// returned (once) so the operator can sign in. An account of that name that signs in
    /// through a provider is not taken over: that would make the provider's user the admin.
    pub async fn bootstrap_admins(&self) -> Result<Option<(UserName, Secret<String>)>, ServiceError> {
        let settings = &self.state().settings;
        let audit = self.hub.audit();
        let mut tx = self.hub.begin().await?;
        for entry in &settings.admin_users {
            let Some(u) = users::by_name(&mut *tx, &entry.name).await?.filter(|u| !u.admin) else { continue };
            let fits = match &entry.provider {
                None => u.password_hash.is_some(),
                Some(p) => {
                    identities::list_for_user(&mut *tx, u.user_id).await?.iter().any(|i| i.provider == p.as_str())
                }
            };
            if fits {
                users::set_admin(&mut *tx, u.user_id, true).await?;
                let detail = json!({ "reason": "admin_users" });
                audit.record(&mut *tx, Actor::System, "user.set_admin", u.name.as_str(), detail).await?;
            }
        }
        if users::count_active_admins(&mut *tx).await? > 0 {
            return tx.commit().await.map(|()| None);
        }
        let name = match settings.admin_users.iter().find(|a| a.provider.is_none()) {
            Some(a) => a.name.clone(),
            None => UserName::parse("admin").expect("a valid name"),
        };
        let existing = users::by_name(&mut *tx, &name).await?;
        if let Some(u) = &existing
            && identities::count_for_user(&mut *tx, u.user_id).await? > 0
        {
            return Err(ServiceError::Conflict(format!(
                "no active admin exists, and the account {name}, which would become the first one, signs in through an identity provider; list a local account first in admin_users, or make an admin with `labhub user set-admin`"
            )));
        }
        let password = Secret::new(labhub_auth::new_token().0[..24].to_string());
        let hash = self.state().passwords.hash(password.clone()).await?;
        match &existing {
            Some(u) => {
                users::set_password_hash(&mut *tx, u.user_id, Some(&hash)).await?;
                users::set_admin(&mut *tx, u.user_id, true).await?;
                users::set_state(&mut *tx, u.user_id, AccountState::Active).await?;
            }
            None => {
                let new = NewUser {
                    name: &name,
                    admin: true,
                    state: AccountState::Active,
                    password_hash: Some(&hash),
                    created_at: self.hub.now(),
                    link_provider: None,
                };
                users::insert(&mut *tx, &new).await?;
            }
        }
        audit.record(&mut *tx, Actor::System, "user.bootstrap_admin", name.as_str(), json!({})).await?;
        tx.commit().await?;
        if let Some(u) = existing {
            self.forget_credentials(u.user_id);
        }
        Ok(Some((name, password)))
    }
}
