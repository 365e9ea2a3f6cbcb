//! Issue 2's benchmark: the cost of a password login (argon2id) and of authenticated API
//! requests, against the unauthenticated `GET /hub/api` measured in the same run.

use std::time::Instant;

use anyhow::{Context, bail};
use labhub_auth::passwords::HashCost;
use labhub_auth::{HashingLimits, PasswordHasher};
use labhub_core::Secret;

use crate::stats::{Table, count, median, micros, millis, ms, percentile, ratio, verdict};
use crate::wrk::{self, WrkResult, WrkRun};

/// What `labhub-bench api` needs.
#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// The hub, e.g. http://127.0.0.1:18000 (no trailing slash).
    #[arg(long)]
    pub url: String,
    /// A user with a password.
    #[arg(long)]
    pub user: String,
    /// That user's password.
    #[arg(long)]
    pub password: String,
    /// An API token of that user.
    #[arg(long)]
    pub token: String,
    /// The hub's session cookie name.
    #[arg(long, default_value = "labhub-session")]
    pub cookie_name: String,
    /// Sequential logins to time.
    #[arg(long, default_value_t = 40)]
    pub logins: usize,
    /// Bare argon2id verifications to time.
    #[arg(long, default_value_t = 20)]
    pub hashes: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// wrk runs per cell (interleaved over the targets); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Concurrencies to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub concurrency: Vec<u32>,
}

/// A form's hidden `_csrf` value.
pub(crate) fn csrf_of(html: &str) -> Option<String> {
    let marker = "name=\"_csrf\" value=\"";
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

/// One login as a fresh browser would do it: GET the form (CSRF token and pre-login
/// cookie), POST it. Returns (whole, POST only) in milliseconds and the session cookie.
pub async fn login_once(
    url: &str,
    user: &str,
    password: &str,
    cookie_name: &str,
) -> anyhow::Result<(f64, f64, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("an HTTP client")?;
    let t0 = Instant::now();
    let html = client.get(format!("{url}/hub/login")).send().await?.error_for_status()?.text().await?;
    let csrf = csrf_of(&html).context("no _csrf field on the login page")?;
    let t1 = Instant::now();
    let resp = client
        .post(format!("{url}/hub/login"))
        // As a browser does: the hub takes sign-ins only from its own pages.
        .header("Origin", url.trim_end_matches('/'))
        .form(&[("_csrf", csrf.as_str()), ("username", user), ("password", password), ("next", "")])
        .send()
        .await?;
    let status = resp.status();
    let cookie =
        resp.headers().get_all(reqwest::header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
            c.strip_prefix(&format!("{cookie_name}=")).map(|rest| rest.split(';').next().unwrap_or("").to_string())
        });
    let _ = resp.bytes().await;
    let t2 = Instant::now();
    if status != reqwest::StatusCode::SEE_OTHER {
        bail!("login answered {status}, not 303 (wrong password, or throttled?)");
    }
    let cookie = cookie.filter(|c| !c.is_empty()).context("the login set no session cookie")?;
    Ok((ms(t2 - t0), ms(t2 - t1), cookie))
}

/// Checks that a target answers 200 (and, for `/hub/api/user`, names the user).
async fn check(url: &str, headers: &[String], expect_name: Option<&str>) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut req = client.get(url);
    for h in headers {
        let (k, v) = h.split_once(':').context("header")?;
        req = req.header(k.trim(), v.trim());
    }
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {body}");
    }
    if let Some(name) = expect_name {
        let v: serde_json::Value = serde_json::from_str(&body).context("a JSON user model")?;
        if v["name"] != name {
            bail!("{url} answered for {:?}, not {name}", v["name"]);
        }
    }
    Ok(())
}

