//! A provider as the operator writes it under `[[auth.providers]]`, and the checks serde
//! cannot make.

use std::time::Duration;

use labhub_core::{Secret, UserName};
use openidconnect::IssuerUrl;
use serde::{Deserialize, Serialize};
use url::Url;

/// A provider id that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a provider id: use 1–32 lower-case letters, digits and '-', not starting with '-'")]
pub struct ProviderIdError(pub String);

labhub_core::name_type!(
    /// A provider's short name: the last segment of its sign-in link (`/hub/oauth_login/<id>`) and
    /// the key its identities are stored under, so it must not change once people have signed in.
    ProviderId, error = ProviderIdError, debug = named
);

impl ProviderId {
    /// Checks the rule: 1–32 characters, lower-case letters, digits and `-`, not starting with `-`.
    pub fn parse(raw: &str) -> Result<Self, ProviderIdError> {
        let ok = (1..=32).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-');
        if ok { Ok(Self(raw.to_string())) } else { Err(ProviderIdError(raw.to_string())) }
    }
}

/// Which protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenID Connect provider, found through its discovery document.
    Oidc,
    /// GitHub or GitHub Enterprise: OAuth2 and the REST API for the user, emails, orgs and teams.
    Github,
    /// GitLab (gitlab.com or self-hosted): OAuth2 and the REST API for the user and groups.
    Gitlab,
}

/// `[[auth.providers]]`: one identity provider people may sign in with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The provider's id (URL segment, key of its identities).
    pub id: ProviderId,
    /// `oidc`, `github` or `gitlab`.
    pub kind: ProviderKind,
    /// The login button says "Sign in with <display_name>"; defaults to GitHub, GitLab or the id.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The client id the provider gave the hub.
    pub client_id: String,
    /// The client secret the provider gave the hub.
    pub client_secret: Secret<String>,
    /// `oidc` only: the issuer; discovery reads `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub issuer: Option<IssuerUrl>,
    /// `github`/`gitlab`: the web address (authorize and token endpoints); defaults to
    /// `https://github.com/` or `https://gitlab.com/`.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// `github`/`gitlab`: the REST API; defaults to `https://api.github.com/` or `<base_url>/api/v4/`.
    #[serde(default)]
    pub api_url: Option<Url>,
    /// Scopes to ask for; unset asks for what the other settings need.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The claim that becomes the account name: `preferred_username` (oidc), `login` (github)
    /// and `username` (gitlab) by default; `email` works everywhere.
    #[serde(default)]
    pub username_claim: Option<String>,
    /// `oidc` only: the claim listing the person's groups (default `groups`).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Only these accounts may sign in with this provider (with `allowed_groups`: either).
    #[serde(default)]
    pub allowed_users: Vec<UserName>,
    /// Only members of these groups may sign in: oidc groups, GitHub `org` or `org:team`,
    /// GitLab group paths.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Members of these groups are admins, checked at every sign-in (leaving the group
    /// removes admin rights at the next one).
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Create an account at a person's first sign-in; otherwise only accounts an admin created
    /// (without a password) may sign in, and are linked then.
    #[serde(default)]
    pub auto_create: bool,
    /// Refuse people whose email the provider has not verified; defaults to on when
    /// `username_claim` is `email`.
    #[serde(default)]
    pub require_verified_email: Option<bool>,
    /// How long any one call to the provider may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A setting that cannot work, naming the key (relative to the provider's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key, e.g. `issuer`.
    pub key: &'static str,
    /// Why, as a sentence fragment.
    pub why: String,
}

fn problem(key: &'static str, why: impl Into<String>) -> Result<(), ConfigProblem> {
    Err(ConfigProblem { key, why: why.into() })
}

