//! Page models (askama templates from the top-level `templates/` folder) and the `Page`
//! extractor that gives every page its chrome: who is signed in, the CSRF token for its
//! forms, and a one-shot message.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use labhub_service::Principal;
use time::OffsetDateTime;

use crate::error::{ErrorReport, is_error, report_of};
use crate::extract::{MaybeUser, csrf_binding};
use crate::middleware::RequestId;
use crate::{AppError, AppState, cookies};

/// Who is signed in, as the page header shows it.
#[derive(Debug, Clone)]
pub struct ChromeUser {
    pub name: String,
    pub admin: bool,
}

/// What every page's layout needs.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub user: Option<ChromeUser>,
    pub csrf: String,
    pub flash: Option<String>,
    /// Whether the flash message reports a failure.
    pub flash_error: bool,
    /// Which top-level section is current, for the navigation.
    pub section: &'static str,
    /// What admins must know about the hub's own health (the embedded database was down,
    /// servers cannot be isolated).
    pub banners: Vec<String>,
}

/// Every page handler's view of the request: the user (if any), and the chrome with a CSRF
/// token bound to this browser. Sets the pre-login cookie when a browser has none yet, and
/// clears a flash message once shown.
pub struct Page {
    pub user: Option<Principal>,
    pub chrome: Chrome,
    jar: CookieJar,
}

impl FromRequestParts<AppState> for Page {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let MaybeUser(user) = MaybeUser::from_request_parts(parts, state).await?;
        let mut jar = CookieJar::new();
        let binding = match csrf_binding(parts, state) {
            Some(b) => b,
            None => {
                let (value, _) = labhub_auth::new_token();
                jar = jar.add(cookies::login_csrf(state, &value));
                value.into_bytes()
            }
        };
        let flash =
            cookies::request_cookie(&parts.headers, &state.settings().cookies.flash).map(|v| cookies::read_flash(&v));
        if flash.is_some() {
            jar = jar.add(cookies::flash_removal(state));
        }
        let flash = flash.filter(|f| !f.is_empty());
        let flash_error = flash.as_deref().is_some_and(|f| f.starts_with(FLASH_ERROR_MARK));
        let chrome = Chrome {
            user: user.as_ref().map(|p| ChromeUser { name: p.name.to_string(), admin: p.admin }),
            csrf: state.csrf().token(&binding),
            flash: flash.map(|f| f.trim_start_matches(FLASH_ERROR_MARK).to_string()),
            flash_error,
            section: "",
            banners: if user.as_ref().is_some_and(|p| p.admin) { admin_banners(state) } else { Vec::new() },
        };
        Ok(Page { user, chrome, jar })
    }
}

/// What admins' pages say about the hub's own health.
fn admin_banners(state: &AppState) -> Vec<String> {
    let hub = state.hub();
    [hub.database_health().banner(hub.now()), hub.isolation_health().banner(), hub.backups().banner()]
        .into_iter()
        .flatten()
        .collect()
}

impl Page {
    /// The chrome for a page in a given navigation section.
    pub fn chrome(&self, section: &'static str) -> Chrome {
        Chrome { section, ..self.chrome.clone() }
    }

    /// Renders a page, with whatever cookies the extractor decided to set.
    pub fn render(self, page: impl IntoResponse) -> Response {
        (self.jar, page).into_response()
    }

    /// Renders a page with a status other than 200 (a form shown again with its error).
    pub fn render_status(self, status: StatusCode, page: impl IntoResponse) -> Response {
        (status, self.jar, page).into_response()
    }
}

/// Marks a flash message as reporting a failure.
const FLASH_ERROR_MARK: char = '!';

/// A redirect after a successful form, with a message for the next page.
pub fn redirect_with_flash(state: &AppState, to: &str, message: &str) -> Response {
    (CookieJar::new().add(cookies::flash(state, message)), Redirect::to(to)).into_response()
}

/// A redirect after a form that could not be carried out, with the reason for the next page.
pub fn redirect_with_error(state: &AppState, to: &str, message: &str) -> Response {
    redirect_with_flash(state, to, &format!("{FLASH_ERROR_MARK}{message}"))
}

/// The sign-in page's address, returning to `next` afterwards.
pub fn login_url(next: Option<&str>) -> String {
    match next.filter(|n| safe_next(n)) {
        Some(n) => {
            format!("/hub/login?next={}", percent_encoding::utf8_percent_encode(n, percent_encoding::NON_ALPHANUMERIC))
        }
        None => "/hub/login".to_string(),
    }
}

/// Whether a `next=` target stays on this hub: a path of visible ASCII starting with a single
/// `/` and holding no backslash, so `//evil.example` and `https://…` cannot turn the sign-in
/// page into an open redirect. Browsers drop tabs and newlines from an address and read a
/// backslash as `/`, so `/<tab>/evil.example` and `/\evil.example` would leave the hub too.
/// The same tricks percent-encoded (`/%09/…`, `/%2F…`, `/%5C…`) are refused as well, decoded
/// as often as anything on the way to the browser could decode them.
pub fn safe_next(next: &str) -> bool {
    /// Percent-decoding rounds checked; a target still changing after them is refused.
    const ROUNDS: usize = 4;
    let stays = |p: &[u8]| p.first() == Some(&b'/') && !matches!(p.get(1), Some(b'/')) && !p.contains(&b'\\');
    let no_controls = |p: &[u8]| !p.iter().any(|b| b.is_ascii_control());
    if !next.bytes().all(|b| b.is_ascii_graphic()) || !stays(next.as_bytes()) {
        return false;
    }
    let mut current = next.as_bytes().to_vec();
    for _ in 0..ROUNDS {
        let decoded: Vec<u8> = percent_encoding::percent_decode(&current).collect();
        if decoded == current {
            return true;
        }
        if !no_controls(&decoded) || !stays(&decoded) {
            return false;
        }
        current = decoded;
    }
    false
}

