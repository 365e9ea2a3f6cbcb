//! The route table and the forwarding of HTTP and WebSocket traffic to users' servers.
//!
//! The hub's web layer authenticates and authorises a request under `/user/…` (and checks
//! `Origin` on WebSocket upgrades), picks the route with [`parse_user_path`] and
//! [`RouteTable::resolve`], and hands both to [`Proxy::forward`]. This crate owns no auth.
//!
//! # Routing
//! [`parse_user_path`] reads the raw, still percent-encoded path and refuses anything that
//! could make two readings of it disagree: `.`/`..` segments, percent-encoded dots, slashes,
//! backslashes and NUL, raw backslashes, non-ASCII, empty user or server segments, escapes
//! in the user or server segment, and user names not already lower case (the error carries
//! the canonical path for a redirect). Lookups are exact on both segments: `alice` never
//! matches `alice2`. `/user/alice/lab/` goes to the named server `lab` when alice runs one,
//! else to her default server. [`Proxy::forward`] re-checks that the path is under the
//! route's prefix (refusing it otherwise) and answers the bare prefix (`/user/alice`) with a
//! redirect to `/user/alice/`.
//!
//! # One pool per route, closed with it
//! Each [`RouteEntry`] has its own pool of HTTP/1.1 keep-alive connections (hyper's
//! connection-level client), made on first use. Its sockets and tunnels watch the route, so
//! removing or replacing a route closes its idle pooled sockets, its in-flight upstream
//! connections and its WebSocket tunnels at once — configurable-http-proxy left sockets to
//! stopped servers open for years. Requests that still hold the old entry fail cleanly
//! (`Unreachable`).
//!
//! # Streaming
//! Request and response bodies are passed frame by frame, never collected: memory per
//! request is bounded by hyper's buffers whatever the size, and SSE events and long-poll
//! answers reach the browser as the server writes them.
//!
//! # What the server sees
//! One table of header rules (`headers.rs`, which lists what is removed and added each way)
//! serves both the general path and the fast lane:
//! - Removed: hop-by-hop headers (`Connection` and the headers it names, `Keep-Alive`,
//!   `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` except on WebSocket upgrades, every
//!   `Proxy-*`); the hub's session cookies (other cookies, like Jupyter's `_xsrf`, stay); the
//!   client's `Authorization` (it may carry the hub token); the client's own `X-Real-Ip`,
//!   `Forwarded`, `X-Scheme` and `X-Forwarded-*`; every `token` query parameter (JupyterHub
//!   accepts the hub token as `?token=`), the rest of the query byte for byte, and those in
//!   `Referer`.
//! - Added: `Authorization: token <server secret>`; `X-Forwarded-For` (appended),
//!   `X-Forwarded-Proto`, `X-Forwarded-Host`. `Host` stays the browser's: jupyter_server
//!   compares it with `Origin` and refuses cross-origin WebSockets otherwise.
//! - RStudio: the prefix is stripped from the path and `X-RStudio-Root-Path` carries it
//!   without its trailing slash (`/user/alice/rs`), the form Posit's proxy guide uses and
//!   the one rserver normalises to (`Request::rootPath`).
//!
//! On the way back, hop-by-hop headers, `Set-Cookie`s that could plant a cookie for the hub
//! and `Service-Worker-Allowed` are dropped, and `Location` headers pointing at a server's
//! internal address become hub paths; for RStudio, redirects not under the prefix (its
//! sign-in page went to `/auth-sign-in` before 1.4) get it.
//!
//! # WebSockets
//! The upgrade is forwarded first; the client gets 101 only after the server answered 101,
//! with the server's `Sec-WebSocket-Accept`/`-Protocol`/`-Extensions`. A refusal (403, 404…)
//! is passed back as it is. Then bytes are copied both ways untouched (so compression and
//! close codes are end to end) until either side closes, the route is removed, the visitor it
//! was opened for loses access or the credential it was opened with ends (a tunnel opened
//! through [`Proxy::forward_for`] is tagged with its holder; [`RouteTable::close_visitors_where`]
//! and [`RouteTable::close_credentials_where`] close exactly those), or the proxy itself is
//! dropped (the hub shut down: its tunnels do not outlive it). Tunnels are counted
//! per route and in total by guards that decrement on drop.
//!
//! # Limits and timeouts
//! A slot per route (`max_connections_per_server`) and one in total
//! (`max_connections_total`) are held for the life of a request — until its response body
//! is finished or dropped — or of a tunnel; when none is free the answer is an immediate
//! [`ProxyError::Busy`], never a wait. Request lines plus headers above
//! `max_request_header_bytes` are refused. A failed or timed-out connect is
//! [`ProxyError::Unreachable`]. The read timeout bounds only the wait for response headers
//! and counts from the last movement of the request body, so uploads slower than the
//! timeout pass while a silent server is cut; response bodies have no timeout, so slow SSE
//! streams and downloads run as long as the client listens.
//!
//! # The fast lane
//! [`Proxy::forward_plain_get`] relays a plain GET the web layer parsed and authorised over
//! a raw upstream socket kept by the client connection ([`Lane`]), with the rules above, and
//! refuses ([`LaneError::NotForwarded`]) whatever it does not handle, before anything reaches
//! the client, for the general path to answer.
//!
//! # Activity
//! Every request and tunnel traffic stamps its route's last activity (an atomic, written
//! at most once a second); [`RouteTable::take_activity`] drains it for batched writes.
//!
//! # Services
//! [`Proxy::forward_service`] sends `/services/{name}/…` to a registered service's address
//! ([`ServiceTable`] keeps one [`ServiceTarget`] and its pool per service), HTTP and
//! WebSockets, with the same header rules (no `Authorization` of the proxy's: a service
//! authenticates its users itself) and the path unchanged; its requests count against its own
//! limit (as a server's) and the total.

