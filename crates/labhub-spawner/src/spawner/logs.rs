//! A server's output: the last lines it printed, with its secrets blanked out.

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{InspectContainerOptions, LogsOptions};
use futures::stream::StreamExt;
use labhub_core::spawner::{SpawnError, SpawnerState};

use super::{DockerSpawner, DockerState};
use crate::error::{is_status, runtime_error};

/// Environment variables whose values are secrets, blanked out of logs we pass on.
const SECRET_ENV: &[&str] = &["JUPYTER_TOKEN"];

impl DockerSpawner {
    /// `Spawner::logs`: the last `tail` lines, empty when the container is gone.
    pub(super) async fn server_logs(&self, state: &SpawnerState, tail: usize) -> Result<String, SpawnError> {
        let s = DockerState::from_json(state)?;
        match self.docker.inspect_container(&s.container_id, None::<InspectContainerOptions>).await {
            Ok(_) => Ok(self.log_tail(&s.container_id, tail).await),
            Err(e) if is_status(&e, 404) => Ok(String::new()),
            Err(e) => Err(runtime_error("reading the server's logs", e)),
        }
    }

    /// The last lines a container printed, with secrets blanked out.
    pub(crate) async fn log_tail(&self, id: &str, lines: usize) -> String {
        let secrets = match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(c) => secrets_of(&c),
            Err(_) => Vec::new(),
        };
        let options = LogsOptions { stdout: true, stderr: true, tail: lines.to_string(), ..Default::default() };
        let chunks: Vec<_> = self.docker.logs(id, Some(options)).collect().await;
        let text: String = chunks.into_iter().filter_map(Result::ok).map(|c| c.to_string()).collect();
        redact(text.trim_end(), &secrets)
    }
}

/// The values of a container's secret environment variables.
fn secrets_of(c: &ContainerInspectResponse) -> Vec<String> {
    let env = c.config.as_ref().and_then(|cfg| cfg.env.clone()).unwrap_or_default();
    env.iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, v)| SECRET_ENV.contains(k) && !v.is_empty())
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Blanks every occurrence of each secret (jupyter_server prints its URL with the token).
fn redact(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_string(), |t, s| t.replace(s.as_str(), "[redacted]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_blanked() {
        let text = "listening on http://127.0.0.1:8888/lab?token=abcd1234 and abcd1234";
        assert_eq!(
            redact(text, &["abcd1234".into()]),
            "listening on http://127.0.0.1:8888/lab?token=[redacted] and [redacted]"
        );
    }
}
