//! GitLab (gitlab.com or self-hosted): OAuth2, then the REST API for who the person is
//! (`/user`) and the groups they belong to (`/groups?min_access_level=10`, by full path).

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::oauth::{Forge, ForgeUser, OAuthApp};
use super::{LoginSecrets, Profile, SsoError};

const ACCEPT: &str = "application/json";

/// A GitLab OAuth application and the API it reads.
pub(crate) struct GitLab {
    forge: Forge,
    /// Whether to read the person's groups.
    groups: bool,
}

#[derive(Deserialize)]
struct Group {
    full_path: String,
}

impl GitLab {
    /// A GitLab provider; `api` ends with `/` (e.g. `https://gitlab.com/api/v4/`).
    pub(crate) fn new(app: OAuthApp, api: Url, groups: bool) -> Self {
        Self { forge: Forge::new(app, api, ACCEPT), groups }
    }

    /// Where to send the browser to sign in.
    pub(crate) fn authorize_url(&self, secrets: &LoginSecrets) -> Url {
        self.forge.authorize_url(secrets)
    }

    /// Exchanges the code and reads the person from the API.
    pub(crate) async fn profile(&self, code: &str, secrets: &LoginSecrets) -> Result<Profile, SsoError> {
        let ForgeUser { token, user, subject } = self.forge.sign_in(code, secrets).await?;
        let email = user.get("email").and_then(Value::as_str).filter(|e| !e.is_empty()).map(str::to_string);
        // GitLab's `email` is the primary address; `confirmed_at` says whether it was confirmed.
        let email_verified = email.is_some() && user.get("confirmed_at").is_some_and(|c| !c.is_null());
        let groups = if self.groups {
            let groups: Vec<Group> = self.forge.get_all("groups?min_access_level=10&per_page=100", &token).await?;
            groups.into_iter().map(|g| g.full_path.to_lowercase()).collect()
        } else {
            Vec::new()
        };
        Ok(Profile { subject, claims: user, email, email_verified, groups })
    }
}
