//! The values the header rules rewrite (cookies, `X-Forwarded-For`, `token` query
//! parameters, `Location`), as pure functions.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Removes the cookies called `names` from every `Cookie` header, keeping the others (such as
/// Jupyter's `_xsrf`) in their order, as one `Cookie` header; drops it when nothing is left.
/// HTTP/2 clients send one header per cookie, but an HTTP/1.1 server expects a single line
/// (RFC 9113 §8.2.3), so several are always joined.
pub(crate) fn strip_cookies(headers: &mut HeaderMap, names: &[String]) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let several = values.nth(1).is_some();
    let mentioned = headers.get_all(header::COOKIE).iter().any(|v| {
        names
            .iter()
            .filter(|n| !n.is_empty())
            .any(|name| v.as_bytes().windows(name.len()).any(|w| w == name.as_bytes()))
    });
    if !several && !mentioned {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        keep_cookies(value.as_bytes(), names, &mut kept);
    }
    headers.remove(header::COOKIE);
    // The bytes come from valid header values joined with "; ", so this cannot fail; if it
    // ever did, dropping the header is the safe side.
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(&kept)
    {
        headers.insert(header::COOKIE, value);
    }
}

/// Appends the pairs of one `Cookie` value not called one of `names` (empty names match
/// nothing) to `kept`, joined by "; ".
pub(crate) fn keep_cookies(value: &[u8], names: &[String], kept: &mut Vec<u8>) {
    for pair in value.split(|b| *b == b';') {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            continue;
        }
        let cookie_name = pair.split(|b| *b == b'=').next().unwrap_or(pair).trim_ascii();
        if names.iter().any(|n| !n.is_empty() && n.as_bytes() == cookie_name) {
            continue;
        }
        if !kept.is_empty() {
            kept.extend_from_slice(b"; ");
        }
        kept.extend_from_slice(pair);
    }
}

/// Drops the `Set-Cookie` headers of an upstream response that could plant a cookie for the
/// hub: those naming one of the hub's cookies, and those with a `Domain` attribute (which
/// would reach the hub's host and other users' hosts, not just this server's). A server's own
/// host-only cookies (Jupyter's `_xsrf`, RStudio's) pass untouched.
pub(crate) fn drop_foreign_set_cookies(headers: &mut HeaderMap, hub_cookies: &[String]) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !plants_for_the_hub(v.as_bytes(), hub_cookies))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

pub(crate) fn plants_for_the_hub(set_cookie: &[u8], hub_cookies: &[String]) -> bool {
    let mut parts = set_cookie.split(|b| *b == b';');
    let first = parts.next().unwrap_or_default();
    let name = first.split(|b| *b == b'=').next().unwrap_or_default().trim_ascii();
    if hub_cookies.iter().any(|c| c.as_bytes() == name) {
        return true;
    }
    parts.any(|attr| {
        let key = attr.split(|b| *b == b'=').next().unwrap_or_default().trim_ascii();
        key.eq_ignore_ascii_case(b"domain")
    })
}

/// Appends `client` to `X-Forwarded-For`, keeping what earlier proxies wrote.
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, client: std::net::IpAddr) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    // One buffer, frozen into the header value without another copy.
    let mut joined = bytes::BytesMut::with_capacity(64);
    forwarded_for(headers.get_all(&XFF).iter().map(HeaderValue::as_bytes), client, &mut joined);
    if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
        headers.insert(XFF, value);
    }
}

/// Writes the `X-Forwarded-For` value that appends `client` to the `earlier` ones.
pub(crate) fn forwarded_for<'a>(
    earlier: impl Iterator<Item = &'a [u8]>,
    client: std::net::IpAddr,
    joined: &mut impl bytes::BufMut,
) {
    use std::io::Write as _;
    for v in earlier.map(<[u8]>::trim_ascii).filter(|v| !v.is_empty()) {
        joined.put_slice(v);
        joined.put_slice(b", ");
    }
    match client {
        // The usual case, written without the formatting machinery.
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    joined.put_u8(b'.');
                }
                push_decimal(joined, octet);
            }
        }
        // Writing an address into a growable buffer cannot fail.
        std::net::IpAddr::V6(_) => {
            let _ = write!(bytes::BufMut::writer(&mut *joined), "{client}");
        }
    }
}

