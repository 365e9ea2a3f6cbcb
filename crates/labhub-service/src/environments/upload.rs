//! Uploaded sources: a tar or tar.gz of a repository's files instead of a git repository.
//! An upload is read whole (at most `environments.max_upload` as sent), checked before
//! anything is recorded — regular files and folders only, relative paths that stay inside,
//! bounded in count and size — and packed again the hub's way (sorted, no dates or owners),
//! whose SHA-256 names it: the same files give the same `sha256:` however they were packed,
//! so an unchanged upload is a cache hit like an unchanged commit. The archive as sent is
//! kept in Postgres, where every replica finds it to build again.

use std::collections::BTreeMap;
use std::io::Read;

use async_compression::tokio::bufread::GzipDecoder;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use labhub_core::resources::format_bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::ServiceError;

/// What an uploaded environment's `source` reads.
pub const UPLOAD_SOURCE: &str = "upload";
/// The most an upload's files may add up to, unpacked (as git sources).
const MAX_UNPACKED: u64 = 256 << 20;
/// The most entries an upload may hold.
const MAX_ENTRIES: usize = 10_000;
/// A gzip stream starts with these two bytes; a tar never does (its first bytes are a name).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An upload's files, checked and packed the hub's way.
#[derive(Debug)]
pub(super) struct Checked {
    /// `sha256:` of `tar`.
    pub(super) sha256: String,
    /// A plain tar of regular files, sorted by path.
    pub(super) tar: Vec<u8>,
}

/// Reads an upload whole; refused past `max` bytes (and at once, not after reading the rest).
pub(super) async fn read(
    mut upload: BoxStream<'static, Result<Bytes, std::io::Error>>,
    max: u64,
) -> Result<Vec<u8>, ServiceError> {
    let mut sent = Vec::new();
    while let Some(chunk) = upload.next().await {
        let chunk = chunk.map_err(|e| ServiceError::Invalid(format!("the upload could not be read: {e}")))?;
        if (sent.len() + chunk.len()) as u64 > max {
            return Err(ServiceError::TooLarge(format!(
                "the upload is larger than {} (environments.max_upload); leave out data files, or use a git repository",
                format_bytes(max)
            )));
        }
        sent.extend_from_slice(&chunk);
    }
    if sent.is_empty() {
        return Err(ServiceError::Invalid(
            "the upload is empty: send a tar or tar.gz of the repository's files".into(),
        ));
    }
    Ok(sent)
}

/// Checks running at once: each inflates and packs up to [`MAX_UNPACKED`] in memory.
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Checks an archive as sent (gzip undone when its first bytes say so) and packs its files,
/// on a blocking thread (inflating, parsing and hashing never yield), two at a time: more
/// are refused with "try again" rather than queued in memory.
pub(super) async fn check(sent: &[u8]) -> Result<Checked, ServiceError> {
    let _slot = CHECKS.try_acquire().map_err(|_| ServiceError::TooMany {
        message: "Other uploads are being checked right now. Try again in a few seconds.".into(),
        retry_after: std::time::Duration::from_secs(5),
    })?;
    let sent = sent.to_vec();
    tokio::task::spawn_blocking(move || futures::executor::block_on(check_here(&sent)))
        .await
        .map_err(|e| ServiceError::Internal(format!("checking an upload failed: {e}")))?
}

async fn check_here(sent: &[u8]) -> Result<Checked, ServiceError> {
    let mut tar = Vec::new();
    if sent.starts_with(&GZIP_MAGIC) {
        GzipDecoder::new(sent)
            .take(MAX_UNPACKED + 1)
            .read_to_end(&mut tar)
            .await
            .map_err(|e| ServiceError::Invalid(format!("the upload is not a readable tar.gz: {e}")))?;
    } else {
        tar.extend_from_slice(sent);
    }
    if tar.len() as u64 > MAX_UNPACKED {
        return Err(ServiceError::Invalid(format!(
            "the upload's files add up to more than {}",
            format_bytes(MAX_UNPACKED)
        )));
    }
    pack(&tar).map_err(ServiceError::Invalid)
}

