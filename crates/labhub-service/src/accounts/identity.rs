//! The part of the sign-in policy for identities vouched for from outside the hub (identity
//! providers, the directory): whether the name and groups let the person in, and which
//! account the identity belongs to.

use labhub_auth::oidc::{AccessRules, ExternalIdentity, Provider};
use labhub_core::{AccountState, UserName};
use labhub_db::ResultExt;
use labhub_db::identities::{self, NewIdentity};
use labhub_db::users::{self, NewUser, User};
use serde_json::json;

use super::Accounts;
use crate::access::Actor;
use crate::hub::HubTx;
use crate::{ServiceError, SignupPolicy};

/// Where an identity comes from, as the sign-in policy sees it: an identity provider or the
/// directory.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    /// The key its identities are stored under (a provider's id, or `ldap`).
    pub(crate) id: &'a str,
    /// How messages name it.
    pub(crate) display_name: &'a str,
    /// Who may sign in through it, and who is an admin.
    pub(crate) rules: &'a AccessRules,
}

impl<'a> From<&'a Provider> for Source<'a> {
    fn from(p: &'a Provider) -> Self {
        Source { id: p.id().as_str(), display_name: p.display_name(), rules: p.rules() }
    }
}

/// The sign-in to start again from, in messages.
pub(crate) const START_AGAIN: &str = "Start again from the sign-in page.";

impl Accounts<'_> {
    /// The first half of the policy for an identity from a provider or the directory, before
    /// any account is looked at: the claimed name must pass the account name rule, and the
    /// source's allowed users and groups must admit it (admins by `admin_groups`, or by an
    /// `admin_users` entry for this source, always pass; a bare name in `admin_users` is a
    /// local account's and lets no one past a source's lists).
    /// Returns the name and, when the source names admin groups, whether the identity is in
    /// one.
    pub(crate) fn check_identity(
        &self,
        source: Source<'_>,
        identity: &ExternalIdentity,
    ) -> Result<(UserName, Option<bool>), ServiceError> {
        let via = source.display_name;
        let name = UserName::parse(identity.username.trim()).map_err(|e| {
            ServiceError::Forbidden(format!(
                "{via} calls you '{}', which is not a valid account name on this hub ({e}). Ask an admin.",
                identity.username
            ))
        })?;
        let rules = source.rules;
        let member_of = |groups: &[String]| identity.groups.iter().any(|g| groups.contains(g));
        let in_admin_group = (!rules.admin_groups.is_empty()).then(|| member_of(&rules.admin_groups));
        let restricted = !rules.allowed_users.is_empty() || !rules.allowed_groups.is_empty();
        let allowed = self.state().settings.lists_admin(&name, Some(source.id))
            || in_admin_group == Some(true)
            || rules.allowed_users.contains(&name)
            || member_of(&rules.allowed_groups);
        if restricted && !allowed {
            return Err(ServiceError::Forbidden(format!(
                "{name} may not sign in to this hub with {via}: neither the name nor any of your groups there is on the list of those allowed. Ask an admin if you think this is wrong."
            )));
        }
        Ok((name, in_admin_group))
    }

    /// The account an identity belongs to, for the sign-in policy: the account it is linked
    /// to; else an account of the claimed name made for this source (by an admin naming it,
    /// or by the source itself) that has no password and no identity yet, linked now; else a
    /// new account when the source creates them. A name taken by any other account is
    /// refused, and the refusal is audited. Runs in the policy's transaction.
    pub(crate) async fn account_for_identity(
        &self,
        tx: &mut HubTx<'_>,
        source: Source<'_>,
        identity: &ExternalIdentity,
        name: &UserName,
    ) -> Result<User, ServiceError> {
        let now = self.hub.now();
        let pid = source.id;
        if let Some((linked, user)) = identities::by_subject_for_update(&mut **tx, pid, &identity.subject).await? {
            identities::touch(&mut **tx, linked.identity_id, &identity.username, identity.email.as_deref(), now)
                .await?;
            return Ok(user);
        }
        let user = match users::by_name_for_update(&mut **tx, name).await? {
            Some(existing) => {
                let claimable = existing.password_hash.is_none()
                    && existing.link_provider.as_deref() == Some(pid)
                    && identities::count_for_user(&mut **tx, existing.user_id).await? == 0;
                if !claimable {
                    // On the pool, not in the transaction: the refusal rolls the transaction back,
                    // and the record of it must stay.
                    self.hub.audit().record(
                        self.hub.db(),
                        Actor::System,
                        "identity.refused",
                        name.as_str(),
                        json!({ "provider": pid, "subject": identity.subject, "reason": "the name belongs to another account" }),
                    )
                    .await?;
                    return Err(ServiceError::Conflict(format!(
                        "An account named {name} already exists on this hub and is not linked to your {} identity, so you were not signed in. If the account is yours, sign in with its password; otherwise ask an admin.",
                        source.display_name
                    )));
                }
                existing
            }
            None if source.rules.auto_create => {
                let state = match self.hub.account_settings().signup {
                    SignupPolicy::Approval => AccountState::Pending,
                    SignupPolicy::Open | SignupPolicy::Closed => AccountState::Active,
                };
                let user = users::insert(
                    &mut **tx,
                    &NewUser {
                        name,
                        admin: false,
                        state,
                        password_hash: None,
                        created_at: now,
                        link_provider: Some(pid),
                    },
                )
                .await
                .on_constraint(users::NAME_KEY, || {
                    ServiceError::Conflict(format!("The name {name} was taken a moment ago. {START_AGAIN}"))
                })?;
                let detail = json!({ "state": state.as_str(), "provider": pid });
                self.record_signup(tx, name, detail).await?;
                user
            }
            None => {
                return Err(ServiceError::Forbidden(format!(
                    "There is no account {name} on this hub, and signing in with {} does not create one. Ask an admin to create your account.",
                    source.display_name
                )));
            }
        };
        identities::insert(
            &mut **tx,
            &NewIdentity {
                user_id: user.user_id,
                provider: pid,
                subject: &identity.subject,
                username: &identity.username,
                email: identity.email.as_deref(),
                now,
            },
        )
        .await
        .on_constraint(identities::PROVIDER_SUBJECT_KEY, || {
            ServiceError::Conflict(format!("Another sign-in linked this identity a moment ago. {START_AGAIN}"))
        })?;
        labhub_db::audit::record(
            &mut **tx,
            now,
            name.as_str(),
            "identity.link",
            name.as_str(),
            &json!({ "provider": pid, "subject": identity.subject }),
        )
        .await?;
        Ok(user)
    }
}
