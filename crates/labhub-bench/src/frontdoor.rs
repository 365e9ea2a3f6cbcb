//! The front door under abuse (issues 11-13): thousands of connections that never finish a
//! request head, and a burst of wrong passwords, against a real release hub. Measured: the
//! hub's resident memory, how soon the hub closes the slow sockets (against its configured
//! head timeout), and the latency of `/hub/health` and of a proxied GET meanwhile; the
//! baseline is the same hub idle, in the same run.
//!
//! Every probe opens a fresh connection (`Connection: close`), so a front door that stops
//! accepting or queues new connections behind the slow ones shows in the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::rss_kib;
use crate::stats::{Table, count, millis, ms, percentile, ratio, verdict};

#[derive(clap::Args, Debug)]
pub struct FrontdoorArgs {
    /// The hub's address, `host:port`.
    #[arg(long)]
    pub addr: String,
    /// The hub's process id (its VmRSS is sampled).
    #[arg(long)]
    pub hub_pid: u32,
    /// The session cookie (`name=value`) of the proxied GET's owner.
    #[arg(long)]
    pub cookie: String,
    /// The proxied GET's target (answered by the front door's fast lane).
    #[arg(long, default_value = "/user/bench/download?bytes=1024")]
    pub proxied: String,
    /// The account the burst guesses at.
    #[arg(long, default_value = "bench")]
    pub user: String,
    /// The hub's configured `http.request_head_timeout`, seconds.
    #[arg(long)]
    pub head_timeout: f64,
    /// Connections that never finish a request head.
    #[arg(long, default_value_t = 2000)]
    pub idle: usize,
    /// Wrong-password sign-ins sent at once.
    #[arg(long, default_value_t = 300)]
    pub burst: usize,
    /// Seconds of probing the idle hub (the baseline).
    #[arg(long, default_value_t = 5.0)]
    pub baseline_seconds: f64,
    /// Pause between two probes of the same kind, milliseconds.
    #[arg(long, default_value_t = 10)]
    pub probe_every_ms: u64,
}

/// Latencies of the probes of one phase.
#[derive(Default)]
struct Probes {
    health: Vec<f64>,
    proxied: Vec<f64>,
    errors: Vec<String>,
}

/// One phase's figures.
struct Phase {
    name: String,
    probes: Probes,
    rss_before_kib: u64,
    rss_peak_kib: u64,
}

/// A GET on a fresh connection; its status and the time to the end of the answer.
async fn get(addr: &str, target: &str, cookie: Option<&str>) -> anyhow::Result<(u16, Duration)> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{cookie}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    let status =
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("no status line: {head:?}"))?;
    Ok((status, started.elapsed()))
}

