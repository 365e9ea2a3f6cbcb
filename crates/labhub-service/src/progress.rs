//! Progress of long waits (a server starting, an image building), kept so that a page opened
//! late still sees every step, and streamed to whoever watches.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One step, in JupyterHub's progress-event shape (also as stored for other replicas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// 0 to 100.
    pub progress: u8,
    /// What is happening, for the user.
    pub message: String,
    /// Set on the last event of a success.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,
    /// Set on the last event of a failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
    /// Where the ready server is, on the last event of a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl ProgressEvent {
    /// An intermediate step.
    pub fn step(progress: u8, message: impl Into<String>) -> Self {
        Self { progress: progress.min(99), message: message.into(), ready: false, failed: false, url: None }
    }

    /// The last event of a success.
    pub fn ready(message: impl Into<String>, url: Option<String>) -> Self {
        Self { progress: 100, message: message.into(), ready: true, failed: false, url }
    }

    /// The last event of a failure.
    pub fn failed(message: impl Into<String>) -> Self {
        Self { progress: 100, message: message.into(), ready: false, failed: true, url: None }
    }

    /// Whether this event ends the stream.
    pub fn is_final(&self) -> bool {
        self.ready || self.failed
    }
}

/// Every event of one long wait so far; watchers are woken on each new one.
#[derive(Debug)]
pub struct ProgressLog {
    tx: watch::Sender<Vec<ProgressEvent>>,
}

impl ProgressLog {
    /// An empty log.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { tx: watch::channel(Vec::new()).0 })
    }

    /// Appends an event; after a final event, nothing more is added. Progress never goes backwards.
    pub fn push(&self, mut event: ProgressEvent) {
        self.tx.send_if_modified(|events| {
            if events.last().is_some_and(ProgressEvent::is_final) {
                return false;
            }
            if let Some(last) = events.last()
                && !event.is_final()
            {
                event.progress = event.progress.max(last.progress);
            }
            events.push(event);
            true
        });
    }

    /// Watches the log: the receiver sees the whole history and every later change.
    pub fn subscribe(&self) -> watch::Receiver<Vec<ProgressEvent>> {
        self.tx.subscribe()
    }

    /// The last event so far.
    pub fn last(&self) -> Option<ProgressEvent> {
        self.tx.borrow().last().cloned()
    }

    /// Whether anyone watches the log.
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Whether the wait is over (the last event is final).
    pub fn finished(&self) -> bool {
        self.tx.borrow().last().is_some_and(ProgressEvent::is_final)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_keeps_order_never_goes_backwards_and_ends_once() {
        let log = ProgressLog::new();
        let rx = log.subscribe();
        log.push(ProgressEvent::step(10, "a"));
        log.push(ProgressEvent::step(5, "b"));
        log.push(ProgressEvent::failed("no"));
        log.push(ProgressEvent::step(50, "late"));
        let events = rx.borrow().clone();
        assert_eq!(events.iter().map(|e| e.progress).collect::<Vec<_>>(), [10, 10, 100]);
        assert!(log.finished());
        let json = serde_json::to_value(&events[2]).unwrap();
        assert_eq!(json, serde_json::json!({"progress": 100, "message": "no", "failed": true}));
    }
}
