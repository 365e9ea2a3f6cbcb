//! Closing everything a route opened (pooled sockets, in-flight connections, tunnels) the
//! moment the route goes, and closing one visitor's tunnels the moment their access ends.
//!
//! Every socket and tunnel polls its watch on each read, so the check must cost no lock:
//! a watch is an atomic flag and an atomic waker of its own. Only creating a watch and
//! closing the route take the route's lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use labhub_core::UserId;

/// A watch as its closer keeps it: weakly, with the visitor it was made for, if any.
type Kept = (Option<UserId>, Weak<Watch>);

/// The route's side: hands out watches and trips them all on `close`.
#[derive(Default)]
pub(crate) struct Closer {
    closed: AtomicBool,
    watches: Mutex<Vec<Kept>>,
}

impl Closer {
    fn watches(&self) -> MutexGuard<'_, Vec<Kept>> {
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A watch that trips when the route closes (at once, if it already has).
    pub(crate) fn watch(&self) -> Arc<Watch> {
        self.watch_for(None)
    }

    /// A watch that trips when the route closes, or when [`Closer::close_visitors`] picks
    /// `visitor` (someone other than the owner: through a share, their roles or as an admin).
    pub(crate) fn watch_for(&self, visitor: Option<UserId>) -> Arc<Watch> {
        let watch = Arc::new(Watch { closed: AtomicBool::new(false), waker: AtomicWaker::new() });
        let mut watches = self.watches();
        // Checked under the lock that `close` takes, so no watch is created unseen.
        if self.closed.load(Ordering::Acquire) {
            watch.closed.store(true, Ordering::Release);
            return watch;
        }
        // Forget finished sockets and tunnels now and then, not on every new one.
        if watches.len() == watches.capacity() {
            watches.retain(|(_, w)| w.strong_count() > 0);
        }
        watches.push((visitor, Arc::downgrade(&watch)));
        watch
    }

    /// Trips every watch, now and for ever.
    pub(crate) fn close(&self) {
        let mut watches = self.watches();
        self.closed.store(true, Ordering::Release);
        for (_, watch) in watches.drain(..) {
            if let Some(watch) = watch.upgrade() {
                watch.trip();
            }
        }
    }

    /// Trips the watches of the visitors `lost` picks; how many it tripped.
    pub(crate) fn close_visitors(&self, mut lost: impl FnMut(UserId) -> bool) -> usize {
        let mut tripped = 0;
        self.watches().retain(|(visitor, watch)| {
            let Some(visitor) = visitor else { return watch.strong_count() > 0 };
            if !lost(*visitor) {
                return watch.strong_count() > 0;
            }
            if let Some(watch) = watch.upgrade() {
                watch.trip();
                tripped += 1;
            }
            false
        });
        tripped
    }

    /// The visitors whose watches are still held (each once).
    pub(crate) fn visitors(&self) -> Vec<UserId> {
        let mut out: Vec<UserId> =
            self.watches().iter().filter(|(_, w)| w.strong_count() > 0).filter_map(|(v, _)| *v).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether `close` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// One socket's or tunnel's view of its route closing.
pub(crate) struct Watch {
    pub(crate) closed: AtomicBool,
    waker: AtomicWaker,
}

impl Watch {
    fn trip(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the route closed; otherwise wakes `cx` when it does.
    pub(crate) fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.closed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Closed between the check and the registration: the wake may have been missed.
        if self.closed.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Resolves once the route closed.
    pub(crate) async fn closed(&self) {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn close_trips_existing_and_later_watches() {
        let closer = Arc::new(Closer::default());
        let early = closer.watch();
        let waiting = tokio::spawn({
            let early = early.clone();
            async move { early.closed().await }
        });
        for _ in 0..100 {
            drop(closer.watch());
        }
        assert!(closer.watches().len() <= 128, "finished watches are pruned");
        let bob = closer.watch_for(Some(UserId::new(2)));
        let carol = closer.watch_for(Some(UserId::new(3)));
        assert_eq!(closer.close_visitors(|v| v == UserId::new(2)), 1);
        tokio::time::timeout(Duration::from_secs(1), bob.closed()).await.unwrap();
        assert!(!carol.closed.load(Ordering::Acquire), "only the visitor who lost access");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        closer.close();
        tokio::time::timeout(Duration::from_secs(1), waiting).await.unwrap().unwrap();
        assert!(closer.is_closed());
        tokio::time::timeout(Duration::from_millis(100), closer.watch().closed()).await.unwrap();
    }
}
