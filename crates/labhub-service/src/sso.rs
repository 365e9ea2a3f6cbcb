//! Signing in through identity providers: starting a sign-in, finishing it when the provider
//! sends the browser back, finding the account an identity belongs to, and the identities
//! people and admins see (and admins unlink).
//!
//! Who gets in is decided by the one sign-in policy, [`Hub::admit`]; this module only finds
//! out who the provider vouches for and which account that is.

use labhub_auth::oidc::{BrowserBinding, ExternalIdentity, LoginSecrets, Provider, SsoError};
use labhub_auth::sha256;
use labhub_core::{AccountState, UserName};
use labhub_db::identities::{self, NewIdentity, NewOAuthState};
use labhub_db::users::{self, NewUser, User};
use labhub_db::{PgConnection, ResultExt};
use serde_json::json;

use crate::accounts::SignIn;
use crate::audit::Actor;
use crate::{Hub, ServiceError, SignupPolicy};

/// How long a person may stay at the provider before the sign-in expires.
pub const SIGN_IN_WINDOW: time::Duration = time::Duration::minutes(10);

/// An identity linked to an account.
pub type Identity = identities::Identity;

/// What the provider sent back to `/hub/oauth_callback`.
#[derive(Debug, Default)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// A finished sign-in: the account, and where the person wanted to go.
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
    pub next: String,
}

const START_AGAIN: &str = "Start again from the sign-in page.";

/// A provider's failure, as the person sees it.
fn refusal(e: SsoError) -> ServiceError {
    let message = format!("Signing in did not work: {e}.");
    match e {
        SsoError::UnknownProvider(_) => ServiceError::NotFound(message),
        SsoError::Unreachable { .. } | SsoError::Timeout { .. } | SsoError::BadAnswer { .. } => {
            ServiceError::Unavailable(format!("{message} Try again in a moment."))
        }
        SsoError::CodeRejected { .. }
        | SsoError::Refused { .. }
        | SsoError::InvalidToken { .. }
        | SsoError::MissingClaim { .. } => ServiceError::Unauthenticated(format!("{message} {START_AGAIN}")),
        SsoError::UnverifiedEmail { .. } => ServiceError::Forbidden(message),
        SsoError::Setup(detail) => ServiceError::Internal(detail),
    }
}

impl Hub {
    fn provider(&self, id: &str) -> Result<&Provider, ServiceError> {
        self.providers().get(id).ok_or_else(|| refusal(SsoError::UnknownProvider(id.to_string())))
    }

    /// Starts a sign-in with a provider for the browser holding `binding`: remembers it (by
    /// hashes only) and returns the provider's authorization URL to send the browser to.
    /// `next` must already be a path on this hub.
    pub async fn sso_begin(
        &self,
        provider: &str,
        binding: &BrowserBinding,
        next: &str,
    ) -> Result<String, ServiceError> {
        let provider = self.provider(provider)?;
        let now = self.now();
        identities::delete_states_before(self.db(), now - SIGN_IN_WINDOW).await?;
        let secrets = LoginSecrets::new(self.key());
        let url = provider.authorize_url(&secrets, now).await.map_err(refusal)?;
        identities::insert_state(
            self.db(),
            &NewOAuthState {
                state_hash: &sha256(secrets.state()),
                provider: provider.id().as_str(),
                binding_hash: &binding.hash(),
                next,
                now,
            },
        )
        .await?;
        Ok(url.into())
    }