pub async fn run(a: ApiArgs) -> anyhow::Result<()> {
    println!("== Login (argon2id, HashCost::DEFAULT = 19 MiB, 2 iterations, 1 lane) ==");
    // The bare hashing cost, on this process's blocking pool like the hub's.
    let hasher = PasswordHasher::new(HashCost::DEFAULT, HashingLimits::for_this_machine())?;
    let stored = hasher.hash(Secret::new("bench-password-123".into())).await?;
    let mut verify_ms = Vec::new();
    for _ in 0..a.hashes {
        let t = Instant::now();
        let ok = hasher.verify(Secret::new("bench-password-123".into()), Some(stored.clone())).await?;
        verify_ms.push(ms(t.elapsed()));
        if !ok {
            bail!("argon2 verification failed");
        }
    }

    // Warm up (connection, caches), then time sequential logins.
    let (_, _, cookie) = login_once(&a.url, &a.user, &a.password, &a.cookie_name).await?;
    let mut whole = Vec::new();
    let mut post = Vec::new();
    for _ in 0..a.logins {
        let (w, p, _) = login_once(&a.url, &a.user, &a.password, &a.cookie_name).await?;
        whole.push(w);
        post.push(p);
    }
    let mut t = Table::new(&["what", "n", "median", "p99", "min", "max"]);
    let stat_row = |name: &str, v: &[f64]| {
        vec![
            name.to_string(),
            v.len().to_string(),
            millis(median(v)),
            millis(percentile(v, 99.0)),
            millis(percentile(v, 0.0)),
            millis(percentile(v, 100.0)),
        ]
    };
    t.row(stat_row("argon2id verify alone (in-process)", &verify_ms));
    t.row(stat_row("POST /hub/login (303, session set)", &post));
    t.row(stat_row("GET /hub/login + POST (CSRF round trip)", &whole));
    t.print();
    println!(
        "  login minus bare hashing (HTTP, CSRF, throttle, DB, session insert): {}",
        millis(median(&post) - median(&verify_ms))
    );
    println!();

    let base = format!("{}/hub/api", a.url);
    let me = format!("{}/hub/api/user", a.url);
    let token_h = vec![format!("Authorization: token {}", a.token)];
    let cookie_h = vec![format!("Cookie: {}={cookie}", a.cookie_name)];
    check(&base, &[], None).await?;
    check(&me, &token_h, Some(&a.user)).await?;
    check(&me, &cookie_h, Some(&a.user)).await?;
    let targets: [(&str, &str, &[String]); 3] = [
        ("GET /hub/api, no auth [baseline]", &base, &[]),
        ("GET /hub/api/user, token", &me, &token_h),
        ("GET /hub/api/user, session cookie", &me, &cookie_h),
    ];

    println!(
        "== API requests (wrk -t{} --latency, {} s x {} rounds per cell, median of rounds) ==",
        a.threads, a.seconds, a.rounds
    );
    for (_, url, headers) in &targets {
        wrk::run(&WrkRun { url, connections: 64, threads: a.threads, seconds: 2, headers })?;
    }
    let mut results: Vec<Vec<Vec<WrkResult>>> = vec![vec![Vec::new(); a.concurrency.len()]; targets.len()];
    for _ in 0..a.rounds {
        for (ci, &c) in a.concurrency.iter().enumerate() {
            for (ti, (_, url, headers)) in targets.iter().enumerate() {
                let r = wrk::run(&WrkRun { url, connections: c, threads: a.threads, seconds: a.seconds, headers })?;
                if r.errors > 0 {
                    bail!("{url} at c{c}: {} errors or non-2xx answers", r.errors);
                }
                results[ti][ci].push(r);
            }
        }
    }
    let med = |v: &[WrkResult], f: fn(&WrkResult) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let mut t = Table::new(&["request", "conns", "req/s", "p50", "p99", "req/s vs baseline", "p50 added"]);
    let mut at64 = Vec::new();
    for (ci, &c) in a.concurrency.iter().enumerate() {
        let base_rps = med(&results[0][ci], |r| r.rps);
        let base_p50 = med(&results[0][ci], |r| r.p50_us);
        for (ti, (name, _, _)) in targets.iter().enumerate() {
            let rs = &results[ti][ci];
            let (rps, p50, p99) = (med(rs, |r| r.rps), med(rs, |r| r.p50_us), med(rs, |r| r.p99_us));
            t.row(vec![
                name.to_string(),
                c.to_string(),
                count(rps),
                micros(p50),
                micros(p99),
                ratio(rps, base_rps),
                if ti == 0 { "-".into() } else { micros(p50 - base_p50) },
            ]);
            if c == 64 && ti > 0 {
                at64.push((name.to_string(), rps));
            }
        }
    }
    t.print();
    println!();
    println!("Targets:");
    for (name, rps) in &at64 {
        verdict(
            &format!("{name} >= 10,000 req/s at 64 connections"),
            *rps >= 10_000.0,
            &format!("{} req/s", count(*rps)),
        );
    }
    println!();
    println!("For scale (quoted in issue 2, not measured here): JupyterHub 6.1 on the same class of");
    println!("machine (busy at the time) answered ~470 req/s on GET /hub/api and ~70 req/s on");
    println!("GET /hub/api/users/{{name}}, and took 5-9 s to start.");
    Ok(())
}
