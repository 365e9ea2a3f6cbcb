//! GitHub (and GitHub Enterprise): OAuth2, then the REST API for who the person is
//! (`/user`), their verified email (`/user/emails`), organizations (`/user/orgs`) and teams
//! (`/user/teams`, as `org:team`).

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::oauth::{Forge, ForgeUser, OAuthApp};
use super::{LoginSecrets, Profile, SsoError};

const ACCEPT: &str = "application/vnd.github+json";

/// What GitHub's API is asked, beyond `/user`.
pub(crate) struct GitHubWants {
    /// `/user/emails`, for a verified address.
    pub(crate) emails: bool,
    /// `/user/orgs`.
    pub(crate) orgs: bool,
    /// `/user/teams`.
    pub(crate) teams: bool,
}

/// A GitHub OAuth app and the API it reads.
pub(crate) struct GitHub {
    forge: Forge,
    wants: GitHubWants,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

#[derive(Deserialize)]
struct Org {
    login: String,
}

#[derive(Deserialize)]
struct Team {
    slug: String,
    organization: Org,
}

impl GitHub {
    /// A GitHub provider; `api` ends with `/`.
    pub(crate) fn new(app: OAuthApp, api: Url, wants: GitHubWants) -> Self {
        Self { forge: Forge::new(app, api, ACCEPT), wants }
    }

    /// Where to send the browser to sign in.
    pub(crate) fn authorize_url(&self, secrets: &LoginSecrets) -> Url {
        self.forge.authorize_url(secrets)
    }

    /// Exchanges the code and reads the person from the API.
    pub(crate) async fn profile(&self, code: &str, secrets: &LoginSecrets) -> Result<Profile, SsoError> {
        let ForgeUser { token, mut user, subject } = self.forge.sign_in(code, secrets).await?;
        let (email, email_verified) = if self.wants.emails {
            let emails: Vec<Email> = self.forge.get_all("user/emails?per_page=100", &token).await?;
            match emails.into_iter().find(|e| e.primary) {
                Some(e) => (Some(e.email), e.verified),
                None => (None, false),
            }
        } else {
            // The public address on the profile; GitHub does not say whether it is verified.
            (user.get("email").and_then(Value::as_str).map(str::to_string), false)
        };
        // `email` as a name claim must mean the address checked above, not the public one.
        user.insert("email".into(), email.clone().map_or(Value::Null, Value::String));
        let mut groups = Vec::new();
        if self.wants.orgs {
            let orgs: Vec<Org> = self.forge.get_all("user/orgs?per_page=100", &token).await?;
            groups.extend(orgs.into_iter().map(|o| o.login.to_lowercase()));
        }
        if self.wants.teams {
            let teams: Vec<Team> = self.forge.get_all("user/teams?per_page=100", &token).await?;
            groups.extend(teams.into_iter().map(|t| format!("{}:{}", t.organization.login, t.slug).to_lowercase()));
        }
        Ok(Profile { subject, claims: user, email, email_verified, groups })
    }
}
