//! `labhub env …`: environments built from repositories or uploaded files, from the command
//! line (as the system: the lab's own environments, or a group's with `--group`).

use anyhow::{Context, bail};
use clap::Subcommand;
use labhub_core::{BuildId, GroupName};
use labhub_service::Actor;
use labhub_service::environments::{BuildLog, Environments, NewEnvironment, NewUpload, UploadStream};
use labhub_service::progress::ProgressLog;

#[derive(Subcommand)]
pub(super) enum EnvCommand {
    /// Build an environment from a git repository (a URL or a folder), or with `--upload` from
    /// a folder's files or a .tar/.tar.gz of them (no git needed), creating it the first time;
    /// prints the build's log and waits for its end.
    Build {
        /// The repository (with `--upload`: a folder, or an archive of its files).
        source: String,
        /// The environment's (catalogue) name.
        #[arg(long)]
        name: String,
        /// The branch, tag or commit (default: the environment's ref, or HEAD).
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Build it for a group (created only; a rebuild keeps whose it is).
        #[arg(long)]
        group: Option<String>,
        /// The catalogue image to build on (created only; default: the lab's JupyterLab).
        #[arg(long)]
        base: Option<String>,
        /// Upload the files instead of reading git: a folder is packed as a tar (its `.git`
        /// left out), an archive is sent as it is.
        #[arg(long, conflicts_with = "git_ref")]
        upload: bool,
    },
    /// List the environments with their state.
    List,
    /// Show an environment and its builds.
    Show { name: String },
    /// Remove built images nothing needs: not serving or pinned, not run by a recent session.
    Collect,
    /// Write an environment (the build it serves) or a session (by number: the exact image it
    /// ran) to standard output: a tar of its provenance manifest and the image's archive.
    Export {
        /// An environment's name, or a session's number.
        what: String,
    },
    /// Bring an exported environment into this hub, checked against its recorded image id.
    Import {
        /// The file `labhub env export` wrote.
        file: std::path::PathBuf,
        /// Its name here (default: its name where it came from).
        #[arg(long)]
        name: Option<String>,
    },
    /// Serve this build whatever is newer (`--unpin`: the newest good build again).
    Pin {
        name: String,
        /// The build's number (see `labhub env show`).
        build: Option<i64>,
        #[arg(long, conflicts_with = "build")]
        unpin: bool,
    },
}

pub(super) async fn env(
    hub: labhub_service::Hub,
    cmd: EnvCommand,
    docker: &labhub_spawner::DockerConfig,
) -> anyhow::Result<()> {
    let envs = hub.environments();
    match cmd {
        EnvCommand::Export { what } => {
            let manifest = envs.export_manifest(Actor::System, &what).await?;
            let engine = labhub_spawner::DockerSpawner::connect(docker.clone()).await?;
            super::transfer::export(&engine, &manifest).await?;
        }
        EnvCommand::Import { file, name } => {
            let engine = labhub_spawner::DockerSpawner::connect(docker.clone()).await?;
            let manifest = super::transfer::import(&engine, &file).await?;
            let e = envs.import(Actor::System, &manifest, name.as_deref()).await?;
            eprintln!(
                "imported '{}' ({}, from {} at {})",
                e.name,
                e.image_id.as_deref().unwrap_or("-"),
                manifest.source.as_deref().unwrap_or("an unknown source"),
                manifest.commit.as_deref().unwrap_or("an unknown commit")
            );
        }
        EnvCommand::Build { source, name, git_ref: _, group, base, upload: true } => {
            let files = || -> anyhow::Result<UploadStream> {
                let archive = upload_archive(std::path::Path::new(&source))?;
                Ok(Box::pin(tokio_stream::once(Ok(bytes::Bytes::from(archive)))))
            };
            let build = match envs.get(Actor::System, &name).await {
                Ok(_) => envs.rebuild_from_upload(Actor::System, &name, files()?).await?,
                Err(labhub_service::ServiceError::NotFound(_)) => {
                    let group =
                        group.as_deref().map(GroupName::parse).transpose().context("--group is not a group name")?;
                    let new = NewUpload { name: name.clone(), group, base };
                    envs.create_from_upload(Actor::System, new, files()?).await?.1
                }
                Err(e) => return Err(e.into()),
            };
            follow(&envs, &name, build).await?;
        }
        EnvCommand::Build { source, name, git_ref, group, base, upload: false } => {
            let build = match envs.get(Actor::System, &name).await {
                Ok(existing) => {
                    if existing.source != source {
                        bail!("'{name}' is built from {}, not {source}", existing.source);
                    }
                    envs.rebuild(Actor::System, &name, git_ref).await?
                }
                Err(labhub_service::ServiceError::NotFound(_)) => {
                    let group =
                        group.as_deref().map(GroupName::parse).transpose().context("--group is not a group name")?;
                    let new = NewEnvironment { name: name.clone(), source, git_ref, group, base };
                    envs.create(Actor::System, new).await?.1
                }
                Err(e) => return Err(e.into()),
            };
            follow(&envs, &name, build).await?;
        }
        EnvCommand::List => {
            for e in envs.list(Actor::System).await? {
                let whose = match &e.holder {
                    labhub_service::environments::Whose::Lab => "lab".to_string(),
                    labhub_service::environments::Whose::Group(g) => format!("group {g}"),
                    labhub_service::environments::Whose::Personal(u) => format!("personal ({u})"),
                };
                let image =
                    e.image_id.as_deref().map(labhub_service::catalogue::short_id).unwrap_or_else(|| "-".into());
                let commit: String = e.commit.as_deref().unwrap_or("-").chars().take(12).collect();
                println!(
                    "{:<24} {:<9} {:<14} {:<12} {:<20} {} @ {}",
                    e.name, e.status, image, commit, whose, e.source, e.git_ref
                );
            }
        }
        EnvCommand::Show { name } => {
            let e = envs.get(Actor::System, &name).await?;
            println!("{}", serde_json::to_string_pretty(&e)?);
        }
        EnvCommand::Collect => {
            let report = hub.history().collect_images(Actor::System).await?;
            for r in &report.removed {
                println!(
                    "removed {} ({}, {} MiB)",
                    labhub_service::catalogue::short_id(&r.id),
                    r.tags.join(", "),
                    r.size_bytes >> 20
                );
            }
            println!(
                "freed {} MiB ({} images removed, {} kept; {} uploads of removed environments dropped)",
                report.freed_bytes >> 20,
                report.removed.len(),
                report.kept,
                report.uploads_removed
            );
        }
        EnvCommand::Pin { name, build, unpin } => {
            if build.is_none() && !unpin {
                bail!("give a build number, or --unpin");
            }
            let e = envs.pin(Actor::System, &name, build.map(BuildId::new)).await?;
            println!("'{name}' serves build {}", e.serving.map_or("-".into(), |b| b.to_string()));
        }
    }
    Ok(())
}

