//! The header policy: one table of rules by header name ([`TABLE`]), for requests on their
//! way to a server and for responses on their way back. Both paths consult it: the general
//! path on hyper's header maps ([`apply_to_request`], [`apply_to_response`]), the fast lane on
//! the raw heads it reads and writes (`lane.rs`), so a rule is written once.
//!
//! # What the server sees
//! - Removed: hop-by-hop headers (`Connection` and the headers it names, `Keep-Alive`, `TE`,
//!   `Trailer`, `Transfer-Encoding`, `Upgrade` except on WebSocket upgrades, every
//!   `Proxy-*`); the hub's session cookies (other cookies, like Jupyter's `_xsrf`, stay); the
//!   client's `Authorization` (it may carry the hub token), `X-Forwarded-Proto`,
//!   `X-Forwarded-Host` and `X-RStudio-Root-Path` (replaced by the proxy's own); the client's
//!   own claims about where it comes from, which jupyter_server may believe for its logs and
//!   checks (`X-Real-Ip`, `Forwarded`, `X-Scheme`, every other `X-Forwarded-*`); `token`
//!   query parameters in `Referer` (a hub URL may carry the hub token).
//! - Added: `Authorization: token <server secret>`; `X-Forwarded-For` (the client's address
//!   appended to what earlier proxies wrote), `X-Forwarded-Proto`, `X-Forwarded-Host`; for
//!   RStudio, `X-RStudio-Root-Path`. `Host` stays the browser's: jupyter_server compares it
//!   with `Origin` and refuses cross-origin WebSockets otherwise.
//!
//! # What the browser sees
//! - Removed: hop-by-hop headers as above (`Transfer-Encoding` is the body's framing: the
//!   lane passes it with the body, hyper writes its own on the general path); `Set-Cookie`
//!   headers that could plant a cookie for the hub ([`values::plants_for_the_hub`]);
//!   `Service-Worker-Allowed` (a user's service worker must not claim the hub's paths or
//!   other users'); the server's `X-Request-Id`.
//! - Rewritten: `Location` pointing at the server's internal address, read back into a hub
//!   path ([`values::LocationRewrite`]).
//! - Added: the hub's `X-Request-Id` (the web layer's middleware writes it on the general
//!   path, the lane itself).
//!
//! The request's path and query are not headers: `token` query parameters are removed by
//! the callers ([`values::strip_token_param`]).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::values::{self, LocationRewrite};

/// What becomes of a request header on its way to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestRule {
    /// Passed on as sent, unless `Connection` names it.
    Pass,
    /// `Connection`: dropped, and so is every header it names (`Content-Length` aside). The
    /// lane leaves a request whose `Connection` names headers to the general path.
    Connection,
    /// Never passed on.
    Drop,
    /// `Content-Length`: the general path passes it with the body it forwards; the lane
    /// forwards no body and drops it.
    Length,
    /// `Cookie`: passed without the hub's session cookies, as one header.
    FilterCookies,
    /// `Referer`: passed without the `token` parameters of its query.
    DropTokenParams,
    /// `X-Forwarded-For`: what earlier proxies wrote, with the client's address appended.
    AppendForwardedFor,
    /// Written by the proxy ([`OwnRequestHeader`]); the client's value never passes.
    Own(OwnRequestHeader),
}

/// What becomes of a response header on its way back to the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseRule {
    /// Passed on as sent, unless `Connection` names it.
    Pass,
    /// `Connection`: dropped, and so is every header it names (the framing aside).
    Connection,
    /// Never passed on.
    Drop,
    /// `Content-Length`: passed on; it frames the body either way.
    Length,
    /// `Transfer-Encoding`: the lane passes the body with its framing as it is, so the header
    /// too; hyper decodes it on the general path and writes its own framing, so it is dropped.
    Coding,
    /// `Set-Cookie`: dropped when it could plant a cookie for the hub.
    DropSetCookieForHub,
    /// `Location`: read back into a hub path when it points at the server's internal address.
    RewriteLocation,
    /// Written by the hub ([`OwnResponseHeader`]); the server's value never passes.
    Own(OwnResponseHeader),
}

/// A request header the proxy writes itself on every forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnRequestHeader {
    /// `Authorization: token <server secret>`.
    Authorization,
    /// `X-Forwarded-For`, earlier values kept ([`RequestRule::AppendForwardedFor`]).
    ForwardedFor,
    /// `X-Forwarded-Proto`: the scheme the browser used.
    ForwardedProto,
    /// `X-Forwarded-Host`: the `Host` the browser used.
    ForwardedHost,
    /// `X-RStudio-Root-Path`, for RStudio routes only.
    RstudioRootPath,
}

