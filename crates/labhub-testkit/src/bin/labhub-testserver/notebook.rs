//! Notebook mode: a token-protected server under a base URL that looks like
//! a Jupyter server to the hub and reports what it saw.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures::{StreamExt, stream};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    common::{
        CHUNK, ConnInfo, exit_in_stream, exit_process, gate, gate_endpoint, json_response, message, param_u64,
        pattern_stream, percent_decode, query_params, whoami,
    },
    ws::{self, WsPlan},
};

/// Notebook-mode configuration.
pub struct Notebook {
    /// Starts and ends with `/`.
    pub base_url: String,
    pub token: String,
    pub root_dir: PathBuf,
    pub listen: SocketAddr,
    /// RFC 3339 start time, for `api/status`.
    pub started: String,
}

/// Handle one request (any path).
pub async fn handle(nb: Arc<Notebook>, conn: ConnInfo, req: Request) -> Response {
    let path = req.uri().path();
    let base = nb.base_url.as_str();
    let rel = if let Some(rel) = path.strip_prefix(base) {
        rel.to_owned()
    } else if base != "/" && path == base.trim_end_matches('/') {
        String::new()
    } else {
        return message(StatusCode::NOT_FOUND, "not under base url");
    };
    if !token_ok(&nb.token, req.headers(), req.uri()) {
        return message(StatusCode::FORBIDDEN, "bad token");
    }
    let params = query_params(req.uri());
    let method = req.method().clone();

    match rel.as_str() {
        "" => json_response(StatusCode::OK, json!({ "kind": "labhub-testserver", "base_url": base })),
        "api" => json_response(StatusCode::OK, json!({ "version": "2.0.0-labhub-testserver" })),
        "api/status" => json_response(
            StatusCode::OK,
            json!({
                "started": nb.started,
                "last_activity": now_rfc3339(),
                "connections": 0,
                "kernels": 0,
                "kind": "labhub-testserver",
            }),
        ),
        "whoami" => json_response(StatusCode::OK, whoami(&method, req.uri(), req.headers(), &conn)),
        "download" => download(&params),
        "upload" => match method {
            Method::POST | Method::PUT => upload(req).await,
            _ => message(StatusCode::METHOD_NOT_ALLOWED, "use POST or PUT"),
        },
        "sse" => sse(&params),
        "hold" => match params.get("gate") {
            Some(name) => {
                gate(name).pass().await;
                json_response(StatusCode::OK, json!({ "released_by": name }))
            }
            None => message(StatusCode::BAD_REQUEST, "missing query parameter gate"),
        },
        "connect" => match params.get("to").map(|to| to.parse::<SocketAddr>()) {
            Some(Ok(to)) => connect(to).await,
            _ => message(StatusCode::BAD_REQUEST, "query parameter to must be an address:port"),
        },
        "gate" => gate_endpoint(&params, false),
        "gate/open" => gate_endpoint(&params, true),
        "slow" => match param_u64(&params, "ms", 1000) {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                json_response(StatusCode::OK, json!({ "slept_ms": ms }))
            }
            Err(e) => e.into_response(),
        },
        "redirect" => redirect(&nb, &conn, &params),
        "set-cookies" => set_cookies(&params),
        "ws/echo" | "ws/headers" => {
            let close_after = match params.get("close_after") {
                None => None,
                Some(_) => match param_u64(&params, "close_after", 0) {
                    Ok(n) => Some(n),
                    Err(e) => return e.into_response(),
                },
            };
            let greeting = (rel == "ws/headers").then(|| whoami(&method, req.uri(), req.headers(), &conn).to_string());
            let (mut parts, _body) = req.into_parts();
            ws::upgrade(&mut parts, WsPlan { greeting, close_after }).await
        }
        // No response at all: the connection just dies with the process.
        "crash" => exit_process(3, &format!("crash requested ({method} {path})")),
        "abort-mid-body" => abort_mid_body(&params),
        "exit-code" => exit_code(&params),
        _ => match rel.strip_prefix("files/") {
            Some(name) => files(&nb.root_dir, name, req).await,
            None => message(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

/// `Authorization: token T`, `Authorization: Bearer T` or `?token=T`,
/// compared in constant time.
fn token_ok(expected: &str, headers: &HeaderMap, uri: &Uri) -> bool {
    let mut candidates: Vec<String> = Vec::new();
    for value in headers.get_all(header::AUTHORIZATION) {
        if let Ok(v) = value.to_str()
            && let Some((scheme, rest)) = v.trim().split_once(' ')
            && (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        {
            candidates.push(rest.trim().to_owned());
        }
    }
    if let Some(t) = query_params(uri).remove("token") {
        candidates.push(t);
    }
    let mut ok = subtle::Choice::from(0u8);
    for c in &candidates {
        ok |= c.as_bytes().ct_eq(expected.as_bytes());
    }
    bool::from(ok)
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn download(params: &HashMap<String, String>) -> Response {
    let n = match param_u64(params, "bytes", 0) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_LENGTH, n.to_string())],
        Body::from_stream(pattern_stream(n)),
    )
        .into_response()
}

async fn upload(req: Request) -> Response {
    let mut body = req.into_body().into_data_stream();
    let mut hasher = Sha256::new();
    let mut n: u64 = 0;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(data) => {
                hasher.update(&data);
                n += data.len() as u64;
            }
            Err(e) => {
                return message(StatusCode::BAD_REQUEST, &format!("request body failed: {e}"));
            }
        }
    }
    json_response(StatusCode::OK, json!({ "bytes": n, "sha256": hex::encode(hasher.finalize()) }))
}

