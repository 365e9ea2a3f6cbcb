//! 1 GiB down and up through the proxy with bounded memory. A binary of its own, so no
//! other test's allocations blur the resident-memory measurement.

#[path = "proxy/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use labhub_core::ImageKind;

use common::*;

const GIB: u64 = 1 << 30;
const LIMIT: u64 = 64 << 20;

/// Samples this process's resident memory until dropped, keeping the peak.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakRss {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss_bytes()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.fetch_max(rss_bytes(), Ordering::Relaxed).max(rss_bytes())
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_down_and_up_in_bounded_memory() {
    let up = Upstream::start().await;
    let hub = Hub::start(settings()).await;
    hub.add("alice", None, up.addr, ImageKind::Jupyter);
    let c = client();

    // Warm up the pools and allocator so the baseline includes the steady state.
    let warm = c.get(hub.url("/user/alice/download?bytes=16777216")).send().await.unwrap();
    assert_eq!(warm.bytes().await.unwrap().len(), 16 << 20);

    let before = rss_bytes();
    let sampler = PeakRss::start();
    let start = Instant::now();
    let r = c.get(hub.url("/user/alice/download?bytes=1073741824")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], GIB.to_string().as_str());
    let mut stream = r.bytes_stream();
    let mut got: u64 = 0;
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, GIB);
    let down_time = start.elapsed();
    let down_peak = sampler.peak();
    drop(sampler);
    eprintln!(
        "download: 1 GiB in {down_time:?}; RSS before {:.1} MiB, peak {:.1} MiB (+{:.1} MiB), after {:.1} MiB",
        mib(before),
        mib(down_peak),
        mib(down_peak.saturating_sub(before)),
        mib(rss_bytes())
    );
    assert!(down_peak.saturating_sub(before) < LIMIT, "download grew RSS by {:.1} MiB", mib(down_peak - before));

    static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
    let before = rss_bytes();
    let sampler = PeakRss::start();
    let start = Instant::now();
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
    let up_time = start.elapsed();
    let up_peak = sampler.peak();
    drop(sampler);
    eprintln!(
        "upload: 1 GiB in {up_time:?}; RSS before {:.1} MiB, peak {:.1} MiB (+{:.1} MiB), after {:.1} MiB",
        mib(before),
        mib(up_peak),
        mib(up_peak.saturating_sub(before)),
        mib(rss_bytes())
    );
    assert!(up_peak.saturating_sub(before) < LIMIT, "upload grew RSS by {:.1} MiB", mib(up_peak - before));
    assert!(eventually(Duration::from_secs(1), || hub.proxy.in_flight() == 0).await);
}
