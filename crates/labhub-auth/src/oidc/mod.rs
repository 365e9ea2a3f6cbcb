//! Signing in through identity providers: generic OpenID Connect (discovery, JWKS with key
//! rotation, ID token validation) and GitHub and GitLab (OAuth2 and their user APIs).
//!
//! This module speaks to providers and says who a person is ([`ExternalIdentity`]); whether
//! that person gets in, and as which account, is the service's sign-in policy. Every call to
//! a provider has a timeout and follows no redirects; provider tokens are never kept.

mod config;
mod error;
mod github;
mod gitlab;
mod http;
mod keys;
mod oauth;
mod openid;
mod provider;
mod secrets;

pub use config::{ConfigProblem, ProviderConfig, ProviderId, ProviderIdError, ProviderKind};
pub use error::{SsoError, TokenProblem};
pub use provider::{AccessRules, ExternalIdentity, Provider, Providers};
pub use secrets::{BrowserBinding, LoginSecrets};

use provider::Profile;
