//! A start's progress for whoever watches, on any replica: the replica running the start
//! writes each event to `spawn_events` as it happens, and a replica without the start in
//! memory follows those rows.

use std::sync::Arc;
use std::time::Duration;

use labhub_core::ServerId;
use labhub_db::replicas as store;
use uuid::Uuid;

use super::Servers;
use crate::progress::{ProgressEvent, ProgressLog};
use crate::{Hub, ServiceError};

/// How often a follower on another replica reads the stored events.
const POLL: Duration = Duration::from_millis(100);

/// Writes a start's events to Postgres in order, until its last one.
pub(super) async fn store(hub: Hub, server: ServerId, spawn_id: Uuid, log: Arc<ProgressLog>) {
    let mut rx = log.subscribe();
    let mut written = 0;
    loop {
        let (events, done) = {
            let all = rx.borrow_and_update();
            (all[written..].to_vec(), all.last().is_some_and(ProgressEvent::is_final))
        };
        for e in &events {
            let json = serde_json::to_value(e).unwrap_or_default();
            let seq = i32::try_from(written).unwrap_or(i32::MAX);
            if let Err(e) = store::add_event(hub.db(), server, spawn_id, seq, &json, hub.now()).await {
                tracing::debug!(error = %e, "a progress event was not stored; other replicas miss it");
            }
            written += 1;
        }
        if done || rx.changed().await.is_err() {
            return;
        }
    }
}

impl Servers<'_> {
    /// The progress of the latest start of a server: this replica's own log when it runs the
    /// start, else a log that follows the events the running replica stores.
    pub async fn progress(&self, server: ServerId) -> Result<Arc<ProgressLog>, ServiceError> {
        let local = self.state().spawns.get(&server).map(|s| s.value().clone());
        if let Some(s) = local {
            // Only if it is the latest start: a later one may run on another replica.
            let latest =
                labhub_db::servers::by_id_with_owner(self.hub.db(), server).await?.and_then(|r| r.server.spawn_id);
            if latest.is_none_or(|id| id == s.spawn_id) {
                return Ok(s.progress.clone());
            }
        }
        let log = ProgressLog::new();
        let mut seen = -1;
        let mut spawn = None;
        read_into(self.hub, server, &log, &mut seen, &mut spawn).await?;
        if !log.finished() {
            let (hub, log) = (self.hub.clone(), log.clone());
            let give_up = self.state().settings.start_timeout + Duration::from_secs(60);
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(POLL).await;
                    // Nobody watches any more, or the start outlived its timeout.
                    if !log.watched() || started.elapsed() > give_up {
                        return;
                    }
                    if read_into(&hub, server, &log, &mut seen, &mut spawn).await.is_err() {
                        continue;
                    }
                    if log.finished() {
                        return;
                    }
                }
            });
        }
        Ok(log)
    }
}

/// Appends the stored events after `seen` (of the same start) to `log`.
async fn read_into(
    hub: &Hub,
    server: ServerId,
    log: &ProgressLog,
    seen: &mut i32,
    spawn: &mut Option<Uuid>,
) -> Result<(), ServiceError> {
    for (spawn_id, seq, event) in store::events_after(hub.db(), server, *seen).await? {
        if spawn.is_some_and(|s| s != spawn_id) {
            // A newer start began: this log was about the one before.
            return Ok(());
        }
        *spawn = Some(spawn_id);
        *seen = seq;
        if let Ok(e) = serde_json::from_value::<ProgressEvent>(event) {
            log.push(e);
        }
    }
    Ok(())
}
