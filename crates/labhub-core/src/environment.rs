//! The environment-building seam's types: what a build of an environment is given and what
//! it returns. The builder (labhub-spawner) reads the recipe and drives the engine; the
//! service decides who may build, records provenance and serves the result.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::{BuildId, ImageRef};

/// Which local folders a build may read a git repository from. URLs (`https://`, `http://`,
/// `git://`, `ssh://`) are always allowed; a local path only as this says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSources {
    /// Any folder of the machine (admins).
    Anywhere,
    /// Only folders under these (everyone else; empty: none).
    Under(Vec<PathBuf>),
}

/// Where the packages a build installs come from, so an air-gapped lab can build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageIndexes {
    /// pip's index (`PIP_INDEX_URL`); PyPI when unset.
    pub pip_index_url: Option<String>,
    /// A CA bundle pip trusts while it downloads (never left in the image).
    pub pip_cert: Option<PathBuf>,
    /// A Debian mirror for `apt.txt` (`http://…/debian`); the base image's sources when unset.
    pub debian_mirror: Option<String>,
}

/// What a build may use of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildLimits {
    /// CPU for each build step, in millicores.
    pub cpu_millis: u32,
    /// Memory for each build step, in bytes.
    pub memory_bytes: u64,
    /// The whole build, fetch included; past it the build fails.
    pub timeout: Duration,
}

/// Where a build's files come from.
#[derive(Debug, Clone)]
pub enum BuildSource {
    /// A git repository (a URL or a local path) at a branch, tag or commit.
    Git {
        /// The repository.
        repository: String,
        /// The branch, tag or commit to build.
        git_ref: String,
        /// Which local paths `repository` may be.
        local: LocalSources,
    },
    /// Files uploaded to the hub, already checked (regular files only, relative paths).
    Upload {
        /// `sha256:…` of `tar`: what the build records as its commit.
        sha256: String,
        /// The files as a plain tar.
        tar: Vec<u8>,
    },
}

/// One build of an environment.
#[derive(Debug, Clone)]
pub struct EnvBuildSpec {
    /// Its files.
    pub source: BuildSource,
    /// The image the generated recipe builds on (the lab's JupyterLab, or one an admin named).
    pub base: ImageRef,
    /// The catalogue's images: a repository's own `Dockerfile` must start `FROM` one of them.
    pub catalogue: Vec<ImageRef>,
    /// The tag the image gets when (and only when) the build succeeds.
    pub tag: ImageRef,
    /// Labels put on the image besides those the builder adds (commit, recipe hash, base).
    pub labels: BTreeMap<String, String>,
    /// Package indexes.
    pub indexes: PackageIndexes,
    /// Limits.
    pub limits: BuildLimits,
    /// Earlier good builds of this environment by this builder version: one whose commit,
    /// recipe and base equal this build's, and whose image is still there, is reused as it is
    /// (the engine does not run).
    pub reusable: Vec<ReusableBuild>,
}

/// An earlier good build a build may reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReusableBuild {
    /// Which build it was.
    pub build: BuildId,
    pub commit: String,
    pub recipe_hash: String,
    pub base_image_id: String,
    /// Its image's content id.
    pub image_id: String,
}

/// What a build learnt before it ended (also on failure: whatever it got to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvProvenance {
    /// The commit the ref resolved to (an upload: its `sha256:`).
    pub commit: Option<String>,
    /// SHA-256 over the recipe's files and the generated build file.
    pub recipe_hash: Option<String>,
    /// The content id of the image built on.
    pub base_image_id: Option<String>,
    /// The content id of the image built (success only).
    pub image_id: Option<String>,
    /// The earlier build whose image this one reused instead of building.
    pub reused: Option<BuildId>,
}

/// How a build ended.
#[derive(Debug, Clone)]
pub struct EnvBuildOutcome {
    /// What is known of it.
    pub provenance: EnvProvenance,
    /// `Ok` on success; otherwise why, for the person who asked (naming the file and line of
    /// a recipe the builder cannot honour).
    pub result: Result<(), String>,
}

/// An image this hub built, as the runtime holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// Its content id (`sha256:…`).
    pub id: String,
    /// Size on disk in bytes (layers shared with other images included).
    pub size_bytes: u64,
    /// Its tags.
    pub tags: Vec<String>,
}
