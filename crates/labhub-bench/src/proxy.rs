//! Issue 4's benchmark: one upstream (the tiny test server in its container) reached
//! directly, through labhub's proxy (a real hub, a real route, a valid session cookie) and
//! through nginx as a reverse proxy, in one run; HTTP with wrk, WebSockets with our own
//! load generator; then the hub's resident memory with routes and open WebSockets.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::stats::{Table, count, median, micros, percentile, ratio, verdict};
use crate::wrk::{self, WrkResult, WrkRun};
use crate::ws::{self, WsTarget};

#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// The upstream's base URL reached directly, e.g. http://172.18.0.2:8888/user/bench/.
    #[arg(long)]
    pub direct: String,
    /// The upstream's token (sent as `Authorization: token …` on direct requests; nginx and
    /// labhub inject it themselves).
    #[arg(long)]
    pub upstream_token: String,
    /// The same base through labhub, e.g. http://127.0.0.1:18002/user/bench/.
    #[arg(long)]
    pub labhub: String,
    /// The session cookie for labhub, `name=value`.
    #[arg(long)]
    pub cookie: String,
    /// The same base through nginx.
    #[arg(long)]
    pub nginx: String,
    /// A session cookie of a visitor the server is shared with (`name=value`): adds the
    /// path "visitor" (labhub, the share index consulted on every request) beside the owner's.
    #[arg(long)]
    pub visitor_cookie: Option<String>,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// wrk runs per cell, interleaved over the three targets; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Response sizes, bytes.
    #[arg(long, value_delimiter = ',', default_value = "1024,1048576")]
    pub sizes: Vec<u64>,
    /// Concurrencies.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub concurrency: Vec<u32>,
    /// Sequential WebSocket round trips timed per target.
    #[arg(long, default_value_t = 2000)]
    pub ws_rtt: usize,
    /// WebSocket connections for the messages/s test.
    #[arg(long, default_value_t = 50)]
    pub ws_conns: usize,
    /// Seconds of the messages/s test (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub ws_seconds: f64,
    /// WebSocket message size, bytes.
    #[arg(long, default_value_t = 100)]
    pub ws_size: usize,
    /// The real hub's process id (its resident memory is read with WebSockets open).
    #[arg(long)]
    pub hub_pid: Option<u32>,
    /// The real hub's data directory: enables the in-process hub for the 1,000-route check.
    #[arg(long)]
    pub data_dir: Option<String>,
    /// The upstream's address, for the in-process hub's routes.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The user whose server is the upstream.
    #[arg(long, default_value = "bench")]
    pub user: String,
    /// An admin's API token (to send one request through every route of the in-process hub).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Routes in the in-process hub.
    #[arg(long, default_value_t = 1000)]
    pub mem_routes: usize,
    /// WebSockets held open for the memory check.
    #[arg(long, default_value_t = 200)]
    pub mem_ws: usize,
}

/// `http://host:port/…` → `http://host:port`.
fn origin_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |x| x.1);
    let host = rest.split('/').next().unwrap_or(rest);
    format!("http://{host}")
}

fn ws_url(base: &str) -> String {
    format!("{}ws/echo", base.replacen("http://", "ws://", 1))
}

struct Target {
    name: &'static str,
    base: String,
    headers: Vec<String>,
}

/// Checks that `base`download answers 200 with exactly `size` bytes.
async fn check(t: &Target, size: u64) -> anyhow::Result<()> {
    let c = reqwest::Client::builder().no_proxy().build()?;
    let mut req = c.get(format!("{}download?bytes={size}", t.base));
    for h in &t.headers {
        let (k, v) = h.split_once(':').context("header")?;
        req = req.header(k.trim(), v.trim());
    }
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if status != reqwest::StatusCode::OK || body.len() as u64 != size {
        bail!("{} ({}): {status} with {} bytes, expected 200 with {size}", t.name, t.base, body.len());
    }
    Ok(())
}