impl OwnRequestHeader {
    /// Every one of them: each path writes them all (a `match` over each, so none is missed).
    pub(crate) const ALL: [Self; 5] =
        [Self::Authorization, Self::ForwardedFor, Self::ForwardedProto, Self::ForwardedHost, Self::RstudioRootPath];
}

/// A response header the hub writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnResponseHeader {
    /// `X-Request-Id`: the hub's id of the request.
    RequestId,
}

impl OwnResponseHeader {
    /// Every one of them.
    pub(crate) const ALL: [Self; 1] = [Self::RequestId];
}

/// The rules: a header name (compared without regard to case), what becomes of it in a
/// request, and in a response. Names not listed follow [`by_prefix`].
pub(crate) const TABLE: &[(&str, RequestRule, ResponseRule)] = {
    use OwnRequestHeader as Mine;
    use RequestRule as Q;
    use ResponseRule as S;
    &[
        ("connection", Q::Connection, S::Connection),
        ("keep-alive", Q::Drop, S::Drop),
        ("te", Q::Drop, S::Drop),
        ("trailer", Q::Drop, S::Drop),
        ("upgrade", Q::Drop, S::Drop),
        ("transfer-encoding", Q::Drop, S::Coding),
        ("content-length", Q::Length, S::Length),
        ("cookie", Q::FilterCookies, S::Pass),
        ("referer", Q::DropTokenParams, S::Pass),
        // Claims about the client that jupyter_server (tornado's `xheaders`) believes; only
        // the proxy's own `X-Forwarded-For`, `-Proto` and `-Host` reach the server.
        ("x-real-ip", Q::Drop, S::Pass),
        ("forwarded", Q::Drop, S::Pass),
        ("x-scheme", Q::Drop, S::Pass),
        ("authorization", Q::Own(Mine::Authorization), S::Pass),
        ("x-forwarded-for", Q::AppendForwardedFor, S::Pass),
        ("x-forwarded-proto", Q::Own(Mine::ForwardedProto), S::Pass),
        ("x-forwarded-host", Q::Own(Mine::ForwardedHost), S::Pass),
        ("x-rstudio-root-path", Q::Own(Mine::RstudioRootPath), S::Pass),
        ("set-cookie", Q::Pass, S::DropSetCookieForHub),
        ("location", Q::Pass, S::RewriteLocation),
        ("x-request-id", Q::Pass, S::Own(OwnResponseHeader::RequestId)),
        // A user's service worker must not claim a scope above its server's prefix (the hub's
        // pages, other users' servers).
        ("service-worker-allowed", Q::Pass, S::Drop),
    ]
};

/// The rules of names not in [`TABLE`]: every `Proxy-*` is for the client–proxy hop (RFC
/// 9110 §7.6.1) and dropped both ways; every other `X-Forwarded-*` (`-Port`, `-Prefix`, …)
/// is a client's claim and dropped on the way to the server; anything else passes.
fn by_prefix(name: &[u8]) -> (RequestRule, ResponseRule) {
    let starts = |prefix: &[u8]| name.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    if starts(b"proxy-") {
        (RequestRule::Drop, ResponseRule::Drop)
    } else if starts(b"x-forwarded-") {
        (RequestRule::Drop, ResponseRule::Pass)
    } else {
        (RequestRule::Pass, ResponseRule::Pass)
    }
}

/// For each name length, the rows of [`TABLE`] whose name is that long (a bit per row):
/// a lookup compares a name with the few rows of its length, not with every row.
const ROWS_BY_LENGTH: [u32; 32] = {
    let mut rows = [0u32; 32];
    let mut i = 0;
    while i < TABLE.len() {
        let len = TABLE[i].0.len();
        assert!(i < 32 && len < 32, "the index holds 32 rows of names under 32 bytes");
        rows[len] |= 1 << i;
        i += 1;
    }
    rows
};

/// Both rules of a header named in any case; nothing is copied or lower-cased.
fn lookup(name: &[u8]) -> (RequestRule, ResponseRule) {
    let mut rows = ROWS_BY_LENGTH.get(name.len()).copied().unwrap_or(0);
    while rows != 0 {
        let (n, request, response) = TABLE[rows.trailing_zeros() as usize];
        if name.eq_ignore_ascii_case(n.as_bytes()) {
            return (request, response);
        }
        rows &= rows - 1;
    }
    by_prefix(name)
}

/// What becomes of the request header `name` (any case).
pub(crate) fn request_rule(name: &[u8]) -> RequestRule {
    lookup(name).0
}

