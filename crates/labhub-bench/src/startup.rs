//! Process start → first `200` from a health URL, over several starts of the same command.

use std::fs::OpenOptions;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::stats::{Table, median, millis, ms, percentile};

#[derive(clap::Args, Debug)]
pub struct StartupArgs {
    /// The URL that answers 200 once the program is ready.
    #[arg(long)]
    pub health: String,
    /// Starts to time.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where the program's output goes (appended).
    #[arg(long)]
    pub log: String,
    /// A label for the table.
    #[arg(long, default_value = "hub start")]
    pub label: String,
    /// The command, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Sends SIGTERM and waits for the child to exit (SIGKILL after `patience`).
pub fn terminate(child: &mut Child, patience: Duration) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub async fn run(a: StartupArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
    let mut times = Vec::new();
    for i in 0..a.runs {
        let log = OpenOptions::new().create(true).append(true).open(&a.log).context("the log file")?;
        let log2 = log.try_clone()?;
        let started = Instant::now();
        let mut child = Command::new(&a.command[0])
            .args(&a.command[1..])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .with_context(|| format!("starting {:?}", a.command))?;
        let deadline = started + Duration::from_secs(60);
        let ready = loop {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("run {}: the program exited ({status}) before answering; see {}", i + 1, a.log);
            }
            if let Ok(r) = client.get(&a.health).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                break started.elapsed();
            }
            if Instant::now() > deadline {
                terminate(&mut child, Duration::from_secs(30));
                bail!("run {}: no 200 from {} within 60 s; see {}", i + 1, a.health, a.log);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        times.push(ms(ready));
        terminate(&mut child, Duration::from_secs(60));
        // Let the embedded database's shutdown settle before the next start.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut t = Table::new(&["what", "runs", "median", "min", "max"]);
    t.row(vec![
        format!("{} (process start -> {} 200)", a.label, a.health.rsplit_once("/hub/").map_or("health", |x| x.1)),
        times.len().to_string(),
        millis(median(&times)),
        millis(percentile(&times, 0.0)),
        millis(percentile(&times, 100.0)),
    ]);
    t.print();
    Ok(())
}
