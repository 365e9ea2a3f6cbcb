//! Serving the hub's HTTP: one thread per core (or `worker_threads` of them), each with a
//! single-threaded runtime that owns the connections given to it (as nginx has one worker
//! process per core).
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
//!
//! Sockets are the front door's scarce resource: a client that opens connections and never
//! finishes a request must not hold them. The lane closes a connection whose request head is
//! late (`labhub_web::FrontDoor`), hyper does on the general path (its header read timeout,
//! which needs a timer), and past `max_connections` open ones the acceptor answers new
//! connections 503 and closes them at once, so that running out of file descriptors never
//! stalls accepting for everyone.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use labhub_web::{FrontDoor, HubService, LaneEnd};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::rewind::Rewind;

/// How many HTTP threads to run: as configured, else one per core the hub may use.
fn thread_count(configured: Option<std::num::NonZeroUsize>) -> usize {
    configured.or_else(|| std::thread::available_parallelism().ok()).map_or(1, usize::from)
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
    let max_connections = connection_cap(service.front_door().max_connections, open_file_limit());
    let mut workers = Vec::new();
    for i in 0..thread_count(service.front_door().threads) {
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
        let open: Vec<usize> = workers.iter().map(|w| w.open.load(Ordering::Relaxed)).collect();
        if open.iter().sum::<usize>() >= max_connections {
            refuse(&tcp);
            continue;
        }
        // Small proxied responses must not wait for Nagle's algorithm (nginx sets this too).
        let _ = tcp.set_nodelay(true);
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

/// What a connection past the cap gets: a short answer if the socket takes it at once, then
/// the close (dropping the socket).
fn refuse(tcp: &TcpStream) {
    let _ = tcp.try_write(BUSY);
    metrics::counter!("labhub_connections_refused_total").increment(1);
}

/// The answer to a connection past the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
        content-length: 69\r\nretry-after: 1\r\nconnection: close\r\n\r\n\
        {\"status\": 503, \"message\": \"The hub has too many open connections.\"}\n";

/// Open connections at most: as configured, else a little under half the open-file limit
/// (a proxied connection holds a second descriptor to its server; some are kept for the
/// database, the runtime and files), and at least a few.
fn connection_cap(configured: Option<usize>, open_file_limit: Option<u64>) -> usize {
    const RESERVED: u64 = 256;
    configured.unwrap_or_else(|| match open_file_limit {
        Some(limit) => usize::try_from(limit.saturating_sub(RESERVED) / 2).unwrap_or(usize::MAX).max(16),
        None => 10_000,
    })
}

/// The process's soft limit on open files, from `/proc/self/limits` (Linux).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
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
    let builder = http_builder(service.front_door());
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
            serve_connection(tcp, peer, service, &builder, &stop, watcher).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    stop.cancel();
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(seconds = drain.as_secs(), "open connections did not finish; closing them");
    }
    Ok(())
}

/// hyper, for the connections the fast lane hands over.
fn http_builder(limits: FrontDoor) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The next request's head on a kept-alive connection: hyper starts counting when it
    // starts waiting, so the wait for the request is in it too. Without a timer it is off.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.keep_alive_timeout);
    // The CONNECT protocol carries WebSockets over HTTP/2; pings find dead peers.
    builder
        .http2()
        .enable_connect_protocol()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keep_alive_timeout)
        .keep_alive_timeout(limits.request_head_timeout);
    builder
}

/// One connection, from its first byte to its end: the fast lane first, then, if it hands
/// the connection over, hyper.
async fn serve_connection<IO>(
    mut tcp: IO,
    peer: SocketAddr,
    service: HubService,
    builder: &auto::Builder<TokioExecutor>,
    stop: &CancellationToken,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let LaneEnd::HandOff(read) = service.serve_plain_gets(&mut tcp, peer, stop).await {
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
    use std::time::Duration;

    use hyper_util::server::graceful::GracefulShutdown;
    use labhub_web::HubService;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_util::sync::CancellationToken;

    use super::{BUSY, connection_cap, http_builder, least_loaded, serve_connection};

    /// Only there so that a connection left open fails the test instead of hanging it; the
    /// configured timeouts are a small fraction of it.
    const HANG_GUARD: Duration = Duration::from_secs(30);

    /// The hub's front door with short timeouts, over a database it never reaches (nothing
    /// here asks it).
    fn front_door() -> HubService {
        let mut config = crate::Config::default();
        config.http.request_head_timeout = Duration::from_millis(100);
        config.http.keep_alive_timeout = Duration::from_millis(100);
        let options = "postgres://nobody@127.0.0.1:1/nothing".parse().unwrap();
        let settings = labhub_db::PoolSettings { max_connections: 1, acquire_timeout: Duration::from_secs(1) };
        let pool = labhub_db::connect_lazy(options, settings);
        let overrides = crate::app::Overrides {
            hash_cost: labhub_auth::passwords::HashCost::INSECURE_FOR_TESTS,
            ..Default::default()
        };
        let key = labhub_auth::HubKey::generate();
        crate::app::build(&config, pool, key, crate::app::Runtime::default(), overrides).unwrap().service
    }

    /// A connection to the front door, served on this runtime as an HTTP thread serves one.
    fn connect(service: HubService) -> DuplexStream {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let builder = http_builder(service.front_door());
        tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            let peer = "127.0.0.1:40000".parse().unwrap();
            serve_connection(far, peer, service, &builder, &CancellationToken::new(), graceful.watcher()).await;
        });
        near
    }

    /// Reads until the front door closes the connection; what it sent.
    async fn until_closed(conn: &mut DuplexStream) -> Vec<u8> {
        let mut got = Vec::new();
        let read_all = async {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = conn.read(&mut buf).await {
                got.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(HANG_GUARD, read_all).await.expect("the front door never closed the connection");
        got
    }

    #[tokio::test]
    async fn a_head_that_never_ends_is_closed() {
        let service = front_door();
        let mut silent = connect(service.clone());
        assert_eq!(until_closed(&mut silent).await, b"", "a connection that sends nothing");
        let mut slow = connect(service);
        slow.write_all(b"GET /hub/health HTTP/1.1\r\nHost: hub\r\nX-Padding: ").await.unwrap();
        assert_eq!(until_closed(&mut slow).await, b"", "a head that never ends");
    }

    #[tokio::test]
    async fn a_kept_alive_connection_left_idle_is_closed() {
        let mut conn = connect(front_door());
        // Not the fast lane's: hyper answers it and would keep the connection.
        conn.write_all(b"GET /hub/no-such-page HTTP/1.1\r\nHost: hub\r\n\r\n").await.unwrap();
        let answer = until_closed(&mut conn).await;
        assert!(answer.starts_with(b"HTTP/1.1 404 "), "answered, then closed: {}", String::from_utf8_lossy(&answer));
    }

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), body.len());
        assert!(head.starts_with("HTTP/1.1 503 ") && head.contains("\r\nretry-after: 1"));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }

    #[test]
    fn the_connection_cap_is_as_configured_or_fits_the_open_file_limit() {
        assert_eq!(connection_cap(Some(100), Some(1024)), 100);
        assert_eq!(connection_cap(None, Some(1024)), 384);
        assert_eq!(connection_cap(None, Some(20_000)), 9872);
        assert_eq!(connection_cap(None, Some(100)), 16);
        assert_eq!(connection_cap(None, None), 10_000);
    }

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
