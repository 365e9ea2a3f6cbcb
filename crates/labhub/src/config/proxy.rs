//! `[http]` and `[proxy]`: the hub's own HTTP limits and the proxy to users' servers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Config;

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body for pages and the API, in bytes (the proxy streams without limit).
    pub max_body_bytes: usize,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted reverse proxy).
    pub trust_forwarded_for: bool,
    /// Serve Prometheus metrics at `/hub/metrics`.
    pub metrics: bool,
    /// Serve them to anyone; otherwise only to credentials with `read:metrics` (admins, or a
    /// token or role given it, e.g. for a Prometheus scraper).
    pub metrics_public: bool,
    /// A request's line and headers must arrive within this of the connection's start (or of
    /// the request's first byte on a kept-alive connection); past it the connection is closed.
    #[serde(with = "humantime_serde")]
    pub request_head_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed. Behind a load
    /// balancer, set it above the balancer's own idle timeout.
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// Open client connections at most; past it, new ones get 503 and are closed at once.
    /// Unset: a little under half the process's open-file limit (a proxied connection also
    /// holds one to the server).
    pub max_connections: Option<usize>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let d = labhub_web::FrontDoor::default();
        Self {
            max_body_bytes: 1 << 20,
            trust_forwarded_for: false,
            metrics: true,
            metrics_public: false,
            request_head_timeout: d.request_head_timeout,
            keep_alive_timeout: d.keep_alive_timeout,
            max_connections: d.max_connections,
        }
    }
}

/// `[proxy]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// How long to wait for a server's TCP connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a server may stay silent before its response headers (at least 60 s: RStudio
    /// long-polls). Response bodies (downloads, event streams) have no timeout.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Concurrent requests and WebSockets per server; past it, 503 with `Retry-After`.
    pub max_connections_per_server: usize,
    /// Concurrent requests and WebSockets over all servers.
    pub max_connections_total: usize,
    /// Largest request line plus headers accepted.
    pub max_request_header_bytes: usize,
    /// Serve each user's servers from a host of their own, `{user}.{public_url's host}`, so a
    /// notebook's JavaScript never shares an origin with the hub or other users (needs wildcard
    /// DNS and a wildcard TLS certificate for `*.{host}`).
    pub user_subdomains: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let d = labhub_proxy::ProxySettings::new([""]);
        Self {
            connect_timeout: d.connect_timeout,
            read_timeout: d.read_timeout,
            max_connections_per_server: d.max_connections_per_server,
            max_connections_total: d.max_connections_total,
            max_request_header_bytes: d.max_request_header_bytes,
            user_subdomains: false,
        }
    }
}

impl Config {
    /// The front door's connection limits and threads.
    pub fn front_door(&self) -> labhub_web::FrontDoor {
        labhub_web::FrontDoor {
            request_head_timeout: self.http.request_head_timeout,
            keep_alive_timeout: self.http.keep_alive_timeout,
            max_connections: self.http.max_connections,
            // A share of the machine's cores is a share for both kinds of thread.
            threads: self.worker_threads,
        }
    }

    /// The cookie names in effect. With origin isolation over https every hub cookie carries
    /// the `__Host-` prefix, which browsers accept only from the very host (Secure, `Path=/`,
    /// no `Domain`), so a user's host cannot plant a cookie for the hub or for another user's
    /// host.
    pub fn cookie_names(&self) -> labhub_web::CookieNames {
        let prefixed = self.proxy.user_subdomains && self.public_url().scheme() == "https";
        labhub_web::CookieNames::new(&self.session.cookie_name, prefixed)
    }

    /// The proxy's settings.
    pub fn proxy_settings(&self) -> labhub_proxy::ProxySettings {
        let p = &self.proxy;
        labhub_proxy::ProxySettings {
            connect_timeout: p.connect_timeout,
            read_timeout: p.read_timeout,
            max_connections_per_server: p.max_connections_per_server,
            max_connections_total: p.max_connections_total,
            max_request_header_bytes: p.max_request_header_bytes,
            ..labhub_proxy::ProxySettings::new(self.cookie_names().all())
        }
    }
}
