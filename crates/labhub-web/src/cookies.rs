//! The hub's cookies: the session, the pre-login CSRF binding, one-shot flash messages, the
//! binding of a provider sign-in to its browser, and how they are named and read.

use axum_extra::extract::cookie::{Cookie, SameSite};
use time::Duration;

use crate::AppState;

/// The name of the session cookie on users' own hosts (before any prefix).
const USER_HOST_COOKIE: &str = "labhub-user-session";

/// What the hub's cookies are called.
///
/// With origin isolation over https every one carries the `__Host-` prefix, which browsers
/// accept only from the very host, `Secure`, with `Path=/` and no `Domain`. A user's host is a
/// sibling of the hub's and could otherwise set any of them for the hub's host (a session of
/// the attacker's, a pre-login cookie whose CSRF token the attacker knows, a flash message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieNames {
    /// The hub's session.
    pub session: String,
    /// The session on users' own hosts (origin isolation).
    pub user_host_session: String,
    /// What the sign-in form's CSRF token is bound to before there is a session.
    pub login_csrf: String,
    /// A message shown once on the next page.
    pub flash: String,
    /// Binds a provider sign-in to the browser that started it.
    pub oauth_binding: String,
    /// An API token a browser opened a user's server with (`/user/…?token=`), kept for that
    /// user's servers only.
    pub server_token: String,
    host_prefixed: bool,
}

impl CookieNames {
    /// The names for a hub whose session cookie is `session`; `host_prefixed` adds `__Host-`
    /// to every one (origin isolation over https).
    pub fn new(session: &str, host_prefixed: bool) -> Self {
        let name = |n: &str| if host_prefixed { format!("__Host-{n}") } else { n.to_string() };
        Self {
            session: name(session),
            user_host_session: name(USER_HOST_COOKIE),
            login_csrf: name("labhub-login-csrf"),
            flash: name("labhub-flash"),
            oauth_binding: name("labhub-oauth-binding"),
            server_token: name("labhub-server-token"),
            host_prefixed,
        }
    }

    /// Every name, for the proxy: none reaches a user's server, none may be set by one.
    pub fn all(&self) -> Vec<String> {
        [&self.session, &self.user_host_session, &self.login_csrf, &self.flash, &self.oauth_binding, &self.server_token]
            .map(String::clone)
            .to_vec()
    }

    /// The path a cookie is sent to: `narrow` unless prefixed, since `__Host-` cookies must
    /// have `Path=/`.
    fn path<'a>(&self, narrow: &'a str) -> &'a str {
        if self.host_prefixed { "/" } else { narrow }
    }
}

fn base(state: &AppState, name: &str, value: String) -> Cookie<'static> {
    Cookie::build((name.to_string(), value))
        .path("/")
        .http_only(true)
        .secure(state.settings().secure_cookies())
        .same_site(SameSite::Lax)
        .build()
}

fn names(state: &AppState) -> &CookieNames {
    &state.settings().cookies
}

/// The session cookie. Host-only (no `Domain`), so no other host ever receives it.
pub fn session(state: &AppState, token: &str) -> Cookie<'static> {
    base(state, &names(state).session, token.to_string())
}

/// Deletes the session cookie.
pub fn session_removal(state: &AppState) -> Cookie<'static> {
    let mut c = base(state, &names(state).session, String::new());
    c.make_removal();
    c
}

/// The session cookie of a user's own host.
pub fn user_host_session(state: &AppState, token: &str) -> Cookie<'static> {
    base(state, &names(state).user_host_session, token.to_string())
}

/// The pre-login CSRF cookie.
pub fn login_csrf(state: &AppState, value: &str) -> Cookie<'static> {
    let mut c = base(state, &names(state).login_csrf, value.to_string());
    c.set_path(names(state).path("/hub/"));
    c.set_max_age(Duration::hours(12));
    c
}

/// A one-shot message for the next page (the cookie jar percent-encodes it on the way out).
pub fn flash(state: &AppState, message: &str) -> Cookie<'static> {
    let mut c = base(state, &names(state).flash, message.to_string());
    c.set_path(names(state).path("/hub/"));
    c.set_max_age(Duration::minutes(1));
    c
}

/// Deletes the flash cookie once shown.
pub fn flash_removal(state: &AppState) -> Cookie<'static> {
    let mut c = base(state, &names(state).flash, String::new());
    c.set_path(names(state).path("/hub/"));
    c.make_removal();
    c
}

