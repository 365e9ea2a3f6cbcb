//! Waiting for a started container's server to answer, and noticing when it dies instead.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::query_parameters::InspectContainerOptions;
use labhub_core::spawner::{ProgressSender, ServerSpec, SpawnError};

use super::{DockerSpawner, send};
use crate::error::{is_status, runtime_error};
use crate::http::probe;
use crate::plan::{Readiness, exit_reason};

/// Log lines quoted in a failed start's error.
const FAILURE_LOG_LINES: usize = 20;
/// Longest single readiness request; a server that accepts but never answers is retried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause between readiness checks; it doubles up to `readiness_interval`.
const FIRST_READINESS_PAUSE: Duration = Duration::from_millis(10);

impl DockerSpawner {
    /// Waits until the server answers, checking on every round that it still runs.
    pub(super) async fn wait_ready(
        &self,
        id: &str,
        spec: &ServerSpec,
        readiness: &Readiness,
        progress: &ProgressSender,
    ) -> Result<SocketAddr, SpawnError> {
        let started = Instant::now();
        let mut last_percent = 70;
        let mut last_error = String::from("no answer yet");
        // Small servers answer within tens of milliseconds of running: ask early, then back
        // off to the configured interval so a slow boot costs few engine calls.
        let mut pause = FIRST_READINESS_PAUSE.min(self.config.readiness_interval);
        loop {
            let c = match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
                Ok(c) => c,
                Err(e) if is_status(&e, 404) => {
                    return Err(SpawnError::Exited {
                        reason: "the container was removed during start".into(),
                        log_tail: String::new(),
                    });
                }
                Err(e) => return Err(runtime_error("inspecting the starting container", e)),
            };
            let state = c.state.clone().unwrap_or_default();
            if !state.running.unwrap_or(false) {
                let reason = exit_reason(state.exit_code.unwrap_or(-1), state.oom_killed.unwrap_or(false));
                return Err(SpawnError::Exited { reason, log_tail: self.log_tail(id, FAILURE_LOG_LINES).await });
            }
            if let Some(ip) = self.ip_of(&c) {
                let addr = SocketAddr::new(ip, spec.port);
                match answers(addr, readiness).await {
                    Ok(()) => return Ok(addr),
                    Err(e) => last_error = e,
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= spec.start_timeout {
                tracing::info!(container = id, last_error = %last_error, "server did not answer in time");
                return Err(SpawnError::Timeout {
                    seconds: spec.start_timeout.as_secs(),
                    log_tail: self.log_tail(id, FAILURE_LOG_LINES).await,
                });
            }
            // 70 % → 89 % over the start timeout, so the bar moves while the server boots.
            let share = elapsed.as_secs_f64() / spec.start_timeout.as_secs_f64().max(0.001);
            let percent = 70 + (19.0 * share).min(19.0) as u8;
            if percent > last_percent {
                last_percent = percent;
                send(progress, percent, format!("waiting for the server to answer ({} s)", elapsed.as_secs()));
            }
            let remaining = spec.start_timeout.saturating_sub(elapsed);
            tokio::time::sleep(pause.min(remaining)).await;
            pause = (pause * 2).min(self.config.readiness_interval);
        }
    }
}

/// Checks one readiness round; `Err` says what went wrong, for the log.
pub(crate) async fn answers(addr: SocketAddr, readiness: &Readiness) -> Result<(), String> {
    let (path, token) = match readiness {
        Readiness::TokenApi { path, token } => (path, Some(token.expose().as_str())),
        Readiness::AnyAnswer { path } | Readiness::Below500 { path } => (path, None),
    };
    let status = probe(addr, path, token, PROBE_TIMEOUT).await.map_err(|e| e.to_string())?;
    let ok = match readiness {
        Readiness::TokenApi { .. } => status == hyper::StatusCode::OK,
        Readiness::AnyAnswer { .. } => true,
        Readiness::Below500 { .. } => status.as_u16() < 500,
    };
    if ok { Ok(()) } else { Err(format!("answered {status}")) }
}
