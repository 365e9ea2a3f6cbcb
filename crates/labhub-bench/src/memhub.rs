//! The whole hub built in-process with `labhub::app::build` (the router, services, proxy and
//! database pool the binary serves), whose route table the benchmark fills by hand: a real
//! hub with 1,000 routes without 1,000 containers. It shares a running hub's data directory
//! (its embedded Postgres, its key), so the same sessions and tokens work on both.
//!
//! Protocol on stdin/stdout, one line each: it prints `READY <url>`; `routes N` adds N routes
//! (the first for `--user`, the others for users `r0001`… — all to `--endpoint`) and answers
//! `OK <count>`; end of input stops it.

use std::net::SocketAddr;

use anyhow::Context;
use labhub::Config;
use labhub::app::{self, Overrides, Runtime};
use labhub::database::Database;
use labhub_core::{ImageKind, Secret, UserName};
use labhub_proxy::{Route, RouteKey};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(clap::Args, Debug)]
pub struct MemhubArgs {
    /// The running hub's data directory (its embedded Postgres is adopted, never stopped).
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    /// The upstream every route points at (a running test server).
    #[arg(long)]
    pub endpoint: SocketAddr,
    /// The upstream's token.
    #[arg(long)]
    pub upstream_token: String,
    /// The user whose route is the real one (the upstream's base URL is `/user/<user>/`).
    #[arg(long)]
    pub user: String,
}

pub fn run(a: MemhubArgs) -> anyhow::Result<()> {
    // The same runtime the binary builds (cli.rs): multi-threaded, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(a))
}

async fn serve(a: MemhubArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).try_init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = Config { data_dir: a.data_dir.clone(), bind: addr, ..Config::default() };
    config.public_url = Some(format!("http://{addr}/").parse()?);
    // Adopts the running cluster; `close()` would stop it, so it is never called.
    let db = Database::open(&config).await.context("opening the running hub's embedded database")?;
    let key = app::load_key(&config)?;
    let built = app::build(&config, db.pool.clone(), key, Runtime::default(), Overrides::default())?;
    let hub = built.hub.clone();
    let server = tokio::spawn(app::serve(listener, built.service, std::future::pending()));
    println!("READY http://{addr}");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut added = 0usize;
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["routes", n] = words.as_slice() {
            let n: usize = n.parse()?;
            for i in added..added + n {
                let user = if i == 0 { a.user.clone() } else { format!("r{i:04}") };
                let key = RouteKey::new(UserName::parse(&user)?, None);
                let route = Route::new(
                    key,
                    labhub_core::UserId::new(1),
                    a.endpoint,
                    Secret::new(a.upstream_token.clone()),
                    ImageKind::Jupyter,
                );
                hub.routes().insert(route)?;
            }
            added += n;
            println!("OK {added}");
        }
    }
    server.abort();
    Ok(())
}
