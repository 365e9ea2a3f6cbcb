//! Reading a repository's recipe (repo2docker's conventions) and writing the build it asks
//! for: a generated build file on the base, one layer per kind of file, or the repository's
//! own `Dockerfile` once it is checked. Pure: no engine, no network.
//!
//! Layers, in order (so a change rebuilds only what follows it): `runtime.txt`'s check,
//! `apt.txt`, `install.R`, `requirements.txt` with `environment.yml`'s `pip:` part, the
//! repository's files at `/srv/repo`, `postBuild`, `start`. Packages from PyPI are fetched
//! into wheels in a first stage, the only one that sees the index's CA bundle; the image
//! installs them from there, so no certificate of the build machine's is left in it.

use std::collections::BTreeMap;

use labhub_core::ImageRef;
use sha2::{Digest, Sha256};

/// The largest recipe file read (a `requirements.txt`, a `postBuild`).
const MAX_RECIPE_FILE: usize = 1 << 20;
/// Where the generated files sit in the build context (no repository file is named so).
pub(crate) const CONTEXT_DIR: &str = ".labhub-build";
/// Where the repository's files are in the image.
pub(crate) const REPO_DIR: &str = "/srv/repo";

/// A file of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoFile {
    pub(crate) path: String,
    pub(crate) mode: u32,
    pub(crate) data: Vec<u8>,
}

/// The repository's files, read from its archive (regular files only; links are left out).
pub(crate) fn read_archive(tar_bytes: &[u8]) -> Result<Vec<RepoFile>, String> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut files = Vec::new();
    let entries = archive.entries().map_err(|e| format!("reading the repository's archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading the repository's archive: {e}"))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().map_err(|e| format!("a path in the repository: {e}"))?.to_string_lossy().into_owned();
        let mode = entry.header().mode().unwrap_or(0o644);
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).map_err(|e| format!("reading {path}: {e}"))?;
        files.push(RepoFile { path, mode, data });
    }
    Ok(files)
}

/// What the base image offers that a recipe may ask for.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    /// Its content id (`FROM` names it by id: never pulled, never a moved tag).
    pub(crate) id: String,
    /// The user its server runs as (`1000`), which installs pip packages and runs `postBuild`.
    pub(crate) user: String,
    /// Its entrypoint, which `start` is put behind.
    pub(crate) entrypoint: Vec<String>,
    /// Its work directory, put back after `postBuild` ran in the repository.
    pub(crate) workdir: Option<String>,
    /// Whether it has R.
    pub(crate) has_r: bool,
}

/// The package indexes the generated build uses.
#[derive(Debug, Clone, Default)]
pub(crate) struct Indexes {
    pub(crate) pip_index_url: Option<String>,
    /// The CA bundle's contents, put in the wheel stage only.
    pub(crate) pip_cert: Option<Vec<u8>>,
    pub(crate) debian_mirror: Option<String>,
}

/// A build ready for the engine: its context (a tar) and the path of its build file there.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) context: Vec<u8>,
    pub(crate) dockerfile: String,
    /// Images the build starts from, all of which must be on the machine.
    pub(crate) from: Vec<String>,
    pub(crate) recipe_hash: String,
    /// Whether the repository brought its own `Dockerfile`.
    pub(crate) own_dockerfile: bool,
}

/// The folder the recipe is read from: `binder/` or `.binder/` when there is one, else the root.
fn recipe_dir(files: &[RepoFile]) -> &'static str {
    for dir in ["binder/", ".binder/"] {
        if files.iter().any(|f| f.path.starts_with(dir)) {
            return dir;
        }
    }
    ""
}

fn text<'a>(name: &str, data: &'a [u8]) -> Result<&'a str, String> {
    if data.len() > MAX_RECIPE_FILE {
        return Err(format!("{name} is larger than {} KiB", MAX_RECIPE_FILE >> 10));
    }
    std::str::from_utf8(data).map_err(|_| format!("{name} is not UTF-8 text"))
}

/// The lines of a list file that say something (comments and blank lines left out).
fn list_lines(body: &str) -> impl Iterator<Item = (usize, &str)> {
    body.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
}

/// Reads `runtime.txt`: `python-X.Y` is the only runtime a base offers.
fn runtime(name: &str, body: &str) -> Result<Option<String>, String> {
    let Some((line, value)) = list_lines(body).next() else { return Ok(None) };
    let version = value.strip_prefix("python-").ok_or_else(|| {
        format!("{name} line {line}: '{value}' is not a runtime this hub builds (only python-X.Y, the base's Python)")
    })?;
    let ok = version.split('.').count() >= 2
        && version.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(format!("{name} line {line}: '{value}' is not python-X.Y"));
    }
    Ok(Some(version.split('.').take(2).collect::<Vec<_>>().join(".")))
}

