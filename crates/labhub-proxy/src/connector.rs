//! Upstream sockets that close themselves when their route is removed.
//!
//! A route's pool keeps idle keep-alive connections, and `Arc`s of the route may outlive its
//! removal (a response still streaming); dropping the pool would leave those sockets open
//! until then. Instead every socket watches its route: when the route goes, the socket's
//! task is woken, its next read fails, hyper drops the connection, and the socket is closed
//! at once, idle or busy.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::closer::Watch;

/// One upstream TCP connection that fails its reads once its route is removed.
pub(crate) struct RouteConn {
    io: TokioIo<TcpStream>,
    watch: Arc<Watch>,
}

impl RouteConn {
    pub(crate) fn new(io: TokioIo<TcpStream>, watch: Arc<Watch>) -> Self {
        Self { io, watch }
    }

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
