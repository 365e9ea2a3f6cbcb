//! What can go wrong talking to the directory, sorted by what it means for the person at the
//! sign-in form: their credentials did not do (a guess, counted), or the directory could not
//! be asked (an outage, not their fault: said plainly, logged and counted).

/// A directory sign-in that did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LdapError {
    /// The password was empty: refused before any bind (an empty password is an anonymous
    /// bind, which many directories let "succeed").
    #[error("an empty password was refused before asking the directory")]
    EmptyPassword,
    /// The typed name cannot be a directory login (empty, too long, or with control characters).
    #[error("the name cannot be a directory login")]
    BadName,
    /// No such person, or the password is wrong (the directory does not say which).
    #[error("the directory did not accept the name and password")]
    BadCredentials,
    /// The search found several people for one name: the filter is too loose.
    #[error("the search found {count} entries for one name; search_filter must find exactly one")]
    Ambiguous { count: usize },
    /// The directory refused the person's bind for another reason (a locked or expired account).
    #[error("the directory refused the bind (result {rc}: {text})")]
    Refused { rc: u32, text: String },
    /// No URL could be reached.
    #[error("could not reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// An operation took longer than `timeout`.
    #[error("{what} took longer than the configured timeout")]
    Timeout { what: String },
    /// TLS could not be set up (certificate not trusted, StartTLS refused, …).
    #[error("TLS with {url} failed: {detail}")]
    Tls { url: String, detail: String },
    /// The service account's bind failed: the configuration is wrong.
    #[error("the service account (bind_dn) could not bind: {detail}")]
    ServiceBind { detail: String },
    /// A search failed (a base that does not exist, no rights to read).
    #[error("searching {base} failed: {detail}")]
    Search { base: String, detail: String },
    /// Finding the person needs their password (bind templates without a service account).
    #[error("with bind_dn_template and no bind_dn, the person can only be found with their password")]
    NeedsPassword,
    /// The directory cannot be used as configured (an unreadable CA file, say).
    #[error("{0}")]
    Setup(String),
}

impl LdapError {
    /// Whether the directory could not be asked (rather than saying no): not the person's
    /// doing, so not counted as a guess.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Timeout { .. }
                | Self::Tls { .. }
                | Self::ServiceBind { .. }
                | Self::Search { .. }
                | Self::Setup(_)
        )
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EmptyPassword => "empty_password",
            Self::BadName => "bad_name",
            Self::BadCredentials => "bad_credentials",
            Self::Ambiguous { .. } => "ambiguous",
            Self::Refused { .. } => "refused",
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Tls { .. } => "tls",
            Self::ServiceBind { .. } => "service_bind",
            Self::Search { .. } => "search",
            Self::NeedsPassword => "needs_password",
            Self::Setup(_) => "setup",
        }
    }
}
