//! Upstream sockets that close themselves when their route is removed.
//!
//! A route's pool keeps idle keep-alive connections, and `Arc`s of the route may outlive its
//! removal (a response still streaming); dropping the pool would leave those sockets open
//! until then. Instead every socket watches its route: when the route goes, the socket's
//! task is woken, its next read fails, hyper drops the connection, and the socket is closed
//! at once, idle or busy.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::closer::{Closer, Watch};

/// Connects with hyper-util's `HttpConnector` and ties each socket to its route.
#[derive(Clone)]
pub(crate) struct RouteConnector {
    http: HttpConnector,
    closer: Arc<Closer>,
}

impl RouteConnector {
    pub(crate) fn new(connect_timeout: std::time::Duration, closer: Arc<Closer>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        Self { http, closer }
    }
}

impl tower::Service<Uri> for RouteConnector {
    type Response = RouteConn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RouteConn>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(io::Error::other)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.http.call(dst);
        let closer = self.closer.clone();
        Box::pin(async move {
            if closer.is_closed() {
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the route was removed"));
            }
            let io = connecting.await.map_err(io::Error::other)?;
            Ok(RouteConn { io, watch: closer.watch() })
        })
    }
}

/// One upstream TCP connection that fails its reads once its route is removed.
pub(crate) struct RouteConn {
    io: TokioIo<TcpStream>,
    watch: Arc<Watch>,
}

impl RouteConn {
    fn check_closed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.watch.poll_closed(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the route was removed")),
            Poll::Pending => Ok(()),
        }
    }
}

impl Read for RouteConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_closed(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl Write for RouteConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_closed(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_closed(cx)?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }
}

impl Connection for RouteConn {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}