fn is_web_url(u: &str) -> bool {
    Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

impl ProviderConfig {
    /// Checks what serde cannot: settings that only fit some kinds, URL schemes, group syntax,
    /// and that a public forge cannot create accounts for anyone who has one there.
    pub fn check(&self) -> Result<(), ConfigProblem> {
        if self.display_name.as_ref().is_some_and(|d| d.trim().is_empty() || d.chars().count() > 60) {
            return problem("display_name", "must be 1–60 characters");
        }
        if self.client_id.trim().is_empty() {
            return problem("client_id", "must not be empty");
        }
        if self.client_secret.expose().is_empty() {
            return problem("client_secret", "must not be empty");
        }
        match self.kind {
            ProviderKind::Oidc => {
                let Some(issuer) = &self.issuer else {
                    return problem("issuer", "is required for kind = \"oidc\"");
                };
                if !is_web_url(issuer) {
                    return problem("issuer", "must be an http:// or https:// URL");
                }
                if self.base_url.is_some() {
                    return problem("base_url", "is only for kind = \"github\" or \"gitlab\"");
                }
                if self.api_url.is_some() {
                    return problem("api_url", "is only for kind = \"github\" or \"gitlab\"");
                }
            }
            ProviderKind::Github | ProviderKind::Gitlab => {
                if self.issuer.is_some() {
                    return problem("issuer", "is only for kind = \"oidc\"");
                }
                if self.groups_claim.is_some() {
                    return problem(
                        "groups_claim",
                        "is only for kind = \"oidc\"; GitHub and GitLab groups come from their API",
                    );
                }
                for (key, url) in [("base_url", &self.base_url), ("api_url", &self.api_url)] {
                    if url.as_ref().is_some_and(|u| !is_web_url(u.as_str())) {
                        return problem(key, "must be an http:// or https:// URL");
                    }
                }
            }
        }
        if let Some(claim) = &self.username_claim {
            let allowed: &[&str] = match self.kind {
                ProviderKind::Oidc => &[],
                ProviderKind::Github => &["login", "email"],
                ProviderKind::Gitlab => &["username", "email"],
            };
            if claim.trim().is_empty() || (!allowed.is_empty() && !allowed.contains(&claim.as_str())) {
                let why = if allowed.is_empty() {
                    "must name a claim".to_string()
                } else {
                    format!("must be one of {}", allowed.join(", "))
                };
                return problem("username_claim", why);
            }
        }
        if self.groups_claim.as_ref().is_some_and(|c| c.trim().is_empty()) {
            return problem("groups_claim", "must name a claim");
        }
        if let Some(scopes) = &self.scopes
            && scopes.iter().any(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return problem("scopes", "must be single words (one scope per list entry)");
        }
        for (key, groups) in [("allowed_groups", &self.allowed_groups), ("admin_groups", &self.admin_groups)] {
            if groups.iter().any(|g| g.trim().is_empty()) {
                return problem(key, "must not contain empty names");
            }
            if self.kind == ProviderKind::Github
                && groups.iter().any(|g| g.split(':').count() > 2 || g.ends_with(':') || g.starts_with(':'))
            {
                return problem(key, "takes GitHub organizations as \"org\" or teams as \"org:team\"");
            }
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(120)).contains(&self.timeout) {
            return problem("timeout", "must be between 1s and 2m");
        }
        let public_forge = match self.kind {
            ProviderKind::Github => self.base_url.as_ref().is_none_or(|u| u.host_str() == Some("github.com")),
            ProviderKind::Gitlab => self.base_url.as_ref().is_none_or(|u| u.host_str() == Some("gitlab.com")),
            ProviderKind::Oidc => false,
        };
        if public_forge && self.auto_create && self.allowed_users.is_empty() && self.allowed_groups.is_empty() {
            return problem(
                "auto_create",
                "would give an account to anyone with an account at the public forge; set allowed_users or allowed_groups",
            );
        }
        Ok(())
    }

    /// The name on the login button.
    pub fn display_name(&self) -> String {
        match (&self.display_name, self.kind) {
            (Some(d), _) => d.trim().to_string(),
            (None, ProviderKind::Github) => "GitHub".into(),
            (None, ProviderKind::Gitlab) => "GitLab".into(),
            (None, ProviderKind::Oidc) => self.id.to_string(),
        }
    }

    /// The claim that becomes the account name.
    pub fn username_claim(&self) -> &str {
        match (&self.username_claim, self.kind) {
            (Some(c), _) => c,
            (None, ProviderKind::Oidc) => "preferred_username",
            (None, ProviderKind::Github) => "login",
            (None, ProviderKind::Gitlab) => "username",
        }
    }

    /// Whether an unverified (or missing) email refuses the sign-in.
    pub fn requires_verified_email(&self) -> bool {
        self.require_verified_email.unwrap_or(self.username_claim() == "email")
    }

    /// Whether the provider's groups matter (and so must be fetched).
    pub fn uses_groups(&self) -> bool {
        !self.allowed_groups.is_empty() || !self.admin_groups.is_empty()
    }

    /// The scopes asked for: the configured ones, or what the other settings need.
    pub fn scopes(&self) -> Vec<String> {
        if let Some(s) = &self.scopes {
            return s.clone();
        }
        let wanted: &[(&str, bool)] = match self.kind {
            ProviderKind::Oidc => &[("openid", true), ("profile", true), ("email", true)],
            ProviderKind::Github => &[
                ("read:user", true),
                ("user:email", self.username_claim() == "email" || self.requires_verified_email()),
                ("read:org", self.uses_groups()),
            ],
            ProviderKind::Gitlab => &[("read_user", true), ("read_api", self.uses_groups())],
        };
        wanted.iter().filter(|(_, on)| *on).map(|(s, _)| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github() -> ProviderConfig {
        ProviderConfig {
            id: ProviderId::parse("github").unwrap(),
            kind: ProviderKind::Github,
            display_name: None,
            client_id: "id".into(),
            client_secret: Secret::new("secret".into()),
            issuer: None,
            base_url: None,
            api_url: None,
            scopes: None,
            username_claim: None,
            groups_claim: None,
            allowed_users: vec![],
            allowed_groups: vec![],
            admin_groups: vec![],
            auto_create: false,
            require_verified_email: None,
            timeout: default_timeout(),
        }
    }

    #[test]
    fn ids_are_url_segments() {
        assert!(ProviderId::parse("lab-sso").is_ok());
        for bad in ["", "-x", "Lab", "a/b", "a b", &"x".repeat(33)] {
            assert!(ProviderId::parse(bad).is_err(), "{bad}");
        }
        let id: ProviderId = serde_json::from_str(r#""lab-sso""#).unwrap();
        assert_eq!((id.to_string(), format!("{id:?}")), ("lab-sso".to_string(), "ProviderId(lab-sso)".to_string()));
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""lab-sso""#);
        let e = serde_json::from_str::<ProviderId>(r#""Lab""#).unwrap_err().to_string();
        assert!(e.contains("'Lab' is not a provider id: use 1–32 lower-case letters"), "{e}");
    }

    #[test]
    fn settings_that_cannot_work_name_their_key() {
        let mut c = github();
        c.issuer = Some(IssuerUrl::new("https://id.example.org".into()).unwrap());
        assert_eq!(c.check().unwrap_err().key, "issuer");
        let mut c = github();
        c.kind = ProviderKind::Oidc;
        assert_eq!(c.check().unwrap_err().key, "issuer");
        let mut c = github();
        c.allowed_groups = vec!["org:team:extra".into()];
        assert_eq!(c.check().unwrap_err().key, "allowed_groups");
        let mut c = github();
        c.username_claim = Some("preferred_username".into());
        assert_eq!(c.check().unwrap_err().key, "username_claim");
        let mut c = github();
        c.timeout = Duration::from_millis(10);
        assert_eq!(c.check().unwrap_err().key, "timeout");
    }

    #[test]
    fn public_forges_do_not_create_accounts_for_everyone() {
        let mut c = github();
        c.auto_create = true;
        assert_eq!(c.check().unwrap_err().key, "auto_create");
        c.allowed_groups = vec!["my-lab".into()];
        assert!(c.check().is_ok());
        let mut c = github();
        c.auto_create = true;
        c.base_url = Some(Url::parse("https://github.example.edu/").unwrap());
        assert!(c.check().is_ok(), "an enterprise server is the lab's own");
    }

    #[test]
    fn default_scopes_follow_the_settings() {
        let mut c = github();
        assert_eq!(c.scopes(), ["read:user"]);
        c.username_claim = Some("email".into());
        c.admin_groups = vec!["lab".into()];
        assert_eq!(c.scopes(), ["read:user", "user:email", "read:org"]);
        assert!(c.requires_verified_email());
        c.scopes = Some(vec!["x".into()]);
        assert_eq!(c.scopes(), ["x"]);
    }
}