/// What becomes of the response header `name` (any case).
pub(crate) fn response_rule(name: &[u8]) -> ResponseRule {
    lookup(name).1
}

/// Whether one `Connection` value names headers: tokens other than `keep-alive` and
/// `upgrade` (whose headers are dropped anyway) and `close`.
pub(crate) fn names_headers(connection: &[u8]) -> bool {
    connection.split(|b| *b == b',').map(<[u8]>::trim_ascii).any(|t| {
        !(t.is_empty()
            || t.eq_ignore_ascii_case(b"keep-alive")
            || t.eq_ignore_ascii_case(b"close")
            || t.eq_ignore_ascii_case(b"upgrade"))
    })
}

/// Whether one of the `Connection` values names the header `name`.
pub(crate) fn named<'a>(mut connection: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> bool {
    connection.any(|v| v.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(name)))
}

/// Whether a `Connection` header lists `token` (case-insensitive, comma separated).
pub(crate) fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    named(headers.get_all(header::CONNECTION).iter().map(HeaderValue::as_bytes), token.as_bytes())
}

/// Whether the request asks to become a WebSocket (`Connection: upgrade` + `Upgrade: websocket`).
pub(crate) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    connection_has_token(headers, "upgrade")
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
}

/// Whether `Connection` names `name` (only looked up when some `Connection` names headers).
fn named_in(headers: &HeaderMap, names_any: bool, name: &HeaderName) -> bool {
    names_any && named(headers.get_all(header::CONNECTION).iter().map(HeaderValue::as_bytes), name.as_str().as_bytes())
}

