//! Watching Docker's event stream for servers that die.
//!
//! The stream is filtered by the engine (container `die` events carrying this hub's label).
//! When it breaks (engine restart, socket hiccup) it is opened again after a growing pause,
//! asking for events `since` the last one seen, which the engine replays from the events it
//! still holds (its last 256, of every kind, none from before its own restart): a short break
//! loses nothing, a long or busy one or an engine restart can. The event last handed out,
//! which the replay repeats, is skipped; another of the same nanosecond may come twice.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions};
use futures::stream::{BoxStream, StreamExt};
use labhub_core::spawner::ServerExit;

use crate::config::HubId;
use crate::naming::{LABEL_HUB, owner_from_labels};
use crate::plan::exit_reason;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Watch {
    docker: Docker,
    hub: HubId,
    events: Option<BoxStream<'static, Result<EventMessage, DockerError>>>,
    /// `(timeNano, container id)` of the last event handed out; at first, the moment the
    /// watch began, so a server dying before the stream is first polled is not missed.
    last: (i64, String),
    backoff: Duration,
}

/// The endless stream of this hub's servers that exit from now on.
pub(crate) fn exit_stream(docker: Docker, hub: HubId) -> BoxStream<'static, ServerExit> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let watch = Watch { docker, hub, events: None, last: (now, String::new()), backoff: FIRST_BACKOFF };
    futures::stream::unfold(watch, |mut w| async move {
        loop {
            let events = w.events.get_or_insert_with(|| open(&w.docker, &w.hub, w.last.0));
            match events.next().await {
                Some(Ok(event)) => {
                    w.backoff = FIRST_BACKOFF;
                    let key = (event.time_nano.unwrap_or(0), actor_id(&event));
                    if key.0 < w.last.0 || key == w.last {
                        continue;
                    }
                    w.last = key;
                    if let Some(exit) = to_exit(&w.docker, &event).await {
                        return Some((exit, w));
                    }
                }
                end => {
                    match end {
                        Some(Err(e)) => tracing::warn!(error = %e, "Docker's event stream broke; reconnecting"),
                        _ => tracing::warn!("Docker's event stream ended; reconnecting"),
                    }
                    w.events = None;
                    tokio::time::sleep(w.backoff).await;
                    w.backoff = (w.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    })
    .boxed()
}

/// Subscribes to this hub's `die` events since `since_nanos` (Unix time).
fn open(docker: &Docker, hub: &HubId, since_nanos: i64) -> BoxStream<'static, Result<EventMessage, DockerError>> {
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("event".to_string(), vec!["die".to_string()]),
        ("label".to_string(), vec![format!("{LABEL_HUB}={hub}")]),
    ]);
    let since = format!("{}.{:09}", since_nanos / 1_000_000_000, since_nanos % 1_000_000_000);
    docker.events(Some(EventsOptions { since: Some(since), until: None, filters: Some(filters) })).boxed()
}

fn actor_id(event: &EventMessage) -> String {
    event.actor.as_ref().and_then(|a| a.id.clone()).unwrap_or_default()
}

/// Turns a `die` event into a `ServerExit`; the container is inspected (when it still
/// exists) because only its state says whether the kernel killed it for memory.
async fn to_exit(docker: &Docker, event: &EventMessage) -> Option<ServerExit> {
    let actor = event.actor.as_ref()?;
    let id = actor.id.clone()?;
    let attributes = actor.attributes.clone().unwrap_or_default();
    let Some((owner, server)) = owner_from_labels(&attributes) else {
        tracing::warn!(container = %id, "a container with this hub's label but no valid user died; ignored");
        return None;
    };
    let mut code: i64 = attributes.get("exitCode").and_then(|c| c.parse().ok()).unwrap_or(-1);
    let mut oom = false;
    if let Ok(c) = docker.inspect_container(&id, None::<InspectContainerOptions>).await
        && let Some(state) = c.state
    {
        oom = state.oom_killed.unwrap_or(false);
        code = state.exit_code.unwrap_or(code);
    }
    Some(ServerExit { owner, server, runtime_id: id, reason: exit_reason(code, oom) })
}
