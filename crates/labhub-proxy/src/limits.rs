//! Connection slots per route, per service and in total, and the count of open tunnels, each released by
//! a guard's `Drop` so that no exit path (finished, failed, hung up, cancelled) can leak one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::route::RouteEntry;

/// Takes one slot of `counter` unless all `max` are in use; exact under contention.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
}

/// Takes one slot of `own` and one of `total`, or neither.
fn take_both(own: &AtomicUsize, max_own: usize, total: &AtomicUsize, max_total: usize) -> bool {
    if !take(own, max_own) {
        return false;
    }
    if !take(total, max_total) {
        own.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

/// One upstream connection's worth of capacity, on the route and in total, held for the
/// life of a request (until its response body is gone) or of a tunnel.
pub(crate) struct Lease {
    /// The route whose slot it holds; none for a service's request.
    route: Option<Arc<RouteEntry>>,
    /// A service's count of slots in use, for a service's request.
    service: Option<Arc<AtomicUsize>>,
    total: Arc<AtomicUsize>,
}

impl Lease {
    /// Takes a slot on the route and one in total, or neither.
    pub(crate) fn try_acquire(
        route: &Arc<RouteEntry>,
        total: &Arc<AtomicUsize>,
        max_per_route: usize,
        max_total: usize,
    ) -> Option<Self> {
        take_both(&route.in_flight, max_per_route, total, max_total).then(|| Self {
            route: Some(route.clone()),
            service: None,
            total: total.clone(),
        })
    }

    /// Takes a slot of a service's (`service`, at most `max_per_service`) and one in total,
    /// or neither: one user's WebSockets to a service cannot take every slot of the proxy.
    pub(crate) fn try_acquire_service(
        service: &Arc<AtomicUsize>,
        total: &Arc<AtomicUsize>,
        max_per_service: usize,
        max_total: usize,
    ) -> Option<Self> {
        take_both(service, max_per_service, total, max_total).then(|| Self {
            route: None,
            service: Some(service.clone()),
            total: total.clone(),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The end of a response is traffic too: a long download counts until its last byte.
        if let Some(route) = &self.route {
            route.touch();
            route.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(service) = &self.service {
            service.fetch_sub(1, Ordering::AcqRel);
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts one open WebSocket tunnel on its route and in the route table.
pub(crate) struct TunnelGuard {
    route: Arc<RouteEntry>,
}

impl TunnelGuard {
    pub(crate) fn new(route: Arc<RouteEntry>) -> Self {
        route.tunnels.fetch_add(1, Ordering::AcqRel);
        route.shared.open_tunnels.fetch_add(1, Ordering::AcqRel);
        Self { route }
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.route.tunnels.fetch_sub(1, Ordering::AcqRel);
        self.route.shared.open_tunnels.fetch_sub(1, Ordering::AcqRel);
    }
}
