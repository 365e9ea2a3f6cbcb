//! `labhub-bench replicas` (bench/replicas.sh): two hub processes on one database. How soon
//! a server that became ready on replica A is reachable through replica B (its route arrives
//! by `LISTEN/NOTIFY`), how soon a stop on A reaches B, and how soon a token revoked on A is
//! refused by B.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::stats::{Table, median, millis, ms, percentile, verdict};

#[derive(Args)]
pub struct ReplicasArgs {
    /// Replica A's base URL (starts, stops and revocations go there).
    #[arg(long)]
    a: String,
    /// Replica B's base URL (where their effect is awaited).
    #[arg(long)]
    b: String,
    /// An admin's API token.
    #[arg(long)]
    admin_token: String,
    /// Whose default server is started and stopped.
    #[arg(long, default_value = "bench")]
    user: String,
    /// The catalogue entry to start.
    #[arg(long, default_value = "bench-test")]
    image: String,
    /// Starts (and stops, and revocations) measured.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
}

/// Polls `url` on `client` until its status is what `want` accepts; the time it took. Gives
/// up after 10 s.
async fn until(client: &Client, url: &str, auth: &str, want: fn(StatusCode) -> bool) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        let status = client.get(url).header("Authorization", auth).send().await?.status();
        if want(status) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("{url} still answered {status} after 10 s");
        }
    }
}

fn ok(s: StatusCode) -> bool {
    s == StatusCode::OK
}

fn unavailable(s: StatusCode) -> bool {
    s == StatusCode::SERVICE_UNAVAILABLE
}

fn refused(s: StatusCode) -> bool {
    s == StatusCode::FORBIDDEN || s == StatusCode::UNAUTHORIZED
}

pub async fn run(a: ReplicasArgs) -> anyhow::Result<()> {
    let client = Client::builder().no_proxy().build().context("an HTTP client")?;
    let admin = format!("token {}", a.admin_token);
    let server = format!("/hub/api/users/{}/server", a.user);
    let status_on_b = format!("{}/user/{}/api/status", a.b, a.user);
    let (mut routes, mut stops, mut revokes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        let r = client
            .post(format!("{}{server}", a.a))
            .header("Authorization", &admin)
            .json(&json!({"image": a.image}))
            .send()
            .await?;
        if r.status() != StatusCode::CREATED {
            bail!("starting on A answered {} (want 201, ready): {}", r.status(), r.text().await?);
        }
        routes.push(ms(until(&client, &status_on_b, &admin, ok).await?));
        let r = client.delete(format!("{}{server}", a.a)).header("Authorization", &admin).send().await?;
        if !r.status().is_success() {
            bail!("stopping on A answered {}", r.status());
        }
        stops.push(ms(until(&client, &status_on_b, &admin, unavailable).await?));

        let tokens = format!("/hub/api/users/{}/tokens", a.user);
        let made: serde_json::Value = client
            .post(format!("{}{tokens}", a.a))
            .header("Authorization", &admin)
            .json(&json!({"note": "bench replicas"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let (token, id) = (made["token"].as_str().context("a token")?, made["id"].as_str().context("an id")?);
        let auth = format!("token {token}");
        let me = format!("{}/hub/api/user", a.b);
        until(&client, &me, &auth, ok).await?;
        let r = client.delete(format!("{}{tokens}/{id}", a.a)).header("Authorization", &admin).send().await?;
        if !r.status().is_success() {
            bail!("revoking on A answered {}", r.status());
        }
        revokes.push(ms(until(&client, &me, &auth, refused).await?));
    }
    println!("{} rounds: A answers (201 ready / 204 / 204), then B is polled back to back", a.rounds);
    let mut t = Table::new(&["from A to B", "p50", "p99", "max"]);
    for (name, v) in
        [("start ready → first 200", &routes), ("stop → first 503", &stops), ("revoke → first 403", &revokes)]
    {
        let max = v.iter().copied().fold(f64::NAN, f64::max);
        t.row(vec![name.into(), millis(median(v)), millis(percentile(v, 99.0)), millis(max)]);
    }
    t.print();
    let p99 = percentile(&routes, 99.0);
    verdict("route propagation p99 under 100 ms", p99 < 100.0, &millis(p99));
    let worst = revokes.iter().copied().fold(0.0, f64::max);
    verdict("revocation propagation under 1 s", worst < 1000.0, &format!("worst {}", millis(worst)));
    Ok(())
}
