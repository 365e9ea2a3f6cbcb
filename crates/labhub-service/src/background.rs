//! The hub's background work: each loop runs until its `shutdown` future resolves, and one
//! failed pass is logged and retried at the next tick, never ending the loop.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use labhub_db::replicas::Job;
use tokio::time::MissedTickBehavior;

use crate::Hub;
use crate::health::ISOLATION_CHECK_INTERVAL;

impl Hub {
    /// Periodic housekeeping: flushes token use times and proxied activity, removes expired
    /// sessions, refreshes the session gauge, runs the scheduled backup when due, and checks (repairing what it can) that servers
    /// can be isolated, at once and every [`ISOLATION_CHECK_INTERVAL`]. Runs until `shutdown`
    /// resolves, then flushes once more.
    pub async fn run_maintenance(self, shutdown: impl Future<Output = ()>) {
        let mut flush = tokio::time::interval(self.server_settings().activity_flush_interval);
        flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut isolation = tokio::time::interval(ISOLATION_CHECK_INTERVAL);
        isolation.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = isolation.tick() => {
                    // Without a runtime there is nothing to isolate; starts say so themselves.
                    if self.servers().spawner().is_ok()
                        && let Err(e) = self.servers().check_isolation().await
                    {
                        tracing::debug!(error = %e, "isolation not checked this time");
                    }
                    continue;
                }
                _ = flush.tick() => {}
            }
            ticks += 1;
            // In a task of its own, as a run lasts long; a tick during a run returns at once.
            if self.backups().enabled() {
                let hub = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = hub.backups().on_schedule().await {
                        tracing::warn!(error = %e, "could not check or run the scheduled backup");
                    }
                });
            }
            if let Err(e) = self.tokens().flush_use().await {
                tracing::debug!(error = %e, "token use not flushed yet");
            }
            if let Err(e) = self.servers().flush_activity().await {
                tracing::debug!(error = %e, "activity not flushed yet");
            }
            // A replica that died mid-backup left servers frozen; whoever holds the run
            // lock next thaws them (a few ticks' delay is fine, a run is never interrupted).
            if ticks % 3 == 1
                && self.servers().spawner().is_ok()
                && let Err(e) = self.backups().resume_left_paused().await
            {
                tracing::debug!(error = %e, "paused servers not looked for this time");
            }
            if ticks % 30 == 1
                && let Err(e) = self.sessions().expire().await
            {
                tracing::debug!(error = %e, "sessions not expired yet");
            }
        }
        let _ = self.tokens().flush_use().await;
        let _ = self.servers().flush_activity().await;
    }

    /// Runs the culler every `cull_interval` until `shutdown` resolves.
    pub async fn run_culler(self, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.quota_settings().cull_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.culler().cull_once().await {
                tracing::warn!(error = %e, "the culler's pass failed; trying again at the next");
            }
        }
    }

    /// Samples live use every `usage_interval` and measures storage every `storage_interval`
    /// until `shutdown` resolves; with several replicas, one of them at each tick.
    pub async fn run_usage_sampler(self, shutdown: impl Future<Output = ()>) {
        let settings = self.quota_settings().clone();
        let mut usage_tick = tokio::time::interval(settings.usage_interval);
        usage_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut storage_tick = tokio::time::interval(settings.storage_interval);
        storage_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = usage_tick.tick() => {
                    // One replica samples at a time; the others skip this tick.
                    if let Ok(Some(sampling)) = self.replicas().lock(Job::UsageSample).await {
                        if let Err(e) = self.usage().sample().await {
                            tracing::debug!(error = %e, "usage not sampled this time");
                        }
                        // Failing, the lock goes with its connection instead.
                        let _ = sampling.release().await;
                    }
                }
                _ = storage_tick.tick() => {
                    if let Ok(Some(measuring)) = self.replicas().lock(Job::StorageMeasure).await {
                        if let Err(e) = self.quotas().measure_storage().await {
                            tracing::debug!(error = %e, "storage not measured this time");
                        }
                        // Failing, the lock goes with its connection instead.
                        let _ = measuring.release().await;
                    }
                }
            }
        }
    }

    /// Watches the runtime for servers that end behind the hub's back and marks them stopped
    /// with the reason. Runs until `shutdown` resolves; reconnects when the stream breaks.
    pub async fn watch_exits(self, shutdown: impl Future<Output = ()>) {
        let servers = self.servers();
        let Ok(spawner) = servers.spawner().cloned() else { return };
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                _ = &mut shutdown => return,
                s = spawner.exits() => s,
            };
            match stream {
                Ok(mut events) => loop {
                    let next = tokio::select! {
                        _ = &mut shutdown => return,
                        e = events.next() => e,
                    };
                    let Some(exit) = next else { break };
                    if let Err(e) = servers.on_exit(&spawner, exit).await {
                        tracing::warn!(error = %e, "could not record a server's exit");
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot watch the container runtime; retrying"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
}