/// The cookie binding a provider sign-in to its browser, sent back only to `callback` (unless
/// prefixed), for `lifetime`.
pub fn oauth_binding(state: &AppState, value: &str, callback: &'static str, lifetime: Duration) -> Cookie<'static> {
    let mut c = base(state, &names(state).oauth_binding, value.to_string());
    c.set_path(names(state).path(callback));
    c.set_max_age(lifetime);
    c
}

/// The API token that opened `user`'s servers in this browser (`/user/…?token=`), sent back only
/// to them: to `/user/{user}/`, or under origin isolation over https to the user's own host
/// (a `__Host-` cookie must have `Path=/`). It lasts as long as the browser session, and no
/// longer than the token: it is the token, checked at every request.
pub fn server_token(state: &AppState, user_prefix: &str, token: &str) -> Cookie<'static> {
    let mut c = base(state, &names(state).server_token, token.to_string());
    c.set_path(names(state).path(user_prefix).to_string());
    c
}

/// Reads a flash message, as sent back (percent-encoded).
pub fn read_flash(value: &str) -> String {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy().chars().take(500).collect()
}

/// The value of the cookie called exactly `name` in a request's headers (the last, if several),
/// without building a jar: the session cookie is read on every proxied request.
pub fn request_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    cookie_in(headers.get_all(axum::http::header::COOKIE).iter().map(|v| v.as_bytes()), name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The value of the cookie called `name` in these `Cookie` header values (the last, if
/// several; names and values trimmed). Names are compared byte for byte and never
/// percent-decoded: a cookie jar that decodes them reads `__Host%2Dlabhub-session`, which any
/// sibling host may set, as the hub's own `__Host-labhub-session`. Values are taken as sent
/// (the hub's own values need no decoding).
pub(crate) fn cookie_in<'a>(values: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a [u8]> {
    let mut found = None;
    // What `HeaderValue::to_str` accepts: visible ASCII and tabs.
    let readable = |v: &&[u8]| v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b));
    for value in values.filter(readable) {
        for pair in value.split(|b| *b == b';') {
            let Some(eq) = pair.iter().position(|b| *b == b'=') else { continue };
            if pair[..eq].trim_ascii() == name.as_bytes() {
                found = Some(pair[eq + 1..].trim_ascii());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::{CookieNames, request_cookie};

    #[test]
    fn cookie_names_are_compared_byte_for_byte() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["labhub-session=abc"], Some("abc")),
            (&["a=1; labhub-session=abc; b=2"], Some("abc")),
            (&["  labhub-session =  abc  ; x=y"], Some("abc")),
            (&["labhub-session=first; labhub-session=second"], Some("second")),
            (&["labhub-session=first", "labhub-session=second"], Some("second")),
            (&["labhub-session=a%20b"], Some("a%20b")),
            (&["labhub%2Dsession=planted"], None),
            (&["labhub%2dsession=planted"], None),
            (&["Labhub-Session=planted"], None),
            (&["labhub-session=mine; labhub%2Dsession=planted"], Some("mine")),
            (&["labhub-session="], Some("")),
            (&["labhub-session"], None),
            (&["labhub-session=v=with=equals"], Some("v=with=equals")),
            (&["other=1;;; labhub-session=x;"], Some("x")),
            (&["=nameless; labhub-session=y"], Some("y")),
            (&["labhub-sessionx=no; xlabhub-session=no"], None),
        ];
        for (headers_in, want) in cases {
            let mut headers = HeaderMap::new();
            for h in *headers_in {
                headers.append(header::COOKIE, HeaderValue::from_str(h).unwrap());
            }
            assert_eq!(request_cookie(&headers, "labhub-session").as_deref(), *want, "headers: {headers_in:?}");
        }
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("__Host%2Dlabhub-session=planted"));
        assert_eq!(request_cookie(&headers, "__Host-labhub-session"), None);
    }

    #[test]
    fn with_origin_isolation_over_https_every_hub_cookie_is_host_prefixed() {
        let plain = CookieNames::new("labhub-session", false);
        assert_eq!(
            plain.all(),
            [
                "labhub-session",
                "labhub-user-session",
                "labhub-login-csrf",
                "labhub-flash",
                "labhub-oauth-binding",
                "labhub-server-token"
            ]
        );
        let prefixed = CookieNames::new("labhub-session", true);
        assert!(prefixed.all().iter().all(|n| n.starts_with("__Host-labhub-")), "{:?}", prefixed.all());
        assert_eq!(prefixed.path("/hub/"), "/");
        assert_eq!(plain.path("/hub/"), "/hub/");
    }
}
