//! Plain OAuth2 for the forges (GitHub, GitLab): the authorization request with PKCE and the
//! code exchange. The access token lives only as long as the sign-in's API calls.

use openidconnect::core::CoreErrorResponseType;
use openidconnect::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    HttpClientError, OAuth2TokenResponse, RedirectUrl, RequestTokenError, Scope, StandardErrorResponse, TokenUrl,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
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

/// An OAuth2 application and the REST API of the forge it belongs to.
pub(crate) struct Forge {
    app: OAuthApp,
    /// The API's base; ends with `/`.
    api: Url,
    /// The media type the API is asked for.
    accept: &'static str,
}

/// A person just signed in at a forge.
pub(crate) struct ForgeUser {
    /// The access token, for this sign-in's API calls only.
    pub(crate) token: String,
    /// The API's `user` document.
    pub(crate) user: Map<String, Value>,
    /// Its numeric `id`: the stable subject (names and emails can change).
    pub(crate) subject: String,
}

impl Forge {
    /// A forge's app and API; `api` ends with `/`.
    pub(crate) fn new(app: OAuthApp, api: Url, accept: &'static str) -> Self {
        Self { app, api, accept }
    }

    /// Where to send the browser to sign in.
    pub(crate) fn authorize_url(&self, secrets: &LoginSecrets) -> Url {
        self.app.authorize_url(secrets)
    }

    fn at(&self, path: &str) -> Result<Url, SsoError> {
        self.api.join(path).map_err(|e| self.app.http.bad_answer(format!("{path}: {e}")))
    }

    /// Exchanges the code, then reads the person (`GET user`) and their id.
    pub(crate) async fn sign_in(&self, code: &str, secrets: &LoginSecrets) -> Result<ForgeUser, SsoError> {
        let http = &self.app.http;
        let token = self.app.exchange(code, secrets).await?;
        let user: Map<String, Value> = http.get_json(self.at("user")?, &token, self.accept).await?;
        let subject = match user.get("id") {
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(SsoError::MissingClaim { provider: http.provider().into(), claim: "id".into() }),
        };
        Ok(ForgeUser { token, user, subject })
    }

    /// Every page of a list from the API (`path` relative to its base).
    pub(crate) async fn get_all<T: DeserializeOwned>(&self, path: &str, token: &str) -> Result<Vec<T>, SsoError> {
        self.app.http.get_all(self.at(path)?, token, self.accept).await
    }
}
