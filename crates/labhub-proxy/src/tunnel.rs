//! WebSocket tunnels: after both sides switched protocols, bytes are copied both ways
//! untouched (frames, compression, close codes) until either side closes or the route goes.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::closer::Watch;
use crate::limits::{Lease, TunnelGuard};
use crate::route::RouteEntry;

/// Tunnels report activity at most this often: a busy kernel sends thousands of frames a
/// second and the culler needs minutes.
const ACTIVITY_EVERY: Duration = Duration::from_secs(1);

/// Per direction; WebSocket frames larger than this simply take several reads.
const BUFFER: usize = 8 * 1024;

/// What a tunnel goes to.
pub(crate) enum Through {
    /// A user's server: the tunnel counts on its route and keeps it active.
    Server(Arc<RouteEntry>),
    /// A registered service, by its prefix (for the log): nothing to count or keep active.
    Service(String),
}

impl Through {
    fn label(&self) -> String {
        match self {
            Self::Server(route) => route.key().to_string(),
            Self::Service(prefix) => prefix.clone(),
        }
    }
}

/// What ends a tunnel besides its two sides.
pub(crate) struct Ends {
    /// Trips when the proxy itself goes.
    pub(crate) shutdown: Arc<Watch>,
    /// Trips when what it goes to is removed, when the one it was opened for loses access
    /// ([`crate::RouteTable::close_visitors_where`], [`crate::ServiceTarget::close_visitors_where`]),
    /// or when the credential it was opened with ends (`close_credentials_where`); taken before
    /// they were let in, so also if that happened while the upgrade was on its way.
    pub(crate) closed: Arc<Watch>,
}

/// Starts the tunnel between the client's and the upstream's upgraded connections. The lease
/// (and for a server the tunnel count) is held by the task and released however it ends. It
/// ends when either side closes, or `ends` trips.
pub(crate) fn spawn(through: Through, lease: Lease, client: OnUpgrade, upstream: OnUpgrade, ends: Ends) {
    let guard = match &through {
        Through::Server(route) => Some(TunnelGuard::new(route.clone())),
        Through::Service(_) => None,
    };
    let Ends { shutdown, closed } = ends;
    tokio::spawn(async move {
        let _held = (lease, guard);
        let key = through.label();
        let route = match &through {
            Through::Server(route) => Some(&**route),
            Through::Service(_) => None,
        };
        let run = async {
            let (client, upstream) = tokio::try_join!(client, upstream).map_err(io::Error::other)?;
            pipe(TokioIo::new(client), TokioIo::new(upstream), route).await
        };
        tokio::select! {
            biased;
            () = closed.closed() => tracing::debug!(to = %key, "tunnel closed: its target was removed, or its holder lost access or signed out"),
            () = shutdown.closed() => tracing::debug!(to = %key, "tunnel closed: the hub is shutting down"),
            done = run => match done {
                Ok(()) => tracing::debug!(to = %key, "tunnel closed"),
                // A hang-up on either side is how tunnels usually end.
                Err(e) => tracing::debug!(to = %key, error = %e, "tunnel ended"),
            },
        }
    });
}

/// Copies both ways until one side's stream ends (everything it sent is passed on and the
/// other side gets the end too) or fails. Unlike `copy_bidirectional`, it does not wait for
/// the second side: a WebSocket whose peer is gone is over, and a client that keeps its
/// socket open must not keep the tunnel (and its slot) alive. Traffic keeps `route` active.
async fn pipe<C, U>(mut client: C, mut upstream: U, route: Option<&RouteEntry>) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Pump::new();
    let mut down = Pump::new();
    let mut next_touch = Instant::now();
    poll_fn(|cx| {
        let mut moved = false;
        let sent = up.poll(cx, Pin::new(&mut client), Pin::new(&mut upstream), &mut moved);
        let received = down.poll(cx, Pin::new(&mut upstream), Pin::new(&mut client), &mut moved);
        if let Some(route) = route.filter(|_| moved) {
            let now = Instant::now();
            if now >= next_touch {
                route.touch();
                next_touch = now + ACTIVITY_EVERY;
            }
        }
        match (sent, received) {
            (Poll::Ready(r), _) | (_, Poll::Ready(r)) => Poll::Ready(r),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction of a tunnel: a buffer read from one side and written to the other.
struct Pump {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    ended: bool,
    unflushed: bool,
}

impl Pump {
    fn new() -> Self {
        Self { buf: vec![0; BUFFER].into_boxed_slice(), start: 0, end: 0, ended: false, unflushed: false }
    }

    /// Ready once the reader ended and all it sent was written, flushed and shut down.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut R>,
        mut to: Pin<&mut W>,
        moved: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.start == self.end && !self.ended {
                let mut read = ReadBuf::new(&mut self.buf);
                match from.as_mut().poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        (self.start, self.end) = (0, n);
                        self.ended = n == 0;
                        *moved |= n > 0;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing more to read for now: push out what was written.
                        if self.unflushed {
                            ready!(to.as_mut().poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.start < self.end {
                let n = ready!(to.as_mut().poll_write(cx, &self.buf[self.start..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                self.unflushed = true;
            }
            if self.ended {
                ready!(to.as_mut().poll_flush(cx))?;
                ready!(to.as_mut().poll_shutdown(cx))?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_both_ways_and_one_end_closes_the_tunnel() {
        let (client, mut browser) = tokio::io::duplex(64);
        let (upstream, mut server) = tokio::io::duplex(64);
        let table = crate::RouteTable::new(Arc::new(labhub_core::SystemClock));
        let key = crate::RouteKey::new(labhub_core::UserName::parse("a").unwrap(), None);
        let route = crate::Route::new(
            key,
            labhub_core::UserId::new(1),
            ([127, 0, 0, 1], 1).into(),
            "t".to_string().into(),
            labhub_core::ImageKind::Jupyter,
        );
        table.insert(route).unwrap();
        let entry = table.get("a", None).unwrap();
        let tunnel = tokio::spawn(async move { pipe(client, upstream, Some(&entry)).await });

        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                browser.write_all(&big).await.unwrap();
                browser
            })
        };
        let mut got = vec![0; big.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);
        let mut browser = writer.await.unwrap();
        server.write_all(b"reply").await.unwrap();
        let mut reply = [0; 5];
        browser.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");

        // The server goes away; the browser keeps its end open, the tunnel still ends.
        drop(server);
        tunnel.await.unwrap().unwrap();
        assert_eq!(browser.read(&mut reply).await.unwrap(), 0, "the browser sees the end");
    }
}
