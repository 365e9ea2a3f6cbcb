//! One route's upstream connections: HTTP/1.1 keep-alive connections parked between requests
//! and reused, new ones opened on demand.
//!
//! A connection is driven by the request that borrowed it, in that request's own task: the
//! exchange polls the connection while it waits for the response head, and the response body
//! polls it while it streams. So a proxied request hands nothing to another task and waits
//! for no other task to be scheduled (hyper's connections are usually given a task of their
//! own, which costs a wake-up each way per request). Read to its end, the body parks its
//! connection for the next request. A connection still busy at that moment (its request body
//! still going out) gets a task that drives it until it is ready and then parks it, so no
//! request ever waits behind another's exchange. A parked connection is polled only when it is
//! taken again, by the reaper, or not at all: the route's removal drops every parked one.
//! Parked connections are closed after [`IDLE_TIMEOUT`] by one reaper task per route that
//! runs only while something is parked.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
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

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened: the server is not there (or the route was removed).
    Connect(io::Error),
    /// The exchange on an open connection failed.
    Http(hyper::Error),
}

/// hyper's connection state machine (its type is not nameable): reads and writes happen when
/// it is polled.
pub(crate) type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One upstream connection: the handle requests are sent on, and what does its I/O.
pub(crate) struct Conn {
    sender: SendRequest<Body>,
    /// `None` once the connection has ended (closed by either side, or failed).
    driver: Option<Driver>,
}

impl Conn {
    /// Lets the connection read and write what it can; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(driver) = &mut self.driver
            && let Poll::Ready(ended) = driver.as_mut().poll(cx)
        {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "upstream connection ended");
            }
            self.driver = None;
        }
        self.driver.is_some()
    }

    /// Drives the connection without waiting: notices a server's close of an idle connection,
    /// and finishes the bookkeeping after a response.
    fn drive_now(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()))
    }

    /// Whether it can take a request now.
    fn is_ready(&mut self) -> bool {
        self.drive_now() && self.sender.is_ready()
    }

    /// Sends `req` and drives the connection until the response head arrives.
    async fn exchange(
        &mut self,
        req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, TrySendError<http::Request<Body>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        poll_fn(|cx| {
            if let Poll::Ready(r) = response.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if self.drive(cx) {
                return Poll::Pending;
            }
            // The connection ended: hyper has answered the request (with its error, and the
            // request itself if it never went out) as it dropped it.
            response.as_mut().poll(cx)
        })
        .await
    }
}

struct Parked {
    conn: Conn,
    since: Instant,
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
    conn: Conn,
    pool: Arc<Pool>,
}

impl Lent {
    /// Drives the connection while the response body is read.
    pub(crate) fn poll_drive(&mut self, cx: &mut Context<'_>) {
        self.conn.drive(cx);
    }

    /// What is left of the connection's work, for a response that switched protocols: it
    /// ends by handing the socket to the upgrade.
    pub(crate) fn into_driver(self) -> Option<Driver> {
        self.conn.driver
    }

    /// The response was read to its end: the connection can carry another request once it
    /// is done with this one.
    pub(crate) fn give_back(self) {
        let Self { mut conn, pool } = self;
        if conn.is_ready() {
            pool.park(conn);
        } else if conn.driver.is_some() {
            tokio::spawn(async move {
                let ready = poll_fn(|cx| {
                    if !conn.drive(cx) {
                        return Poll::Ready(false);
                    }
                    conn.sender.poll_ready(cx).map(|r| r.is_ok())
                })
                .await;
                if ready {
                    pool.park(conn);
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
        while let Some(mut conn) = self.take_parked() {
            match conn.exchange(req).await {
                Ok(resp) => return Ok((resp, Lent { conn, pool: self.clone() })),
                Err(mut e) => match e.take_message() {
                    // Closed under us (by the server, while parked) before a byte was
                    // written: the request is intact.
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let mut conn = self.connect().await?;
        let resp = conn.exchange(req).await.map_err(|e| SendError::Http(e.into_error()))?;
        Ok((resp, Lent { conn, pool: self.clone() }))
    }

    fn take_parked(&self) -> Option<Conn> {
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        // Most recently used first: it is the least likely to have been closed by the server.
        while let Some(mut p) = parked.pop() {
            if p.since.elapsed() < IDLE_TIMEOUT && p.conn.is_ready() {
                return Some(p.conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        if self.closer.is_closed() {
            return Err(SendError::Connect(io::Error::new(io::ErrorKind::ConnectionAborted, "the route was removed")));
        }
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.endpoint))
            .await
            .map_err(|_| SendError::Connect(io::Error::new(io::ErrorKind::TimedOut, "connecting timed out")))?
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let io = RouteConn::new(TokioIo::new(stream), self.closer.watch());
        let (sender, conn) = http1::handshake(io).await.map_err(SendError::Http)?;
        Ok(Conn { sender, driver: Some(Box::pin(conn.with_upgrades())) })
    }

    fn park(self: &Arc<Self>, conn: Conn) {
        if self.closer.is_closed() {
            return;
        }
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        if parked.len() >= self.max_parked {
            return;
        }
        parked.push(Parked { conn, since: Instant::now() });
        if !self.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    /// Closes every parked connection (the route was removed); lent ones close as their
    /// requests next touch them.
    pub(crate) fn close_parked(&self) {
        let closed = std::mem::take(&mut *self.parked.lock().unwrap_or_else(PoisonError::into_inner));
        drop(closed);
    }
}

/// Closes connections parked longer than [`IDLE_TIMEOUT`] or closed by their server; stops
/// when none is parked (the next park starts it again) or the route's pool is gone.
async fn reap(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut parked = pool.parked.lock().unwrap_or_else(PoisonError::into_inner);
        parked.retain_mut(|p| p.since.elapsed() < IDLE_TIMEOUT && p.conn.is_ready());
        if parked.is_empty() {
            pool.reaping.store(false, Ordering::Relaxed);
            return;
        }
    }
}
