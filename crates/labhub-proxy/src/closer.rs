//! Closing everything a route opened (pooled sockets, in-flight connections, tunnels) the
//! moment the route goes.
//!
//! Every socket and tunnel polls its watch on each read, so the check must cost no lock:
//! a watch is an atomic flag and an atomic waker of its own. Only creating a watch and
//! closing the route take the route's lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// The route's side: hands out watches and trips them all on `close`.
#[derive(Default)]
pub(crate) struct Closer {
    closed: AtomicBool,
    watches: Mutex<Vec<Weak<Watch>>>,
}

impl Closer {
    fn watches(&self) -> MutexGuard<'_, Vec<Weak<Watch>>> {
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A watch that trips when the route closes (at once, if it already has).
    pub(crate) fn watch(&self) -> Arc<Watch> {
        let watch = Arc::new(Watch { closed: AtomicBool::new(false), waker: AtomicWaker::new() });
        let mut watches = self.watches();
        // Checked under the lock that `close` takes, so no watch is created unseen.
        if self.closed.load(Ordering::Acquire) {
            watch.closed.store(true, Ordering::Release);
            return watch;
        }
        // Forget finished sockets and tunnels now and then, not on every new one.
        if watches.len() == watches.capacity() {
            watches.retain(|w| w.strong_count() > 0);
        }
        watches.push(Arc::downgrade(&watch));
        watch
    }

    /// Trips every watch, now and for ever.
    pub(crate) fn close(&self) {
        let mut watches = self.watches();
        self.closed.store(true, Ordering::Release);
        for watch in watches.drain(..).filter_map(|w| w.upgrade()) {
            watch.closed.store(true, Ordering::Release);
            watch.waker.wake();
        }
    }

    /// Whether `close` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// One socket's or tunnel's view of its route closing.
pub(crate) struct Watch {
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl Watch {
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
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        closer.close();
        tokio::time::timeout(Duration::from_secs(1), waiting).await.unwrap().unwrap();
        assert!(closer.is_closed());
        tokio::time::timeout(Duration::from_millis(100), closer.watch().closed()).await.unwrap();
    }
}