/// Resident and peak resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("no process {pid}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The visitor's HTTP figures against the owner's, measured in the same rounds: the share
/// index is consulted on every visitor's request (the owner's never reaches it).
fn visitor_http(
    cells: &[(u64, u32)],
    res: &[Vec<Vec<WrkResult>>],
    size_name: &dyn Fn(u64) -> String,
) -> Vec<(String, bool, String)> {
    let med = |v: &[WrkResult], f: fn(&WrkResult) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    println!("== A shared visitor against the owner (the same hub, route and rounds) ==");
    let mut t =
        Table::new(&["response", "conns", "owner req/s", "visitor req/s", "visitor/owner", "p50 owner", "p50 visitor"]);
    let mut verdicts = Vec::new();
    for (ci, &(size, conns)) in cells.iter().enumerate() {
        let (owner, visitor) = (&res[ci][2], &res[ci][3]);
        let (o, v) = (med(owner, |r| r.rps), med(visitor, |r| r.rps));
        t.row(vec![
            size_name(size),
            conns.to_string(),
            count(o),
            count(v),
            ratio(v, o),
            micros(med(owner, |r| r.p50_us)),
            micros(med(visitor, |r| r.p50_us)),
        ]);
        verdicts.push((
            format!("a shared visitor within 10% of the owner, {} at {conns} connections", size_name(size)),
            v >= 0.9 * o,
            format!("visitor {} req/s, owner {} req/s ({}x)", count(v), count(o), ratio(v, o)),
        ));
    }
    t.print();
    println!();
    verdicts
}

