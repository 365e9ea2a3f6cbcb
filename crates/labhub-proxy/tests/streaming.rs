//! Large bodies through the proxy: 1 GiB down and up arrives whole, and a side that stops
//! reading stops the other side's writer (back-pressure), so the proxy never holds a body in
//! memory. The hub's resident memory while streaming is a figure of `bench/proxy.sh`, not a
//! test: a test asserts what the proxy does, the bench measures what it costs.

#[path = "proxy/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use labhub_core::ImageKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

const GIB: u64 = 1 << 30;
/// What the two loopback connections' socket buffers and the proxy's own buffers may hold
/// between a writer and a reader that stopped; a proxy that buffered bodies would take the
/// whole gibibyte.
const IN_FLIGHT_LIMIT: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_down_and_up_whole() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let c = client();

    let r = c.get(hub.url("/user/alice/download?bytes=1073741824")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], GIB.to_string().as_str());
    let mut stream = r.bytes_stream();
    let mut got: u64 = 0;
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, GIB);

    static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
    let chunks = futures::stream::iter(0..1024).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&ZEROS)));
    let r = c
        .post(hub.url("/user/alice/upload"))
        .header("content-length", GIB.to_string())
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), GIB.to_string());
    assert!(eventually(Duration::from_secs(1), || hub.proxy.in_flight() == 0).await);
}

/// Waits until `count` stops moving (unchanged over 20 samples 25 ms apart), up to a minute,
/// and returns where it stopped; a count still moving after a minute is returned as it is.
async fn where_it_stops(count: &AtomicU64) -> u64 {
    let (mut last, mut still) = (count.load(Ordering::SeqCst), 0);
    for _ in 0..2400 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = count.load(Ordering::SeqCst);
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still == 20 {
            break;
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stops_the_server_writing() {
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let (addr, _) = counting_raw_upstream(move |mut stream| {
        let counter = counter.clone();
        async move {
            if !read_request_head(&mut stream).await {
                return;
            }
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {GIB}\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 << 10];
            while counter.load(Ordering::SeqCst) < GIB && stream.write_all(&chunk).await.is_ok() {
                counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
    })
    .await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, addr, ImageKind::Jupyter);

    let r = client().get(hub.url("/user/alice/big")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // The client now reads nothing more.
    let stopped_at = where_it_stops(&written).await;
    assert!(stopped_at < IN_FLIGHT_LIMIT, "the server wrote {} MiB to a client that stopped reading", stopped_at >> 20);
    drop(body);
    assert!(eventually(Duration::from_secs(10), || hub.proxy.in_flight() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_reading_stops_the_client_uploading() {
    let (addr, _) = counting_raw_upstream(|mut stream| async move {
        if !read_request_head(&mut stream).await {
            return;
        }
        let mut buf = vec![0u8; 1 << 20];
        let _ = stream.read_exact(&mut buf).await;
        // Reads nothing more, and keeps the connection open until the test is over.
        std::future::pending::<()>().await;
    })
    .await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, addr, ImageKind::Jupyter);

    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let chunks = futures::stream::iter(0..(GIB / (64 << 10))).map(move |_| {
        counter.fetch_add(ZEROS.len() as u64, Ordering::SeqCst);
        Ok::<_, std::io::Error>(Bytes::from_static(&ZEROS))
    });
    let upload = tokio::spawn(
        client()
            .post(hub.url("/user/alice/upload"))
            .header("content-length", GIB.to_string())
            .body(reqwest::Body::wrap_stream(chunks))
            .send(),
    );
    let stopped_at = where_it_stops(&sent).await;
    assert!(stopped_at >= 1 << 20, "the upload never started");
    assert!(stopped_at < IN_FLIGHT_LIMIT, "the client sent {} MiB to a server that stopped reading", stopped_at >> 20);
    upload.abort();
}
