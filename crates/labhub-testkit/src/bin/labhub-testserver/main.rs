//! `labhub-testserver`: a tiny notebook-server stand-in for the hub's
//! spawner and proxy tests, shipped in a `FROM scratch` image as
//! `/labhub-testserver` and `/usr/local/bin/jupyter` (and optionally
//! `rserver`). It behaves like a notebook server from the hub's point of
//! view and reports what it saw. See `cli.rs` for the command line,
//! `notebook.rs` for the endpoints and `rserver.rs` for `--fake-rserver`.

mod cli;
mod common;
mod notebook;
mod rserver;
mod ws;

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use axum::{
    Router,
    extract::{ConnectInfo, DefaultBodyLimit, Request, State},
    response::Response,
};
use tokio::net::TcpListener;

use crate::{
    cli::{Cli, Mode, Parsed},
    common::{ConnInfo, NoDelayListener, log_request},
    notebook::Notebook,
    rserver::FakeRserver,
};

#[tokio::main]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let (argv0, args) = match argv.split_first() {
        Some((first, rest)) => (first.as_str(), rest),
        None => ("labhub-testserver", &[][..]),
    };
    let cli = match cli::parse(argv0, args) {
        Ok(Parsed::Run(cli)) => cli,
        Ok(Parsed::Help) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("labhub-testserver: {e}\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    for name in &cli.ignored {
        eprintln!("labhub-testserver: ignoring argument {name}");
    }

    // Check the token before binding anything.
    let token = match cli.mode {
        Mode::Notebook => match std::env::var("JUPYTER_TOKEN") {
            Ok(t) if !t.is_empty() => Some(t),
            _ => {
                eprintln!(
                    "labhub-testserver: JUPYTER_TOKEN is unset, empty or not UTF-8; \
                     refusing to start without a token"
                );
                return ExitCode::from(2);
            }
        },
        Mode::FakeRserver => None,
    };

    let listener = match bind(&cli).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("labhub-testserver: cannot listen on {}:{}: {e}", cli.ip, cli.port);
            return ExitCode::from(1);
        }
    };
    let listen = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("labhub-testserver: {e}");
            return ExitCode::from(1);
        }
    };

    tokio::spawn(exit_on_signal());

    let app = match (cli.mode, token) {
        (Mode::Notebook, Some(token)) => {
            let root_dir = pick_root_dir(cli.root_dir.clone());
            println!(
                "labhub-testserver: listening on http://{listen}{} (root dir {})",
                cli.base_url,
                root_dir.display()
            );
            let nb =
                Notebook { base_url: cli.base_url.clone(), token, root_dir, listen, started: notebook::now_rfc3339() };
            Router::new().fallback(notebook_entry).with_state(Arc::new(nb))
        }
        _ => {
            println!(
                "labhub-testserver (fake rserver): listening on http://{listen}/ \
                 (auth-none={}, www-root-path={})",
                u8::from(cli.auth_none),
                cli.www_root_path.as_deref().unwrap_or("-"),
            );
            let rs = FakeRserver {
                www_root_path: cli.www_root_path.clone(),
                auth_none: cli.auth_none,
                absolute_redirects: cli.absolute_redirects,
                listen,
            };
            Router::new().fallback(rserver_entry).with_state(Arc::new(rs))
        }
    }
    .layer(DefaultBodyLimit::disable());

    let served = axum::serve(NoDelayListener(listener), app.into_make_service_with_connect_info::<ConnInfo>()).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("labhub-testserver: server failed: {e}");
            ExitCode::from(1)
        }
    }
}

async fn bind(cli: &Cli) -> std::io::Result<TcpListener> {
    let mut last_err = None;
    for addr in tokio::net::lookup_host((cli.ip.as_str(), cli.port)).await? {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("address resolved to nothing")))
}

/// `--root-dir` if given; else the current directory, unless that is `/`
/// and `$HOME` is a directory (containers often start in `/`).
fn pick_root_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = flag {
        return dir;
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if cwd == std::path::Path::new("/")
        && let Some(home) = std::env::var_os("HOME").map(PathBuf::from)
        && home != std::path::Path::new("/")
        && home.is_dir()
    {
        return home;
    }
    cwd
}

/// SIGTERM/SIGINT: exit at once. (As PID 1 in a container the default
/// SIGTERM action is ignored, which would make `docker stop` wait 10 s.)
async fn exit_on_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("labhub-testserver: cannot install signal handlers");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    common::exit_process(0, &format!("received {name}"));
}

async fn notebook_entry(
    State(nb): State<Arc<Notebook>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    req: Request,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let resp = notebook::handle(nb, conn, req).await;
    log_request(&method, &path, resp.status());
    resp
}

async fn rserver_entry(
    State(rs): State<Arc<FakeRserver>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    req: Request,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let resp = rserver::handle(rs, conn, req).await;
    log_request(&method, &path, resp.status());
    resp
}
