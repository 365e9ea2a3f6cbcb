//! The file `labhub env export` writes and `labhub env import` reads: a tar holding
//! `labhub-environment.json` (the provenance manifest) first, then `image.tar` (the engine's
//! archive of the image). Both sides stream: the image goes through a temporary file on export
//! (a tar entry needs its size first) and, on import, is read through twice: once to check it
//! before the engine sees it, then into the engine without tags.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use labhub_service::environments::ExportManifest;
use labhub_spawner::{DockerSpawner, environments};

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

/// Opens an export and reads its manifest; the archive is left at `image.tar`'s entry.
fn open_export(
    file: &Path,
    with_image: impl FnOnce(ExportManifest, &mut dyn Read) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut archive = tar::Archive::new(f);
    let mut entries = archive.entries()?;
    let manifest = {
        let mut first = entries.next().context("the file is empty")??;
        if first.path()?.to_str() != Some(MANIFEST) || first.size() > MAX_MANIFEST {
            bail!("{} is not a labhub environment export (its first entry is not {MANIFEST})", file.display());
        }
        let mut text = Vec::new();
        first.read_to_end(&mut text)?;
        serde_json::from_slice(&text).context("reading its manifest")?
    };
    let mut image = entries.next().context("the export holds no image")??;
    if image.path()?.to_str() != Some(IMAGE) {
        bail!("the export's second entry is not {IMAGE}");
    }
    with_image(manifest, &mut image)
}

/// Sends what is written as chunks to the engine's load.
struct ToEngine(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ToEngine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the engine stopped loading"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Loads the image of an export into the engine, checks it is the one its manifest names, and
/// returns the manifest. The image archive is read through first and refused before anything
/// is loaded unless it holds exactly one image whose config digest (its id) is the manifest's,
/// and it names no tag this engine has; it is then loaded without any tag, so a crafted archive
/// cannot move a tag (a catalogue entry's) to its image.
pub(super) async fn import(engine: &DockerSpawner, file: &Path) -> anyhow::Result<ExportManifest> {
    let path = file.to_path_buf();
    let (manifest, saved) = tokio::task::spawn_blocking(move || {
        let mut found = None;
        open_export(&path, |manifest, image| {
            let saved = environments::inspect_saved(image).map_err(anyhow::Error::msg)?;
            found = Some((manifest, saved));
            Ok(())
        })?;
        found.context("the export holds no image")
    })
    .await??;
    if saved.config_digest != manifest.image_id {
        bail!(
            "refused, nothing loaded: the export's image is {}, not the one its manifest records ({}): the file was changed or damaged",
            saved.config_digest,
            manifest.image_id
        );
    }
    let taken = engine.existing_tags(&saved.repo_tags).await?;
    if !taken.is_empty() {
        bail!(
            "refused, nothing loaded: the export's image would take the tags {} of images on this machine",
            taken.join(", ")
        );
    }
    let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let path = file.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        open_export(&path, |_, image| {
            let out = std::io::BufWriter::with_capacity(CHUNK, ToEngine(chunks_tx));
            environments::write_untagged(image, out).map_err(anyhow::Error::msg)
        })
    });
    let loaded = engine.load_image(tokio_stream::wrappers::ReceiverStream::new(chunks_rx)).await;
    let written = writer.await?;
    // The engine's reason first: a refused load also breaks off the writing.
    let loaded = loaded?;
    written?;
    if !loaded.contains(&manifest.image_id) {
        bail!(
            "the export's image ({}) is not the one its manifest records ({}): the file was changed or damaged",
            if loaded.is_empty() { "none".to_string() } else { loaded.join(", ") },
            manifest.image_id
        );
    }
    Ok(manifest)
}