/// Probes `/hub/health` and the proxied GET in turn until `stop` is set.
async fn probe(a: Arc<FrontdoorArgs>, stop: Arc<AtomicBool>) -> Probes {
    let mut p = Probes::default();
    while !stop.load(Ordering::Relaxed) {
        for (target, cookie, into) in [("/hub/health", None, 0), (a.proxied.as_str(), Some(a.cookie.as_str()), 1)] {
            match get(&a.addr, target, cookie).await {
                Ok((200, d)) => [&mut p.health, &mut p.proxied][into].push(ms(d)),
                Ok((status, _)) => p.errors.push(format!("{target}: {status}")),
                Err(e) => p.errors.push(format!("{target}: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(a.probe_every_ms)).await;
    }
    p
}

/// Samples the hub's VmRSS every 10 ms until `stop` is set; the highest seen, KiB.
async fn peak_rss(pid: u32, stop: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok((rss, _)) = rss_kib(pid) {
            peak.fetch_max(rss, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `load` while probing and sampling memory; the phase's figures and `load`'s result.
async fn phase<T>(a: &Arc<FrontdoorArgs>, name: &str, load: impl Future<Output = T>) -> anyhow::Result<(Phase, T)> {
    let (rss_before_kib, _) = rss_kib(a.hub_pid)?;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before_kib));
    let sampler = tokio::spawn(peak_rss(a.hub_pid, stop.clone(), peak.clone()));
    let prober = tokio::spawn(probe(a.clone(), stop.clone()));
    let out = load.await;
    stop.store(true, Ordering::Relaxed);
    let probes = prober.await?;
    sampler.await?;
    let rss_peak_kib = peak.load(Ordering::Relaxed);
    Ok((Phase { name: name.to_string(), probes, rss_before_kib, rss_peak_kib }, out))
}

/// Opens `n` connections that send half a request head and nothing more; for each, how long
/// the hub took to close it (seconds), or `None` if it was still open when given up on.
async fn slow_sockets(addr: &str, n: usize, give_up: Duration) -> anyhow::Result<Vec<Option<f64>>> {
    let mut waiting = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).await.with_context(|| format!("opening slow socket {i}"))?;
        // From the connection's establishment: a connect the kernel had to retry (a full
        // accept queue) is not time the hub held the socket.
        let opened = Instant::now();
        s.write_all(format!("GET /hub/health HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes()).await?;
        waiting.push(tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let closed = async { while s.read(&mut buf).await.is_ok_and(|n| n > 0) {} };
            tokio::time::timeout(give_up.saturating_sub(opened.elapsed()), closed)
                .await
                .ok()
                .map(|()| opened.elapsed().as_secs_f64())
        }));
    }
    let mut closed = Vec::with_capacity(n);
    for w in waiting {
        closed.push(w.await?);
    }
    Ok(closed)
}

/// A sign-in form ready to submit: its client (with the pre-login cookie) and CSRF token.
async fn form(base: &str) -> anyhow::Result<(reqwest::Client, String)> {
    let client =
        reqwest::Client::builder().no_proxy().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build()?;
    let html = client.get(format!("{base}/hub/login")).send().await?.error_for_status()?.text().await?;
    let csrf = crate::api::csrf_of(&html).context("no _csrf field on the login page")?;
    Ok((client, csrf))
}

/// Sends every form at once with a wrong password; the answers' statuses.
async fn burst(base: &str, user: &str, forms: Vec<(reqwest::Client, String)>) -> Vec<u16> {
    let posts = forms.into_iter().map(|(client, csrf)| async move {
        let form = [("_csrf", csrf.as_str()), ("username", user), ("password", "not the password"), ("next", "")];
        // The hub's own origin, as its sign-in page sends it (others are refused unhashed).
        match client.post(format!("{base}/hub/login")).header("Origin", base).form(&form).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    });
    futures::future::join_all(posts).await
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub async fn run(a: FrontdoorArgs) -> anyhow::Result<()> {
    let a = Arc::new(a);
    let base = format!("http://{}", a.addr);
    for (target, cookie) in [("/hub/health", None), (a.proxied.as_str(), Some(a.cookie.as_str()))] {
        let (status, _) = get(&a.addr, target, cookie).await?;
        if status != 200 {
            bail!("{target} answered {status}, not 200");
        }
    }

    let baseline_for = Duration::from_secs_f64(a.baseline_seconds);
    let (idle, ()) = phase(&a, "hub idle (baseline)", tokio::time::sleep(baseline_for)).await?;

    let give_up = Duration::from_secs_f64(a.head_timeout * 2.0 + 10.0);
    let name = format!("{} connections that never finish a head", count(a.idle as f64));
    let (slow, closed) = phase(&a, &name, slow_sockets(&a.addr, a.idle, give_up)).await?;
    let closed = closed?;

    let mut forms = Vec::with_capacity(a.burst);
    for _ in 0..a.burst {
        forms.push(form(&base).await?);
    }
    let name = format!("{} wrong passwords at once", count(a.burst as f64));
    let (burst_phase, statuses) = phase(&a, &name, async {
        let statuses = burst(&base, &a.user, forms).await;
        // Blocking threads may still be hashing answers already given up on.
        tokio::time::sleep(Duration::from_secs(1)).await;
        statuses
    })
    .await?;

    println!("== Latency of new connections meanwhile (ms; probes alternate /hub/health and the proxied GET) ==");
    let mut t = Table::new(&[
        "phase",
        "health p50",
        "health p99",
        "p99 / idle",
        "proxied p50",
        "proxied p99",
        "p99 / idle",
        "probes",
        "errors",
    ]);
    let idle_p99 = (percentile(&idle.probes.health, 99.0), percentile(&idle.probes.proxied, 99.0));
    for p in [&idle, &slow, &burst_phase] {
        let (h99, p99) = (percentile(&p.probes.health, 99.0), percentile(&p.probes.proxied, 99.0));
        t.row(vec![
            p.name.clone(),
            millis(percentile(&p.probes.health, 50.0)),
            millis(h99),
            ratio(h99, idle_p99.0),
            millis(percentile(&p.probes.proxied, 50.0)),
            millis(p99),
            ratio(p99, idle_p99.1),
            count((p.probes.health.len() + p.probes.proxied.len()) as f64),
            count(p.probes.errors.len() as f64),
        ]);
    }
    t.print();
    for p in [&idle, &slow, &burst_phase] {
        if let Some(e) = p.probes.errors.first() {
            println!("  {}: {} failed probes, e.g. {e}", p.name, p.probes.errors.len());
        }
    }

    println!();
    println!("== Hub resident memory (VmRSS) ==");
    let mut t = Table::new(&["phase", "before", "peak", "growth"]);
    for p in [&idle, &slow, &burst_phase] {
        let growth = p.rss_peak_kib.saturating_sub(p.rss_before_kib);
        t.row(vec![p.name.clone(), mib(p.rss_before_kib), mib(p.rss_peak_kib), mib(growth)]);
    }
    t.print();

    println!();
    println!("== Slow sockets (half a request head, then nothing) ==");
    let times: Vec<f64> = closed.iter().flatten().copied().collect();
    let still_open = closed.len() - times.len();
    let early = times.iter().filter(|s| **s < a.head_timeout * 0.9).count();
    println!(
        "  {} opened; closed by the hub: {} (p50 {:.2} s, p99 {:.2} s, max {:.2} s after opening); configured head timeout {:.1} s; closed before 90% of it: {}; still open after {:.0} s: {}",
        count(closed.len() as f64),
        count(times.len() as f64),
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        percentile(&times, 100.0),
        a.head_timeout,
        count(early as f64),
        give_up.as_secs_f64(),
        count(still_open as f64),
    );

    println!();
    println!("== Sign-in burst ==");
    let of = |code: u16| statuses.iter().filter(|s| **s == code).count();
    println!(
        "  {} sent: 401 (checked against the hash) {}, 429 (throttled) {}, 503 (hashing full) {}, other {}",
        count(statuses.len() as f64),
        of(401),
        of(429),
        of(503),
        statuses.len() - of(401) - of(429) - of(503),
    );

    println!();
    println!("Targets:");
    let growth = burst_phase.rss_peak_kib.saturating_sub(burst_phase.rss_before_kib);
    verdict("RSS grows < 100 MiB during the burst", growth < 100 * 1024, &format!("grew {}", mib(growth)));
    let slowest = percentile(&times, 100.0);
    verdict(
        "slow sockets closed within the head timeout (+1 s for scheduling)",
        still_open == 0 && slowest <= a.head_timeout + 1.0,
        &format!("all {} closed, the last {slowest:.2} s after opening (timeout {:.1} s)", times.len(), a.head_timeout),
    );
    let worst =
        [&idle, &slow, &burst_phase].iter().map(|p| percentile(&p.probes.health, 99.0)).fold(f64::NAN, f64::max);
    let failed: usize = [&idle, &slow, &burst_phase].iter().map(|p| p.probes.errors.len()).sum();
    verdict(
        "/hub/health p99 < 50 ms throughout",
        worst < 50.0 && failed == 0,
        &format!("worst phase p99 {}, failed probes {failed}", millis(worst)),
    );
    Ok(())
}
