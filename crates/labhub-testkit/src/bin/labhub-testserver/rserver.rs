//! `--fake-rserver`: a **fake** RStudio Server.
//!
//! RStudio Server cannot be obtained in this environment, so the hub's proxy
//! tests use this stand-in. It is NOT RStudio: it reproduces only the
//! path-prefix / redirect behaviour that a reverse proxy has to cope with
//! (plus a long-poll endpoint and a WebSocket echo). Everything else about
//! rserver (the GWT client, rsession, PAM, real RPCs) is absent.
//!
//! # What real rserver does behind a path-prefix proxy (and sources)
//!
//! * **It serves at its own root.** The proxy strips the prefix
//!   (`/user/alice/` → `/`); rserver knows nothing about the prefix unless
//!   told. The documented nginx recipe rewrites `^/rstudio/(.*)$ /$1` and adds
//!   `proxy_set_header X-RStudio-Root-Path /rstudio;  # Not needed if
//!   www-root-path is set` (Posit admin guide "Running with a Proxy",
//!   docs.posit.co/ide/server-pro/access_and_security/running_with_a_proxy.html;
//!   the same recipe is quoted in many public nginx configs).
//! * **Root path** (rstudio/rstudio `src/cpp/core/http/Request.cpp`,
//!   `Request::rootPath`): the `X-RStudio-Root-Path` request header if
//!   non-empty, else the `www-root-path` option (injected into every request
//!   by `rootPathRequestFilter` in `src/cpp/server/ServerMain.cpp`),
//!   normalised to start with `/` and not end with `/` (unless it is `/`).
//! * **Externally visible URL** (`Request::proxiedUri` in the same file):
//!   `X-RStudio-Request` if present (the full original URL); else scheme and
//!   host from `Forwarded` (`host=`, `proto=`), or from `X-Forwarded-Proto`
//!   (default `http`) plus `X-Forwarded-Host` (+ `X-Forwarded-Port`), or from
//!   `Host`; then `root + "/" + uri`. `Request::baseUri` returns that proxied
//!   URL only when the root path is not `/`; otherwise the *internal* URI
//!   (`scheme://<Host header><uri>`).
//! * **Redirect to sign-in** (`src/cpp/server/auth/ServerAuthCommon.cpp`
//!   `mainPageFilter` → `src/cpp/server/ServerLoginPages.cpp`
//!   `generateLoginPath`): a request for the main page without a user cookie
//!   gets a 302 to `URL::uncomplete(request.baseUri(), "/auth-sign-in") +
//!   "?appUri=" + <url-encoded request uri>`, e.g. `appUri=%2F`.
//!   `URL::uncomplete` (`src/cpp/core/http/URL.cpp`) returns a rooted target
//!   unchanged when the base is an absolute URL, so without a root path the
//!   Location is root-relative: `/auth-sign-in?appUri=%2F`. That is what
//!   jupyterhub/jupyter-rsession-proxy `jupyter_rsession_proxy/__init__.py`
//!   (`rewrite_auth`) works around by prefixing any `Location` starting with
//!   `/auth-sign-in` with the request path ("As of rstudio-server 1.4ish, it
//!   would send the client to /auth-sign-in ... See rstudio/rstudio#8888").
//!   With a root path the Location is absolute and correct
//!   (`http://host/<root>/auth-sign-in?appUri=%2F`), unless the forwarded
//!   headers do not form a valid URL: with `X-Forwarded-Proto: https,http`
//!   the prefix is lost again (rstudio/rstudio#8888,
//!   jupyterhub/jupyter-rsession-proxy#97, RStudio 1.4.1522), and a
//!   comma-separated `X-Forwarded-Host` yields a Location such as
//!   `https://www.myhost.org, www.myhost.org/.../auth-sign-in/?appUri=%2F`
//!   (jupyterhub/jupyter-rsession-proxy#121).
//! * **Older releases** completed every redirect into an absolute URL built
//!   from the internal `Host` (the indexed revision of
//!   `src/cpp/core/http/Response.cpp`: `setMovedTemporarily` →
//!   `URL::complete(request.absoluteUri(), location)`), e.g.
//!   `https://localhost:8787/auth-sign-in` (rstudio/rstudio#2834, 1.1.447;
//!   also #1676). `--absolute-redirects` selects that style.
//! * **auth-none** (`--auth-none=1`; rocker's `DISABLE_AUTH=true`, which
//!   copies `/etc/rstudio/disable_auth_rserver.conf` = rserver.conf +
//!   `auth-none=1` over rserver.conf: rocker-org/rocker-versioned2
//!   `scripts/install_rstudio.sh` and `scripts/init_userconf.sh`; rserver is
//!   run as `rserver --server-daemonize 0` on port 8787) still redirects the
//!   first visit of `/` to `auth-sign-in`; the sign-in handler then sets the
//!   sign-in cookies without a form and redirects to `./`
//!   (`src/cpp/server/ServerPAMAuth.cpp` `signIn`: `if (server::options().authNone()) {
//!   setSignInCookies(...); setMovedTemporarily(request, "./"); }`).
//!   Reports: rstudio/rstudio#14999 (2024.04.2: "redirected to
//!   .../auth-sign-in" with auth-none=1), #8119 (auth-none + www-root-path:
//!   "any URL ... will redirect to /test/auth-sign-in?appUri=%2F"), #7879
//!   (1.3.1093: cycling between `/` and `/auth-sign-in`). Cookies are scoped
//!   to the root path (rstudio/rstudio#8119, maintainer comment).
//! * With auth on, `doSignIn` forces `appUri` to start with `/` and redirects
//!   there (`ServerAuthCommon.cpp`); the sign-in form's action is
//!   `URL::uncomplete(request.uri(), "/auth-do-sign-in")`.
//! * jupyter-rsession-proxy starts rserver with `--auth-none=1
//!   --www-frame-origin=same --www-port=<port> --www-verify-user-agent=0
//!   --www-root-path={base_url}rstudio/ ...`; Kubeflow/Istio set the
//!   `X-RStudio-Root-Path` header instead (see jupyter-rsession-proxy#95:
//!   "Adding the X-RStudio-Root-Path header rather than www-root-path solves
//!   the 404", rstudio/rstudio#8888).
//! * **Long polling**: RPCs are under `/rpc/...` and the event long poll is
//!   `/events/get_events` (`httpServerAddHandlers` in ServerMain.cpp); the
//!   admin guide asks proxies for a timeout of at least 60 s, "a connection
//!   timeout of 30 seconds or fewer will result in HTTP 504".
//!
//! The exact completion code of `Response::setMovedTemporarily` in release
//! 1.4 and later is not in the indexed sources; the Locations produced here
//! follow the behaviour reported in the issues above.
//!
//! # What this fake does
//!
//! * `GET /` without the `user-id` cookie → 302 to sign-in (Location built as
//!   described above); with it → a small HTML main page using the root path.
//! * `/auth-sign-in`: auth-none (default) → sets `user-id` and 302 to the
//!   root; `--auth-none=0` → an HTML form posting to `<root>/auth-do-sign-in`.
//! * `POST /auth-do-sign-in` (any credentials), `/auth-sign-out`.
//! * `/whoami` → the notebook mode's report plus `rstudio_root_path`.
//! * `/events/get_events?ms=M`, `/rpc/<name>?ms=M` → held M ms (default 0);
//!   `/events/get_events?gate=G` → held until the test opens gate G one step
//!   (`/gate/open?name=G`, as in notebook mode).
//! * `/ws/echo`, `/ws/headers` → as in notebook mode.
//! * Anything else → 404 `text/html` "`<path>` not found", like rserver.
//!
//! No token is checked (auth is off behind the hub).

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Form,
    extract::{FromRequest, Request},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde_json::json;

