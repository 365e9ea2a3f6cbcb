//! Server-Sent Events from a progress log: every event so far, then each new one as it
//! happens, ending after the final one.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use labhub_service::progress::{ProgressEvent, ProgressLog};

/// Streams a progress log as `data: {json}` events.
pub fn stream(log: Arc<ProgressLog>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = log.subscribe();
    let s = futures::stream::unfold((rx, 0usize, false), |(mut rx, sent, done)| async move {
        if done {
            return None;
        }
        loop {
            let pending: Vec<ProgressEvent> = rx.borrow_and_update()[sent..].to_vec();
            if !pending.is_empty() {
                let finished = pending.last().is_some_and(ProgressEvent::is_final);
                let batch: Vec<Result<Event, Infallible>> = pending
                    .iter()
                    .map(|e| Ok(Event::default().data(serde_json::to_string(e).unwrap_or_default())))
                    .collect();
                return Some((futures::stream::iter(batch), (rx, sent + pending.len(), finished)));
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    });
    Sse::new(futures::StreamExt::flatten(s)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A stream of exactly one event (a server already ready, or not running).
pub fn single(event: ProgressEvent) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let data = serde_json::to_string(&event).unwrap_or_default();
    Sse::new(futures::stream::iter([Ok(Event::default().data(data))]))
}

/// A stream of events that all happened already (a finished build's kept log).
pub fn replay(events: Vec<ProgressEvent>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let items: Vec<Result<Event, Infallible>> =
        events.iter().map(|e| Ok(Event::default().data(serde_json::to_string(e).unwrap_or_default()))).collect();
    Sse::new(futures::stream::iter(items))
}
