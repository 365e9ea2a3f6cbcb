//! What can go wrong while forwarding, and the status each answer gets.

use std::time::Duration;

use http::StatusCode;

/// Why a request could not be forwarded, worded for people. The web layer renders it
/// (page or JSON) using [`ProxyError::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The server's or the hub's connection limit is reached; answer 503 with `Retry-After`.
    #[error("the server is busy (too many open connections); try again in {} s", retry_after_secs(*.retry_after))]
    Busy { retry_after: Duration },
    /// The server could not be connected to (or its route was removed): it is not running.
    #[error("the server is not running or cannot be reached")]
    Unreachable,
    /// The server sent no response headers within the read timeout.
    #[error("the server did not answer in time")]
    Timeout,
    /// The request line and headers are larger than allowed.
    #[error("the request headers are too large")]
    HeadersTooLarge,
    /// The request cannot be forwarded as sent.
    #[error("the request cannot be forwarded: {0}")]
    BadRequest(String),
    /// The server failed while answering (closed the connection, sent garbage).
    #[error("the server failed to answer: {0}")]
    Upstream(String),
}

impl ProxyError {
    /// The HTTP status to answer with: 503 for `Busy` and `Unreachable` (the web layer
    /// shows its "not running" page for the latter), 504, 431, 400 and 502 for the rest.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Busy { .. } | Self::Unreachable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `Retry-After` value in whole seconds (at least 1), for `Busy`.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Busy { retry_after } => Some(retry_after_secs(*retry_after)),
            _ => None,
        }
    }
}

/// `Retry-After` takes whole seconds; round up so a client never retries early, and never 0.
fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retry_after() {
        let busy = ProxyError::Busy { retry_after: Duration::from_millis(1500) };
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.retry_after_secs(), Some(2));
        assert_eq!(ProxyError::Busy { retry_after: Duration::ZERO }.retry_after_secs(), Some(1));
        assert_eq!(ProxyError::Timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(ProxyError::Timeout.retry_after_secs(), None);
        assert_eq!(ProxyError::HeadersTooLarge.status().as_u16(), 431);
        assert!(busy.to_string().contains("2 s"));
    }
}
