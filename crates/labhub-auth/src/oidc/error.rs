//! Why a sign-in through a provider did not work. Every variant names the provider (by its
//! display name), so the message can be shown to the person as it is.

use std::fmt;

/// Which check an ID token failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenProblem {
    /// The signature does not match any of the provider's keys.
    Signature,
    /// The token was issued for another application.
    Audience,
    /// The token comes from another issuer.
    Issuer,
    /// The token has expired (or was issued in the future), beyond the allowed clock skew.
    Expired,
    /// The token does not answer this sign-in (its nonce differs).
    Nonce,
    /// The token is malformed or uses something the hub does not accept.
    Malformed(String),
}

impl fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Signature => f.write_str("its signature does not match the provider's keys"),
            Self::Audience => f.write_str("it was issued for another application"),
            Self::Issuer => f.write_str("it comes from another issuer"),
            Self::Expired => f.write_str("it has expired"),
            Self::Nonce => f.write_str("it does not belong to this sign-in"),
            Self::Malformed(d) => write!(f, "it is not usable ({d})"),
        }
    }
}

/// A sign-in through a provider that did not work.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// No provider has this id.
    #[error("there is no identity provider called '{0}' on this hub")]
    UnknownProvider(String),
    /// The provider could not be reached (connection refused, DNS, TLS).
    #[error("{provider} could not be reached ({detail})")]
    Unreachable { provider: String, detail: String },
    /// The provider did not answer within the configured timeout.
    #[error("{provider} did not answer within {seconds} second{}", if *seconds == 1 { "" } else { "s" })]
    Timeout { provider: String, seconds: u64 },
    /// The provider answered, but not with anything the hub can use.
    #[error("{provider} gave an answer labhub cannot use ({detail})")]
    BadAnswer { provider: String, detail: String },
    /// The token endpoint refused the code: it expired or was used already.
    #[error("{provider} did not accept the sign-in code: it has expired or was already used")]
    CodeRejected { provider: String },
    /// The token endpoint refused the exchange for another reason (e.g. a wrong client secret).
    #[error("{provider} refused to finish the sign-in ({error})")]
    Refused { provider: String, error: String },
    /// The ID token failed a check.
    #[error("the identity token from {provider} is not valid: {problem}")]
    InvalidToken { provider: String, problem: TokenProblem },
    /// A claim the hub needs is absent.
    #[error("{provider} did not say who you are: its answer has no '{claim}'")]
    MissingClaim { provider: String, claim: String },
    /// Verified email is required and the provider does not vouch for one.
    #[error("your email address at {provider} is not verified, and this hub requires a verified one")]
    UnverifiedEmail { provider: String },
    /// The HTTP client could not be built (a broken TLS setup).
    #[error("could not prepare HTTP calls to identity providers: {0}")]
    Setup(String),
}
