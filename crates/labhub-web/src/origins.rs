//! Which host a request was sent to, and the origins of the hub's host and of users' own
//! hosts (origin isolation, `proxy.user_subdomains`).

use axum::http::header;
use labhub_core::UserName;

use crate::AppState;

/// The DNS label of a user's host: the name itself when it is already a plain DNS label
/// without `--`, else `u--` and a hash of it. Plain labels never contain `--`, so the two
/// forms cannot meet.
pub fn user_label(user: &UserName) -> String {
    let n = user.as_str();
    let plain = n.len() <= 63
        && !n.contains("--")
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plain {
        return n.to_string();
    }
    let digest: String = labhub_auth::sha256(n)[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("u--{digest}")
}

/// Which kind of host a request was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// The hub's own host (its pages, its API).
    Hub,
    /// A user's host, by its label.
    User(String),
    /// Anything else (an IP address, another name): treated as the hub.
    Other,
}

/// The host of a request (`Host` header, without the port).
pub fn request_host(headers: &axum::http::HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    Some(host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h))
}

impl AppState {
    /// Whether users' servers are served from hosts of their own.
    pub fn user_subdomains(&self) -> bool {
        self.settings().user_subdomains
    }

    fn hub_host(&self) -> &str {
        self.settings().public_url.host_str().unwrap_or_default()
    }

    /// What a request's `Host` names.
    pub fn host_kind(&self, headers: &axum::http::HeaderMap) -> HostKind {
        let Some(host) = request_host(headers) else { return HostKind::Other };
        let host = host.to_ascii_lowercase();
        if host == self.hub_host() {
            return HostKind::Hub;
        }
        if self.user_subdomains()
            && let Some(label) = host.strip_suffix(self.hub_host()).and_then(|h| h.strip_suffix('.'))
            && !label.is_empty()
            && !label.contains('.')
        {
            return HostKind::User(label.to_string());
        }
        HostKind::Other
    }

    /// The origin (`scheme://host[:port]`) a user's servers are served from.
    pub fn user_origin(&self, user: &UserName) -> String {
        self.label_origin(&user_label(user))
    }

    fn label_origin(&self, label: &str) -> String {
        let u = &self.settings().public_url;
        let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}://{label}.{}{port}", u.scheme(), self.hub_host())
    }

    /// The origin a request's own pages have: the user's host's, or the hub's.
    pub fn expected_origin(&self, headers: &axum::http::HeaderMap) -> String {
        match self.host_kind(headers) {
            HostKind::User(label) => self.label_origin(&label),
            HostKind::Hub | HostKind::Other => self.origin().to_string(),
        }
    }
}
