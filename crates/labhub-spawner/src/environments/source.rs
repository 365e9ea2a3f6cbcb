//! Fetching an environment's source: a git repository (a URL, or a local path where allowed)
//! at a ref, as the resolved commit and an archive of its files. git runs on the hub's
//! machine with prompts off and only the transports the source's kind needs.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use labhub_core::environment::LocalSources;
use tokio::process::Command;

/// The largest repository archive a build reads.
const MAX_ARCHIVE: usize = 256 << 20;

/// A repository at a commit.
pub(crate) struct Fetched {
    pub(crate) commit: String,
    pub(crate) archive: Vec<u8>,
}

/// Whether `source` is a URL git may fetch over the network.
fn is_url(source: &str) -> bool {
    ["https://", "http://", "git://", "ssh://"].iter().any(|p| source.starts_with(p))
}

/// The local folder `source` names, if it may be read.
fn local_path(source: &str, local: &LocalSources) -> Result<PathBuf, String> {
    let raw = source.strip_prefix("file://").unwrap_or(source);
    if !raw.starts_with('/') {
        return Err(format!("'{source}' is neither a URL (https://, http://, git://, ssh://) nor an absolute path"));
    }
    let path = std::fs::canonicalize(raw).map_err(|e| format!("{raw}: {e}"))?;
    let allowed = match local {
        LocalSources::Anywhere => true,
        LocalSources::Under(roots) => {
            roots.iter().any(|root| std::fs::canonicalize(root).is_ok_and(|r| path.starts_with(&r)))
        }
    };
    if allowed {
        Ok(path)
    } else {
        Err(format!("{raw} is not a folder you may build from; use a repository URL (ask an admin for local folders)"))
    }
}

/// Runs git with prompts off and `protocols` the only transports; returns its standard output.
async fn git(dir: &Path, protocols: &str, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", protocols)
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        // The hub account's own git settings (credential helpers, `insteadOf`) are not lent
        // to whoever names a source.
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("could not run git: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("git failed").trim().to_string())
    }
}

/// Fetches `source` at `git_ref`.
pub(crate) async fn fetch(source: &str, git_ref: &str, local: &LocalSources) -> Result<Fetched, String> {
    if git_ref.is_empty() || git_ref.starts_with('-') || git_ref.contains("..") || git_ref.bytes().any(|b| b <= b' ') {
        return Err(format!("'{git_ref}' is not a branch, tag or commit"));
    }
    let (from, protocols) = if is_url(source) {
        // ssh would sign in with the hub's own keys: only for sources admins may name.
        let ssh = matches!(local, LocalSources::Anywhere);
        (source.to_string(), if ssh { "http:https:git:ssh" } else { "http:https:git" })
    } else {
        (local_path(source, local)?.to_string_lossy().into_owned(), "file")
    };
    let work =
        tempfile::Builder::new().prefix("labhub-env-src-").tempdir().map_err(|e| format!("a work folder: {e}"))?;
    git(work.path(), protocols, &["clone", "--quiet", "--bare", "--", &from, "repo"])
        .await
        .map_err(|e| format!("could not fetch {source}: {e}"))?;
    let repo = work.path().join("repo");
    let spec = format!("{git_ref}^{{commit}}");
    let commit = git(&repo, protocols, &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec])
        .await
        .map_err(|_| format!("{source} has no branch, tag or commit '{git_ref}'"))?;
    let commit = String::from_utf8_lossy(&commit).trim().to_string();
    let archive = git(&repo, protocols, &["archive", "--format=tar", &commit]).await?;
    if archive.len() > MAX_ARCHIVE {
        return Err(format!("{source} at {git_ref} is larger than {} MiB", MAX_ARCHIVE >> 20));
    }
    Ok(Fetched { commit, archive })
}
