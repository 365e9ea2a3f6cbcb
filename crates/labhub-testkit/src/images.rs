//! Images the Docker tests run, built locally (no registry is reachable).
//!
//! - [`test_server_image`]: a tiny image `FROM scratch` holding the `labhub-testserver`
//!   binary, the host's `/bin/sh` and `mkdir`, their shared libraries, and just enough of a
//!   root filesystem for a non-root user.
//!   Tagged by a hash of the binary, so it is built once per binary and reused.
//! - [`jupyterlab_image`]: the real JupyterLab image, built from its recipe when absent
//!   (minutes).
//! - [`jupyterhub_image`]: that image with the real `jupyterhub` package from PyPI
//!   (`jupyterhub-singleuser`), built FROM it; tagged by a hash of its Dockerfile and base.
//!
//! Several test processes may ask at once: a build takes a lock directory under the system
//! temporary directory (creating a directory is atomic), and whoever gets it looks for the
//! image again before building.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;
use labhub_core::ImageRef;
use labhub_core::spawner::{Progress, Spawner};
use labhub_spawner::DockerSpawner;
use labhub_spawner::recipes::Recipe;
use sha2::{Digest, Sha256};

/// The repository the test image is tagged in.
pub const TEST_IMAGE_REPO: &str = "labhub-test/testserver";

/// Changes whenever the image's layout below changes, so old tags are not reused.
const LAYOUT_VERSION: &[u8] = b"labhub-testserver-image/2";

/// The host's programs the image carries besides the test server, at the same paths: the
/// shell and `mkdir` that the rstudio kind's command prologue runs, as in rocker's images.
const HOST_PROGRAMS: [&str; 2] = ["/bin/sh", "/bin/mkdir"];

/// The test image's user: docker-stacks' `jovyan`.
const JOVYAN: (u64, u64) = (1000, 100);
/// rocker's `rstudio` user, for the rstudio kind run against the rserver stand-in.
const RSTUDIO: (u64, u64) = (1000, 1000);

/// A test image could not be built.
#[derive(Debug)]
pub struct ImageError(String);

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ImageError {}

fn fail(context: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError(format!("{context}: {e}"))
}

/// A lock held while its directory exists; removed on drop.
struct DirLock(PathBuf);