use crate::{
    common::{ConnInfo, gate, gate_endpoint, json_response, message, param_u64, percent_encode, query_params, whoami},
    ws::{self, WsPlan},
};

/// Name of rserver's user cookie.
pub const USER_ID_COOKIE: &str = "user-id";

/// Fake rserver configuration.
pub struct FakeRserver {
    /// `--www-root-path`, used when the request has no root-path header.
    pub www_root_path: Option<String>,
    pub auth_none: bool,
    /// Legacy absolute redirects (`http://<Host>/...`) when no root path.
    pub absolute_redirects: bool,
    pub listen: SocketAddr,
}

/// Handle one request (paths are served at the root, without a base URL).
pub async fn handle(rs: Arc<FakeRserver>, conn: ConnInfo, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let headers = req.headers().clone();
    let root = root_path(&headers, rs.www_root_path.as_deref());
    let params = query_params(req.uri());
    let signed_in = has_user_cookie(&headers);

    match path.as_str() {
        "/" if signed_in => main_page(&root),
        "/" => {
            let app_uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
            let target = format!("/auth-sign-in?appUri={}", percent_encode(&app_uri));
            redirect(&rs, &headers, &conn, &target, None)
        }
        "/auth-sign-in" if rs.auth_none || signed_in => {
            redirect(&rs, &headers, &conn, "/", Some(sign_in_cookie(&root)))
        }
        "/auth-sign-in" => sign_in_page(&root, params.get("appUri").map_or("/", |s| s)),
        "/auth-do-sign-in" if method == Method::POST => {
            let form = Form::<HashMap<String, String>>::from_request(req, &()).await;
            let mut app_uri = form.ok().and_then(|Form(f)| f.get("appUri").cloned()).unwrap_or_default();
            if !app_uri.starts_with('/') {
                app_uri.insert(0, '/');
            }
            redirect(&rs, &headers, &conn, &app_uri, Some(sign_in_cookie(&root)))
        }
        "/auth-sign-out" => redirect(
            &rs,
            &headers,
            &conn,
            "/auth-sign-in",
            Some(format!("{USER_ID_COOKIE}=; Path={root}; Max-Age=0; HttpOnly; SameSite=Lax")),
        ),
        "/whoami" => {
            let mut report = whoami(&method, req.uri(), &headers, &conn);
            report["rstudio_root_path"] = json!(root);
            json_response(StatusCode::OK, report)
        }
        "/ws/echo" | "/ws/headers" => {
            let close_after = match params.get("close_after") {
                None => None,
                Some(_) => match param_u64(&params, "close_after", 0) {
                    Ok(n) => Some(n),
                    Err(e) => return e.into_response(),
                },
            };
            let greeting = (path == "/ws/headers").then(|| whoami(&method, req.uri(), &headers, &conn).to_string());
            let (mut parts, _body) = req.into_parts();
            ws::upgrade(&mut parts, WsPlan { greeting, close_after }).await
        }
        "/events/get_events" if params.contains_key("gate") => {
            let name = &params["gate"];
            gate(name).pass().await;
            json_response(StatusCode::OK, json!({ "result": [], "released_by": name }))
        }
        "/gate" => gate_endpoint(&params, false),
        "/gate/open" => gate_endpoint(&params, true),
        "/events/get_events" => {
            let ms = match param_u64(&params, "ms", 0) {
                Ok(ms) => ms,
                Err(e) => return e.into_response(),
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_response(StatusCode::OK, json!({ "result": [], "held_ms": ms }))
        }
        p if p.starts_with("/rpc/") => {
            let ms = match param_u64(&params, "ms", 0) {
                Ok(ms) => ms,
                Err(e) => return e.into_response(),
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_response(StatusCode::OK, json!({ "result": { "method": &p["/rpc/".len()..], "held_ms": ms } }))
        }
        _ => (StatusCode::NOT_FOUND, Html(format!("{} not found", html_escape(&path)))).into_response(),
    }
}

/// rserver's root path: `X-RStudio-Root-Path`, else `www-root-path`, else
/// `/`; starts with `/`, no trailing `/` (unless `/`).
pub fn root_path(headers: &HeaderMap, configured: Option<&str>) -> String {
    let from_header = headers.get("x-rstudio-root-path").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let mut root = from_header.or(configured).unwrap_or("/").to_owned();
    if !root.starts_with('/') {
        root.insert(0, '/');
    }
    if root.len() > 1 && root.ends_with('/') {
        root.pop();
    }
    root
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
}

/// `scheme://host` as rserver's `proxiedUri` would compute it, or `None`
/// when the result is not a URL rserver's URL parser accepts (then the
/// redirect stays root-relative, as reported in rstudio/rstudio#8888).
pub fn external_origin(headers: &HeaderMap) -> Option<String> {
    let (proto, host) = if let Some(fwd) = header_str(headers, "forwarded") {
        let field = |key: &str| -> String {
            fwd.find(key)
                .map(|at| {
                    fwd[at + key.len()..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | ':'))
                        .collect()
                })
                .unwrap_or_default()
        };
        let proto = Some(field("proto=")).filter(|p| !p.is_empty());
        (proto.unwrap_or_else(|| "http".to_owned()), field("host="))
    } else {
        let proto = header_str(headers, "x-forwarded-proto").unwrap_or("http");
        let host = match header_str(headers, "x-forwarded-host") {
            Some(fh) => match header_str(headers, "x-forwarded-port") {
                Some(port) => match fh.find(':') {
                    Some(pos) => format!("{}{port}", &fh[..=pos]),
                    None => format!("{fh}:{port}"),
                },
                None => fh.to_owned(),
            },
            None => header_str(headers, "host").unwrap_or_default().to_owned(),
        };
        (proto.to_owned(), host)
    };
    // rserver's URL regex: (http|https|file|ftp|ftps)://([^/#?]+)(.*)
    let valid_proto = ["http", "https", "file", "ftp", "ftps"].iter().any(|p| p.eq_ignore_ascii_case(&proto));
    let valid_host = !host.is_empty() && !host.contains(['/', '#', '?']);
    (valid_proto && valid_host).then(|| format!("{proto}://{host}"))
}

/// The `Location` for a rooted target (path + query), built like rserver.
pub fn location(rs: &FakeRserver, headers: &HeaderMap, conn: &ConnInfo, target: &str) -> String {
    let root = root_path(headers, rs.www_root_path.as_deref());
    if root != "/" {
        match external_origin(headers) {
            Some(origin) => format!("{origin}{root}{target}"),
            None => target.to_owned(),
        }
    } else if rs.absolute_redirects {
        let host = header_str(headers, "host")
            .map(str::to_owned)
            .unwrap_or_else(|| conn.local.unwrap_or(rs.listen).to_string());
        format!("http://{host}{target}")
    } else {
        target.to_owned()
    }
}

fn redirect(rs: &FakeRserver, headers: &HeaderMap, conn: &ConnInfo, target: &str, cookie: Option<String>) -> Response {
    let loc = location(rs, headers, conn, target);
    let Ok(loc_value) = HeaderValue::from_str(&loc) else {
        return message(StatusCode::BAD_REQUEST, "cannot build a redirect location");
    };
    let mut resp = (StatusCode::FOUND, [(header::LOCATION, loc_value)], Html(html_escape(&loc))).into_response();
    if let Some(cookie) = cookie
        && let Ok(v) = HeaderValue::from_str(&cookie)
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

fn has_user_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|c| c.trim().split_once('=').is_some_and(|(k, v)| k == USER_ID_COOKIE && !v.is_empty()))
}