    /// Finishes a sign-in when the provider sends the browser back: the `state` must be one
    /// this hub issued, unused, under ten minutes old and started by this browser; then the
    /// provider's answer is checked and the sign-in policy decides. Nothing is written unless
    /// the policy lets the person in (or records them as waiting for approval).
    pub async fn sso_finish(
        &self,
        params: CallbackParams,
        binding: Option<&BrowserBinding>,
    ) -> Result<SignedIn, ServiceError> {
        if let Some(error) = &params.error {
            if let Some(state) = &params.state {
                // The attempt is over either way; its state must not be usable again.
                identities::take_state(self.db(), &sha256(state)).await?;
            }
            return Err(provider_error(error, params.error_description.as_deref()));
        }
        let state = params.state.as_deref().ok_or_else(|| {
            ServiceError::Invalid(format!("The identity provider's answer has no state. {START_AGAIN}"))
        })?;
        let binding = binding.ok_or_else(|| {
            ServiceError::Unauthenticated(format!(
                "Your browser did not send back this hub's sign-in cookie (cookies may be blocked, or the sign-in was started in another browser). {START_AGAIN}"
            ))
        })?;
        let pending = identities::take_state(self.db(), &sha256(state)).await?.ok_or_else(|| {
            ServiceError::Unauthenticated(format!("This sign-in is unknown or was already used. {START_AGAIN}"))
        })?;
        if !binding.matches(&pending.binding_hash) {
            return Err(ServiceError::Unauthenticated(format!(
                "This sign-in was started in another browser. {START_AGAIN}"
            )));
        }
        let now = self.now();
        if now - pending.created_at > SIGN_IN_WINDOW {
            return Err(ServiceError::Unauthenticated(format!(
                "This sign-in took longer than {} minutes and has expired. {START_AGAIN}",
                SIGN_IN_WINDOW.whole_minutes()
            )));
        }
        let provider = self.provider(&pending.provider)?;
        let code = params.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
            ServiceError::Invalid(format!(
                "{}'s answer has no authorization code. {START_AGAIN}",
                provider.display_name()
            ))
        })?;
        let secrets = LoginSecrets::recover(self.key(), state);
        let identity = match provider.finish(code, &secrets, now).await {
            Ok(identity) => identity,
            Err(e) => {
                metrics::counter!("labhub_logins_total", "result" => "failed").increment(1);
                return Err(refusal(e));
            }
        };
        let mut tx = labhub_db::begin(self.db()).await?;
        let admission = self.admit(&mut tx, SignIn::Provider(provider, &identity)).await?;
        labhub_db::commit(tx).await?;
        let user = admission.into_active()?;
        metrics::counter!("labhub_logins_total", "result" => "ok").increment(1);
        Ok(SignedIn { user, next: pending.next })
    }

    /// The account an identity belongs to, for the sign-in policy: the account it is linked
    /// to; else an account of the claimed name that an admin created for it (no password, no
    /// identity yet), linked now; else a new account when the provider creates them. A name
    /// taken by any other account is refused, and the refusal is audited. Runs in the policy's
    /// transaction.
    pub(crate) async fn account_for_identity(
        &self,
        tx: &mut PgConnection,
        provider: &Provider,
        identity: &ExternalIdentity,
        name: &UserName,
    ) -> Result<User, ServiceError> {
        let now = self.now();
        let pid = provider.id().as_str();
        if let Some((linked, user)) = identities::by_subject_for_update(&mut *tx, pid, &identity.subject).await? {
            identities::touch(&mut *tx, linked.identity_id, &identity.username, identity.email.as_deref(), now).await?;
            return Ok(user);
        }
        let user = match users::by_name_for_update(&mut *tx, name).await? {
            Some(existing) => {
                let admin_made = existing.password_hash.is_none()
                    && identities::count_for_user(&mut *tx, existing.user_id).await? == 0;
                if !admin_made {
                    // On the pool, not in the transaction: the refusal rolls the transaction back,
                    // and the record of it must stay.
                    self.audit(
                        self.db(),
                        Actor::System,
                        "identity.refused",
                        name.as_str(),
                        json!({ "provider": pid, "subject": identity.subject, "reason": "the name belongs to another account" }),
                    )
                    .await?;
                    return Err(ServiceError::Conflict(format!(
                        "An account named {name} already exists on this hub and is not linked to your {} identity, so you were not signed in. If the account is yours, sign in with its password; otherwise ask an admin.",
                        provider.display_name()
                    )));
                }
                existing
            }
            None if provider.rules().auto_create => {
                let state = match self.0.accounts.signup {
                    SignupPolicy::Approval => AccountState::Pending,
                    SignupPolicy::Open | SignupPolicy::Closed => AccountState::Active,
                };
                let user = users::insert(
                    &mut *tx,
                    &NewUser { name, admin: false, state, password_hash: None, created_at: now },
                )
                .await
                .on_constraint(users::NAME_KEY, || {
                    ServiceError::Conflict(format!("The name {name} was taken a moment ago. {START_AGAIN}"))
                })?;
                labhub_db::audit::record(
                    &mut *tx,
                    now,
                    name.as_str(),
                    "user.signup",
                    name.as_str(),
                    &json!({ "state": state.as_str(), "provider": pid }),
                )
                .await?;
                user
            }
            None => {
                return Err(ServiceError::Forbidden(format!(
                    "There is no account {name} on this hub, and signing in with {} does not create one. Ask an admin to create your account.",
                    provider.display_name()
                )));
            }
        };
        identities::insert(
            &mut *tx,
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
            &mut *tx,
            now,
            name.as_str(),
            "identity.link",
            name.as_str(),
            &json!({ "provider": pid, "subject": identity.subject }),
        )
        .await?;
        Ok(user)
    }

    /// A user's linked identities (their own, or anyone's for an admin).
    pub async fn list_identities(&self, actor: Actor<'_>, name: &UserName) -> Result<Vec<Identity>, ServiceError> {
        let user = self.user_by_name(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        Ok(identities::list_for_user(self.db(), user.user_id).await?)
    }

    /// Unlinks one of a user's identities (admins). The person can no longer sign in with it
    /// until it is linked again; their current sessions stay.
    pub async fn unlink_identity(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        identity_id: i64,
    ) -> Result<Identity, ServiceError> {
        actor.require_admin()?;
        let user = self.user_by_name(name).await?;
        let mut tx = labhub_db::begin(self.db()).await?;
        let gone = identities::delete_for_user(&mut *tx, user.user_id, identity_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{name} has no linked identity {identity_id}")))?;
        self.audit(
            &mut *tx,
            actor,
            "identity.unlink",
            name.as_str(),
            json!({ "provider": gone.provider, "subject": gone.subject }),
        )
        .await?;
        labhub_db::commit(tx).await?;
        Ok(gone)
    }
}

/// The provider's `error=` answer, as the person sees it.
fn provider_error(error: &str, description: Option<&str>) -> ServiceError {
    if error == "access_denied" {
        return ServiceError::Forbidden(
            "You did not allow this hub to use your identity, so you are not signed in. Go back to the sign-in page to try again.".into(),
        );
    }
    // The description comes from the query string; keep it short and plain.
    let said: String = description.unwrap_or("").chars().filter(|c| !c.is_control()).take(200).collect();
    let error: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    ServiceError::Unauthenticated(if said.is_empty() {
        format!("The identity provider stopped the sign-in ({error}). {START_AGAIN}")
    } else {
        format!("The identity provider stopped the sign-in ({error}: {said}). {START_AGAIN}")
    })
}
