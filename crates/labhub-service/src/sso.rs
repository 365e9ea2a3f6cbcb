//! Signing in through identity providers: starting a sign-in, finishing it when the provider
//! sends the browser back, finding the account an identity belongs to, and the identities
//! people and admins see (and admins unlink).
//!
//! Who gets in, and as which account, is decided by the one sign-in policy (`accounts/`);
//! this module only finds out who the provider vouches for.

use labhub_auth::oidc::{BrowserBinding, LoginSecrets, Provider, SsoError};
use labhub_auth::sha256;
use labhub_core::UserName;
use labhub_db::identities::{self, NewOAuthState};
use serde_json::json;

use crate::access::Actor;
use crate::accounts::{START_AGAIN, SignIn, Source};
use crate::model::{Account, LinkedIdentity};
use crate::{Hub, ServiceError};

/// How long a person may stay at the provider before the sign-in expires.
pub const SIGN_IN_WINDOW: time::Duration = time::Duration::minutes(10);

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
    pub account: Account,
    pub next: String,
}

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
    /// Signing in through identity providers, and linked identities.
    pub fn sign_on(&self) -> SignOn<'_> {
        SignOn::new(self)
    }
}

/// Signing in through identity providers.
#[derive(Clone, Copy)]
pub struct SignOn<'h> {
    hub: &'h Hub,
}

impl<'h> SignOn<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    fn provider(&self, id: &str) -> Result<&'h Provider, ServiceError> {
        self.hub.providers().get(id).ok_or_else(|| refusal(SsoError::UnknownProvider(id.to_string())))
    }

    /// Starts a sign-in with a provider for the browser holding `binding`: remembers it (by
    /// hashes only) and returns the provider's authorization URL to send the browser to.
    /// `next` must already be a path on this hub.
    pub async fn begin(&self, provider: &str, binding: &BrowserBinding, next: &str) -> Result<String, ServiceError> {
        let provider = self.provider(provider)?;
        let now = self.hub.now();
        identities::delete_states_before(self.hub.db(), now - SIGN_IN_WINDOW).await?;
        let secrets = LoginSecrets::new(self.hub.key());
        let url = provider.authorize_url(&secrets, now).await.map_err(refusal)?;
        identities::insert_state(
            self.hub.db(),
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
    pub async fn finish(
        &self,
        params: CallbackParams,
        binding: Option<&BrowserBinding>,
    ) -> Result<SignedIn, ServiceError> {
        if let Some(error) = &params.error {
            if let Some(state) = &params.state {
                // The attempt is over either way; its state must not be usable again.
                identities::take_state(self.hub.db(), &sha256(state)).await?;
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
        let pending = identities::take_state(self.hub.db(), &sha256(state)).await?.ok_or_else(|| {
            ServiceError::Unauthenticated(format!("This sign-in is unknown or was already used. {START_AGAIN}"))
        })?;
        if !binding.matches(&pending.binding_hash) {
            return Err(ServiceError::Unauthenticated(format!(
                "This sign-in was started in another browser. {START_AGAIN}"
            )));
        }
        let now = self.hub.now();
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
        let secrets = LoginSecrets::recover(self.hub.key(), state);
        let identity = match provider.finish(code, &secrets, now).await {
            Ok(identity) => identity,
            Err(e) => {
                metrics::counter!("labhub_logins_total", "result" => "failed").increment(1);
                return Err(refusal(e));
            }
        };
        let accounts = self.hub.accounts();
        let (name, in_admin_group) = accounts.check_identity(Source::from(provider), &identity)?;
        let mut tx = self.hub.begin().await?;
        let user = accounts.account_for_identity(&mut tx, Source::from(provider), &identity, &name).await?;
        let sign_in = SignIn::Provider { user, provider: provider.id().as_str(), in_admin_group };
        let admission = accounts.admit(&mut tx, sign_in).await?;
        tx.commit().await?;
        let account = admission.into_active()?;
        metrics::counter!("labhub_logins_total", "result" => "ok").increment(1);
        Ok(SignedIn { account, next: pending.next })
    }

    /// A user's linked identities (their own, or anyone's for an admin).
    pub async fn identities(&self, actor: Actor<'_>, name: &UserName) -> Result<Vec<LinkedIdentity>, ServiceError> {
        let user = self.hub.user_row(name).await?;
        actor.require_self_or_admin(user.user_id)?;
        let rows = identities::list_for_user(self.hub.db(), user.user_id).await?;
        Ok(rows.into_iter().map(LinkedIdentity::from).collect())
    }

    /// Unlinks one of a user's identities (admins). The person can no longer sign in with it
    /// until it is linked again; their current sessions stay.
    pub async fn unlink(
        &self,
        actor: Actor<'_>,
        name: &UserName,
        identity_id: i64,
    ) -> Result<LinkedIdentity, ServiceError> {
        actor.require_admin()?;
        let user = self.hub.user_row(name).await?;
        let mut tx = self.hub.begin().await?;
        let gone = identities::delete_for_user(&mut *tx, user.user_id, identity_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{name} has no linked identity {identity_id}")))?;
        let detail = json!({ "provider": gone.provider, "subject": gone.subject });
        self.hub.audit().record(&mut *tx, actor, "identity.unlink", name.as_str(), detail).await?;
        tx.commit().await?;
        Ok(gone.into())
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
