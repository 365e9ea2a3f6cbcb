//! Reading the engine's refusals and wording runtime failures; shared by every module that
//! talks to the engine, and depending on none of them.

use std::fmt::Display;

use bollard::errors::Error as DockerError;
use labhub_core::spawner::SpawnError;

/// True when a bollard error is the engine answering with `status`.
pub(crate) fn is_status(e: &DockerError, status: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// A runtime failure, saying what was being done.
pub(crate) fn runtime_error(context: &str, e: impl Display) -> SpawnError {
    SpawnError::Runtime(format!("{context}: {e}"))
}

/// What the engine said, without bollard's "Docker responded with status code …" wrapper.
pub(crate) fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}
