//! Issue 21: an image reaching a second node in Swarm mode (`swarm_images = "copy"`): labhub's
//! copy (`labhub_spawner::copy_image`: `docker save` of the content id on this engine streamed
//! into `docker load` on the node, then checked by the id) against the plain
//! `docker save ID | docker -H NODE load` of the same id, in the same run. The node is a
//! second `dockerd` in a network namespace (`labhub_testkit::node::SecondEngine`); the image
//! is removed from it before every copy.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::query_parameters::RemoveImageOptions;
use clap::Args;
use labhub_spawner::{Copied, copy_image};
use labhub_testkit::node::SecondEngine;

use crate::stats::{Table, median, ratio};

/// What to measure.
#[derive(Args)]
pub struct ImageCopyArgs {
    /// The labhub-testserver binary (the image copied is the tiny test image).
    #[arg(long)]
    testserver: PathBuf,
    /// Copies of each kind.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Runs the measurement and prints its table.
pub async fn run(args: ImageCopyArgs) -> anyhow::Result<()> {
    let local = Docker::connect_with_local_defaults()?.negotiate_version().await?;
    let tag = labhub_testkit::images::test_server_image(&local, &args.testserver).await?;
    let id = local.inspect_image(tag.as_str()).await?.id.context("the test image has no id")?;
    let engine = tokio::task::spawn_blocking(SecondEngine::start).await?;
    let node = engine.docker.clone().negotiate_version().await?;
    let (mut labhub, mut plain, mut bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.runs {
        remove(&node, &id).await?;
        let t0 = Instant::now();
        let copied = copy_image(&local, &node, &engine.hostname, &id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        labhub.push(t0.elapsed().as_secs_f64());
        let Copied::Bytes(n) = copied else { bail!("the node had the image before the copy") };
        bytes = n;

        remove(&node, &id).await?;
        let t0 = Instant::now();
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("docker save {id} | docker -H {} load -q >/dev/null", engine.docker_host)])
            .status()?;
        plain.push(t0.elapsed().as_secs_f64());
        if !status.success() || node.inspect_image(&id).await?.id.as_deref() != Some(id.as_str()) {
            bail!("docker save | docker load did not leave {id} on the node");
        }
    }
    remove(&node, &id).await?;
    println!("image {tag} ({id}), {bytes} bytes of archive, {} copies of each kind", args.runs);
    let mut table = Table::new(&["copy to the second node", "median s", "MB/s", "vs plain"]);
    let (l, p) = (median(&labhub), median(&plain));
    let mbps = |s: f64| format!("{:.1}", bytes as f64 / s / 1e6);
    table.row(vec!["labhub (save by id, load, check)".into(), format!("{l:.3}"), mbps(l), ratio(l, p)]);
    table.row(vec!["docker save | docker -H node load".into(), format!("{p:.3}"), mbps(p), "1.00".into()]);
    table.print();
    Ok(())
}

async fn remove(node: &Docker, id: &str) -> anyhow::Result<()> {
    let options = RemoveImageOptions { force: true, ..Default::default() };
    match node.remove_image(id, Some(options), None).await {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