pub async fn run(a: ProxyArgs) -> anyhow::Result<()> {
    let labhub_origin = origin_of(&a.labhub);
    // direct, nginx, labhub (the owner) in that order; then the visitor, when asked for.
    let mut targets = vec![
        Target {
            name: "direct",
            base: a.direct.clone(),
            headers: vec![format!("Authorization: token {}", a.upstream_token)],
        },
        Target { name: "nginx", base: a.nginx.clone(), headers: vec![] },
        Target {
            name: "labhub",
            base: a.labhub.clone(),
            headers: vec![format!("Cookie: {}", a.cookie), format!("Origin: {labhub_origin}")],
        },
    ];
    if let Some(cookie) = &a.visitor_cookie {
        targets.push(Target {
            name: "visitor",
            base: a.labhub.clone(),
            headers: vec![format!("Cookie: {cookie}"), format!("Origin: {labhub_origin}")],
        });
    }
    for t in &targets {
        for &s in &a.sizes {
            check(t, s).await?;
        }
    }
    let rss_before = a.hub_pid.map(rss_kib).transpose()?;

    // ---------------- HTTP ----------------
    println!(
        "== HTTP through each path (wrk -t{} --latency, {} s x {} rounds per cell, interleaved; medians) ==",
        a.threads, a.seconds, a.rounds
    );
    let cells: Vec<(u64, u32)> = a.sizes.iter().flat_map(|&s| a.concurrency.iter().map(move |&c| (s, c))).collect();
    let mut res: Vec<Vec<Vec<WrkResult>>> = vec![vec![Vec::new(); targets.len()]; cells.len()];
    for t in &targets {
        let url = format!("{}download?bytes=1024", t.base);
        wrk::run(&WrkRun { url: &url, connections: 64, threads: a.threads, seconds: 2, headers: &t.headers })?;
    }
    for round in 0..a.rounds {
        eprintln!("proxy: wrk round {}/{}", round + 1, a.rounds);
        for (ci, &(size, conns)) in cells.iter().enumerate() {
            for (ti, t) in targets.iter().enumerate() {
                let url = format!("{}download?bytes={size}", t.base);
                let r = wrk::run(&WrkRun {
                    url: &url,
                    connections: conns,
                    threads: a.threads,
                    seconds: a.seconds,
                    headers: &t.headers,
                })?;
                if r.errors > 0 {
                    bail!("{} {size} B c{conns}: {} errors or non-2xx answers", t.name, r.errors);
                }
                res[ci][ti].push(r);
            }
        }
    }
    let med = |v: &[WrkResult], f: fn(&WrkResult) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let size_name = |s: u64| if s >= 1 << 20 { format!("{} MiB", s >> 20) } else { format!("{} KiB", s >> 10) };
    let mut t = Table::new(&["response", "conns", "path", "req/s", "p50", "p90", "p99", "vs direct"]);
    for (ci, &(size, conns)) in cells.iter().enumerate() {
        let d = med(&res[ci][0], |r| r.rps);
        for (ti, tg) in targets.iter().enumerate() {
            let rs = &res[ci][ti];
            t.row(vec![
                if ti == 0 { size_name(size) } else { String::new() },
                if ti == 0 { conns.to_string() } else { String::new() },
                tg.name.to_string(),
                count(med(rs, |r| r.rps)),
                micros(med(rs, |r| r.p50_us)),
                micros(med(rs, |r| r.p90_us)),
                micros(med(rs, |r| r.p99_us)),
                ratio(med(rs, |r| r.rps), d),
            ]);
        }
    }
    t.print();
    println!();
    let mut t = Table::new(&[
        "response",
        "conns",
        "labhub/direct",
        "nginx/direct",
        "labhub/nginx",
        "p50 added: labhub",
        "p50 added: nginx",
    ]);
    let mut verdicts = Vec::new();
    for (ci, &(size, conns)) in cells.iter().enumerate() {
        let rps: Vec<f64> = (0..3).map(|ti| med(&res[ci][ti], |r| r.rps)).collect();
        let p50: Vec<f64> = (0..3).map(|ti| med(&res[ci][ti], |r| r.p50_us)).collect();
        t.row(vec![
            size_name(size),
            conns.to_string(),
            ratio(rps[2], rps[0]),
            ratio(rps[1], rps[0]),
            ratio(rps[2], rps[1]),
            micros(p50[2] - p50[0]),
            micros(p50[1] - p50[0]),
        ]);
        verdicts.push((
            format!("throughput >= nginx's, {} at {conns} connections", size_name(size)),
            rps[2] >= rps[1],
            format!("labhub {} req/s, nginx {} req/s ({}x)", count(rps[2]), count(rps[1]), ratio(rps[2], rps[1])),
        ));
        if conns == 1 {
            verdicts.push((
                format!("median latency added <= nginx's, {} at 1 connection", size_name(size)),
                p50[2] - p50[0] <= p50[1] - p50[0],
                format!("labhub +{}, nginx +{}", micros(p50[2] - p50[0]), micros(p50[1] - p50[0])),
            ));
        }
    }
    t.print();
    println!();
    if targets.len() > 3 {
        verdicts.extend(visitor_http(&cells, &res, &size_name));
    }

    // ---------------- WebSockets ----------------
    println!(
        "== WebSockets ({} B binary messages echoed by the test server; RTT: {} sequential per path, the paths in turn; rate: {} connections, one message in flight each, {} s) ==",
        a.ws_size, a.ws_rtt, a.ws_conns, a.ws_seconds
    );
    let ws_targets: Vec<WsTarget> =
        targets.iter().map(|tg| WsTarget { url: ws_url(&tg.base), headers: tg.headers.clone() }).collect();
    eprintln!("proxy: WebSocket round trips, the three paths in turn");
    let rtts = ws::rtt(&ws_targets, a.ws_rtt, 200, a.ws_size).await.context("WebSocket round trips")?;
    let mut rates = Vec::new();
    let mut ws_failures: Vec<String> = Vec::new();
    for (tg, wt) in targets.iter().zip(&ws_targets) {
        eprintln!("proxy: WebSocket messages/s via {}", tg.name);
        let (m, failed, why) = ws::rate(wt, a.ws_conns, 1.0, a.ws_seconds, a.ws_size)
            .await
            .with_context(|| format!("WebSocket rate via {}", tg.name))?;
        if failed > 0 {
            ws_failures.push(format!(
                "{}: {failed} of {} connections failed during the run ({})",
                tg.name,
                a.ws_conns,
                why.unwrap_or_default()
            ));
        }
        rates.push(m);
    }
    let mut t = Table::new(&[
        "path",
        "RTT p50",
        "RTT p99",
        "RTT added (p50)",
        &format!("msgs/s, {} conns", a.ws_conns),
        "vs direct",
    ]);
    for (ti, tg) in targets.iter().enumerate() {
        t.row(vec![
            tg.name.to_string(),
            micros(median(&rtts[ti])),
            micros(percentile(&rtts[ti], 99.0)),
            if ti == 0 { "-".into() } else { micros(median(&rtts[ti]) - median(&rtts[0])) },
            count(rates[ti]),
            ratio(rates[ti], rates[0]),
        ]);
    }
    t.print();
    println!("  labhub/nginx msgs/s: {}", ratio(rates[2], rates[1]));
    if targets.len() > 3 {
        println!("  visitor/owner msgs/s: {}", ratio(rates[3], rates[2]));
        verdicts.push((
            "a shared visitor's WebSocket msgs/s within 10% of the owner's".into(),
            rates[3] >= 0.9 * rates[2],
            format!("visitor {} msgs/s, owner {} msgs/s", count(rates[3]), count(rates[2])),
        ));
    }
    for f in &ws_failures {
        println!("  FAILED CONNECTIONS: {f}");
    }
    let (added_l, added_n) = (median(&rtts[2]) - median(&rtts[0]), median(&rtts[1]) - median(&rtts[0]));
    verdicts.push((
        "WebSocket round trip added <= nginx's".into(),
        added_l <= added_n,
        format!("labhub +{}, nginx +{}", micros(added_l), micros(added_n)),
    ));
    verdicts.push((
        format!(">= 15,000 msgs/s over {} connections through labhub", a.ws_conns),
        rates[2] >= 15_000.0 && ws_failures.iter().all(|f| !f.starts_with("labhub")),
        format!(
            "{} msgs/s{}",
            count(rates[2]),
            if ws_failures.iter().any(|f| f.starts_with("labhub")) {
                " (with failed connections, see above)"
            } else {
                ""
            }
        ),
    ));
    println!();

    // ---------------- Memory ----------------
    println!("== Resident memory of the hub process (VmRSS; the embedded Postgres is separate) ==");
    let mut t = Table::new(&["hub", "state", "RSS", "peak (VmHWM)"]);
    if let Some(pid) = a.hub_pid {
        if let Some((rss, _)) = rss_before {
            t.row(vec!["real hub (binary)".into(), "1 route, before the load above".into(), mib(rss), "-".into()]);
        }
        let (rss, hwm) = rss_kib(pid)?;
        t.row(vec!["real hub (binary)".into(), "after the load above, idle".into(), mib(rss), mib(hwm)]);
        let wt = WsTarget { url: ws_url(&a.labhub), headers: targets[2].headers.clone() };
        let held = ws::open_many(&wt, a.mem_ws).await.context("opening WebSockets through the real hub")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss, hwm) = rss_kib(pid)?;
        t.row(vec!["real hub (binary)".into(), format!("1 route, {} WebSockets open", held.len()), mib(rss), mib(hwm)]);
        drop(held);
    }
    let mut mem_verdict = None;
    if let (Some(data_dir), Some(endpoint), Some(admin)) = (&a.data_dir, &a.endpoint, &a.admin_token) {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["memhub", "--data-dir", data_dir, "--endpoint", endpoint, "--upstream-token", &a.upstream_token])
            .args(["--user", &a.user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the in-process hub")?;
        let result = async {
            let pid = child.id();
            let mut stdin = child.stdin.take().context("stdin")?;
            let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            let url = line.trim().strip_prefix("READY ").with_context(|| format!("memhub said {line:?}"))?.to_string();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (rss, _) = rss_kib(pid)?;
            t.row(vec!["in-process hub (app::build)".into(), "no routes, idle".into(), mib(rss), "-".into()]);
            writeln!(stdin, "routes {}", a.mem_routes)?;
            line.clear();
            stdout.read_line(&mut line)?;
            if !line.starts_with("OK") {
                bail!("memhub answered {line:?}");
            }
            let (rss, _) = rss_kib(pid)?;
            t.row(vec!["in-process hub".into(), format!("{} routes, never used", a.mem_routes), mib(rss), "-".into()]);
            // One request through every route (as the admin): each route gets its pool and a
            // kept-alive upstream socket.
            let c = reqwest::Client::builder().no_proxy().build()?;
            let users: Vec<String> =
                (0..a.mem_routes).map(|i| if i == 0 { a.user.clone() } else { format!("r{i:04}") }).collect();
            for chunk in users.chunks(16) {
                let answers = futures::future::join_all(chunk.iter().map(|u| {
                    c.get(format!("{url}/user/{u}/api")).header("Authorization", format!("token {admin}")).send()
                }))
                .await;
                for (u, r) in chunk.iter().zip(answers) {
                    let r = r?;
                    // Only the real user's base URL exists upstream; the others answer 404 from the
                    // test server itself, which proves the request went through the route.
                    let upstream =
                        r.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
                    if !(r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND) || !upstream {
                        bail!("request through route {u} answered {}", r.status());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (rss, _) = rss_kib(pid)?;
            t.row(vec![
                "in-process hub".into(),
                format!("{} routes, each used once", a.mem_routes),
                mib(rss),
                "-".into(),
            ]);
            let headers = vec![format!("Cookie: {}", a.cookie), format!("Origin: {}", origin_of(&url))];
            let wt =
                WsTarget { url: format!("{}/user/{}/ws/echo", url.replacen("http://", "ws://", 1), a.user), headers };
            let held = ws::open_many(&wt, a.mem_ws).await.context("opening WebSockets through the in-process hub")?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (rss, hwm) = rss_kib(pid)?;
            t.row(vec![
                "in-process hub".into(),
                format!("{} routes + {} WebSockets open", a.mem_routes, held.len()),
                mib(rss),
                mib(hwm),
            ]);
            // The same bulk traffic the real hub served above, with the WebSockets still open:
            // what the allocator keeps after buffers of many large responses were in flight.
            let bulk = format!("{url}/user/{}/download?bytes=1048576", a.user);
            let cookie = vec![format!("Cookie: {}", a.cookie)];
            wrk::run(&WrkRun {
                url: &bulk,
                connections: 64,
                threads: a.threads,
                seconds: a.seconds,
                headers: &cookie,
            })?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (after, hwm) = rss_kib(pid)?;
            t.row(vec![
                "in-process hub".into(),
                format!("same, after {} s of 1 MiB x 64 connections", a.seconds),
                mib(after),
                mib(hwm),
            ]);
            drop(held);
            drop(stdin);
            anyhow::Ok((rss, after))
        }
        .await;
        crate::startup::terminate(&mut child, Duration::from_secs(10));
        let (rss, after) = result?;
        mem_verdict = Some(vec![
            (
                format!("whole hub <= 64 MiB resident with {} routes and {} open WebSockets", a.mem_routes, a.mem_ws),
                rss <= 64 * 1024,
                mib(rss),
            ),
            (
                "the same after bulk traffic (1 MiB responses at 64 connections)".to_string(),
                after <= 64 * 1024,
                mib(after),
            ),
        ]);
    }
    t.print();
    println!();
    verdicts.extend(mem_verdict.into_iter().flatten());
    println!("Targets:");
    for (name, met, detail) in &verdicts {
        verdict(name, *met, detail);
    }
    if !ws_failures.is_empty() {
        bail!("WebSocket connections failed under load: {}", ws_failures.join("; "));
    }
    Ok(())
}
