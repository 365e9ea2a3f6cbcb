//! Serving the hub's HTTP: one thread per core, each with a single-threaded runtime that owns
//! the connections given to it (as nginx has one worker process per core).
//!
//! A proxied request crosses two sockets and several tasks (the client's connection, the
//! server's connection, the body); on a work-stealing runtime each hand-over between them is
//! a cross-thread wake-up with atomics and, often, a futex. Kept on one thread they cost less
//! CPU per request (figures in bench/README.md). The rest of the hub (pages, API, database,
//! spawner, background work) stays on the hub's multi-threaded runtime: the front door hands
//! those requests over to it (`labhub_web::HubService`).
//!
//! Each connection starts in the front door's fast lane (`HubService::serve_plain_gets`),
//! which answers plain GETs to users' servers without hyper; at the first request it does
//! not take, the connection and the bytes read so far go to hyper for good.
//!
//! One acceptor gives each new connection to the thread with the fewest open ones: threads
//! accepting for themselves on a shared socket split a burst of connections unevenly (one
//! thread took three quarters of them), leaving a core idle while the other queues.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use labhub_web::{HubService, LaneEnd};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::rewind::Rewind;

/// How many HTTP threads to run: one per core the hub may use.
fn thread_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// One HTTP thread as the acceptor sees it.
struct Worker {
    /// New connections for it; closed (dropped) to make it stop and drain.
    connections: mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    /// Its open connections.
    open: Arc<AtomicUsize>,
    /// Resolves with its result once it has drained.
    done: oneshot::Receiver<io::Result<()>>,
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets open connections
/// finish for at most `drain` before closing them.
pub(crate) async fn serve(
    listener: TcpListener,
    service: HubService,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    let mut workers = Vec::new();
    for i in 0..thread_count() {
        workers.push(start_worker(i, service.clone(), drain)?);
    }
    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        // Small proxied responses must not wait for Nagle's algorithm (nginx sets this too).
        let _ = tcp.set_nodelay(true);
        let open: Vec<usize> = workers.iter().map(|w| w.open.load(Ordering::Relaxed)).collect();
        let Some(i) = least_loaded(&open, next) else { break };
        next = i + 1;
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "could not hand a connection over; dropped it");
                continue;
            }
        };
        let worker = &workers[i];
        worker.open.fetch_add(1, Ordering::Relaxed);
        if worker.connections.send((tcp, peer)).is_err() {
            worker.open.fetch_sub(1, Ordering::Relaxed);
            tracing::error!(thread = i, "an HTTP thread is gone; stopping");
            break;
        }
    }
    drop(listener);
    // Every thread is told at once, so they drain side by side.
    let done: Vec<_> = workers.into_iter().map(|w| w.done).collect();
    let mut result = Ok(());
    for d in done {
        let r = d.await.unwrap_or_else(|_| Err(io::Error::other("an HTTP thread panicked")));
        result = result.and(r);
    }
    result
}

/// The thread with the fewest open connections, the first from `next` on among equals: ties
/// go round, so a burst of new connections spreads over every thread.
fn least_loaded(open: &[usize], next: usize) -> Option<usize> {
    let n = open.len();
    (0..n).map(|k| (next + k) % n).min_by_key(|&i| open[i])
}

fn start_worker(i: usize, service: HubService, drain: Duration) -> io::Result<Worker> {
    let (connections, incoming) = mpsc::unbounded_channel();
    let open = Arc::new(AtomicUsize::new(0));
    let (done_tx, done) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let counted = open.clone();
    std::thread::Builder::new().name(format!("labhub-http-{i}")).spawn(move || {
        let result = runtime.block_on(serve_connections(incoming, counted, service, drain));
        let _ = done_tx.send(result);
    })?;
    Ok(Worker { connections, open, done })
}

/// One thread's work: serve each connection it is given on this thread; once no more will
/// come, drain.
async fn serve_connections(
    mut incoming: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    open: Arc<AtomicUsize>,
    service: HubService,
    drain: Duration,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The CONNECT protocol carries WebSockets over HTTP/2.
    builder.http2().enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    // Tells connections still in the fast lane to finish once their request is answered.
    let stop = CancellationToken::new();
    while let Some((tcp, peer)) = incoming.recv().await {
        let tcp = match TcpStream::from_std(tcp) {
            Ok(tcp) => tcp,
            Err(e) => {
                open.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "could not take over a connection");
                continue;
            }
        };
        // Taken now, so that shutdown waits for this connection whichever path it is on.
        let watcher = graceful.watcher();
        let (service, builder, stop, open) = (service.clone(), builder.clone(), stop.clone(), open.clone());
        tokio::spawn(async move {
            let mut tcp = tcp;
            if let LaneEnd::HandOff(read) = service.serve_plain_gets(&mut tcp, peer, &stop).await {
                let per_request = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    service.respond(req)
                });
                let io = TokioIo::new(Rewind::new(read.freeze(), tcp));
                let conn = watcher.watch(builder.serve_connection_with_upgrades(io, per_request).into_owned());
                if let Err(e) = conn.await {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    stop.cancel();
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(seconds = drain.as_secs(), "open connections did not finish; closing them");
    }
    Ok(())
}

/// A connection the kernel gave up on before we took it costs nothing; running out of file
/// descriptors does, and retrying at once would spin, so that waits a second.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "could not accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::least_loaded;

    #[test]
    fn new_connections_go_to_the_least_busy_thread_and_ties_go_round() {
        assert_eq!(least_loaded(&[3, 1, 2], 0), Some(1));
        assert_eq!(least_loaded(&[0, 0, 0], 0), Some(0));
        assert_eq!(least_loaded(&[0, 0, 0], 1), Some(1));
        assert_eq!(least_loaded(&[0, 0, 0], 5), Some(2));
        assert_eq!(least_loaded(&[1, 0, 1], 2), Some(1));
        assert_eq!(least_loaded(&[], 0), None);
        // A burst from idle: one each in turn.
        let mut open = [0usize; 2];
        let mut next = 0;
        for _ in 0..6 {
            let i = least_loaded(&open, next).unwrap();
            open[i] += 1;
            next = i + 1;
        }
        assert_eq!(open, [3, 3]);
    }
}
