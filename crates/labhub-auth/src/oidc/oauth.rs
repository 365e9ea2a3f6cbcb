//! Plain OAuth2 for the forges (GitHub, GitLab): the authorization request with PKCE and the
//! code exchange. The access token lives only as long as the sign-in's API calls.

use openidconnect::core::CoreErrorResponseType;
use openidconnect::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    HttpClientError, OAuth2TokenResponse, RedirectUrl, RequestTokenError, Scope, StandardErrorResponse, TokenUrl,
};
use serde::Deserialize;
use url::Url;

use super::http::ProviderHttp;
use super::{LoginSecrets, SsoError};

type ForgeClient = oauth2::basic::BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// An OAuth2 application registered at a forge.
pub(crate) struct OAuthApp {
    client: ForgeClient,
    scopes: Vec<Scope>,
    pub(crate) http: ProviderHttp,
}

/// A forge's answer to a token request when it failed.
#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// Sorts a failed token request: a spent or expired code, the provider refusing for another
/// reason, the provider down or slow, or an answer that makes no sense.
pub(crate) fn token_failure(
    http: &ProviderHttp,
    e: RequestTokenError<HttpClientError<reqwest::Error>, StandardErrorResponse<CoreErrorResponseType>>,
) -> SsoError {
    let provider = http.provider().to_string();
    let refusal = |error: &str| match error {
        // GitHub says `bad_verification_code` where RFC 6749 says `invalid_grant`.
        "invalid_grant" | "bad_verification_code" => SsoError::CodeRejected { provider: provider.clone() },
        other => SsoError::Refused { provider: provider.clone(), error: other.to_string() },
    };
    match e {
        RequestTokenError::ServerResponse(answer) => refusal(answer.error().as_ref()),
        RequestTokenError::Request(e) => http.client_failure(&e),
        // GitHub reports errors with status 200, which the crate then fails to read as a token.
        RequestTokenError::Parse(_, body) => match serde_json::from_slice::<ErrorAnswer>(&body) {
            Ok(answer) => refusal(&answer.error),
            Err(_) => http.bad_answer("its token answer is not the expected JSON"),
        },
        RequestTokenError::Other(detail) => http.bad_answer(detail),
    }
}

impl OAuthApp {
    /// An application with its endpoints.
    pub(crate) fn new(
        client_id: &str,
        client_secret: &str,
        authorize: Url,
        token: Url,
        redirect: RedirectUrl,
        scopes: Vec<String>,
        http: ProviderHttp,
    ) -> Self {
        let client = oauth2::basic::BasicClient::new(ClientId::new(client_id.to_string()))
            .set_client_secret(ClientSecret::new(client_secret.to_string()))
            // GitHub and GitLab document the client's credentials as form fields of the token request.
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(AuthUrl::from_url(authorize))
            .set_token_uri(TokenUrl::from_url(token))
            .set_redirect_uri(redirect);
        Self { client, scopes: scopes.into_iter().map(Scope::new).collect(), http }
    }

    /// Where to send the browser to sign in.
    pub(crate) fn authorize_url(&self, secrets: &LoginSecrets) -> Url {
        let state = CsrfToken::new(secrets.state().to_string());
        let mut request = self.client.authorize_url(move || state);
        for scope in &self.scopes {
            request = request.add_scope(scope.clone());
        }
        request.set_pkce_challenge(secrets.pkce_challenge()).url().0
    }

    /// Exchanges the code for an access token, used for this sign-in's API calls only.
    pub(crate) async fn exchange(&self, code: &str, secrets: &LoginSecrets) -> Result<String, SsoError> {
        let answer = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(secrets.pkce_verifier())
            .request_async(self.http.client())
            .await
            .map_err(|e| token_failure(&self.http, e))?;
        Ok(answer.access_token().secret().clone())
    }
}
