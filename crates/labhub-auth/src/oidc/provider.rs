//! The configured providers, each able to start a sign-in and to finish it into an
//! [`ExternalIdentity`]: who the provider says the person is, checked and normalised.

use labhub_core::UserName;
use openidconnect::{Nonce, RedirectUrl};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use url::Url;

use super::github::{GitHub, GitHubWants};
use super::gitlab::GitLab;
use super::http::ProviderHttp;
use super::oauth::OAuthApp;
use super::openid::{OpenIdProvider, OpenIdSettings};
use super::{LoginSecrets, ProviderConfig, ProviderId, ProviderKind, SsoError};

/// What a provider said about the person, before the hub's rules apply.
pub(crate) struct Profile {
    /// The provider's stable id for the person.
    pub(crate) subject: String,
    /// Every claim (OpenID Connect) or field of the user object (forges).
    pub(crate) claims: Map<String, Value>,
    pub(crate) email: Option<String>,
    pub(crate) email_verified: bool,
    pub(crate) groups: Vec<String>,
}

impl Profile {
    /// A profile from OpenID Connect claims; groups from `groups_claim` (a list or one string).
    pub(crate) fn from_claims(subject: String, claims: Map<String, Value>, groups_claim: Option<&str>) -> Self {
        let email = claims.get("email").and_then(Value::as_str).map(str::to_string);
        let email_verified = claims.get("email_verified").and_then(Value::as_bool).unwrap_or(false);
        let groups = match groups_claim.and_then(|c| claims.get(c)) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Self { subject, claims, email, email_verified, groups }
    }
}

/// A person as a provider vouches for them.
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    /// The provider's stable id for the person (never their name).
    pub subject: String,
    /// The value of the provider's `username_claim`, as given (the hub's name rule applies later).
    pub username: String,
    /// Their email address, if the provider gave one.
    pub email: Option<String>,
    /// The groups they are in (GitHub and GitLab names in lower case).
    pub groups: Vec<String>,
}

/// Who may sign in with a provider, and who is an admin.
#[derive(Debug, Clone)]
pub struct AccessRules {
    /// Accounts allowed (with `allowed_groups`: either suffices; both empty: anyone).
    pub allowed_users: Vec<UserName>,
    /// Groups whose members are allowed.
    pub allowed_groups: Vec<String>,
    /// Groups whose members are admins; empty leaves admin rights to the hub.
    pub admin_groups: Vec<String>,
    /// Whether a first sign-in creates an account.
    pub auto_create: bool,
}

enum Backend {
    OpenId(Box<OpenIdProvider>),
    GitHub(GitHub),
    GitLab(GitLab),
}

/// One configured provider.
pub struct Provider {
    id: ProviderId,
    display_name: String,
    username_claim: String,
    require_verified_email: bool,
    rules: AccessRules,
    http: ProviderHttp,
    backend: Backend,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("id", &self.id).finish_non_exhaustive()
    }
}