/// `n` events `data: {"i": k}`: the first at once, each next one after `interval_ms`, or, with
/// `gate=G`, after one step of that gate (the test's signal).
fn sse(params: &HashMap<String, String>) -> Response {
    let (n, interval) = match (param_u64(params, "n", 5), param_u64(params, "interval_ms", 200)) {
        (Ok(n), Ok(i)) => (n, Duration::from_millis(i)),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let gate = params.get("gate").map(|g| gate(g));
    let events = stream::unfold(0u64, move |k| {
        let gate = gate.clone();
        async move {
            if k >= n {
                return None;
            }
            if k > 0 {
                match gate {
                    Some(g) => g.pass().await,
                    None => tokio::time::sleep(interval).await,
                }
            }
            let event = Bytes::from(format!("data: {{\"i\": {k}}}\n\n"));
            Some((Ok::<_, io::Error>(event), k + 1))
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

/// Answers with one `Set-Cookie` header per `|`-separated value of `?cookies=`, as a server
/// (or a malicious notebook's server extension) might send them.
fn set_cookies(params: &HashMap<String, String>) -> Response {
    let mut resp = json_response(StatusCode::OK, json!({ "set": true }));
    for value in params.get("cookies").map(String::as_str).unwrap_or_default().split('|').filter(|v| !v.is_empty()) {
        match HeaderValue::from_str(value) {
            Ok(v) => {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            Err(_) => return message(StatusCode::BAD_REQUEST, "invalid cookie"),
        }
    }
    resp
}

fn redirect(nb: &Notebook, conn: &ConnInfo, params: &HashMap<String, String>) -> Response {
    let Some(to) = params.get("to") else {
        return message(StatusCode::BAD_REQUEST, "missing query parameter to");
    };
    // The address the client actually reached: the internal address even
    // when listening on 0.0.0.0.
    let own = if nb.listen.ip().is_unspecified() { conn.local.unwrap_or(nb.listen) } else { nb.listen };
    let location = format!("http://{own}{}{}", nb.base_url, to.trim_start_matches('/'));
    match HeaderValue::from_str(&location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)], axum::Json(json!({ "location": location })))
            .into_response(),
        Err(_) => message(StatusCode::BAD_REQUEST, "invalid redirect target"),
    }
}

fn abort_mid_body(params: &HashMap<String, String>) -> Response {
    let n = match param_u64(params, "bytes", CHUNK as u64) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let promised = n.saturating_add(1024 * 1024);
    let body = pattern_stream(n).chain(stream::once(async {
        // Let hyper flush what was sent, then die mid-response.
        tokio::time::sleep(Duration::from_millis(300)).await;
        exit_in_stream(4, "abort-mid-body requested")
    }));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_LENGTH, promised.to_string())],
        Body::from_stream(body),
    )
        .into_response()
}

