//! Closing everything a route opened (pooled sockets, in-flight connections, tunnels) the
//! moment the route goes, and closing one holder's tunnels the moment their access or their
//! credential ends.
//!
//! Every socket and tunnel polls its watch on each read, so the check must cost no lock:
//! a watch is an atomic flag and an atomic waker of its own. Only creating a watch, closing
//! the route and picking holders take the route's lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use labhub_core::{Credential, UserId};

/// Who holds a tunnel open, as the hub decides about it again later.
pub(crate) struct Holder {
    /// The account, unless it owns what the tunnel goes to (an owner's access never ends
    /// while the route lasts) or is no account (a registered service).
    visitor: Option<UserId>,
    /// What they were let in with, if it can end (a session or an API token).
    credential: Option<Credential>,
}

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
        self.make(None)
    }

    /// A watch that trips when the route closes, when [`Closer::close_visitors`] picks
    /// `visitor`, or when [`Closer::close_credentials`] picks `credential`.
    pub(crate) fn watch_for(&self, visitor: Option<UserId>, credential: Option<Credential>) -> Arc<Watch> {
        self.make(Some(Holder { visitor, credential }))
    }

    fn make(&self, holder: Option<Holder>) -> Arc<Watch> {
        let watch = Arc::new(Watch { closed: AtomicBool::new(false), waker: AtomicWaker::new(), holder });
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
        for watch in watches.drain(..) {
            if let Some(watch) = watch.upgrade() {
                watch.trip();
            }
        }
    }

    /// Trips the held watches whose holder `lost` picks, forgetting them and the dropped
    /// ones; how many it tripped.
    fn close_where(&self, mut lost: impl FnMut(&Holder) -> bool) -> usize {
        let mut tripped = 0;
        self.watches().retain(|watch| {
            let Some(watch) = watch.upgrade() else { return false };
            let Some(holder) = &watch.holder else { return true };
            if !lost(holder) {
                return true;
            }
            watch.trip();
            tripped += 1;
            false
        });
        tripped
    }

    /// Trips the watches of the visitors `lost` picks (anyone but the owner: through a share,
    /// their roles or as an admin); how many it tripped.
    pub(crate) fn close_visitors(&self, mut lost: impl FnMut(UserId) -> bool) -> usize {
        self.close_where(|h| h.visitor.is_some_and(&mut lost))
    }

    /// Trips the watches of the holders whose credential `ended` picks; how many it tripped.
    pub(crate) fn close_credentials(&self, mut ended: impl FnMut(Credential) -> bool) -> usize {
        self.close_where(|h| h.credential.is_some_and(&mut ended))
    }

    /// The visitors whose watches are still held (each once).
    pub(crate) fn visitors(&self) -> Vec<UserId> {
        let mut out: Vec<UserId> = self.holders(|h| h.visitor);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The credentials of the watches still held (each once).
    pub(crate) fn credentials(&self) -> Vec<Credential> {
        let mut out: Vec<Credential> = self.holders(|h| h.credential);
        out.sort_unstable();
        out.dedup();
        out
    }

    fn holders<T>(&self, pick: impl Fn(&Holder) -> Option<T>) -> Vec<T> {
        self.watches().iter().filter_map(Weak::upgrade).filter_map(|w| w.holder.as_ref().and_then(&pick)).collect()
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
    holder: Option<Holder>,
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
    use labhub_core::{SessionId, TokenId};
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
        let (bob, carol, alice) = (UserId::new(2), UserId::new(3), UserId::new(1));
        let bobs = closer.watch_for(Some(bob), None);
        let carols = closer.watch_for(Some(carol), Some(Credential::Token(TokenId::new(7))));
        let owners = closer.watch_for(None, Some(Credential::Session(SessionId::new(9))));
        assert_eq!(closer.visitors(), [bob, carol], "the owner is no visitor");
        assert_eq!(closer.close_visitors(|v| v == bob || v == alice), 1);
        tokio::time::timeout(Duration::from_secs(1), bobs.closed()).await.unwrap();
        assert!(!carols.closed.load(Ordering::Acquire), "only the visitor who lost access");
        assert!(!owners.closed.load(Ordering::Acquire), "an owner never loses access to their own");
        assert_eq!(
            closer.credentials(),
            [Credential::Session(SessionId::new(9)), Credential::Token(TokenId::new(7))],
            "the credentials held (a dropped watch's are forgotten)"
        );
        assert_eq!(closer.close_credentials(|c| c == Credential::Session(SessionId::new(9))), 1);
        tokio::time::timeout(Duration::from_secs(1), owners.closed()).await.unwrap();
        assert!(!carols.closed.load(Ordering::Acquire), "only the holder of the ended credential");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        closer.close();
        tokio::time::timeout(Duration::from_secs(1), waiting).await.unwrap().unwrap();
        assert!(closer.is_closed());
        tokio::time::timeout(Duration::from_millis(100), closer.watch().closed()).await.unwrap();
    }
}
