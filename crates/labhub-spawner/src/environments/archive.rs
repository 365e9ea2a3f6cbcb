//! Moving an image between engines: `docker save` into a file, `docker load` from a stream;
//! and reading a saved archive before the engine does, since `docker load` trusts whatever it
//! is given: it would load several images and move any tag (a catalogue entry's too) to
//! them. `inspect_saved` finds the one image an archive holds and the content id of its config
//! (which is the image id: the engine checks every layer against that config when it loads);
//! `write_untagged` copies the archive without any tag, so loading it moves none.

use std::collections::HashMap;
use std::io::{Read, Write};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use labhub_core::spawner::SpawnError;
use tokio::io::AsyncWriteExt;

use crate::DockerSpawner;
use crate::error::{engine_message, is_status, runtime_error};

impl DockerSpawner {
    /// Writes the image `id` as the engine saves it (a `docker save` archive) to `to`; the bytes written.
    pub async fn save_image(&self, id: &str, to: &mut tokio::fs::File) -> Result<u64, SpawnError> {
        let mut saved = self.docker().export_image(id);
        let mut written = 0u64;
        while let Some(chunk) = saved.next().await {
            let chunk = chunk.map_err(|e| runtime_error(&format!("saving {id}"), engine_message(&e)))?;
            to.write_all(&chunk).await.map_err(|e| runtime_error("writing the image", e))?;
            written += chunk.len() as u64;
        }
        to.flush().await.map_err(|e| runtime_error("writing the image", e))?;
        Ok(written)
    }

    /// Loads a `docker save` archive; returns the ids of the images it held.
    pub async fn load_image(
        &self,
        archive: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<Vec<String>, SpawnError> {
        let options = bollard::query_parameters::ImportImageOptions { quiet: true, ..Default::default() };
        let mut loading = self.docker().import_image_stream(options, archive, None);
        let mut ids = Vec::new();
        while let Some(info) = loading.next().await {
            let info = info.map_err(|e| runtime_error("loading the image", engine_message(&e)))?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(runtime_error("loading the image", e));
            }
            for line in info.stream.iter().flat_map(|s| s.lines()) {
                if let Some(id) = line.trim().strip_prefix("Loaded image ID: ") {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }

    /// Which of `tags` name an image on this engine.
    pub async fn existing_tags(&self, tags: &[String]) -> Result<Vec<String>, SpawnError> {
        let mut found = Vec::new();
        for tag in tags {
            match self.docker().inspect_image(tag).await {
                Ok(_) => found.push(tag.clone()),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(runtime_error(&format!("inspecting {tag}"), engine_message(&e))),
            }
        }
        Ok(found)
    }
}

/// What a saved archive (`docker save`) holds, read before anything is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedImage {
    /// `sha256:` of its config: the id the engine gives the image it loads.
    pub config_digest: String,
    /// The tags the archive would give it.
    pub repo_tags: Vec<String>,
}

/// The largest config or manifest read (they are JSON of a few kilobytes).
const MAX_JSON: u64 = 4 << 20;

#[derive(serde::Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
}

/// Reads a saved archive through: exactly one image, and the digest of its config as found.
pub fn inspect_saved(archive: impl Read) -> Result<SavedImage, String> {
    let mut archive = tar::Archive::new(archive);
    let mut digests: HashMap<String, String> = HashMap::new();
    let mut manifest: Option<Vec<ManifestEntry>> = None;
    for entry in archive.entries().map_err(|e| format!("reading the image archive: {e}"))? {
        let mut entry = entry.map_err(|e| format!("reading the image archive: {e}"))?;
        let path = entry.path().map_err(|e| format!("an entry's name: {e}"))?.to_string_lossy().into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular || entry.size() > MAX_JSON {
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| format!("reading {path}: {e}"))?;
        if path == "manifest.json" {
            manifest = Some(serde_json::from_slice(&data).map_err(|e| format!("the archive's manifest.json: {e}"))?);
        } else {
            digests.insert(path, format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))));
        }
    }
    let manifest = manifest.ok_or("the image archive has no manifest.json (it is not a `docker save` archive)")?;
    let [one] = manifest.as_slice() else {
        return Err(format!("the image archive holds {} images; an export holds exactly one", manifest.len()));
    };
    let config_digest = digests
        .remove(one.config.as_str())
        .ok_or_else(|| format!("the image archive lacks the config its manifest names ({})", one.config))?;
    Ok(SavedImage { config_digest, repo_tags: one.repo_tags.clone().unwrap_or_default() })
}

