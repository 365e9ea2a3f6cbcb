//! Body wrappers: the response body holds the request's connection slots until it is done,
//! and the request body reports progress so that a long upload is not mistaken for a
//! silent server.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::limits::Lease;
use crate::pool::Lent;

/// The upstream's response body, streamed frame by frame; dropping it (finished, failed or
/// abandoned by the client) gives the connection slots back. Read to its end, it parks its
/// connection for the next request; a body abandoned halfway takes its connection with it.
pub(crate) struct ProxiedBody {
    inner: Incoming,
    _lease: Lease,
    lent: Option<Lent>,
}

impl ProxiedBody {
    pub(crate) fn new(inner: Incoming, lease: Lease, lent: Lent) -> Self {
        let mut body = Self { inner, _lease: lease, lent: Some(lent) };
        body.give_back_at_end();
        body
    }

    fn give_back_at_end(&mut self) {
        if self.inner.is_end_stream()
            && let Some(lent) = self.lent.take()
        {
            lent.give_back();
        }
    }
}

impl Body for ProxiedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back_at_end(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.give_back_at_end(),
            // Trailers end a body, and hyper's server does not poll it again after them.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                if let Some(lent) = this.lent.take() {
                    lent.give_back();
                }
            }
            Poll::Ready(Some(Err(_))) => this.lent = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// When the request body last moved, shared with the wait for the response headers.
pub(crate) struct Progress {
    start: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn mark(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// The last time the request body moved (or the request started).
    pub(crate) fn last(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The client's request body, marking progress on every frame that goes upstream.
pub(crate) struct ProgressBody {
    inner: axum::body::Body,
    progress: Arc<Progress>,
}

impl ProgressBody {
    pub(crate) fn new(inner: axum::body::Body, progress: Arc<Progress>) -> Self {
        Self { inner, progress }
    }
}

impl Body for ProgressBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_ready() {
            this.progress.mark();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