/// Prints a build's log to its end; fails with its last message when the build failed.
async fn follow(envs: &Environments<'_>, name: &str, build: BuildId) -> anyhow::Result<()> {
    match envs.log(Actor::System, name, build).await? {
        BuildLog::Live(log) => print_live(&log).await,
        BuildLog::Stored(events) => {
            for e in &events {
                println!("[{:>3}%] {}", e.progress, e.message);
            }
            if let Some(e) = events.last().filter(|e| e.failed) {
                bail!("{}", e.message);
            }
            Ok(())
        }
    }
}

/// What `--upload` sends: a folder packed as a tar (files and folders, sorted; its `.git` left
/// out), or an archive file as it is (the hub checks either).
fn upload_archive(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() {
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    }
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    pack_folder(&mut tar, path, std::path::Path::new(""))?;
    tar.into_inner().context("packing the folder")
}

fn pack_folder(tar: &mut tar::Builder<Vec<u8>>, root: &std::path::Path, rel: &std::path::Path) -> anyhow::Result<()> {
    let dir = root.join(rel);
    let mut entries = std::fs::read_dir(&dir)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if rel.as_os_str().is_empty() && entry.file_name() == ".git" {
            continue;
        }
        let name = rel.join(entry.file_name());
        let kind = entry.file_type().with_context(|| format!("reading {}", entry.path().display()))?;
        if kind.is_dir() {
            pack_folder(tar, root, &name)?;
        } else if kind.is_file() {
            tar.append_path_with_name(entry.path(), &name)
                .with_context(|| format!("packing {}", entry.path().display()))?;
        } else {
            bail!("{} is not a file or a folder: an upload holds no links", entry.path().display());
        }
    }
    Ok(())
}

/// Prints a live log to its end; fails with its last message when the build failed.
pub(super) async fn print_live(log: &ProgressLog) -> anyhow::Result<()> {
    let mut rx = log.subscribe();
    let mut seen = 0;
    loop {
        let (new, done) = {
            let all = rx.borrow_and_update();
            (all[seen..].to_vec(), all.last().is_some_and(|e| e.is_final()))
        };
        seen += new.len();
        for e in &new {
            println!("[{:>3}%] {}", e.progress, e.message);
            if e.failed {
                bail!("{}", e.message);
            }
        }
        if done || rx.changed().await.is_err() {
            return Ok(());
        }
    }
}
