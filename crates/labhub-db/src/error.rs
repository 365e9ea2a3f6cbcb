use thiserror::Error;

/// What went wrong talking to Postgres, sorted by what the caller should do about it.
#[derive(Debug, Error)]
pub enum DbError {
    /// The database is unreachable or restarting: retry later (the hub answers 503).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A unique or foreign-key constraint refused the write; carries the constraint's name.
    #[error("constraint {constraint} refused the change")]
    Constraint { constraint: String },
    /// A migration could not be applied.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Anything else; a bug or a schema mismatch.
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => DbError::Unavailable(e.to_string()),
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // 08: connection exceptions; 57P0x: the server is shutting down or starting.
                if code.starts_with("08") || code.starts_with("57P") {
                    DbError::Unavailable(e.to_string())
                } else if let (true, Some(c)) = (code == "23505" || code == "23503", db.constraint()) {
                    DbError::Constraint { constraint: c.to_string() }
                } else {
                    DbError::Other(e.to_string())
                }
            }
            sqlx::Error::Protocol(msg) if msg.contains("connection") => DbError::Unavailable(e.to_string()),
            _ => DbError::Other(e.to_string()),
        }
    }
}

impl DbError {
    /// Whether the database was unreachable (as opposed to refusing the query).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Turns a named constraint violation into the caller's own error.
pub trait ResultExt<T> {
    /// If the error is a violation of `constraint`, return `f()` instead.
    fn on_constraint<E: From<DbError>>(self, constraint: &str, f: impl FnOnce() -> E) -> Result<T, E>;
}

impl<T> ResultExt<T> for Result<T, DbError> {
    fn on_constraint<E: From<DbError>>(self, constraint: &str, f: impl FnOnce() -> E) -> Result<T, E> {
        match self {
            Err(DbError::Constraint { constraint: c }) if c == constraint => Err(f()),
            other => other.map_err(E::from),
        }
    }
}