/// Applies the request rules to a header map: removes what they drop and what `Connection`
/// names, and filters the cookies. The proxy's own headers ([`OwnRequestHeader`]) are the
/// caller's to write over whatever the client sent.
pub(crate) fn apply_to_request(headers: &mut HeaderMap, hub_cookies: &[String]) {
    let names_any = headers.get_all(header::CONNECTION).iter().any(|v| names_headers(v.as_bytes()));
    // Allocates only when something goes, which a browser's `Connection: keep-alive` makes
    // the usual case; one pass over the names costs less than a lookup per ruled name.
    let mut doomed: Vec<HeaderName> = Vec::new();
    let (mut cookies, mut referer) = (false, false);
    for name in headers.keys() {
        let rule = request_rule(name.as_str().as_bytes());
        if rule != RequestRule::Length && named_in(headers, names_any, name) {
            doomed.push(name.clone());
            continue;
        }
        match rule {
            RequestRule::Pass | RequestRule::Length | RequestRule::AppendForwardedFor | RequestRule::Own(_) => {}
            RequestRule::Connection | RequestRule::Drop => doomed.push(name.clone()),
            RequestRule::FilterCookies => cookies = true,
            RequestRule::DropTokenParams => referer = true,
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    if cookies {
        values::strip_cookies(headers, hub_cookies);
    }
    if referer {
        rewrite_each(headers, header::REFERER, |v| {
            values::referer_without_token(v).and_then(|v| HeaderValue::from_bytes(&v).ok())
        });
    }
}

/// Applies the response rules to a header map: removes what they drop and what `Connection`
/// names, drops cookies planted for the hub, and reads `Location` back into hub paths.
pub(crate) fn apply_to_response(headers: &mut HeaderMap, hub_cookies: &[String], location: &LocationRewrite<'_>) {
    let names_any = headers.get_all(header::CONNECTION).iter().any(|v| names_headers(v.as_bytes()));
    let mut doomed: Vec<HeaderName> = Vec::new();
    let (mut set_cookie, mut relocate) = (false, false);
    for name in headers.keys() {
        let rule = response_rule(name.as_str().as_bytes());
        let framing = matches!(rule, ResponseRule::Length | ResponseRule::Coding);
        if !framing && named_in(headers, names_any, name) {
            doomed.push(name.clone());
            continue;
        }
        match rule {
            ResponseRule::Pass | ResponseRule::Length => {}
            // The web layer writes the hub's `X-Request-Id` on this path.
            ResponseRule::Connection | ResponseRule::Drop | ResponseRule::Coding | ResponseRule::Own(_) => {
                doomed.push(name.clone());
            }
            ResponseRule::DropSetCookieForHub => set_cookie = true,
            ResponseRule::RewriteLocation => relocate = true,
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    if set_cookie {
        values::drop_foreign_set_cookies(headers, hub_cookies);
    }
    if relocate {
        rewrite_each(headers, header::LOCATION, |v| {
            location.apply_bytes(v).and_then(|l| HeaderValue::try_from(l).ok())
        });
    }
}

/// Rewrites each value of `name` that `rewrite` maps (a header usually has one value, and
/// the lane rewrites them one by one too); the others stay, in their order.
fn rewrite_each(headers: &mut HeaderMap, name: HeaderName, rewrite: impl Fn(&[u8]) -> Option<HeaderValue>) {
    // Most of the time nothing changes, and nothing is allocated.
    if !headers.get_all(&name).iter().any(|v| rewrite(v.as_bytes()).is_some()) {
        return;
    }
    let old: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
    headers.remove(&name);
    for v in old {
        let new = rewrite(v.as_bytes()).unwrap_or(v);
        headers.append(&name, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    /// The names left, sorted (removals reorder a header map).
    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn names_are_looked_up_in_any_case_and_proxy_headers_by_prefix() {
        assert_eq!(request_rule(b"COOKIE"), RequestRule::FilterCookies);
        assert_eq!(request_rule(b"Transfer-Encoding"), RequestRule::Drop);
        assert_eq!(response_rule(b"Transfer-Encoding"), ResponseRule::Coding);
        assert_eq!(response_rule(b"Set-Cookie"), ResponseRule::DropSetCookieForHub);
        assert_eq!(request_rule(b"Proxy-Connection"), RequestRule::Drop);
        assert_eq!(response_rule(b"proxy-authenticate"), ResponseRule::Drop);
        assert_eq!(request_rule(b"proxy"), RequestRule::Pass);
        assert_eq!(request_rule(b"x-cookie"), RequestRule::Pass);
        assert_eq!(request_rule(&[b'a'; 300]), RequestRule::Pass);
        for (name, _, _) in TABLE {
            assert_eq!(name.to_ascii_lowercase(), *name, "table names are lower case, as HeaderName's");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_lists_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "close"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("proxy-foo", "bar"),
            ("accept", "*/*"),
            ("cookie", "a=b"),
        ]);
        apply_to_request(&mut h, &[]);
        assert_eq!(names(&h), ["accept", "cookie"]);
        // Each kind alone is found too, and a map without any is left as it is.
        for alone in ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-foo"] {
            let mut h = map(&[("accept", "*/*"), (alone, "x"), ("cookie", "a=b")]);
            apply_to_request(&mut h, &[]);
            assert_eq!(names(&h), ["accept", "cookie"], "{alone}");
        }
        let mut h = map(&[("accept", "*/*"), ("cookie", "a=b")]);
        apply_to_request(&mut h, &[]);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn connection_cannot_name_the_framing_away() {
        let mut h = map(&[("connection", "content-length, x-hop"), ("content-length", "2"), ("x-hop", "1")]);
        apply_to_request(&mut h, &[]);
        assert_eq!(names(&h), ["content-length"]);
        let rewrite =
            LocationRewrite { internal_origin: "http://10.0.0.5:8888", browser_host: "h", rstudio_prefix: None };
        let mut h = map(&[
            ("connection", "content-length, x-hop"),
            ("content-length", "2"),
            ("x-hop", "1"),
            ("x-request-id", "server's"),
            ("transfer-encoding", "chunked"),
        ]);
        apply_to_response(&mut h, &[], &rewrite);
        assert_eq!(names(&h), ["content-length"]);
    }

    #[test]
    fn response_rules_drop_hub_cookies_and_read_every_location_back() {
        let rewrite =
            LocationRewrite { internal_origin: "http://10.0.0.5:8888", browser_host: "h", rstudio_prefix: None };
        let mut h = map(&[
            ("set-cookie", "labhub=planted"),
            ("set-cookie", "_xsrf=kept"),
            ("location", "http://10.0.0.5:8888/user/a/tree"),
            ("location", "/elsewhere"),
            ("content-type", "text/html"),
        ]);
        apply_to_response(&mut h, &["labhub".to_string()], &rewrite);
        let all = |n: &str| h.get_all(n).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(all("set-cookie"), ["_xsrf=kept"]);
        assert_eq!(all("location"), ["/user/a/tree", "/elsewhere"]);
        assert_eq!(all("content-type"), ["text/html"]);
    }

    #[test]
    fn websocket_upgrades_are_recognised_by_tokens() {
        assert!(is_websocket_upgrade(&map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")])));
        assert!(!is_websocket_upgrade(&map(&[("connection", "keep-alive"), ("upgrade", "websocket")])));
        assert!(!is_websocket_upgrade(&map(&[("connection", "upgrade"), ("upgrade", "h2c")])));
        assert!(!is_websocket_upgrade(&map(&[("connection", "upgraded"), ("upgrade", "websocket")])));
    }
}
