//! Generic OpenID Connect: discovery (cached), the authorization request with PKCE and a
//! nonce, the code exchange, ID token validation against the provider's keys, and userinfo.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AdditionalClaims, AuthorizationCode, ClaimsVerificationError, Client, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken,
    IdTokenFields, IdTokenVerifier, IssuerUrl, Nonce, OAuth2TokenResponse, RedirectUrl, Scope,
    SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use url::Url;

use super::error::TokenProblem;
use super::http::ProviderHttp;
use super::keys::KeyCache;
use super::oauth::token_failure;
use super::{LoginSecrets, Profile, SsoError};

/// How far the provider's clock may be from ours when checking `exp` and `iat`.
pub(crate) const CLOCK_SKEW: time::Duration = time::Duration::seconds(60);
/// How long a discovery document is trusted before it is fetched again.
const DISCOVERY_TTL: time::Duration = time::Duration::hours(1);

/// Every claim beyond the standard ones (groups, custom name claims), kept as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct OtherClaims {
    #[serde(flatten)]
    claims: Map<String, Value>,
}

impl AdditionalClaims for OtherClaims {}

/// An ID token whose non-standard claims are kept.
pub(crate) type LabIdToken =
    IdToken<OtherClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

type LabTokenResponse = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

/// The client as built from discovery: authorization endpoint set, token and userinfo
/// endpoints as the provider advertises them.
type LabClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    LabTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What an ID token must satisfy.
pub(crate) struct Expected<'a> {
    pub(crate) issuer: &'a IssuerUrl,
    pub(crate) client_id: &'a ClientId,
    pub(crate) client_secret: &'a ClientSecret,
    /// The algorithms the provider says it signs with (RS256 when it does not say).
    pub(crate) algs: &'a [CoreJwsSigningAlgorithm],
    pub(crate) nonce: &'a Nonce,
    pub(crate) now: OffsetDateTime,
    /// The access token issued with the ID token, checked against `at_hash` when present.
    pub(crate) access_token: Option<&'a AccessToken>,
}

fn chrono_time(t: OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default()
}

/// Checks an ID token with a given key set: signature, issuer, audience, expiry and issue time
/// (with [`CLOCK_SKEW`]), nonce, and the access token hash. Returns every claim as JSON.
pub(crate) fn check_id_token(
    token: &LabIdToken,
    keys: CoreJsonWebKeySet,
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, ClaimsVerificationError> {
    let latest_valid = chrono_time(expected.now - CLOCK_SKEW);
    let latest_issue = chrono_time(expected.now + CLOCK_SKEW);
    let mut verifier = IdTokenVerifier::new_confidential_client(
        expected.client_id.clone(),
        expected.client_secret.clone(),
        expected.issuer.clone(),
        keys,
    )
    // Comparing `exp` with a time `CLOCK_SKEW` in the past accepts tokens up to that much past expiry.
    .set_time_fn(move || latest_valid)
    .set_issue_time_verifier_fn(move |iat| {
        if iat > latest_issue { Err(format!("issued in the future ({iat})")) } else { Ok(()) }
    });
    if !expected.algs.is_empty() {
        verifier = verifier.set_allowed_algs(expected.algs.iter().cloned());
    }
    let claims = token.claims(&verifier, expected.nonce)?;
    if let (Some(wanted), Some(access_token)) = (claims.access_token_hash(), expected.access_token) {
        let alg = token.signing_alg().map_err(ClaimsVerificationError::SignatureVerification)?;
        let key = token.signing_key(&verifier).map_err(ClaimsVerificationError::SignatureVerification)?;
        let actual = AccessTokenHash::from_token(access_token, alg, key)
            .map_err(|e| ClaimsVerificationError::Other(format!("at_hash: {e}")))?;
        if actual != *wanted {
            return Err(ClaimsVerificationError::Other(
                "the access token does not match the ID token's at_hash".into(),
            ));
        }
    }
    match serde_json::to_value(claims) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ClaimsVerificationError::Other("the claims are not a JSON object".into())),
    }
}

/// What a failed check means, in words for people.
fn problem_of(e: &ClaimsVerificationError) -> TokenProblem {
    use SignatureVerificationError as S;
    match e {
        ClaimsVerificationError::SignatureVerification(S::DisallowedAlg(a) | S::UnsupportedAlg(a)) => {
            TokenProblem::Malformed(format!("signing algorithm {a}"))
        }
        ClaimsVerificationError::SignatureVerification(_) => TokenProblem::Signature,
        ClaimsVerificationError::InvalidAudience(_) => TokenProblem::Audience,
        ClaimsVerificationError::InvalidIssuer(_) => TokenProblem::Issuer,
        ClaimsVerificationError::Expired(_) => TokenProblem::Expired,
        ClaimsVerificationError::InvalidNonce(_) => TokenProblem::Nonce,
        other => TokenProblem::Malformed(other.to_string()),
    }
}

/// One OpenID Connect provider.
pub(crate) struct OpenIdProvider {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    redirect: RedirectUrl,
    scopes: Vec<Scope>,
    groups_claim: String,
    http: ProviderHttp,
    discovered: Mutex<Option<(CoreProviderMetadata, OffsetDateTime)>>,
    keys: KeyCache,
}

/// How an OpenID Connect provider is set up.
pub(crate) struct OpenIdSettings {
    pub(crate) issuer: IssuerUrl,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) redirect: RedirectUrl,
    pub(crate) scopes: Vec<String>,
    pub(crate) groups_claim: String,
}

