//! The hub's own static files, embedded in the binary so it runs from anywhere.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &[u8])] = &[
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../../static/style.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../../static/app.js")),
    ("progress.js", "text/javascript; charset=utf-8", include_bytes!("../../../static/progress.js")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../../static/favicon.svg")),
];

/// `GET /hub/static/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, bytes)) => {
            ([(header::CONTENT_TYPE, *mime), (header::CACHE_CONTROL, "public, max-age=3600")], *bytes).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
