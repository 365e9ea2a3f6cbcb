//! One error type for every handler, mapped to a status once, rendered by the surface the
//! request came through: JSON `{"status", "message"}` for the API, a page with a way back
//! for people. Internal details are logged with the request id, never shown.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use labhub_service::ServiceError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The service refused or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Nobody is signed in (pages redirect to the sign-in page).
    #[error("you need to sign in")]
    LoginRequired,
    /// The request's credentials are present but not valid.
    #[error("{0}")]
    BadCredentials(String),
    /// A form or cookie-authenticated call without a genuine CSRF token or origin.
    #[error("{0}")]
    Csrf(&'static str),
    /// The request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No such page or object.
    #[error("{0}")]
    NotFound(String),
    /// The body is larger than the hub accepts.
    #[error("The request is too large.")]
    TooLarge,
    /// A server failed to start; the message (from the spawner) is for the user.
    #[error("{0}")]
    SpawnFailed(String),
    /// Signed in, but this needs more rights.
    #[error("{0}")]
    Forbidden(String),
}

impl From<labhub_core::resources::ResourceError> for AppError {
    fn from(e: labhub_core::resources::ResourceError) -> Self {
        AppError::BadRequest(e.to_string())
    }
}

/// What a surface needs to render an error; travels in the response's extensions.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    pub message: String,
    pub login_required: bool,
}

impl AppError {
    /// The one mapping from errors to statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Service(e) => match e {
                ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
                ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
                ServiceError::Conflict(_) => StatusCode::CONFLICT,
                ServiceError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                ServiceError::Forbidden(_) | ServiceError::AboveCeiling(_) => StatusCode::FORBIDDEN,
                ServiceError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
                ServiceError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            AppError::LoginRequired | AppError::BadCredentials(_) => StatusCode::UNAUTHORIZED,
            AppError::Csrf(_) | AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::SpawnFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The seconds a client should wait before trying again, for the `Retry-After` header.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AppError::Service(ServiceError::TooMany { retry_after, .. }) => Some(retry_after.as_secs().max(1)),
            AppError::Service(ServiceError::Unavailable(_)) => Some(5),
            _ => None,
        }
    }

    fn public_message(&self) -> String {
        match self {
            AppError::Service(ServiceError::Internal(_)) => {
                "Something went wrong inside the hub. It has been logged; try again, and tell an admin if it keeps happening."
                    .to_string()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let AppError::Service(ServiceError::Internal(detail)) = &self {
            tracing::error!(%detail, "internal error");
        }
        let retry_after = self.retry_after_secs();
        let report =
            ErrorReport { message: self.public_message(), login_required: matches!(self, AppError::LoginRequired) };
        let mut resp = (status, report.message.clone()).into_response();
        if let Some(s) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp.extensions_mut().insert(report);
        resp
    }
}

/// The report of an error response, whether it came from a handler (`AppError`) or from axum
/// itself (a rejected body, an unknown route), whose plain-text body becomes the message.
pub(crate) async fn report_of(resp: Response) -> (axum::http::response::Parts, ErrorReport) {
    let (parts, body) = resp.into_parts();
    if let Some(r) = parts.extensions.get::<ErrorReport>() {
        return (parts.clone(), r.clone());
    }
    let text = axum::body::to_bytes(body, 16 * 1024).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_string();
    if message.is_empty() {
        message = match parts.status {
            StatusCode::NOT_FOUND => "There is nothing at this address.".to_string(),
            StatusCode::METHOD_NOT_ALLOWED => "This address does not accept that method.".to_string(),
            StatusCode::PAYLOAD_TOO_LARGE => "The request is too large.".to_string(),
            s => s.canonical_reason().unwrap_or("Error").to_string(),
        };
    } else if parts.status == StatusCode::PAYLOAD_TOO_LARGE {
        message = "The request is too large.".to_string();
    }
    let report = ErrorReport { message, login_required: false };
    (parts, report)
}

pub(crate) fn is_error(resp: &Response) -> bool {
    resp.status().is_client_error() || resp.status().is_server_error()
}

/// Renders API errors as JuptyerHub does: `{"status": N, "message": "…"}`.
pub async fn render_api_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if !is_error(&resp) {
        return resp;
    }
    let already_json =
        resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if already_json && resp.extensions().get::<ErrorReport>().is_none() {
        return resp;
    }
    let (mut parts, report) = report_of(resp).await;
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = error_body(parts.status, &report.message);
    Response::from_parts(parts, Body::from(body))
}

/// The API's error body.
pub(crate) fn error_body(status: StatusCode, message: &str) -> String {
    serde_json::json!({ "status": status.as_u16(), "message": message }).to_string()
}

/// An error in the API's shape, for answers made outside the API's router (proxied paths,
/// users' own hosts).
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], error_body(status, message)).into_response()
}