mod body;
mod chunked;
mod closer;
mod connector;
mod error;
mod forward;
mod headers;
mod lane;
mod limits;
mod path;
mod pool;
#[cfg(test)]
mod proptests;
mod route;
mod service;
mod settings;
mod tunnel;
mod values;

pub use error::ProxyError;
pub use forward::Proxy;
pub use lane::{Lane, LaneError, PlainGet, Relayed};
pub use path::{PathError, UserPath, parse_user_path};
pub use route::{Route, RouteEntry, RouteError, RouteKey, RouteTable, TunnelWatch};
pub use service::{ServiceTable, ServiceTarget};
pub use settings::{ClientInfo, ProxySettings, Scheme};
pub use values::strip_token_param;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    /// The crate's modules and, for each, the modules its non-test code names (`crate::x`).
    fn imports() -> BTreeMap<String, Vec<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
            .collect();
        let modules: Vec<&str> = files.iter().map(|(m, _)| m.as_str()).filter(|m| *m != "lib").collect();
        files
            .iter()
            .filter(|(m, _)| m != "lib" && m != "proptests")
            .map(|(m, text)| {
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                let mut named: Vec<String> = modules
                    .iter()
                    .filter(|other| *other != m && code.contains(&format!("crate::{other}")))
                    .map(|other| other.to_string())
                    .collect();
                named.sort();
                (m.clone(), named)
            })
            .collect()
    }

    #[test]
    fn no_module_imports_its_own_importers() {
        let graph = imports();
        assert!(graph.len() > 10, "{graph:?}");
        // Depth-first, with the path so far: a module met again on its own path is a circle.
        fn visit<'a>(m: &'a str, graph: &'a BTreeMap<String, Vec<String>>, path: &mut Vec<&'a str>) {
            if let Some(at) = path.iter().position(|p| *p == m) {
                panic!("an import circle: {} -> {m}", path[at..].join(" -> "));
            }
            path.push(m);
            for next in graph.get(m).into_iter().flatten() {
                visit(next, graph, path);
            }
            path.pop();
        }
        for m in graph.keys() {
            visit(m, &graph, &mut Vec::new());
        }
    }
}