/// Opens a TCP connection from inside the server's container to `to` and says how it went:
/// `open`, `refused`, `unreachable` (an ICMP error: no route, or prohibited), or `timeout`
/// (nothing answered within 10 s, a guard against hanging, not a measurement).
async fn connect(to: SocketAddr) -> Response {
    let attempt = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(to)).await;
    let (result, detail) = match attempt {
        Ok(Ok(_)) => ("open", String::new()),
        Ok(Err(e)) => {
            let kind = match e.kind() {
                io::ErrorKind::ConnectionRefused => "refused",
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable",
                _ => "failed",
            };
            (kind, e.to_string())
        }
        Err(_) => ("timeout", String::new()),
    };
    json_response(StatusCode::OK, json!({ "to": to.to_string(), "result": result, "detail": detail }))
}

fn exit_code(params: &HashMap<String, String>) -> Response {
    let code = match params.get("code").map(|c| c.trim().parse::<u8>()) {
        Some(Ok(code)) => code,
        _ => {
            return message(StatusCode::BAD_REQUEST, "query parameter code must be an integer 0..=255");
        }
    };
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        exit_process(i32::from(code), "exit-code requested");
    });
    (StatusCode::OK, [(header::CONNECTION, "close")], axum::Json(json!({ "exiting_with": code }))).into_response()
}

async fn files(root: &Path, raw_name: &str, req: Request) -> Response {
    // A relative path of plain names: `notes.txt`, `restored/notes.txt`.
    let plain = |n: &str| !n.split('/').any(|p| p.is_empty() || p == "." || p == "..") && !n.contains('\0');
    let name = match percent_decode(raw_name) {
        Some(n) if plain(&n) => n,
        _ => return message(StatusCode::BAD_REQUEST, "bad file name"),
    };
    let path = root.join(&name);
    match *req.method() {
        Method::GET => get_file(&path).await,
        Method::PUT => put_file(&path, req).await,
        _ => message(StatusCode::METHOD_NOT_ALLOWED, "use GET or PUT"),
    }
}

async fn get_file(path: &Path) -> Response {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return message(StatusCode::NOT_FOUND, "no such file");
        }
        Err(e) => return message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let len = match file.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return message(StatusCode::NOT_FOUND, "no such file"),
        Err(e) => return message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let chunks = stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_LENGTH, len.to_string())],
        Body::from_stream(chunks),
    )
        .into_response()
}

async fn put_file(path: &Path, req: Request) -> Response {
    // Write to a temporary name beside it and rename, so readers never see half a file.
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.labhub-upload-{}", std::process::id()));
    let result: Result<u64, (StatusCode, String)> = async {
        let internal = |e: io::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(internal)?;
        }
        let mut file = tokio::fs::File::create(&tmp).await.map_err(internal)?;
        let mut body = req.into_body().into_data_stream();
        let mut n: u64 = 0;
        while let Some(chunk) = body.next().await {
            let data = chunk.map_err(|e| (StatusCode::BAD_REQUEST, format!("request body failed: {e}")))?;
            file.write_all(&data).await.map_err(internal)?;
            n += data.len() as u64;
        }
        file.flush().await.map_err(internal)?;
        drop(file);
        tokio::fs::rename(&tmp, path).await.map_err(internal)?;
        Ok(n)
    }
    .await;
    match result {
        Ok(n) => json_response(StatusCode::OK, json!({ "bytes": n })),
        Err((status, msg)) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            message(status, &msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sources() {
        let uri: Uri = "/x?token=abc".parse().unwrap();
        assert!(token_ok("abc", &HeaderMap::new(), &uri));
        assert!(!token_ok("abd", &HeaderMap::new(), &uri));
        let plain: Uri = "/x".parse().unwrap();
        for h in ["token abc", "Bearer abc", "bearer  abc ", "Token abc"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(h));
            assert!(token_ok("abc", &headers, &plain), "{h}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(!token_ok("abc", &headers, &plain));
        assert!(!token_ok("abc", &HeaderMap::new(), &plain));
    }
}