fn sign_in_cookie(root: &str) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "rstudio".to_owned());
    format!("{USER_ID_COOKIE}={}|labhub-fake; Path={root}; HttpOnly; SameSite=Lax", percent_encode(&user))
}

/// `""` for the root path `/`, else the root path (to prefix rooted links).
fn link_prefix(root: &str) -> &str {
    if root == "/" { "" } else { root }
}

fn main_page(root: &str) -> Response {
    let r = html_escape(root);
    let p = html_escape(link_prefix(root));
    Html(format!(
        "<!DOCTYPE html>\n<html><head><title>RStudio (labhub fake rserver)</title>\
         <base href=\"{p}/\"></head><body>\n\
         <h1>fake rserver</h1>\n<p>root path: <code id=\"root-path\">{r}</code></p>\n\
         <a id=\"sign-out\" href=\"{p}/auth-sign-out\">Sign out</a>\n\
         <script>var rootPath = \"{r}\";</script>\n</body></html>\n"
    ))
    .into_response()
}

fn sign_in_page(root: &str, app_uri: &str) -> Response {
    let p = html_escape(link_prefix(root));
    let app = html_escape(app_uri);
    (
        [(header::CACHE_CONTROL, "no-cache, no-store, max-age=0, must-revalidate")],
        Html(format!(
            "<!DOCTYPE html>\n<html><head><title>Sign in to RStudio (labhub fake)</title></head>\
             <body>\n<form id=\"sign-in\" method=\"POST\" action=\"{p}/auth-do-sign-in\">\n\
             <input type=\"hidden\" name=\"appUri\" value=\"{app}\">\n\
             <input name=\"username\"> <input name=\"password\" type=\"password\">\n\
             <button type=\"submit\">Sign in</button>\n</form>\n\
             <a id=\"home\" href=\"{p}/\">RStudio</a>\n</body></html>\n"
        )),
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn fake(absolute: bool) -> FakeRserver {
        FakeRserver {
            www_root_path: None,
            auth_none: true,
            absolute_redirects: absolute,
            listen: "10.0.0.5:8787".parse().unwrap(),
        }
    }

    fn conn() -> ConnInfo {
        ConnInfo { remote: "10.0.0.1:5000".parse().unwrap(), local: Some("10.0.0.5:8787".parse().unwrap()) }
    }

    const SIGN_IN: &str = "/auth-sign-in?appUri=%2F";

    #[test]
    fn root_path_normalisation() {
        assert_eq!(root_path(&HeaderMap::new(), None), "/");
        assert_eq!(root_path(&HeaderMap::new(), Some("/a/b/")), "/a/b");
        let h = headers(&[("x-rstudio-root-path", "user/alice/")]);
        assert_eq!(root_path(&h, Some("/ignored")), "/user/alice");
    }

    #[test]
    fn redirect_without_root_path() {
        let h = headers(&[("host", "10.0.0.5:8787")]);
        assert_eq!(location(&fake(false), &h, &conn(), SIGN_IN), SIGN_IN);
        assert_eq!(location(&fake(true), &h, &conn(), SIGN_IN), "http://10.0.0.5:8787/auth-sign-in?appUri=%2F");
    }

    #[test]
    fn redirect_with_root_path_header() {
        let h = headers(&[("host", "hub.example:8000"), ("x-rstudio-root-path", "/user/alice/")]);
        assert_eq!(
            location(&fake(false), &h, &conn(), SIGN_IN),
            "http://hub.example:8000/user/alice/auth-sign-in?appUri=%2F"
        );
        let h = headers(&[
            ("host", "10.0.0.5:8787"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "hub.example"),
            ("x-rstudio-root-path", "/user/alice"),
        ]);
        assert_eq!(location(&fake(false), &h, &conn(), "/"), "https://hub.example/user/alice/");
        // rstudio/rstudio#8888: an unparsable proto loses the prefix.
        let h = headers(&[
            ("host", "hub.example"),
            ("x-forwarded-proto", "https,http"),
            ("x-rstudio-root-path", "/user/alice"),
        ]);
        assert_eq!(location(&fake(false), &h, &conn(), SIGN_IN), SIGN_IN);
    }

    #[test]
    fn cookie_detection() {
        assert!(has_user_cookie(&headers(&[("cookie", "a=b; user-id=x|y")])));
        assert!(!has_user_cookie(&headers(&[("cookie", "user-id=")])));
        assert!(!has_user_cookie(&HeaderMap::new()));
    }
}