/// Copies a saved archive to `out` without tags: `manifest.json` with no `RepoTags`, no
/// `repositories` file, and an OCI `index.json` without the annotations that name images.
pub fn write_untagged(archive: impl Read, out: impl Write) -> Result<(), String> {
    let mut archive = tar::Archive::new(archive);
    let mut builder = tar::Builder::new(out);
    for entry in archive.entries().map_err(|e| format!("reading the image archive: {e}"))? {
        let mut entry = entry.map_err(|e| format!("reading the image archive: {e}"))?;
        let path = entry.path().map_err(|e| format!("an entry's name: {e}"))?.to_string_lossy().into_owned();
        let mut header = entry.header().clone();
        let rewrite = |data: &[u8], f: &dyn Fn(&mut serde_json::Value)| -> Result<Vec<u8>, String> {
            let mut v: serde_json::Value = serde_json::from_slice(data).map_err(|e| format!("{path}: {e}"))?;
            f(&mut v);
            serde_json::to_vec(&v).map_err(|e| format!("{path}: {e}"))
        };
        let data = match path.as_str() {
            "repositories" => continue,
            "manifest.json" | "index.json" if entry.size() <= MAX_JSON => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(|e| format!("reading {path}: {e}"))?;
                if path == "manifest.json" {
                    rewrite(&data, &|v| {
                        v.as_array_mut().into_iter().flatten().for_each(|m| m["RepoTags"] = serde_json::Value::Null)
                    })?
                } else {
                    rewrite(&data, &|v| {
                        if let Some(list) = v["manifests"].as_array_mut() {
                            list.iter_mut().filter_map(|m| m.as_object_mut()).for_each(|m| {
                                m.remove("annotations");
                            });
                        }
                    })?
                }
            }
            _ => {
                // `append_data` writes long names as the reader found them.
                builder.append_data(&mut header, &path, &mut entry).map_err(|e| format!("copying {path}: {e}"))?;
                continue;
            }
        };
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, &path, data.as_slice()).map_err(|e| format!("copying {path}: {e}"))?;
    }
    builder.into_inner().and_then(|mut w| w.flush()).map_err(|e| format!("writing the image archive: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(manifest: &str, config: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data).unwrap();
        };
        add("abc/layer.tar", b"not really a layer");
        add("cfg.json", config);
        add("manifest.json", manifest.as_bytes());
        add("repositories", br#"{"lab/jupyterlab":{"1":"abc"}}"#);
        b.into_inner().unwrap()
    }

    #[test]
    fn the_config_digest_and_tags_are_read_before_loading() {
        let config = br#"{"rootfs":{}}"#;
        let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(config)));
        let archive =
            saved(r#"[{"Config":"cfg.json","RepoTags":["lab/jupyterlab:1"],"Layers":["abc/layer.tar"]}]"#, config);
        let found = inspect_saved(archive.as_slice()).unwrap();
        assert_eq!(found, SavedImage { config_digest: digest.clone(), repo_tags: vec!["lab/jupyterlab:1".into()] });

        let mut untagged = Vec::new();
        write_untagged(archive.as_slice(), &mut untagged).unwrap();
        assert_eq!(
            inspect_saved(untagged.as_slice()).unwrap(),
            SavedImage { config_digest: digest, repo_tags: vec![] }
        );
        let names: Vec<String> = tar::Archive::new(untagged.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["abc/layer.tar", "cfg.json", "manifest.json"], "no repositories file");
    }

    #[test]
    fn an_archive_of_several_images_or_without_its_config_is_refused() {
        let two = r#"[{"Config":"cfg.json","Layers":[]},{"Config":"cfg.json","Layers":[]}]"#;
        let e = inspect_saved(saved(two, b"{}").as_slice()).unwrap_err();
        assert!(e.contains("holds 2 images"), "{e}");
        let missing = r#"[{"Config":"other.json","Layers":[]}]"#;
        let e = inspect_saved(saved(missing, b"{}").as_slice()).unwrap_err();
        assert!(e.contains("lacks the config"), "{e}");
    }
}
