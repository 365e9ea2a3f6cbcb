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

/// The local folder `source` names, if it may be read. Under `LocalSources::Under`, the
/// repository's own git data must lie under an allowed root too: a `.git` file (`gitdir:`),
/// a worktree's `commondir`, a symlinked `objects` or `refs`, or alternates would otherwise
/// let git read another folder's history. Every refusal reads the same, so the answer says
/// nothing about whether a path outside the roots exists.
fn local_path(source: &str, local: &LocalSources) -> Result<PathBuf, String> {
    let raw = source.strip_prefix("file://").unwrap_or(source);
    if !raw.starts_with('/') {
        return Err(format!("'{source}' is neither a URL (https://, http://, git://, ssh://) nor an absolute path"));
    }
    let roots = match local {
        LocalSources::Anywhere => return std::fs::canonicalize(raw).map_err(|e| format!("{raw}: {e}")),
        LocalSources::Under(roots) => roots,
    };
    let refused =
        || format!("{raw} is not a folder you may build from; use a repository URL (ask an admin for local folders)");
    let canonical: Vec<PathBuf> = roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).collect();
    let under = |p: &Path| canonical.iter().any(|r| p.starts_with(r));
    // Lexically first (against the roots as configured or as resolved): a path outside every
    // root is refused before anything is looked up.
    let lexical = Path::new(raw);
    if lexical.components().any(|c| matches!(c, std::path::Component::ParentDir))
        || !roots.iter().chain(&canonical).any(|r| lexical.starts_with(r))
    {
        return Err(refused());
    }
    let path = std::fs::canonicalize(raw).map_err(|_| refused())?;
    if !under(&path) || !git_data_under(&path, &under) {
        return Err(refused());
    }
    Ok(path)
}

/// Whether every part of the repository at `path` that git reads resolves where `under` allows,
/// and it borrows no objects from elsewhere.
fn git_data_under(path: &Path, under: &impl Fn(&Path) -> bool) -> bool {
    let canonical_under = |p: &Path| std::fs::canonicalize(p).is_ok_and(|c| under(&c));
    let dot_git = path.join(".git");
    let git_dir = match std::fs::symlink_metadata(&dot_git) {
        Ok(m) if m.is_file() => {
            let Ok(text) = std::fs::read_to_string(&dot_git) else { return false };
            let Some(target) = text.trim().strip_prefix("gitdir:") else { return false };
            path.join(target.trim())
        }
        Ok(_) => dot_git,
        // A bare repository.
        Err(_) => path.to_path_buf(),
    };
    if !canonical_under(&git_dir) {
        return false;
    }
    let common = match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(c) => git_dir.join(c.trim()),
        Err(_) => git_dir.clone(),
    };
    let alternates = common.join("objects/info/alternates");
    let borrows = std::fs::metadata(&alternates).is_ok_and(|m| m.len() > 0);
    !borrows
        && ["", "objects", "refs"].iter().all(|p| {
            let part = common.join(p);
            !part.exists() || canonical_under(&part)
        })
        && ["HEAD", "packed-refs", "config"].iter().all(|p| {
            let part = common.join(p);
            std::fs::symlink_metadata(&part).map_or(true, |m| !m.file_type().is_symlink())
        })
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
        // Nor objects from folders the hub's own environment names.
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .env_remove("GIT_DIR")
        .env_remove("GIT_OBJECT_DIRECTORY")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn git_in(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    }

    /// A repository with one commit at `dir`.
    fn repo(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        git_in(dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("requirements.txt"), "six\n").unwrap();
        git_in(dir, &["add", "."]);
        git_in(dir, &["commit", "-qm", "x"]);
    }

    #[test]
    fn a_repository_may_not_reach_outside_the_allowed_folders() {
        let allowed = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let local = LocalSources::Under(vec![allowed.path().to_path_buf()]);
        let ok = allowed.path().join("ok");
        repo(&ok);
        assert!(local_path(ok.to_str().unwrap(), &local).is_ok());

        // A `.git` file pointing at another folder's repository.
        let secret = outside.path().join("secret");
        repo(&secret);
        let pointer = allowed.path().join("pointer");
        std::fs::create_dir_all(&pointer).unwrap();
        std::fs::write(pointer.join(".git"), format!("gitdir: {}/.git\n", secret.display())).unwrap();
        // Objects borrowed through alternates.
        let borrower = allowed.path().join("borrower");
        repo(&borrower);
        let alt = borrower.join(".git/objects/info/alternates");
        std::fs::write(&alt, format!("{}/.git/objects\n", secret.display())).unwrap();
        // A symlinked objects folder.
        let linked = allowed.path().join("linked");
        repo(&linked);
        std::fs::remove_dir_all(linked.join(".git/objects")).unwrap();
        std::os::unix::fs::symlink(secret.join(".git/objects"), linked.join(".git/objects")).unwrap();
        // A symlink to the outside, and a path climbing out.
        let link = allowed.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let climb =
            format!("{}/../{}", allowed.path().display(), outside.path().file_name().unwrap().to_str().unwrap());

        let refusal = |p: &str| local_path(p, &local).expect_err(p);
        for p in
            [pointer.to_str().unwrap(), borrower.to_str().unwrap(), linked.to_str().unwrap(), link.to_str().unwrap()]
        {
            assert!(refusal(p).contains("is not a folder you may build from"), "{p}");
        }
        assert!(refusal(&climb).contains("is not a folder you may build from"));
        // Whether a path outside exists is not told.
        let there = secret.to_str().unwrap().to_string();
        let missing = format!("{there}-missing");
        assert_eq!(refusal(&there).replace(&there, "P"), refusal(&missing).replace(&missing, "P"));
        let inside_missing = format!("{}/nothing", allowed.path().display());
        assert!(refusal(&inside_missing).contains("is not a folder you may build from"));
    }
}
