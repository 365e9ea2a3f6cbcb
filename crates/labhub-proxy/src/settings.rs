//! How the proxy talks to servers and who is asking: plain data every other module reads,
//! depending on none of them.

use std::net::IpAddr;
use std::time::Duration;

/// How the proxy talks to servers, and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// How long to wait for a server's TCP connection; past it the server is `Unreachable`.
    pub connect_timeout: Duration,
    /// How long a server may stay silent before its response headers, counted from the last
    /// bytes of the request body that moved (so a slow upload is never cut). Response bodies
    /// (SSE, downloads) have no timeout: the client decides how long it listens. The
    /// configuration layer should refuse less than 60 s (RStudio long-polls).
    pub read_timeout: Duration,
    /// Concurrent requests and tunnels per server.
    pub max_connections_per_server: usize,
    /// Concurrent requests and tunnels over all servers.
    pub max_connections_total: usize,
    /// The largest request line plus headers (names and values) accepted.
    pub max_request_header_bytes: usize,
    /// The hub's session cookies (its own host's and users' hosts'), removed from `Cookie`
    /// before forwarding; an upstream's `Set-Cookie` for one of them is dropped.
    pub strip_cookies: Vec<String>,
    /// What `Busy` suggests as `Retry-After`.
    pub busy_retry_after: Duration,
}

impl ProxySettings {
    /// The defaults, stripping the hub's session cookies `strip_cookies`.
    pub fn new<S: Into<String>>(strip_cookies: impl IntoIterator<Item = S>) -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(300),
            max_connections_per_server: 256,
            max_connections_total: 8192,
            max_request_header_bytes: 64 * 1024,
            strip_cookies: strip_cookies.into_iter().map(Into::into).collect(),
            busy_retry_after: Duration::from_secs(1),
        }
    }
}

/// How the browser reached the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS (terminated by the hub or a proxy in front of it).
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// Who is asking, as the web layer established it; becomes the `X-Forwarded-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address.
    pub addr: IpAddr,
    /// The scheme the browser used.
    pub scheme: Scheme,
    /// The `Host` the browser used (with its port, if any).
    pub host: String,
}