/// Reads a tar's entries, refusing what a build must not get, and packs the files again.
fn pack(tar: &[u8]) -> Result<Checked, String> {
    let not_tar = |e: std::io::Error| format!("the upload is not a tar or tar.gz archive ({e})");
    let mut files: BTreeMap<String, (bool, Vec<u8>)> = BTreeMap::new();
    let mut archive = tar::Archive::new(tar);
    for (n, entry) in archive.entries().map_err(not_tar)?.enumerate() {
        if n == MAX_ENTRIES {
            return Err(format!("the upload holds more than {MAX_ENTRIES} entries"));
        }
        let mut entry = entry.map_err(not_tar)?;
        let raw = String::from_utf8(entry.path_bytes().into_owned()).map_err(|e| {
            format!("the upload's entry '{}' is not named in UTF-8", String::from_utf8_lossy(e.as_bytes()))
        })?;
        let path = relative(&raw)?;
        match entry.header().entry_type() {
            // `git archive` writes the commit's id in one.
            tar::EntryType::XGlobalHeader | tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous if !path.is_empty() => {}
            other => {
                return Err(format!(
                    "the upload's entry '{raw}' is {}: only files and folders may be uploaded",
                    kind(other)
                ));
            }
        }
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| format!("reading the upload's entry '{raw}': {e}"))?;
        files.insert(path, (executable, data));
    }
    if files.is_empty() {
        return Err("the upload holds no files".into());
    }
    let files = without_lone_folder(files);
    for path in files.keys() {
        let mut parent = path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            if files.contains_key(up) {
                return Err(format!("'{up}' is both a file and a folder in the upload"));
            }
            parent = up;
        }
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, (executable, data)) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(if *executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        builder.append_data(&mut header, path, data.as_slice()).map_err(|e| format!("packing '{path}': {e}"))?;
    }
    let tar = builder.into_inner().map_err(|e| format!("packing the upload: {e}"))?;
    Ok(Checked { sha256: format!("sha256:{}", hex::encode(Sha256::digest(&tar))), tar })
}

/// An entry's path made relative (`./` dropped); refused when absolute or climbing out.
fn relative(raw: &str) -> Result<String, String> {
    if raw.starts_with('/') {
        return Err(format!(
            "the upload's entry '{raw}' has an absolute path: only paths inside the folder may be uploaded"
        ));
    }
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(format!("the upload's entry '{raw}' climbs out of its folder ('..')"));
    }
    Ok(parts.join("/"))
}

/// The files with their one top folder taken off, when they all lie in one (as `tar czf x.tar.gz
/// folder` and a forge's download make): the recipe's files are then at the root.
fn without_lone_folder(files: BTreeMap<String, (bool, Vec<u8>)>) -> BTreeMap<String, (bool, Vec<u8>)> {
    let top = |p: &str| p.split_once('/').map(|(t, _)| t.to_string());
    let first = files.keys().next().and_then(|p| top(p));
    match first {
        Some(t) if files.keys().all(|p| top(p).as_deref() == Some(t.as_str())) => {
            files.into_iter().map(|(p, f)| (p[t.len() + 1..].to_string(), f)).collect()
        }
        _ => files,
    }
}

fn kind(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::Fifo => "a named pipe",
        tar::EntryType::Regular | tar::EntryType::Continuous => "a file without a name",
        _ => "of a kind labhub does not take",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, body) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            if *kind == tar::EntryType::Symlink {
                h.set_size(0);
                b.append_link(&mut h, path, body).unwrap();
            } else {
                h.set_size(body.len() as u64);
                // `append_data` refuses `..`; the raw name is written as a client might.
                h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, body.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    const FILE: tar::EntryType = tar::EntryType::Regular;

    #[test]
    fn the_same_files_give_the_same_sha_however_packed() {
        let plain = pack(&tar_of(&[("requirements.txt", FILE, "six\n"), ("binder/apt.txt", FILE, "jq\n")])).unwrap();
        let in_folder = pack(&tar_of(&[
            ("./repo/", tar::EntryType::Directory, ""),
            ("./repo/binder/apt.txt", FILE, "jq\n"),
            ("./repo/requirements.txt", FILE, "six\n"),
        ]))
        .unwrap();
        assert_eq!(plain.sha256, in_folder.sha256);
        assert!(plain.sha256.starts_with("sha256:"));
        let changed = pack(&tar_of(&[("requirements.txt", FILE, "six==1.16.0\n")])).unwrap();
        assert_ne!(plain.sha256, changed.sha256);
        let names: Vec<String> = tar::Archive::new(plain.tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["binder/apt.txt", "requirements.txt"]);
    }

    #[test]
    fn links_absolute_paths_and_climbing_out_are_refused_naming_the_entry() {
        let e = pack(&tar_of(&[("ok.txt", FILE, "x"), ("../evil.txt", FILE, "x")])).unwrap_err();
        assert!(e.contains("'../evil.txt'") && e.contains("climbs out"), "{e}");
        let e = pack(&tar_of(&[("/etc/passwd", FILE, "x")])).unwrap_err();
        assert!(e.contains("'/etc/passwd'") && e.contains("absolute"), "{e}");
        let e = pack(&tar_of(&[("requirements.txt", tar::EntryType::Symlink, "/etc/shadow")])).unwrap_err();
        assert!(e.contains("'requirements.txt' is a symbolic link"), "{e}");
        let e = pack(&tar_of(&[("a", FILE, "x"), ("a/b", FILE, "y")])).unwrap_err();
        assert!(e.contains("'a' is both a file and a folder"), "{e}");
        assert!(pack(&tar_of(&[("empty/", tar::EntryType::Directory, "")])).unwrap_err().contains("no files"));
        assert!(pack(b"not an archive at all, just some text".repeat(20).as_slice()).is_err());
    }
}
