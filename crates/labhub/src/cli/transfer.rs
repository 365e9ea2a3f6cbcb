//! The file `labhub env export` writes and `labhub env import` reads: a tar holding
//! `labhub-environment.json` (the provenance manifest) first, then `image.tar` (the engine's
//! archive of the image). Both sides stream: the image goes through a temporary file on export
//! (a tar entry needs its size first) and straight into the engine on import.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use labhub_service::environments::ExportManifest;
use labhub_spawner::DockerSpawner;

const MANIFEST: &str = "labhub-environment.json";
const IMAGE: &str = "image.tar";
/// The largest manifest read.
const MAX_MANIFEST: u64 = 1 << 20;
/// How much of the image is read ahead of the engine.
const CHUNK: usize = 1 << 20;

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h
}

/// Writes the export of `manifest`'s image to standard output.
pub(super) async fn export(engine: &DockerSpawner, manifest: &ExportManifest) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(manifest)?;
    let saved = tempfile::NamedTempFile::new().context("a temporary file for the image")?;
    let mut file = tokio::fs::File::create(saved.path()).await?;
    engine.save_image(&manifest.image_id, &mut file).await?;
    drop(file);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        let mut out = tar::Builder::new(stdout.lock());
        out.append_data(&mut header(json.len() as u64), MANIFEST, json.as_slice())?;
        let mut image = std::fs::File::open(saved.path())?;
        let size = image.metadata()?.len();
        out.append_data(&mut header(size), IMAGE, &mut image)?;
        std::io::Write::flush(&mut out.into_inner()?)?;
        Ok(())
    })
    .await??;
    Ok(())
}

/// Loads the image of an export into the engine, checks it is the one its manifest names, and
/// returns the manifest.
pub(super) async fn import(engine: &DockerSpawner, file: &Path) -> anyhow::Result<ExportManifest> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let (manifest_tx, manifest_rx) = tokio::sync::oneshot::channel::<anyhow::Result<ExportManifest>>();
    let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let shown = file.display().to_string();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut archive = tar::Archive::new(f);
        let mut entries = archive.entries()?;
        let manifest = (|| -> anyhow::Result<ExportManifest> {
            let mut first = entries.next().context("the file is empty")??;
            if first.path()?.to_str() != Some(MANIFEST) || first.size() > MAX_MANIFEST {
                bail!("{shown} is not a labhub environment export (its first entry is not {MANIFEST})");
            }
            let mut text = Vec::new();
            first.read_to_end(&mut text)?;
            serde_json::from_slice(&text).context("reading its manifest")
        })();
        let failed = manifest.is_err();
        let _ = manifest_tx.send(manifest);
        if failed {
            return Ok(());
        }
        let mut image = entries.next().context("the export holds no image")??;
        if image.path()?.to_str() != Some(IMAGE) {
            bail!("the export's second entry is not {IMAGE}");
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = image.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if chunks_tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                return Ok(());
            }
        }
    });
    let manifest = manifest_rx.await.context("reading the export")??;
    let loaded = engine.load_image(tokio_stream::wrappers::ReceiverStream::new(chunks_rx)).await;
    reader.await??;
    let loaded = loaded?;
    if !loaded.contains(&manifest.image_id) {
        bail!(
            "the export's image ({}) is not the one its manifest records ({}): the file was changed or damaged",
            if loaded.is_empty() { "none".to_string() } else { loaded.join(", ") },
            manifest.image_id
        );
    }
    Ok(manifest)
}
