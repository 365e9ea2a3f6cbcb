//! `labhub-bench`: the measuring half of the scripts under `bench/` (which build, start and
//! clean up what they measure). Each subcommand prints its own table, ratios against the
//! baseline it measured in the same run, and the targets it checks. See bench/README.md.

mod api;
mod frontdoor;
mod image_copy;
mod memhub;
mod proxy;
mod replicas;
mod spawn;
mod startup;
mod stats;
mod wrk;
mod ws;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The hub binary's allocator, so that `memhub` measures the memory the hub really uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "labhub-bench")]
struct Cli {
    /// Worker threads of this load generator's runtime (1: a single-threaded runtime, so the
    /// generator takes at most one of the machine's cores, like `wrk -t1`).
    #[arg(long, global = true, default_value_t = 1)]
    client_threads: usize,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Issue 2: login latency (argon2id), authenticated API requests vs `GET /hub/api`.
    Api(api::ApiArgs),
    /// Issues 11-13: the front door under idle half-open connections and a sign-in burst.
    Frontdoor(frontdoor::FrontdoorArgs),
    /// Process start → health 200, over several starts.
    Startup(startup::StartupArgs),
    /// Issue 3: spawn-to-ready, the hub's own overhead, concurrent starts vs plain runs.
    Spawn(spawn::SpawnArgs),
    /// Issue 4: direct vs labhub vs nginx, HTTP and WebSockets, and the hub's memory.
    Proxy(proxy::ProxyArgs),
    /// Issue 21: two hubs on one database: route, stop and revocation propagation.
    Replicas(replicas::ReplicasArgs),
    /// Issue 21: an image copied to a second Swarm node by labhub vs `docker save | load`.
    ImageCopy(image_copy::ImageCopyArgs),
    /// The in-process hub with hand-filled routes (used by `proxy`).
    Memhub(memhub::MemhubArgs),
    /// Builds (when absent) the tiny test image from a labhub-testserver binary; prints its tag.
    Image {
        /// The labhub-testserver binary.
        #[arg(long)]
        testserver: std::path::PathBuf,
    },
    /// Signs in through the login form; prints the session cookie as `name=value`.
    Login {
        #[arg(long)]
        url: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value = "labhub-session")]
        cookie_name: String,
    },
    /// Removes a benchmark hub's containers, volumes, plain-run containers, its network and
    /// the network's host-isolation rule.
    Cleanup {
        #[arg(long)]
        hub_id: String,
        #[arg(long)]
        network: String,
    },
    /// Checks a wrk report parses (reads stdin); for debugging the scripts.
    ParseWrk,
}

async fn image(testserver: std::path::PathBuf) -> anyhow::Result<()> {
    let spawner = labhub_spawner::DockerSpawner::connect(labhub_spawner::DockerConfig::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let image = labhub_testkit::images::test_server_image(spawner.docker(), &testserver).await?;
    println!("{image}");
    Ok(())
}

async fn cleanup(hub_id: &str, network: &str) -> anyhow::Result<()> {
    use bollard::query_parameters::{ListContainersOptions, ListVolumesOptions, RemoveContainerOptions};
    use std::collections::HashMap;
    let config = labhub_spawner::DockerConfig {
        hub_id: labhub_spawner::HubId::parse(hub_id)?,
        network: labhub_spawner::NetworkName::parse(network)?,
        ..Default::default()
    };
    let spawner = labhub_spawner::DockerSpawner::connect(config).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let docker = spawner.docker();
    let labelled = HashMap::from([("label".to_string(), vec![format!("{}={hub_id}", labhub_spawner::LABEL_HUB)])]);
    let plain = HashMap::from([("name".to_string(), vec![format!("{hub_id}-plain")])]);
    for filters in [labelled.clone(), plain] {
        let list = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        for c in docker.list_containers(Some(list)).await? {
            let options = RemoveContainerOptions { force: true, ..Default::default() };
            let _ = docker.remove_container(c.id.as_deref().unwrap_or_default(), Some(options)).await;
        }
    }
    let plain = HashMap::from([("name".to_string(), vec![format!("{hub_id}-plain")])]);
    let mut volumes = Vec::new();
    for filters in [labelled, plain] {
        let found = docker.list_volumes(Some(ListVolumesOptions { filters: Some(filters) })).await?;
        volumes.extend(found.volumes.unwrap_or_default());
    }
    for v in volumes {
        let _ = docker.remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
    }
    spawner.remove_network().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn main() -> ExitCode {
    let Cli { client_threads, command } = Cli::parse();
    let command = match command {
        Cmd::Memhub(a) => return report(memhub::run(a)),
        other => other,
    };
    let rt = if client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(client_threads).enable_all().build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("labhub-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    report(rt.block_on(async move {
        match command {
            Cmd::Api(a) => api::run(a).await,
            Cmd::Frontdoor(a) => frontdoor::run(a).await,
            Cmd::Startup(a) => startup::run(a).await,
            Cmd::Spawn(a) => spawn::run(a).await,
            Cmd::Proxy(a) => proxy::run(a).await,
            Cmd::Replicas(a) => replicas::run(a).await,
            Cmd::ImageCopy(a) => image_copy::run(a).await,
            Cmd::Image { testserver } => image(testserver).await,
            Cmd::Cleanup { hub_id, network } => cleanup(&hub_id, &network).await,
            Cmd::Login { url, user, password, cookie_name } => {
                let (_, _, cookie) = api::login_once(&url, &user, &password, &cookie_name).await?;
                println!("{cookie_name}={cookie}");
                Ok(())
            }
            Cmd::ParseWrk => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                println!("{:?}", wrk::parse(&s)?);
                Ok(())
            }
            Cmd::Memhub(_) => unreachable!("handled above"),
        }
    }))
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("labhub-bench: could not measure: {e:#}");
            ExitCode::FAILURE
        }
    }
}
