//! A service's tasks as the manager reports them (`GET /tasks`), read as raw JSON (the few
//! fields the spawner needs, whatever the engine's API version adds).

use std::time::Duration;

use labhub_core::spawner::SpawnError;
use serde::Deserialize;

use crate::error::runtime_error;
use crate::http::{EngineAddr, engine_get};

/// Longest wait for the manager's task list.
const TASKS_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest task list read (a service has one task, plus the history Swarm keeps).
const TASKS_MAX_BYTES: usize = 4 << 20;

/// One task, the fields the spawner reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Task {
    #[serde(default)]
    pub created_at: String,
    /// The node Swarm placed it on (empty until assigned).
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    #[serde(default)]
    pub status: TaskStatus,
}

/// Where a task is in its life, and what Swarm said about it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TaskStatus {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub err: String,
    #[serde(default)]
    pub container_status: ContainerStatus,
}

/// The task's container, once there is one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerStatus {
    #[serde(rename = "ContainerID", default)]
    pub container_id: String,
    #[serde(default)]
    pub exit_code: i64,
}

/// What a task's state means to a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not running yet: the state and its message, for the progress bar.
    Progress { percent: u8, message: String },
    /// Its container runs.
    Running,
    /// It ended or never ran, in words for the user.
    Ended(String),
}

impl Task {
    /// What the state means; every non-final state is progress, never a hang.
    pub(crate) fn phase(&self) -> Phase {
        let st = &self.status;
        let said = if st.err.is_empty() { st.message.clone() } else { st.err.clone() };
        let percent = match st.state.as_str() {
            "new" => 50,
            "allocated" | "pending" => 52,
            "assigned" => 55,
            "accepted" => 58,
            "preparing" => 60,
            "ready" => 63,
            "starting" => 66,
            "running" => return Phase::Running,
            "complete" => return Phase::Ended(crate::plan::exit_reason(st.container_status.exit_code, false)),
            "failed" if st.container_status.exit_code != 0 => {
                return Phase::Ended(format!(
                    "{} ({said})",
                    crate::plan::exit_reason(st.container_status.exit_code, false)
                ));
            }
            "failed" | "rejected" => return Phase::Ended(format!("the task was {}: {said}", st.state)),
            "shutdown" | "remove" | "orphaned" => return Phase::Ended(format!("the task was {}", st.state)),
            other => return Phase::Progress { percent: 50, message: format!("task {other}") },
        };
        let message = if said.is_empty() || said == st.state {
            format!("task {}", st.state)
        } else {
            format!("task {}: {said}", st.state)
        };
        Phase::Progress { percent, message }
    }
}

/// Every task of the services matching `filters` (the engine's filter JSON), newest first.
pub(crate) async fn list(engine: &EngineAddr, filters: &serde_json::Value) -> Result<Vec<Task>, SpawnError> {
    let query = url_encode(&filters.to_string());
    let (status, body) = engine_get(engine, &format!("/tasks?filters={query}"), TASKS_TIMEOUT, TASKS_MAX_BYTES)
        .await
        .map_err(|e| runtime_error("listing the service's tasks", e))?;
    if !status.is_success() {
        return Err(SpawnError::Runtime(format!(
            "listing the service's tasks: the manager answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let mut tasks: Vec<Task> =
        serde_json::from_slice(&body).map_err(|e| runtime_error("reading the service's tasks", e))?;
    // RFC 3339 with the same precision and zone sort as strings.
    tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(tasks)
}

/// Percent-encodes a query value.
fn url_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: &str, message: &str, err: &str, exit: i64) -> Task {
        serde_json::from_value(serde_json::json!({
            "ID": "t1", "ServiceID": "s1", "CreatedAt": "2026-12-07T03:44:46.2Z", "NodeID": "n1",
            "Status": {"State": state, "Message": message, "Err": err,
                       "ContainerStatus": {"ContainerID": "c1", "ExitCode": exit}},
            "DesiredState": "running"
        }))
        .unwrap()
    }

    #[test]
    fn states_are_progress_until_they_end() {
        assert_eq!(
            task("preparing", "preparing", "", 0).phase(),
            Phase::Progress { percent: 60, message: "task preparing".into() }
        );
        assert_eq!(
            task("pending", "no suitable node (insufficient resources on 1 node)", "", 0).phase(),
            Phase::Progress {
                percent: 52,
                message: "task pending: no suitable node (insufficient resources on 1 node)".into()
            }
        );
        assert_eq!(task("running", "started", "", 0).phase(), Phase::Running);
        assert_eq!(
            task("rejected", "preparing", "No such image: x:1", 0).phase(),
            Phase::Ended("the task was rejected: No such image: x:1".into())
        );
        assert_eq!(
            task("failed", "started", "task: non-zero exit (3)", 3).phase(),
            Phase::Ended("exited with code 3 (task: non-zero exit (3))".into())
        );
        assert_eq!(task("complete", "finished", "", 0).phase(), Phase::Ended("exited with code 0".into()));
    }

    #[test]
    fn filters_are_encoded() {
        assert_eq!(url_encode(r#"{"service":["a b"]}"#), "%7B%22service%22%3A%5B%22a%20b%22%5D%7D");
    }
}