impl DirLock {
    /// Waits until the lock `name` is free and takes it; a lock older than `stale_after`
    /// belonged to a process that died and is broken.
    async fn acquire(name: &str, stale_after: Duration) -> Result<Self, ImageError> {
        let path = std::env::temp_dir().join(format!("labhub-testkit-{name}.lock"));
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|a| a > stale_after) {
                        let _ = std::fs::remove_dir(&path);
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(fail(&format!("creating lock {}", path.display()), e)),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The test image for this test-server binary, built when absent. Integration tests pass
/// `env!("CARGO_BIN_EXE_labhub-testserver")`. The binary runs as `jupyter` (notebook mode)
/// and as `/usr/lib/rstudio-server/bin/rserver` (its rserver stand-in); the image's user is
/// `1000:100` with home `/home/jovyan`, and `/home/rstudio` belongs to `1000:1000`.
pub async fn test_server_image(docker: &Docker, server_binary: &Path) -> Result<ImageRef, ImageError> {
    let binary = std::fs::read(server_binary).map_err(|e| fail(&format!("reading {}", server_binary.display()), e))?;
    let mut hasher = Sha256::new();
    hasher.update(LAYOUT_VERSION);
    hasher.update(&binary);
    let hash = hex::encode(&hasher.finalize()[..8]);
    let image = ImageRef::parse(&format!("{TEST_IMAGE_REPO}:{hash}")).map_err(|e| fail("test image tag", e))?;
    if docker.inspect_image(image.as_str()).await.is_ok() {
        return Ok(image);
    }
    let _lock = DirLock::acquire(&format!("testserver-{hash}"), Duration::from_secs(300)).await?;
    if docker.inspect_image(image.as_str()).await.is_ok() {
        return Ok(image);
    }
    let rootfs = test_rootfs(server_binary, &binary)?;
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(TEST_IMAGE_REPO.into()),
        tag: Some(hash.clone()),
        message: Some("labhub test server".into()),
        changes: vec![
            format!("USER {}:{}", JOVYAN.0, JOVYAN.1),
            "WORKDIR /home/jovyan".into(),
            "ENV PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "ENV HOME=/home/jovyan".into(),
        ],
        ..Default::default()
    };
    let mut import = docker.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
    while let Some(step) = import.next().await {
        step.map_err(|e| fail(&format!("importing {image}"), e))?;
    }
    docker.inspect_image(image.as_str()).await.map_err(|e| fail(&format!("{image} missing after import"), e))?;
    Ok(image)
}

/// The shared libraries `ldd` says the binary loads (none for a static binary).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = std::process::Command::new("ldd").arg(binary).output().map_err(|e| fail("running ldd", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines look like `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or
    // `/lib64/ld-linux-x86-64.so.2 (0x…)`; linux-vdso has no file.
    Ok(text
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// The root filesystem of the test image, as a tar archive with owners and modes set.
fn test_rootfs(binary_path: &Path, binary: &[u8]) -> Result<Vec<u8>, ImageError> {
    let mut tar = tar::Builder::new(Vec::new());
    let io = |e: std::io::Error| fail("packing the test image", e);
    let mut libraries = BTreeSet::new();
    for program in std::iter::once(binary_path).chain(HOST_PROGRAMS.iter().map(Path::new)) {
        libraries.extend(shared_libraries(program)?);
    }

    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for fixed in ["bin", "etc", "usr/local/bin", "usr/lib/rstudio-server/bin"] {
        dirs.extend(Path::new(fixed).ancestors().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf));
    }
    for lib in &libraries {
        let rel = lib.strip_prefix("/").unwrap_or(lib);
        dirs.extend(rel.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf));
    }
    for dir in &dirs {
        append_dir(&mut tar, dir, 0o755, (0, 0)).map_err(io)?;
    }
    append_dir(&mut tar, Path::new("home"), 0o755, (0, 0)).map_err(io)?;
    append_dir(&mut tar, Path::new("home/jovyan"), 0o755, JOVYAN).map_err(io)?;
    append_dir(&mut tar, Path::new("home/rstudio"), 0o755, RSTUDIO).map_err(io)?;
    append_dir(&mut tar, Path::new("tmp"), 0o1777, (0, 0)).map_err(io)?;

    append_file(&mut tar, Path::new("labhub-testserver"), binary, 0o755).map_err(io)?;
    for program in HOST_PROGRAMS {
        // `read` follows symlinks (`/bin/sh` is dash's): the program lands at its own path.
        let contents = std::fs::read(program).map_err(|e| fail(&format!("reading {program}"), e))?;
        append_file(&mut tar, Path::new(program.trim_start_matches('/')), &contents, 0o755).map_err(io)?;
    }
    append_symlink(&mut tar, Path::new("usr/local/bin/jupyter"), "/labhub-testserver").map_err(io)?;
    append_symlink(&mut tar, Path::new("usr/lib/rstudio-server/bin/rserver"), "/labhub-testserver").map_err(io)?;
    let passwd = "root:x:0:0:root:/root:/sbin/nologin\njovyan:x:1000:100:jovyan:/home/jovyan:/sbin/nologin\n";
    append_file(&mut tar, Path::new("etc/passwd"), passwd.as_bytes(), 0o644).map_err(io)?;
    let group = "root:x:0:\nusers:x:100:\nrstudio:x:1000:\n";
    append_file(&mut tar, Path::new("etc/group"), group.as_bytes(), 0o644).map_err(io)?;
    for lib in &libraries {
        // `read` follows symlinks: the library lands at the path the loader looks for.
        let contents = std::fs::read(lib).map_err(|e| fail(&format!("reading {}", lib.display()), e))?;
        let rel = lib.strip_prefix("/").unwrap_or(lib);
        append_file(&mut tar, rel, &contents, 0o755).map_err(io)?;
    }
    tar.into_inner().map_err(io)
}

fn header(kind: tar::EntryType, mode: u32, (uid, gid): (u64, u64), size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(0);
    h
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &Path, mode: u32, owner: (u64, u64)) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Directory, mode, owner, 0);
    tar.append_data(&mut h, path, std::io::empty())
}

fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, (0, 0), data.len() as u64);
    tar.append_data(&mut h, path, data)
}

fn append_symlink(tar: &mut tar::Builder<Vec<u8>>, path: &Path, target: &str) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Symlink, 0o777, (0, 0), 0);
    tar.append_link(&mut h, path, target)
}

/// The real JupyterLab image (`labhub/jupyterlab:1`), built from its recipe when absent;
/// a build takes minutes and needs root. Build progress goes to stderr.
pub async fn jupyterlab_image(spawner: &DockerSpawner) -> Result<ImageRef, ImageError> {
    let recipe = Recipe::by_name("jupyterlab").ok_or_else(|| ImageError("no jupyterlab recipe".into()))?;
    let image = ImageRef::parse(recipe.default_image()).map_err(|e| fail("recipe image", e))?;
    let present = |found: Result<Option<_>, _>| matches!(found, Ok(Some(_)));
    if present(spawner.inspect_image(&image).await) {
        return Ok(image);
    }
    let _lock = DirLock::acquire("jupyterlab", Duration::from_secs(45 * 60)).await?;
    if present(spawner.inspect_image(&image).await) {
        return Ok(image);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let printer = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            eprintln!("building {}: {}% {}", recipe.default_image(), p.percent, p.message);
        }
    });
    let built = spawner.build_recipe(recipe, &image, tx).await;
    let _ = printer.await;
    built.map_err(|e| fail(&format!("building {image}"), e))?;
    Ok(image)
}

/// The repository the single-user test image is tagged in.
pub const JUPYTERHUB_IMAGE_REPO: &str = "labhub-test/jupyterhub-singleuser";

/// The Dockerfile of the single-user test image.
const JUPYTERHUB_DOCKERFILE: &str = include_str!("../images/jupyterhub-singleuser.Dockerfile");

/// The JupyterLab image with JupyterHub's single-user server from PyPI, built when absent
/// (the JupyterLab image first, if that is absent too). Build output goes to stderr.
pub async fn jupyterhub_image(spawner: &DockerSpawner) -> Result<ImageRef, ImageError> {
    let base = jupyterlab_image(spawner).await?;
    let docker = spawner.docker();
    let base_id = docker.inspect_image(base.as_str()).await.map_err(|e| fail("inspecting the base", e))?.id;
    let mut hasher = Sha256::new();
    hasher.update(JUPYTERHUB_DOCKERFILE.as_bytes());
    hasher.update(base_id.unwrap_or_default().as_bytes());
    let hash = hex::encode(&hasher.finalize()[..8]);
    let image = ImageRef::parse(&format!("{JUPYTERHUB_IMAGE_REPO}:{hash}")).map_err(|e| fail("image tag", e))?;
    if docker.inspect_image(image.as_str()).await.is_ok() {
        return Ok(image);
    }
    let _lock = DirLock::acquire(&format!("jupyterhub-{hash}"), Duration::from_secs(20 * 60)).await?;
    if docker.inspect_image(image.as_str()).await.is_ok() {
        return Ok(image);
    }
    let ca = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [("Dockerfile", JUPYTERHUB_DOCKERFILE.as_bytes()), ("host-ca.crt", &ca[..])] {
        append_file(&mut tar, Path::new(name), data, 0o644).map_err(|e| fail("packing the build context", e))?;
    }
    let context = tar.into_inner().map_err(|e| fail("packing the build context", e))?;
    let options =
        bollard::query_parameters::BuildImageOptionsBuilder::new().t(image.as_str()).rm(true).forcerm(true).build();
    let mut build = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = build.next().await {
        let info = step.map_err(|e| fail(&format!("building {image}"), e))?;
        if let Some(message) = info.error_detail.and_then(|d| d.message) {
            return Err(fail(&format!("building {image}"), message));
        }
        for line in info.stream.iter().flat_map(|s| s.lines()).filter(|l| !l.trim().is_empty()) {
            eprintln!("building {image}: {line}");
        }
    }
    docker.inspect_image(image.as_str()).await.map_err(|e| fail(&format!("{image} missing after its build"), e))?;
    Ok(image)
}
