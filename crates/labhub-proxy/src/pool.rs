//! One route's upstream connections: HTTP/1.1 keep-alive connections parked between requests
//! and reused, new ones opened on demand.
//!
//! A response body gives its connection back itself when it ends, so a proxied request costs
//! no task of its own (hyper-util's general-purpose client spawned one per request to notice
//! the connection becoming idle). Only a connection still busy at that moment (its request
//! body still going out, or the connection's task not yet done with the response) gets a
//! task that parks it once it is ready, so no request ever waits behind another's exchange.
//! Parked connections are closed after [`IDLE_TIMEOUT`] by one reaper task per route that
//! runs only while something is parked.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::ThreadId;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::closer::Closer;
use crate::connector::RouteConn;

/// Parked connections are closed after this long. Servers such as uvicorn close idle
/// connections after a few seconds on their own (the connection notices and ends); a short
/// life keeps the number of parked sockets per server small.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most an upstream connection's read buffer grows to. hyper's default (about 400 KiB)
/// is reached by every connection that carries a large download, and the allocator keeps
/// that memory after the load; a download streams as well in 64 KiB reads.
const UPSTREAM_READ_BUFFER: usize = 64 * 1024;

/// A connection idle this long may be one its server is closing (keep-alive timeouts are a
/// second or more); one used more recently is not, and its requests are not copied.
const MAY_BE_CLOSING_AFTER: Duration = Duration::from_millis(250);

/// A copy of a request that may be sent twice: GET, HEAD or OPTIONS without a body.
fn copy_if_resendable(req: &http::Request<Body>) -> Option<http::Request<Body>> {
    use http_body::Body as _;
    let safe = matches!(*req.method(), http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
    if !safe || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = http::Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Whether the server closed the connection without answering (rather than answering badly).
fn closed_unanswered(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>());
    io.is_some_and(|io| matches!(io.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe))
}

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened: the server is not there (or the route was removed).
    Connect(io::Error),
    /// The exchange on an open connection failed.
    Http(hyper::Error),
}

struct Parked {
    sender: SendRequest<Body>,
    since: Instant,
    /// The thread whose runtime drives the connection (it was opened there).
    thread: ThreadId,
}

/// The connections of one route.
pub(crate) struct Pool {
    endpoint: SocketAddr,
    connect_timeout: Duration,
    max_parked: usize,
    closer: Arc<Closer>,
    parked: Mutex<Vec<Parked>>,
    /// Whether the reaper task runs; read and written with `parked` locked.
    reaping: AtomicBool,
}

/// A connection lent to one request; [`Lent::give_back`] parks it for the next.
pub(crate) struct Lent {
    sender: SendRequest<Body>,
    pool: Arc<Pool>,
    thread: ThreadId,
}

impl Lent {
    /// The response was read to its end: the connection can carry another request once it
    /// is done with this one.
    pub(crate) fn give_back(self) {
        let Self { mut sender, pool, thread } = self;
        if sender.is_ready() {
            pool.park(sender, thread);
        } else if !sender.is_closed() {
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.park(sender, thread);
                }
            });
        }
    }
}

impl Pool {
    pub(crate) fn new(endpoint: SocketAddr, connect_timeout: Duration, max_parked: usize, closer: Arc<Closer>) -> Self {
        Self {
            endpoint,
            connect_timeout,
            max_parked,
            closer,
            parked: Mutex::new(Vec::new()),
            reaping: AtomicBool::new(false),
        }
    }

    /// Sends `req` (origin-form URI) on a parked connection, or on a new one when none is
    /// parked or every parked one turned out closed before the request went out.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: http::Request<Body>,
    ) -> Result<(http::Response<Incoming>, Lent), SendError> {
        let here = std::thread::current().id();
        while let Some((mut sender, thread, idle)) = self.take_parked(here) {
            // A server closing an idle connection may do so just as a request reaches it;
            // one safe to send twice is kept to send again on a fresh connection.
            let again = if idle >= MAY_BE_CLOSING_AFTER { copy_if_resendable(&req) } else { None };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lent { sender, pool: self.clone(), thread })),
                Err(mut e) => match (e.take_message(), again) {
                    // Closed under us (by the server, while parked) before a byte was
                    // written: the request is intact.
                    (Some(unsent), _) => req = unsent,
                    (None, Some(copy)) if closed_unanswered(e.error()) => req = copy,
                    (None, _) => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        // Boxed: connecting is rare next to reusing, and its future is large.
        let mut sender = Box::pin(self.connect()).await?;
        let resp = sender.send_request(req).await.map_err(SendError::Http)?;
        Ok((resp, Lent { sender, pool: self.clone(), thread: here }))
    }

    /// A parked connection that can still be used, with how long it has been idle, preferring
    /// one driven by thread `here`: the hub's HTTP threads each run their own runtime, and a
    /// connection of another thread's costs a cross-thread wake-up each way.
    fn take_parked(&self, here: ThreadId) -> Option<(SendRequest<Body>, ThreadId, Duration)> {
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            // Most recently used first: it is the least likely to have been closed by the server.
            let i = parked.iter().rposition(|p| p.thread == here).or_else(|| parked.len().checked_sub(1))?;
            let p = parked.remove(i);
            let idle = p.since.elapsed();
            if p.sender.is_ready() && idle < IDLE_TIMEOUT {
                return Some((p.sender, p.thread, idle));
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        if self.closer.is_closed() {
            return Err(SendError::Connect(io::Error::new(io::ErrorKind::ConnectionAborted, "the route was removed")));
        }
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.endpoint))
            .await
            .map_err(|_| SendError::Connect(io::Error::new(io::ErrorKind::TimedOut, "connecting timed out")))?
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let io = RouteConn::new(TokioIo::new(stream), self.closer.watch());
        let (sender, conn) =
            http1::Builder::new().max_buf_size(UPSTREAM_READ_BUFFER).handshake(io).await.map_err(SendError::Http)?;
        tokio::spawn(async move {
            // Ends when the server or the route closes it, or when no request can use it
            // any more (its sender dropped); failures reach the request that saw them.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    fn park(self: &Arc<Self>, sender: SendRequest<Body>, thread: ThreadId) {
        if !sender.is_ready() || self.closer.is_closed() {
            return;
        }
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        if parked.len() >= self.max_parked {
            return;
        }
        parked.push(Parked { sender, since: Instant::now(), thread });
        if !self.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }
}

/// Closes connections parked longer than [`IDLE_TIMEOUT`]; stops when none is parked (the
/// next park starts it again) or the route's pool is gone.
async fn reap(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut parked = pool.parked.lock().unwrap_or_else(PoisonError::into_inner);
        parked.retain(|p| p.sender.is_ready() && p.since.elapsed() < IDLE_TIMEOUT);
        if parked.is_empty() {
            pool.reaping.store(false, Ordering::Relaxed);
            return;
        }
    }
}