/// `url` with a path ending in `/`, so relative API paths join below it.
fn as_base(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

fn joined(base: &Url, path: &str) -> Result<Url, SsoError> {
    base.join(path).map_err(|e| SsoError::Setup(format!("{base}{path}: {e}")))
}

impl Provider {
    /// Sets a provider up from its (checked) configuration; `callback` is the hub's
    /// `<public_url>hub/oauth_callback`.
    pub fn new(config: &ProviderConfig, callback: &Url) -> Result<Self, SsoError> {
        let display_name = config.display_name();
        let http = ProviderHttp::new(&display_name, config.timeout)?;
        let redirect = RedirectUrl::from_url(callback.clone());
        let secret = config.client_secret.expose();
        // Forge group names are case-insensitive there; both sides are compared in lower case.
        let norm = |groups: &[String]| -> Vec<String> {
            match config.kind {
                ProviderKind::Oidc => groups.to_vec(),
                ProviderKind::Github | ProviderKind::Gitlab => groups.iter().map(|g| g.to_lowercase()).collect(),
            }
        };
        let backend = match config.kind {
            ProviderKind::Oidc => Backend::OpenId(Box::new(OpenIdProvider::new(
                OpenIdSettings {
                    issuer: config
                        .issuer
                        .clone()
                        .ok_or_else(|| SsoError::Setup(format!("{}: no issuer", config.id)))?,
                    client_id: config.client_id.clone(),
                    client_secret: secret.clone(),
                    redirect,
                    scopes: config.scopes(),
                    groups_claim: config.groups_claim.clone().unwrap_or_else(|| "groups".into()),
                },
                http.clone(),
            ))),
            ProviderKind::Github => {
                let base = as_base(
                    config.base_url.clone().unwrap_or_else(|| Url::parse("https://github.com/").expect("a URL")),
                );
                let api = as_base(
                    config.api_url.clone().unwrap_or_else(|| Url::parse("https://api.github.com/").expect("a URL")),
                );
                let app = OAuthApp::new(
                    &config.client_id,
                    secret,
                    joined(&base, "login/oauth/authorize")?,
                    joined(&base, "login/oauth/access_token")?,
                    redirect,
                    config.scopes(),
                    http.clone(),
                );
                let groups = [&config.allowed_groups, &config.admin_groups];
                let wants = GitHubWants {
                    emails: config.username_claim() == "email" || config.requires_verified_email(),
                    orgs: groups.iter().any(|g| g.iter().any(|g| !g.contains(':'))),
                    teams: groups.iter().any(|g| g.iter().any(|g| g.contains(':'))),
                };
                Backend::GitHub(GitHub::new(app, api, wants))
            }
            ProviderKind::Gitlab => {
                let base = as_base(
                    config.base_url.clone().unwrap_or_else(|| Url::parse("https://gitlab.com/").expect("a URL")),
                );
                let api = match &config.api_url {
                    Some(u) => as_base(u.clone()),
                    None => joined(&base, "api/v4/")?,
                };
                let app = OAuthApp::new(
                    &config.client_id,
                    secret,
                    joined(&base, "oauth/authorize")?,
                    joined(&base, "oauth/token")?,
                    redirect,
                    config.scopes(),
                    http.clone(),
                );
                Backend::GitLab(GitLab::new(app, api, config.uses_groups()))
            }
        };
        Ok(Self {
            id: config.id.clone(),
            username_claim: config.username_claim().to_string(),
            require_verified_email: config.requires_verified_email(),
            rules: AccessRules {
                allowed_users: config.allowed_users.clone(),
                allowed_groups: norm(&config.allowed_groups),
                admin_groups: norm(&config.admin_groups),
                auto_create: config.auto_create,
            },
            display_name,
            http,
            backend,
        })
    }

    /// The provider's id.
    pub fn id(&self) -> &ProviderId {
        &self.id
    }

    /// The name on its login button.
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// Who may sign in with it.
    pub fn rules(&self) -> &AccessRules {
        &self.rules
    }

    /// Where to send the browser to start a sign-in with these secrets.
    pub async fn authorize_url(&self, secrets: &LoginSecrets, now: OffsetDateTime) -> Result<Url, SsoError> {
        match &self.backend {
            Backend::OpenId(p) => p.authorize_url(secrets, now).await,
            Backend::GitHub(p) => Ok(p.authorize_url(secrets)),
            Backend::GitLab(p) => Ok(p.authorize_url(secrets)),
        }
    }

    /// Finishes a sign-in: exchanges the code (with the PKCE verifier), checks what comes back
    /// and reads who the person is. Provider tokens are dropped before this returns.
    pub async fn finish(
        &self,
        code: &str,
        secrets: &LoginSecrets,
        now: OffsetDateTime,
    ) -> Result<ExternalIdentity, SsoError> {
        let profile = match &self.backend {
            Backend::OpenId(p) => p.profile(code, secrets, now).await?,
            Backend::GitHub(p) => p.profile(code, secrets).await?,
            Backend::GitLab(p) => p.profile(code, secrets).await?,
        };
        let missing = |claim: &str| SsoError::MissingClaim { provider: self.display_name.clone(), claim: claim.into() };
        if profile.subject.is_empty() {
            return Err(missing("sub"));
        }
        let username = match profile.claims.get(&self.username_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(missing(&self.username_claim)),
        };
        if self.require_verified_email && !(profile.email.is_some() && profile.email_verified) {
            return Err(SsoError::UnverifiedEmail { provider: self.display_name.clone() });
        }
        tracing::debug!(provider = %self.id, subject = %profile.subject, "the provider vouched for a person");
        Ok(ExternalIdentity { subject: profile.subject, username, email: profile.email, groups: profile.groups })
    }

    /// Checks a raw ID token exactly as a sign-in with this (OpenID Connect) provider would:
    /// signature against its keys (fetched again once for an unknown key), issuer, audience,
    /// expiry with clock skew, and the nonce.
    pub async fn verify_id_token(&self, raw: &str, nonce: &str, now: OffsetDateTime) -> Result<(), SsoError> {
        match &self.backend {
            Backend::OpenId(p) => p.verify_raw(raw, &Nonce::new(nonce.to_string()), now).await.map(drop),
            Backend::GitHub(_) | Backend::GitLab(_) => {
                Err(self.http.bad_answer("it signs people in with OAuth2, without ID tokens"))
            }
        }
    }
}

/// Every configured provider, in configuration order.
#[derive(Debug, Default)]
pub struct Providers(Vec<Provider>);

impl Providers {
    /// Sets up every provider; `public_url` is the hub's, whose `hub/oauth_callback` they call back.
    pub fn new(configs: &[ProviderConfig], public_url: &Url) -> Result<Self, SsoError> {
        let callback = public_url.join("hub/oauth_callback").map_err(|e| SsoError::Setup(e.to_string()))?;
        configs.iter().map(|c| Provider::new(c, &callback)).collect::<Result<_, _>>().map(Self)
    }

    /// The provider with this id.
    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.0.iter().find(|p| p.id.as_str() == id)
    }

    /// Every provider.
    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.0.iter()
    }
}