impl OpenIdProvider {
    /// A provider; nothing is fetched until the first sign-in.
    pub(crate) fn new(settings: OpenIdSettings, http: ProviderHttp) -> Self {
        Self {
            issuer: settings.issuer,
            client_id: ClientId::new(settings.client_id),
            client_secret: ClientSecret::new(settings.client_secret),
            redirect: settings.redirect,
            // The client always asks for `openid`; asking twice would repeat it in the URL.
            scopes: settings.scopes.into_iter().filter(|s| s != "openid").map(Scope::new).collect(),
            groups_claim: settings.groups_claim,
            keys: KeyCache::new(http.clone()),
            http,
            discovered: Mutex::new(None),
        }
    }

    /// The discovery document, from the cache while it is fresh.
    async fn metadata(&self, now: OffsetDateTime) -> Result<CoreProviderMetadata, SsoError> {
        {
            let cached = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((m, at)) = cached.as_ref().filter(|(_, at)| now - *at < DISCOVERY_TTL) {
                tracing::trace!(fetched = %at, "discovery document from the cache");
                return Ok(m.clone());
            }
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), self.http.client()).await.map_err(
            |e| match e {
                openidconnect::DiscoveryError::Request(e) => self.http.client_failure(&e),
                other => self.http.bad_answer(format!("its discovery document could not be used: {other}")),
            },
        )?;
        self.keys.store(metadata.jwks_uri(), metadata.jwks().clone(), now);
        *self.discovered.lock().unwrap_or_else(|e| e.into_inner()) = Some((metadata.clone(), now));
        Ok(metadata)
    }

    fn client(&self, metadata: CoreProviderMetadata) -> LabClient {
        LabClient::from_provider_metadata(metadata, self.client_id.clone(), Some(self.client_secret.clone()))
            .set_redirect_uri(self.redirect.clone())
    }

    /// Where to send the browser to sign in.
    pub(crate) async fn authorize_url(&self, secrets: &LoginSecrets, now: OffsetDateTime) -> Result<Url, SsoError> {
        let client = self.client(self.metadata(now).await?);
        let state = CsrfToken::new(secrets.state().to_string());
        let nonce = secrets.nonce();
        let mut request = client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, move || state, move || nonce);
        for scope in &self.scopes {
            request = request.add_scope(scope.clone());
        }
        Ok(request.set_pkce_challenge(secrets.pkce_challenge()).url().0)
    }

    /// Checks an ID token as a sign-in does, with the provider's current keys.
    pub(crate) async fn verify(
        &self,
        token: &LabIdToken,
        nonce: &Nonce,
        access_token: Option<&AccessToken>,
        now: OffsetDateTime,
    ) -> Result<Map<String, Value>, SsoError> {
        let metadata = self.metadata(now).await?;
        let expected = Expected {
            issuer: &self.issuer,
            client_id: &self.client_id,
            client_secret: &self.client_secret,
            algs: metadata.id_token_signing_alg_values_supported(),
            nonce,
            now,
            access_token,
        };
        self.keys.verify(metadata.jwks_uri(), now, |keys| check_id_token(token, keys, &expected)).await?.map_err(|e| {
            tracing::warn!(provider = self.http.provider(), error = %e, "an ID token was refused");
            SsoError::InvalidToken { provider: self.http.provider().to_string(), problem: problem_of(&e) }
        })
    }

    /// Parses a raw ID token and checks it as a sign-in does.
    pub(crate) async fn verify_raw(
        &self,
        raw: &str,
        nonce: &Nonce,
        now: OffsetDateTime,
    ) -> Result<Map<String, Value>, SsoError> {
        let token: LabIdToken = raw.parse().map_err(|e: serde_json::Error| SsoError::InvalidToken {
            provider: self.http.provider().to_string(),
            problem: TokenProblem::Malformed(e.to_string()),
        })?;
        self.verify(&token, nonce, None, now).await
    }

    /// Exchanges the code, validates the ID token, and adds what userinfo says.
    pub(crate) async fn profile(
        &self,
        code: &str,
        secrets: &LoginSecrets,
        now: OffsetDateTime,
    ) -> Result<Profile, SsoError> {
        let metadata = self.metadata(now).await?;
        let client = self.client(metadata);
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|_| self.http.bad_answer("its discovery document names no token endpoint"))?
            .set_pkce_verifier(secrets.pkce_verifier())
            .request_async(self.http.client())
            .await
            .map_err(|e| token_failure(&self.http, e))?;
        let id_token = answer.id_token().ok_or_else(|| self.http.bad_answer("its token answer has no ID token"))?;
        let mut claims = self.verify(id_token, &secrets.nonce(), Some(answer.access_token()), now).await?;
        let subject = claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_string();
        if let Ok(request) = client
            .user_info(answer.access_token().clone(), Some(openidconnect::SubjectIdentifier::new(subject.clone())))
        {
            let info: openidconnect::UserInfoClaims<OtherClaims, CoreGenderClaim> =
                request.request_async(self.http.client()).await.map_err(|e| match e {
                    openidconnect::UserInfoError::Request(e) => self.http.client_failure(&e),
                    other => self.http.bad_answer(format!("its userinfo answer could not be used: {other}")),
                })?;
            if let Ok(Value::Object(more)) = serde_json::to_value(info) {
                // The signed ID token wins where both speak; userinfo fills in what it lacks.
                for (k, v) in more {
                    claims.entry(k).or_insert(v);
                }
            }
        }
        Ok(Profile::from_claims(subject, claims, Some(&self.groups_claim)))
    }
}