/// "5 minutes ago", for people; exact times go in a `title`.
pub fn ago(now: OffsetDateTime, then: OffsetDateTime) -> String {
    let secs = (now - then).whole_seconds();
    if secs < 0 {
        return in_future(-secs);
    }
    let (n, unit) = match secs {
        s if s < 45 => return "just now".to_string(),
        s if s < 3600 => ((s + 30) / 60, "minute"),
        s if s < 86400 => ((s + 1800) / 3600, "hour"),
        s => ((s + 43200) / 86400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn in_future(secs: i64) -> String {
    let (n, unit) = match secs {
        s if s < 3600 => ((s + 59) / 60, "minute"),
        s if s < 86400 => ((s + 1800) / 3600, "hour"),
        s => ((s + 43200) / 86400, "day"),
    };
    format!("in {n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// An exact time for a tooltip, e.g. "2026-11-21 14:03 UTC".
pub fn exact(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.format(&f).unwrap_or_default()
}

/// A time as shown in tables: relative text and the exact time.
#[derive(Debug, Clone)]
pub struct When {
    pub text: String,
    pub exact: String,
}

impl When {
    /// Relative to `now`.
    pub fn new(now: OffsetDateTime, t: OffsetDateTime) -> Self {
        Self { text: ago(now, t), exact: exact(t) }
    }

    /// `None` shows as "never".
    pub fn opt(now: OffsetDateTime, t: Option<OffsetDateTime>) -> Self {
        t.map_or(Self { text: "never".into(), exact: String::new() }, |t| Self::new(now, t))
    }
}

/// The error page: what went wrong, a way back, and the request id to quote to an admin.
#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub c: Chrome,
    pub status: u16,
    pub title: String,
    pub message: String,
    pub request_id: String,
}

impl ErrorPage {
    /// An error page for a status and message.
    pub fn new(status: StatusCode, message: String, request_id: String) -> Self {
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::UNAUTHORIZED => "Sign-in failed",
            StatusCode::TOO_MANY_REQUESTS => "Slow down",
            StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
            StatusCode::PAYLOAD_TOO_LARGE => "Too large",
            s if s.is_server_error() => "Something went wrong",
            _ => "That did not work",
        }
        .to_string();
        let c = Chrome {
            user: None,
            csrf: String::new(),
            flash: None,
            flash_error: false,
            section: "",
            banners: Vec::new(),
        };
        Self { c, status: status.as_u16(), title, message, request_id }
    }
}

/// Renders page errors as a page with a way back; "sign in first" becomes a redirect to the
/// sign-in page that returns here afterwards. An admin page that cannot be served while the
/// embedded database is down says so (who is asking cannot be checked without the database).
pub async fn render_page_errors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let is_get = req.method() == axum::http::Method::GET;
    let here = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/hub/home".into());
    let admin_page = req.uri().path().starts_with("/hub/admin");
    let resp = next.run(req).await;
    if !is_error(&resp) {
        return resp;
    }
    let is_html = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if is_html && resp.extensions().get::<ErrorReport>().is_none() {
        return resp;
    }
    let (parts, report) = report_of(resp).await;
    if report.login_required {
        let target = if is_get { login_url(Some(&here)) } else { login_url(None) };
        return Redirect::to(&target).into_response();
    }
    let mut page = ErrorPage::new(parts.status, report.message, request_id);
    if admin_page && parts.status == StatusCode::SERVICE_UNAVAILABLE {
        page.c.banners = admin_banners(&state);
    }
    let mut rendered = page.into_response();
    *rendered.status_mut() = parts.status;
    if let Some(v) = parts.headers.get(header::RETRY_AFTER) {
        rendered.headers_mut().insert(header::RETRY_AFTER, v.clone());
    }
    rendered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_targets_stay_on_the_hub() {
        let table: &[(&str, bool)] = &[
            ("/hub/home", true),
            ("/user/alice/lab?x=1", true),
            ("/user/alice/lab/tree/donn%C3%A9es%20et%20plus", true),
            ("/user/alice/files/100%25", true),
            ("/hub/token#tokens", true),
            ("", false),
            ("evil", false),
            ("https://evil.example", false),
            ("//evil.example", false),
            ("/\\evil.example", false),
            ("\\/evil.example", false),
            ("/a\\b", false),
            ("/\t/evil.example", false),
            ("/\n/evil.example", false),
            ("/\r/evil.example", false),
            ("/ /evil.example", false),
            ("/\x7f/evil.example", false),
            ("/\0/evil.example", false),
            ("/é", false),
            ("/a\r\nSet-Cookie: x", false),
            ("/%09/evil.example", false),
            ("/%0a/evil.example", false),
            ("/%2F/evil.example", false),
            ("/%2f%2fevil.example", false),
            ("/%5Cevil.example", false),
            ("/%5cevil.example", false),
            ("/hub/%5C", false),
            ("/%2509/evil.example", false),
            ("/%252F/evil.example", false),
            ("/%25252525252F/evil.example", false),
        ];
        for (next, stays) in table {
            assert_eq!(safe_next(next), *stays, "{next:?}");
        }
        assert_eq!(login_url(Some("//evil")), "/hub/login");
        assert_eq!(login_url(Some("/%09/evil.example")), "/hub/login");
    }

    #[test]
    fn relative_times() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(100);
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now, now - time::Duration::minutes(5)), "5 minutes ago");
        assert_eq!(ago(now, now - time::Duration::hours(1)), "1 hour ago");
        assert_eq!(ago(now, now - time::Duration::days(3)), "3 days ago");
        assert_eq!(ago(now, now + time::Duration::days(2)), "in 2 days");
    }
}
