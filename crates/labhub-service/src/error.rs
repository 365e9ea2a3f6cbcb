use std::time::Duration;

use labhub_db::DbError;

/// Why a hub operation did not happen, sorted by what the person asking can do about it.
/// The web layer maps each variant to one HTTP status, once.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// The thing asked about does not exist (or the asker may not know it exists).
    #[error("{0}")]
    NotFound(String),
    /// It conflicts with the current state (a taken name, the last admin).
    #[error("{0}")]
    Conflict(String),
    /// Not signed in, or the credentials are wrong.
    #[error("{0}")]
    Unauthenticated(String),
    /// Signed in, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A group's limits asked for more than the ceiling an admin set for it.
    #[error("{0}")]
    AboveCeiling(String),
    /// Too many attempts or too much at once; try again after the given time.
    #[error("{message}")]
    TooMany { message: String, retry_after: Duration },
    /// What was sent is larger than the hub takes; the message names the limit.
    #[error("{0}")]
    TooLarge(String),
    /// A dependency (the database, the container runtime) is unavailable; try again later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; logged in full, shown only as "internal error".
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DbError> for ServiceError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                ServiceError::Unavailable("the database is unavailable; try again in a moment".into())
            }
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<labhub_core::NameError> for ServiceError {
    fn from(e: labhub_core::NameError) -> Self {
        ServiceError::Invalid(e.to_string())
    }
}

impl From<labhub_auth::PasswordError> for ServiceError {
    fn from(e: labhub_auth::PasswordError) -> Self {
        match e {
            labhub_auth::PasswordError::Hashing(d) => ServiceError::Internal(d),
            busy @ labhub_auth::PasswordError::Busy => ServiceError::Unavailable(busy.to_string()),
            other => ServiceError::Invalid(other.to_string()),
        }
    }
}
