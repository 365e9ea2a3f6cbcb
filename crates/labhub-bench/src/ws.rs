//! A WebSocket load generator: sequential round trips, messages per second over many
//! connections, and connections held open (for the memory check). Every message is a
//! 100-byte (by default) binary frame that the test server echoes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One open WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where to connect and with which extra headers (`Name: value`).
#[derive(Debug, Clone)]
pub struct WsTarget {
    pub url: String,
    pub headers: Vec<String>,
}

/// Opens one WebSocket (Nagle off, like browsers and the proxies under test).
pub async fn connect(t: &WsTarget) -> anyhow::Result<Ws> {
    let mut req = t.url.as_str().into_client_request().with_context(|| format!("bad WebSocket URL {}", t.url))?;
    for h in &t.headers {
        let (k, v) = h.split_once(':').with_context(|| format!("a header is 'Name: value', not {h:?}"))?;
        req.headers_mut().append(HeaderName::from_bytes(k.trim().as_bytes())?, HeaderValue::from_str(v.trim())?);
    }
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
        .await
        .with_context(|| format!("opening {}", t.url))?;
    Ok(ws)
}

/// Sends one message and waits for its echo.
async fn round_trip(ws: &mut Ws, payload: &[u8]) -> anyhow::Result<()> {
    ws.send(Message::binary(payload.to_vec())).await.context("sending")?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) if b.len() == payload.len() => return Ok(()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => bail!("unexpected answer {other:?}"),
            Some(Err(e)) => bail!("receiving: {e}"),
            None => bail!("the connection closed"),
        }
    }
}

/// `n` sequential round trips on one connection per target after `warmup` unrecorded ones;
/// microseconds each, per target. The targets take turns, one round trip each (the first of
/// each turn rotating), so a slower spell of the machine falls on all of them alike.
pub async fn rtt(targets: &[WsTarget], n: usize, warmup: usize, size: usize) -> anyhow::Result<Vec<Vec<f64>>> {
    let mut sockets = Vec::with_capacity(targets.len());
    for t in targets {
        sockets.push(connect(t).await?);
    }
    let payload = vec![b'x'; size];
    let mut out = vec![Vec::with_capacity(n); targets.len()];
    for i in 0..warmup + n {
        for k in 0..sockets.len() {
            let ti = (i + k) % sockets.len();
            let start = Instant::now();
            round_trip(&mut sockets[ti], &payload).await.with_context(|| format!("via {}", targets[ti].url))?;
            if i >= warmup {
                out[ti].push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }
    Ok(out)
}

/// Messages echoed per second over `conns` connections, each with one message in flight at a
/// time (send, wait for the echo, send again), counted over `seconds` after `warmup` seconds.
/// Also returns the connections that failed during the run (with the first error); a failed
/// connection stops counting, the others go on.
pub async fn rate(
    t: &WsTarget,
    conns: usize,
    warmup: f64,
    seconds: f64,
    size: usize,
) -> anyhow::Result<(f64, usize, Option<String>)> {
    let sockets = open_many(t, conns).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let payload: Arc<[u8]> = vec![b'x'; size].into();
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let (counter, stop, payload) = (counter.clone(), stop.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                round_trip(&mut ws, &payload).await?;
                counter.fetch_add(1, Ordering::Relaxed);
            }
            let _ = ws.close(None).await;
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let (c0, t0) = (counter.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let (c1, t1) = (counter.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    let mut first = None;
    for task in tasks {
        if let Err(e) = task.await.context("a WebSocket task panicked")? {
            failed += 1;
            first.get_or_insert_with(|| format!("{e:#}"));
        }
    }
    Ok(((c1 - c0) as f64 / (t1 - t0).as_secs_f64(), failed, first))
}

/// Opens `n` connections (a few at a time) and checks each with one round trip.
pub async fn open_many(t: &WsTarget, n: usize) -> anyhow::Result<Vec<Ws>> {
    let mut out = Vec::with_capacity(n);
    let payload = vec![b'x'; 100];
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        let opened = futures::future::join_all(chunk.iter().map(|_| async {
            let mut ws = connect(t).await?;
            round_trip(&mut ws, &payload).await?;
            anyhow::Ok(ws)
        }))
        .await;
        for ws in opened {
            out.push(ws?);
        }
    }
    Ok(out)
}