/// Debian package names in `apt.txt`, checked (they go on a command line).
fn apt_packages(name: &str, body: &str) -> Result<Vec<String>, String> {
    list_lines(body)
        .map(|(line, p)| {
            let ok = p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.:=~".contains(&b));
            if ok { Ok(p.to_string()) } else { Err(format!("{name} line {line}: '{p}' is not a Debian package name")) }
        })
        .collect()
}

/// The `pip:` part of an `environment.yml`, as requirement lines. Conda packages cannot be
/// installed (no conda channel on this hub): they are an error naming their lines.
fn environment_pip(name: &str, body: &str) -> Result<Vec<String>, String> {
    let mut pip = Vec::new();
    let mut conda = Vec::new();
    let mut in_deps = false;
    let mut pip_indent: Option<usize> = None;
    for (i, raw) in body.lines().enumerate() {
        let line_no = i + 1;
        let content = raw.split(" #").next().unwrap_or("").trim_end();
        if content.trim().is_empty() || content.trim_start().starts_with('#') {
            continue;
        }
        let indent = content.len() - content.trim_start().len();
        let item = content.trim_start();
        if indent == 0 {
            in_deps = item == "dependencies:";
            pip_indent = None;
            continue;
        }
        if !in_deps {
            continue;
        }
        if let Some(pi) = pip_indent {
            if indent > pi {
                if let Some(req) = item.strip_prefix("- ") {
                    pip.push(unquote(req.trim()).to_string());
                }
                continue;
            }
            pip_indent = None;
        }
        let Some(dep) = item.strip_prefix("- ").map(str::trim) else { continue };
        if dep == "pip:" {
            pip_indent = Some(indent);
        } else if dep == "pip" || dep.starts_with("python=") || dep.starts_with("python ") || dep == "python" {
            // pip and the base's Python are already there.
        } else {
            conda.push(format!("line {line_no} ({})", unquote(dep)));
        }
    }
    if !conda.is_empty() {
        return Err(format!(
            "{name} asks for conda packages, which this hub cannot install (no conda channel is configured): {}; \
             list them under 'pip:' or in requirements.txt instead",
            conda.join(", ")
        ));
    }
    Ok(pip)
}

fn unquote(s: &str) -> &str {
    s.trim_matches(|c| c == '"' || c == '\'')
}

/// Checks a repository's own `Dockerfile`: every `FROM` names a catalogue image (or an
/// earlier stage), and nothing makes the engine fetch from outside (remote `ADD`, `COPY
/// --from` an image). Returns the images it starts from.
fn check_dockerfile(name: &str, body: &str, catalogue: &[ImageRef]) -> Result<Vec<String>, String> {
    let mut stages: Vec<String> = Vec::new();
    let mut from = Vec::new();
    for (i, raw) in body.lines().enumerate() {
        let line = raw.trim();
        let at = || format!("{name} line {}", i + 1);
        // The engine joins continued lines and obeys parser directives (`# escape=` changes
        // what continues a line) before it reads an instruction; this check reads one line at
        // a time, so both are refused rather than half understood.
        if line.ends_with('\\') {
            return Err(format!("{}: write each instruction on one line (no continued lines)", at()));
        }
        if let Some(comment) = line.strip_prefix('#')
            && comment.split_once('=').is_some_and(|(key, _)| {
                let key = key.trim();
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphabetic())
            })
        {
            return Err(format!("{}: parser directives (such as `# escape=`) are not allowed", at()));
        }
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next().map(str::to_ascii_uppercase) else { continue };
        match instruction.as_str() {
            "ONBUILD" => {
                return Err(format!("{}: ONBUILD is not allowed (it would run in builds on top of this one)", at()));
            }
            "FROM" => {
                let args: Vec<&str> = words.collect();
                let image = args.iter().find(|a| !a.starts_with("--")).copied().unwrap_or("");
                if args.iter().any(|a| a.starts_with("--")) || image.contains('$') {
                    return Err(format!(
                        "{}: FROM must name a catalogue image plainly (no options, no variables)",
                        at()
                    ));
                }
                if !stages.iter().any(|s| s == image) {
                    if !catalogue.iter().any(|c| c.as_str() == image) {
                        let known: Vec<&str> = catalogue.iter().map(ImageRef::as_str).collect();
                        return Err(format!(
                            "{}: FROM {image} is not a catalogue image; build on one of: {}",
                            at(),
                            known.join(", ")
                        ));
                    }
                    from.push(image.to_string());
                }
                if let (Some(kw), Some(stage)) = (args.get(1), args.get(2))
                    && kw.eq_ignore_ascii_case("as")
                {
                    stages.push(stage.to_ascii_lowercase());
                }
            }
            "ADD" if line.contains("://") => {
                return Err(format!("{}: ADD from a URL is not allowed (the build fetches nothing itself)", at()));
            }
            "COPY" | "ADD" => {
                if let Some(src) = words.find_map(|w| w.strip_prefix("--from=")) {
                    let known = stages.iter().any(|s| s.eq_ignore_ascii_case(src)) || src.parse::<usize>().is_ok();
                    if !known {
                        return Err(format!("{}: COPY --from={src} names no earlier stage", at()));
                    }
                }
            }
            _ => {}
        }
    }
    if from.is_empty() {
        return Err(format!("{name} has no FROM line"));
    }
    Ok(from)
}