/// Appends `n` in decimal.
fn push_decimal(buf: &mut impl bytes::BufMut, n: u8) {
    if n >= 100 {
        buf.put_u8(b'0' + n / 100);
    }
    if n >= 10 {
        buf.put_u8(b'0' + n / 10 % 10);
    }
    buf.put_u8(b'0' + n % 10);
}

/// The query without its `token` parameters (the hub's own credential, which JupyterHub
/// accepts as `?token=`), every other byte kept as sent. `None` when there is none to remove.
/// The key is compared after percent-decoding, because the server would decode it too.
pub fn strip_token_param(query: &str) -> Option<String> {
    // Whole `&`-separated parts of UTF-8 are removed, so what is left is UTF-8 too.
    without_token_params(query.as_bytes()).map(|kept| String::from_utf8_lossy(&kept).into_owned())
}

/// [`strip_token_param`] on bytes.
fn without_token_params(query: &[u8]) -> Option<Vec<u8>> {
    let is_token = |part: &&[u8]| {
        let key = part.split(|b| *b == b'=').next().unwrap_or(part);
        key == b"token" || (key.contains(&b'%') && percent_encoding::percent_decode(key).eq(b"token".iter().copied()))
    };
    if !query.split(|b| *b == b'&').any(|p| is_token(&p)) {
        return None;
    }
    let mut kept = Vec::with_capacity(query.len());
    for part in query.split(|b| *b == b'&').filter(|p| !is_token(p)) {
        if !kept.is_empty() {
            kept.push(b'&');
        }
        kept.extend_from_slice(part);
    }
    Some(kept)
}

/// A `Referer` without the `token` parameters of its query (a hub URL the browser came from
/// may carry the hub token as `?token=`), the rest kept byte for byte; `None` when there is
/// none to remove.
pub(crate) fn referer_without_token(referer: &[u8]) -> Option<Vec<u8>> {
    let start = referer.iter().position(|b| *b == b'?')? + 1;
    let end = referer[start..].iter().position(|b| *b == b'#').map_or(referer.len(), |i| start + i);
    let kept = without_token_params(&referer[start..end])?;
    let mut out = Vec::with_capacity(referer.len());
    // No query left: no `?` either.
    out.extend_from_slice(&referer[..start - usize::from(kept.is_empty())]);
    out.extend_from_slice(&kept);
    out.extend_from_slice(&referer[end..]);
    Some(out)
}

/// How `Location` headers from one upstream are read back into hub paths.
pub(crate) struct LocationRewrite<'a> {
    /// `http://10.0.0.5:8888`: the server's internal origin.
    pub internal_origin: &'a str,
    /// The `Host` the browser used, for RStudio's absolute redirects to it.
    pub browser_host: &'a str,
    /// For RStudio, the route prefix that redirects must stay under.
    pub rstudio_prefix: Option<&'a str>,
}

impl LocationRewrite<'_> {
    /// [`Self::apply`] to a header value's bytes; values that are not UTF-8 are kept.
    pub(crate) fn apply_bytes(&self, location: &[u8]) -> Option<String> {
        std::str::from_utf8(location).ok().and_then(|l| self.apply(l))
    }

    /// The rewritten `Location`, or `None` to keep it as it is.
    pub(crate) fn apply(&self, location: &str) -> Option<String> {
        let internal = strip_origin(location, "http://", self.internal_origin.trim_start_matches("http://"));
        let Some(prefix) = self.rstudio_prefix else {
            return internal.map(root_relative);
        };
        // RStudio before 1.4 sent its sign-in page to `/auth-sign-in` (rstudio/rstudio#8888),
        // or to the browser's host without the prefix (rstudio/rstudio#1676): every redirect
        // that is not already under the prefix gets it.
        let path = match internal {
            Some(rest) => root_relative(rest),
            None => {
                let own = strip_origin(location, "https://", self.browser_host)
                    .or_else(|| strip_origin(location, "http://", self.browser_host));
                match own {
                    Some(rest) => root_relative(rest),
                    // `//host/x` is another origin, not a path.
                    None if location.starts_with('/') && !location.starts_with("//") => location.to_string(),
                    None => return None,
                }
            }
        };
        let bare = prefix.trim_end_matches('/');
        let under = path.starts_with(prefix)
            || path.strip_prefix(bare).is_some_and(|r| r.is_empty() || r.starts_with('?') || r.starts_with('#'));
        if under {
            return (path != location).then_some(path);
        }
        Some(format!("{prefix}{}", path.trim_start_matches('/')))
    }
}

