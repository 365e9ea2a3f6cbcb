//! The hub's cookies: the session, the pre-login CSRF binding, and one-shot flash messages.

use axum_extra::extract::cookie::{Cookie, SameSite};
use time::Duration;

use crate::AppState;

/// The cookie that binds the sign-in form's CSRF token to a browser before there is a session.
pub const LOGIN_CSRF_COOKIE: &str = "labhub-login-csrf";
/// A message shown once on the next page.
pub const FLASH_COOKIE: &str = "labhub-flash";

fn base(state: &AppState, name: String, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(state.settings().secure_cookies())
        .same_site(SameSite::Lax)
        .build()
}

/// The session cookie. Host-only (no `Domain`), so no other host ever receives it.
pub fn session(state: &AppState, token: &str) -> Cookie<'static> {
    base(state, state.settings().cookie_name.clone(), token.to_string())
}

/// Deletes the session cookie.
pub fn session_removal(state: &AppState) -> Cookie<'static> {
    let mut c = base(state, state.settings().cookie_name.clone(), String::new());
    c.make_removal();
    c
}

/// The pre-login CSRF cookie.
pub fn login_csrf(state: &AppState, value: &str) -> Cookie<'static> {
    let mut c = base(state, LOGIN_CSRF_COOKIE.to_string(), value.to_string());
    c.set_path("/hub/");
    c.set_max_age(Duration::hours(12));
    c
}

/// A one-shot message for the next page.
pub fn flash(state: &AppState, message: &str) -> Cookie<'static> {
    let encoded = percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut c = base(state, FLASH_COOKIE.to_string(), encoded);
    c.set_path("/hub/");
    c.set_max_age(Duration::minutes(1));
    c
}

/// Deletes the flash cookie once shown.
pub fn flash_removal(state: &AppState) -> Cookie<'static> {
    let mut c = base(state, FLASH_COOKIE.to_string(), String::new());
    c.set_path("/hub/");
    c.make_removal();
    c
}

/// Reads a flash message.
pub fn read_flash(value: &str) -> String {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy().chars().take(500).collect()
}

/// The value of the cookie `name` in a request's headers, read as the cookie jar reads it (the
/// last of several with that name wins; names and values trimmed and percent-decoded; pairs that
/// do not parse skipped) without building a jar: the session cookie is read on every proxied
/// request.
pub fn request_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    cookie_in(headers.get_all(axum::http::header::COOKIE).iter().map(|v| v.as_bytes()), name)
}

/// The cookie called `name` in these `Cookie` header values (the last, if several).
pub(crate) fn cookie_in<'a>(values: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<String> {
    // Most values have nothing to decode; the decoder walks them byte by byte all the same.
    let decode = |s: &str| {
        if !s.contains('%') {
            return Some(s.to_string());
        }
        percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|d| d.into_owned())
    };
    let mut found = None;
    let pairs = values
        // What `HeaderValue::to_str` accepts: visible ASCII and tabs.
        .filter(|v| v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)))
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='));
    for (k, v) in pairs {
        let k = k.trim();
        let same_name = if k.contains('%') { decode(k).is_some_and(|k| k == name) } else { k == name };
        if same_name && let Some(v) = decode(v.trim()) {
            found = Some(v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};
    use axum_extra::extract::CookieJar;

    use super::request_cookie;

    #[test]
    fn reads_cookies_as_the_jar_does() {
        let cases: &[&[&str]] = &[
            &[],
            &["labhub-session=abc"],
            &["a=1; labhub-session=abc; b=2"],
            &["  labhub-session =  abc  ; x=y"],
            &["labhub-session=first; labhub-session=second"],
            &["labhub-session=first", "labhub-session=second"],
            &["labhub-session=a%20b%2Dc"],
            &["labhub%2Dsession=decoded-name"],
            &["labhub-session=bad%FFutf8"],
            &["labhub-session=good; labhub-session=bad%FF"],
            &["labhub-session="],
            &["labhub-session"],
            &["labhub-session=v=with=equals"],
            &["labhub-session=\"quoted\""],
            &["other=1;;; labhub-session=x;"],
            &["=nameless; labhub-session=y"],
            &["labhub-sessionx=no; xlabhub-session=no"],
        ];
        for headers_in in cases {
            let mut headers = HeaderMap::new();
            for h in *headers_in {
                headers.append(header::COOKIE, HeaderValue::from_str(h).unwrap());
            }
            let jar = CookieJar::from_headers(&headers).get("labhub-session").map(|c| c.value().to_string());
            assert_eq!(request_cookie(&headers, "labhub-session"), jar, "headers: {headers_in:?}");
        }
    }
}