/// The recipe's files, by name, from its folder.
fn recipe_files<'a>(files: &'a [RepoFile], dir: &str) -> BTreeMap<&'a str, &'a RepoFile> {
    files.iter().filter_map(|f| f.path.strip_prefix(dir).filter(|n| !n.contains('/')).map(|n| (n, f))).collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the build for a repository's files.
pub(crate) fn plan(
    files: &[RepoFile],
    base: &Base,
    catalogue: &[ImageRef],
    indexes: &Indexes,
    labels: &BTreeMap<String, String>,
) -> Result<Plan, String> {
    let dir = recipe_dir(files);
    let recipe = recipe_files(files, dir);
    let named = |n: &str| format!("{dir}{n}");
    if let Some(own) = recipe.get("Dockerfile") {
        let body = text(&named("Dockerfile"), &own.data)?;
        let from = check_dockerfile(&named("Dockerfile"), body, catalogue)?;
        let recipe_hash = hash(files.iter().map(|f| (f.path.as_str(), f.data.as_slice())));
        let labelled = format!("{body}\n{}", label_line(labels, &recipe_hash)).into_bytes();
        let context = pack(files.iter().map(|f| {
            let data = if f.path == own.path { labelled.as_slice() } else { f.data.as_slice() };
            (f.path.clone(), f.mode, data)
        }))?;
        return Ok(Plan { recipe_hash, context, dockerfile: named("Dockerfile"), from, own_dockerfile: true });
    }

    let mut df =
        format!("# Generated by labhub from the repository's recipe ({}).\n", if dir.is_empty() { "/" } else { dir });
    let mut extra: Vec<(String, u32, Vec<u8>)> = Vec::new();
    let user = if base.user.is_empty() { "root".to_string() } else { base.user.clone() };

    let mut requirements = String::new();
    if let Some(f) = recipe.get("requirements.txt") {
        let body = text(&named("requirements.txt"), &f.data)?;
        for (line, l) in list_lines(body) {
            if l.starts_with("-r") || l.starts_with("-c") || l.starts_with("--requirement") || l.starts_with("-e") {
                return Err(format!(
                    "{} line {line}: '{l}' refers to another file or a folder; list the packages themselves",
                    named("requirements.txt")
                ));
            }
        }
        requirements.push_str(body);
        requirements.push('\n');
    }
    if let Some(f) = recipe.get("environment.yml") {
        for r in environment_pip(&named("environment.yml"), text(&named("environment.yml"), &f.data)?)? {
            requirements.push_str(&r);
            requirements.push('\n');
        }
    }
    let has_pip = list_lines(&requirements).next().is_some();
    if has_pip {
        df.push_str(&format!("FROM {} AS labhub-wheels\nUSER root\n", base.id));
        df.push_str(&format!("COPY {CONTEXT_DIR}/requirements.txt /tmp/labhub/requirements.txt\n"));
        let mut env = String::from("PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CONFIG_FILE=/dev/null");
        if let Some(url) = &indexes.pip_index_url {
            env.push_str(&format!(" PIP_INDEX_URL={}", shell_quote(url)));
        }
        if let Some(ca) = &indexes.pip_cert {
            extra.push(("pip-ca.pem".into(), 0o644, ca.clone()));
            df.push_str(&format!("COPY {CONTEXT_DIR}/pip-ca.pem /tmp/labhub/pip-ca.pem\n"));
            env.push_str(" PIP_CERT=/tmp/labhub/pip-ca.pem");
        }
        df.push_str(&format!(
            "RUN {env} python3 -m pip wheel -r /tmp/labhub/requirements.txt -w /tmp/labhub/wheels\n\n"
        ));
        extra.push(("requirements.txt".into(), 0o644, requirements.clone().into_bytes()));
    }

    df.push_str(&format!("FROM {}\nUSER root\n", base.id));
    if let Some(f) = recipe.get("runtime.txt")
        && let Some(version) = runtime(&named("runtime.txt"), text(&named("runtime.txt"), &f.data)?)?
    {
        let check = format!(
            "import sys; have='%d.%d' % sys.version_info[:2]; sys.exit(0 if have == '{version}' else \
             '{} asks for python-{version}, but this base has Python ' + have + '; \
             write python-' + have + ' or leave runtime.txt out')",
            named("runtime.txt")
        );
        df.push_str(&format!("RUN python3 -c {}\n", shell_quote(&check)));
    }
    if let Some(f) = recipe.get("apt.txt") {
        let packages = apt_packages(&named("apt.txt"), text(&named("apt.txt"), &f.data)?)?;
        if !packages.is_empty() {
            let mut apt = String::from("apt-get");
            if let Some(mirror) = &indexes.debian_mirror {
                let sources = format!("deb {mirror} bookworm main\n");
                extra.push(("sources.list".into(), 0o644, sources.into_bytes()));
                df.push_str(&format!("COPY {CONTEXT_DIR}/sources.list /tmp/labhub/sources.list\n"));
                apt.push_str(" -o Dir::Etc::SourceList=/tmp/labhub/sources.list -o Dir::Etc::SourceParts=/nonexistent");
            }
            df.push_str(&format!(
                "RUN {apt} update -q && DEBIAN_FRONTEND=noninteractive {apt} install -y -q --no-install-recommends {} \
                 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /tmp/labhub\n",
                packages.join(" ")
            ));
        }
    }
    if recipe.contains_key("install.R") {
        if !base.has_r {
            return Err(format!(
                "{} needs R, and the base image has none; build on an image with R (an admin names it)",
                named("install.R")
            ));
        }
        let f = recipe["install.R"];
        text(&named("install.R"), &f.data)?;
        extra.push(("install.R".into(), 0o644, f.data.clone()));
        df.push_str(&format!("COPY {CONTEXT_DIR}/install.R /tmp/labhub/install.R\nRUN Rscript /tmp/labhub/install.R && rm -rf /tmp/labhub\n"));
    }
    if has_pip {
        df.push_str(&format!(
            "COPY --from=labhub-wheels --chown={user} /tmp/labhub /tmp/labhub\nUSER {user}\n\
             RUN python3 -m pip install --no-index --no-cache-dir --find-links /tmp/labhub/wheels -r /tmp/labhub/requirements.txt\n\
             USER root\nRUN rm -rf /tmp/labhub\n"
        ));
    }
    df.push_str(&format!("COPY --chown={user} {CONTEXT_DIR}/repo {REPO_DIR}\n"));
    if let Some(f) = recipe.get("postBuild") {
        text(&named("postBuild"), &f.data)?;
        extra.push(("postBuild".into(), 0o755, f.data.clone()));
        df.push_str(&format!(
            "COPY --chown={user} {CONTEXT_DIR}/postBuild /opt/labhub/postBuild\nUSER {user}\nWORKDIR {REPO_DIR}\n\
             RUN chmod +x /opt/labhub/postBuild && /opt/labhub/postBuild\n"
        ));
    }
    if let Some(f) = recipe.get("start") {
        text(&named("start"), &f.data)?;
        extra.push(("start".into(), 0o755, f.data.clone()));
        df.push_str(&format!("COPY {CONTEXT_DIR}/start /opt/labhub/start\nRUN chmod 0755 /opt/labhub/start\n"));
        let mut entry = base.entrypoint.clone();
        entry.push("/opt/labhub/start".into());
        df.push_str(&format!("ENTRYPOINT {}\n", serde_json::to_string(&entry).unwrap_or_default()));
    }
    df.push_str(&format!("USER {user}\n"));
    if let Some(dir) = &base.workdir {
        df.push_str(&format!("WORKDIR {dir}\n"));
    }

    let dockerfile = format!("{CONTEXT_DIR}/Dockerfile");
    let mut entries: Vec<(String, u32, Vec<u8>)> = vec![(dockerfile.clone(), 0o644, df.clone().into_bytes())];
    entries.extend(extra.into_iter().map(|(n, m, d)| (format!("{CONTEXT_DIR}/{n}"), m, d)));
    let recipe_hash = hash(
        entries
            .iter()
            .map(|(p, _, d)| (p.as_str(), d.as_slice()))
            .chain(files.iter().map(|f| (f.path.as_str(), f.data.as_slice()))),
    );
    // The labels (who, when: different at every build) come last, in one step, outside the hash.
    entries[0].2.extend_from_slice(label_line(labels, &recipe_hash).as_bytes());
    let repo = files.iter().map(|f| (format!("{CONTEXT_DIR}/repo/{}", f.path), f.mode, f.data.as_slice()));
    let context = pack(entries.iter().map(|(p, m, d)| (p.clone(), *m, d.as_slice())).chain(repo))?;
    Ok(Plan { context, dockerfile, from: vec![base.id.clone()], recipe_hash, own_dockerfile: false })
}

/// The label holding the recipe's hash.
pub(crate) const RECIPE_HASH_LABEL: &str = "io.labhub.environment.recipe-hash";

/// One `LABEL` instruction with every label and the recipe's hash, quoted so nothing in a
/// value is expanded.
fn label_line(labels: &BTreeMap<String, String>, recipe_hash: &str) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default().replace('$', "\\$");
    let hash = (RECIPE_HASH_LABEL.to_string(), recipe_hash.to_string());
    let pairs: Vec<String> =
        labels.iter().chain([(&hash.0, &hash.1)]).map(|(k, v)| format!("{}={}", quote(k), quote(v))).collect();
    format!("LABEL {}\n", pairs.join(" "))
}

