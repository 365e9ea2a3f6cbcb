//! Running `wrk --latency` and reading its report.

use std::process::Command;

use anyhow::{Context, bail};

/// One wrk run's figures.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    /// Requests per second over the run.
    pub rps: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    /// Requests completed.
    pub requests: u64,
    /// Non-2xx/3xx answers plus socket errors.
    pub errors: u64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct WrkRun<'a> {
    pub url: &'a str,
    pub connections: u32,
    pub threads: u32,
    pub seconds: u32,
    /// Full header lines, e.g. `Cookie: a=b`.
    pub headers: &'a [String],
}

/// Runs wrk once and parses its report.
pub fn run(r: &WrkRun<'_>) -> anyhow::Result<WrkResult> {
    let threads = r.threads.min(r.connections).max(1);
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{}", r.connections))
        .arg(format!("-d{}s", r.seconds))
        .arg("--latency")
        .arg("--timeout")
        .arg("10s");
    for h in r.headers {
        cmd.arg("-H").arg(h);
    }
    cmd.arg(r.url);
    let out = cmd.output().context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed on {}: {}{}", r.url, text, String::from_utf8_lossy(&out.stderr));
    }
    parse(&text).with_context(|| format!("reading wrk's report for {}:\n{text}", r.url))
}

/// `48.95us`, `1.03ms`, `2.10s`, `1.00m` → microseconds.
fn duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// Parses wrk's `--latency` report.
pub fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut saw_rps = false;
    for line in text.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_us = duration_us(v).context("p50")?,
            ["90%", v] => r.p90_us = duration_us(v).context("p90")?,
            ["99%", v] => r.p99_us = duration_us(v).context("p99")?,
            ["Requests/sec:", v] => {
                r.rps = v.parse().context("Requests/sec")?;
                saw_rps = true;
            }
            [n, "requests", "in", ..] => r.requests = n.parse().context("requests")?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().context("non-2xx")?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for pair in rest.chunks(2) {
                    if let [_, n] = pair {
                        r.errors += n.trim_end_matches(',').parse::<u64>().unwrap_or(0);
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_rps {
        bail!("no Requests/sec line");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 5s test @ http://127.0.0.1:8000/hub/api
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    48.95us   17.68us   1.03ms   95.28%
    Req/Sec    19.80k     1.05k   21.05k    80.39%
  Latency Distribution
     50%   45.00us
     75%   47.00us
     90%   51.00us
     99%    1.08ms
  100521 requests in 5.10s, 14.86MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  19710.03
Transfer/sec:      2.91MB
";

    #[test]
    fn reads_a_report() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.rps, 19710.03);
        assert_eq!(r.p50_us, 45.0);
        assert_eq!(r.p99_us, 1080.0);
        assert_eq!(r.requests, 100521);
        assert_eq!(r.errors, 8);
        assert!(parse("nothing").is_err());
    }
}