/// `rest` after `scheme + host` (case-insensitive), when the origin is exactly that.
fn strip_origin<'a>(location: &'a str, scheme: &str, host: &str) -> Option<&'a str> {
    let n = scheme.len() + host.len();
    let head = location.get(..n)?;
    let (s, h) = head.split_at(scheme.len());
    if !s.eq_ignore_ascii_case(scheme) || !h.eq_ignore_ascii_case(host) || host.is_empty() {
        return None;
    }
    let rest = &location[n..];
    (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(rest)
}

fn root_relative(rest: &str) -> String {
    if rest.starts_with('/') { rest.to_string() } else { format!("/{rest}") }
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

    #[test]
    fn only_the_hub_cookie_is_stripped() {
        let cases: &[(&[&'static str], Option<&str>)] = &[
            (&["labhub=secret; _xsrf=2|abc"], Some("_xsrf=2|abc")),
            (&["_xsrf=x;labhub=secret;theme=dark"], Some("_xsrf=x; theme=dark")),
            (&["labhub=secret"], None),
            (&["a=1", "labhub=s", "b=2"], Some("a=1; b=2")),
            // Look-alike names stay: they are other cookies.
            (&["labhub-csrf=1; xlabhub=2; labhub =3"], Some("labhub-csrf=1; xlabhub=2")),
            (&["_xsrf=untouched;;  spaced = v "], Some("_xsrf=untouched;;  spaced = v ")),
            // HTTP/2 sends a header per cookie; HTTP/1.1 servers want one line.
            (&["a=1", "b=2"], Some("a=1; b=2")),
        ];
        for (values, want) in cases {
            let mut h = HeaderMap::new();
            for v in values.iter() {
                h.append(header::COOKIE, HeaderValue::from_static(v));
            }
            strip_cookies(&mut h, &["labhub".to_string()]);
            let got: Vec<&str> = h.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
            assert_eq!(got, want.map(|w| vec![w]).unwrap_or_default(), "{values:?}");
        }
    }

    #[test]
    fn upstream_cookies_that_could_reach_the_hub_are_dropped() {
        let cases: &[(&str, bool)] = &[
            ("_xsrf=2|abc; Path=/user/alice/", true),
            ("rs-csrf-token=x; Path=/; HttpOnly", true),
            ("labhub=planted; Path=/", false),
            ("labhub = planted", false),
            ("theme=dark; Domain=lab.example.org; Path=/", false),
            ("theme=dark; path=/;  domain = .example.org", false),
            ("theme=dark; SameSite=Lax", true),
        ];
        let mut h = HeaderMap::new();
        for (value, _) in cases {
            h.append(header::SET_COOKIE, HeaderValue::from_static(value));
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        drop_foreign_set_cookies(&mut h, &["labhub".to_string()]);
        let got: Vec<&str> = h.get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
        let want: Vec<&str> = cases.iter().filter(|(_, kept)| *kept).map(|(v, _)| *v).collect();
        assert_eq!(got, want);
        assert_eq!(h[header::CONTENT_TYPE], "text/html");
    }

    #[test]
    fn forwarded_for_is_appended_not_replaced() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "10.1.1.1")]);
        append_forwarded_for(&mut h, "192.0.2.1".parse().unwrap());
        assert_eq!(h.get("x-forwarded-for").map(|v| v.as_bytes()), Some(&b"203.0.113.7, 10.1.1.1, 192.0.2.1"[..]));
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, std::net::Ipv6Addr::LOCALHOST.into());
        assert_eq!(h.get("x-forwarded-for").map(|v| v.as_bytes()), Some(&b"::1"[..]));
    }

    #[test]
    fn every_ipv4_octet_is_written_as_the_standard_library_writes_it() {
        for n in 0..=255u8 {
            let addr = std::net::Ipv4Addr::new(n, 0, n / 3, 255 - n);
            let mut h = HeaderMap::new();
            append_forwarded_for(&mut h, addr.into());
            assert_eq!(h["x-forwarded-for"].to_str().unwrap(), addr.to_string());
        }
    }

    #[test]
    fn token_parameters_are_removed_and_the_rest_kept_byte_for_byte() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a=1&b=%2F+x", None),
            ("tokens=1&xtoken=2&token_type=3", None),
            ("token=abc", Some("")),
            ("a=1&token=abc&b=%2f&c", Some("a=1&b=%2f&c")),
            ("token=1&token=2&a=%E2%9C%93", Some("a=%E2%9C%93")),
            ("%74oken=abc&a=1", Some("a=1")),
            ("tok%65n=abc&a=1", Some("a=1")),
            ("token&a=1", Some("a=1")),
            ("a=1&&b=2&token=x", Some("a=1&&b=2")),
        ];
        for (q, want) in cases {
            assert_eq!(strip_token_param(q).as_deref(), *want, "{q}");
        }
    }

    #[test]
    fn hub_tokens_are_taken_out_of_referers() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://hub.example/user/alice/lab", None),
            ("https://hub.example/user/alice/lab?a=1&tokens=2", None),
            ("https://hub.example/user/alice/lab?token=abc", Some("https://hub.example/user/alice/lab")),
            ("https://hub.example/x?a=1&token=abc&b=%2F", Some("https://hub.example/x?a=1&b=%2F")),
            ("https://hub.example/x?%74oken=abc#frag", Some("https://hub.example/x#frag")),
            ("https://hub.example/x?a=1#token=fragment-is-not-sent", None),
        ];
        for (referer, want) in cases {
            let got = referer_without_token(referer.as_bytes()).map(|v| String::from_utf8(v).unwrap());
            assert_eq!(got.as_deref(), *want, "{referer}");
        }
        assert_eq!(referer_without_token(b"/x?token=\xff&a=\xfe").as_deref(), Some(&b"/x?a=\xfe"[..]));
    }

    #[test]
    fn jupyter_redirects_to_the_internal_address_become_hub_paths() {
        let r = LocationRewrite {
            internal_origin: "http://10.0.0.5:8888",
            browser_host: "hub.example",
            rstudio_prefix: None,
        };
        let cases: &[(&str, Option<&str>)] = &[
            ("http://10.0.0.5:8888/user/alice/lab?x=1", Some("/user/alice/lab?x=1")),
            ("HTTP://10.0.0.5:8888/user/alice/", Some("/user/alice/")),
            ("http://10.0.0.5:8888", Some("/")),
            ("http://10.0.0.5:8888?x", Some("/?x")),
            ("http://10.0.0.5:88889/x", None),
            ("http://10.0.0.5:8888.evil.com/x", None),
            ("https://hub.example/user/alice/", None),
            ("/user/alice/tree", None),
            ("//evil.com/x", None),
        ];
        for (loc, want) in cases {
            assert_eq!(r.apply(loc).as_deref(), *want, "{loc}");
        }
    }

    #[test]
    fn rstudio_redirects_stay_under_the_prefix() {
        let r = LocationRewrite {
            internal_origin: "http://10.0.0.6:8787",
            browser_host: "hub.example:8443",
            rstudio_prefix: Some("/user/alice/rs/"),
        };
        let cases: &[(&str, Option<&str>)] = &[
            ("/auth-sign-in?appUri=%2F", Some("/user/alice/rs/auth-sign-in?appUri=%2F")),
            ("http://10.0.0.6:8787/auth-sign-in", Some("/user/alice/rs/auth-sign-in")),
            ("http://10.0.0.6:8787/", Some("/user/alice/rs/")),
            ("https://hub.example:8443/auth-sign-in", Some("/user/alice/rs/auth-sign-in")),
            ("http://hub.example:8443/", Some("/user/alice/rs/")),
            ("https://hub.example:8443/user/alice/rs/", Some("/user/alice/rs/")),
            ("/user/alice/rs/", None),
            ("/user/alice/rs", None),
            ("/user/alice/rs?x", None),
            ("http://10.0.0.6:8787/user/alice/rs/x", Some("/user/alice/rs/x")),
            ("auth-sign-in", None),
            ("//evil.com/", None),
            ("https://elsewhere.example/x", None),
        ];
        for (loc, want) in cases {
            assert_eq!(r.apply(loc).as_deref(), *want, "{loc}");
        }
    }
}