/// SHA-256 over the files (sorted by path), each as its path, its length and its bytes.
fn hash<'a>(files: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sorted: Vec<_> = files.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (path, data) in sorted {
        h.update(path.as_bytes());
        h.update([0]);
        h.update((data.len() as u64).to_be_bytes());
        h.update(data);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A tar of files (owned by root, mtime 0: the engine's cache looks at contents, not times).
fn pack<'a>(files: impl Iterator<Item = (String, u32, &'a [u8])>) -> Result<Vec<u8>, String> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, mode, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(if mode & 0o111 != 0 { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        tar.append_data(&mut h, &path, data).map_err(|e| format!("packing {path}: {e}"))?;
    }
    tar.into_inner().map_err(|e| format!("packing the build context: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, body: &str) -> RepoFile {
        RepoFile { path: path.into(), mode: 0o644, data: body.as_bytes().to_vec() }
    }

    fn base() -> Base {
        Base {
            id: "sha256:abc".into(),
            user: "1000".into(),
            entrypoint: vec!["tini".into(), "--".into()],
            workdir: Some("/home/jovyan".into()),
            has_r: false,
        }
    }

    fn dockerfile(plan: &Plan) -> String {
        let files = read_archive(&plan.context).unwrap();
        let f = files.iter().find(|f| f.path == plan.dockerfile).unwrap();
        String::from_utf8(f.data.clone()).unwrap()
    }

    #[test]
    fn a_generated_build_has_one_layer_per_kind_of_file_in_order() {
        let files = [
            file("requirements.txt", "numpy==2.0.0\n"),
            file("apt.txt", "# tools\njq\n"),
            file("postBuild", "#!/bin/sh\necho hi\n"),
            file("start", "#!/bin/sh\nexec \"$@\"\n"),
            file("README.md", "x"),
        ];
        let indexes = Indexes { pip_cert: Some(b"CA".to_vec()), ..Default::default() };
        let labels = BTreeMap::from([("io.labhub.environment.source".to_string(), "/srv/$HOME \"x\"".to_string())]);
        let plan = plan(&files, &base(), &[], &indexes, &labels).unwrap();
        let df = dockerfile(&plan);
        let at = |needle: &str| df.find(needle).unwrap_or_else(|| panic!("{needle} missing in\n{df}"));
        assert!(at("AS labhub-wheels") < at("apt-get update"));
        assert!(at("apt-get update") < at("pip install --no-index"));
        assert!(at("pip install --no-index") < at("/opt/labhub/postBuild"));
        assert!(at("/opt/labhub/postBuild") < at("ENTRYPOINT [\"tini\",\"--\",\"/opt/labhub/start\"]"));
        // The CA bundle is only in the wheel stage.
        let final_stage = &df[df.rfind("FROM sha256:abc\n").unwrap()..];
        assert!(!final_stage.contains("pip-ca.pem"), "{df}");
        let end = format!(
            "USER 1000\nWORKDIR /home/jovyan\nLABEL \"io.labhub.environment.source\"=\"/srv/\\$HOME \\\"x\\\"\" \
             \"io.labhub.environment.recipe-hash\"=\"{}\"\n",
            plan.recipe_hash
        );
        assert!(df.ends_with(&end), "{df}");
        assert!(!plan.own_dockerfile);
    }

    #[test]
    fn the_binder_folder_wins_and_the_hash_follows_the_files() {
        let files = [file("requirements.txt", "bad==1\n"), file("binder/apt.txt", "jq\n")];
        let p = plan(&files, &base(), &[], &Indexes::default(), &BTreeMap::new()).unwrap();
        assert!(!dockerfile(&p).contains("pip"), "the root's requirements are ignored");
        let again = plan(&files, &base(), &[], &Indexes::default(), &BTreeMap::new()).unwrap();
        assert_eq!(p.recipe_hash, again.recipe_hash);
        let changed = [file("requirements.txt", "bad==1\n"), file("binder/apt.txt", "curl\n")];
        assert_ne!(
            p.recipe_hash,
            plan(&changed, &base(), &[], &Indexes::default(), &BTreeMap::new()).unwrap().recipe_hash
        );
    }

    #[test]
    fn recipes_it_cannot_honour_name_the_file_and_line() {
        let err = |files: &[RepoFile]| plan(files, &base(), &[], &Indexes::default(), &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err(&[file("runtime.txt", "r-4.1\n")]),
            "runtime.txt line 1: 'r-4.1' is not a runtime this hub builds (only python-X.Y, the base's Python)"
        );
        assert!(err(&[file("apt.txt", "jq\nrm -rf /\n")]).starts_with("apt.txt line 2:"));
        assert!(err(&[file("install.R", "install.packages('x')")]).contains("the base image has none"));
        let env = "name: x\ndependencies:\n  - python=3.11\n  - numpy\n  - pip:\n    - requests==2.0\n";
        let e = err(&[file("environment.yml", env)]);
        assert!(e.contains("line 4 (numpy)"), "{e}");
        assert!(err(&[file("requirements.txt", "-r other.txt\n")]).starts_with("requirements.txt line 1:"));
    }

    #[test]
    fn environment_yml_gives_its_pip_part() {
        let env = "name: x\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - \"requests==2.0\"\n    - six\n";
        assert_eq!(environment_pip("environment.yml", env).unwrap(), ["requests==2.0", "six"]);
    }

    #[test]
    fn an_own_dockerfile_must_start_from_the_catalogue_and_fetch_nothing() {
        let catalogue = [ImageRef::parse("labhub/jupyterlab:1").unwrap()];
        let ok = [file("Dockerfile", "FROM labhub/jupyterlab:1 AS b\nRUN true\nFROM b\nCOPY --from=b /x /y\n")];
        let p = plan(&ok, &base(), &catalogue, &Indexes::default(), &BTreeMap::new()).unwrap();
        assert!(p.own_dockerfile);
        assert_eq!(p.from, ["labhub/jupyterlab:1"]);
        for (body, why) in [
            ("FROM ubuntu:24.04\n", "line 1: FROM ubuntu:24.04 is not a catalogue image"),
            ("FROM labhub/jupyterlab:1\nADD https://x.org/a /a\n", "line 2: ADD from a URL"),
            ("FROM labhub/jupyterlab:1\nCOPY --from=alpine /a /a\n", "line 2: COPY --from=alpine"),
            ("FROM --platform=x labhub/jupyterlab:1\n", "line 1: FROM must name"),
            ("FROM labhub/jupyterlab:1\nCOPY \\\n --from=alpine /a /a\n", "line 2: write each instruction on one line"),
            ("FR\\\nOM alpine\n", "line 1: write each instruction on one line"),
            ("# escape=`\nFROM labhub/jupyterlab:1\nCOPY `\n --from=alpine /a /a\n", "line 1: parser directives"),
            ("#syntax=docker/dockerfile:1\nFROM labhub/jupyterlab:1\n", "line 1: parser directives"),
            ("FROM labhub/jupyterlab:1\nONBUILD ADD https://x.org/a /a\n", "line 2: ONBUILD is not allowed"),
        ] {
            let e = plan(&[file("Dockerfile", body)], &base(), &catalogue, &Indexes::default(), &BTreeMap::new())
                .unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
