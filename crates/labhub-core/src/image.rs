//! Container image references and the kinds of server an image can run.

use serde::{Deserialize, Serialize};

/// An image reference that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not an image reference: write it like registry.example.org/lab/image:tag (lower case path, optional :tag and @sha256:digest)"
)]
pub struct ImageRefError(pub String);

crate::name_type!(
    /// A validated container image reference: `[host[:port]/]path[:tag][@sha256:hex]`.
    ImageRef, error = ImageRefError
);

impl ImageRef {
    /// Validates a reference against Docker's grammar (simplified: no uppercase in the path).
    pub fn parse(raw: &str) -> Result<Self, ImageRefError> {
        let err = || ImageRefError(raw.to_string());
        if raw.is_empty() || raw.len() > 255 {
            return Err(err());
        }
        let (name_tag, digest) = match raw.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (raw, None),
        };
        if let Some(d) = digest {
            let hex = d.strip_prefix("sha256:").ok_or_else(err)?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                return Err(err());
            }
        }
        // A tag is after the last ':' that comes after the last '/' (a registry port has '/' after it).
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            let ok_first = t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok_first || t.len() > 128 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                return Err(err());
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        // The first part is a registry host when it has a '.' or ':' or is "localhost".
        if parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost") {
            let host = parts.remove(0);
            let (h, port) = host.split_once(':').unwrap_or((host, "0"));
            if h.is_empty()
                || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                || port.parse::<u16>().is_err()
            {
                return Err(err());
            }
        }
        for p in &parts {
            if !valid_path_component(p) {
                return Err(err());
            }
        }
        Ok(Self(raw.to_string()))
    }

    /// Its repository: the name without tag or digest (`host:5000/lab/scipy`).
    pub fn repository(&self) -> &str {
        let name = self.0.split('@').next().unwrap_or_default();
        // A tag is after a ':' that comes after the last '/' (a registry port has '/' after it).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        name[last_slash..].rfind(':').map_or(name, |i| &name[..last_slash + i])
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// What kind of server an image runs; decides the command, port, work directory and
/// what the proxy must do for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// jupyter_server / JupyterLab, started with the route prefix as `base_url` and a secret token.
    Jupyter,
    /// RStudio Server (rserver) as the rocker images run it, auth off behind the hub.
    Rstudio,
    /// Any HTTP server: the admin gives its port and command.
    Custom,
}

impl ImageKind {
    /// The database and form spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jupyter => "jupyter",
            Self::Rstudio => "rstudio",
            Self::Custom => "custom",
        }
    }

    /// Reads the database and form spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jupyter" => Some(Self::Jupyter),
            "rstudio" => Some(Self::Rstudio),
            "custom" => Some(Self::Custom),
            _ => None,
        }
    }

    /// The port the server listens on inside its container, unless the admin set one (custom).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Jupyter | Self::Custom => 8888,
            Self::Rstudio => 8787,
        }
    }
}

/// Which contract a server speaks with the hub: what it is told at start and how it checks
/// who is asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Contract {
    /// labhub's own: the proxy injects the server's secret token and the server trusts it.
    #[default]
    Labhub,
    /// JupyterHub's single-user contract: `jupyterhub-singleuser` with the `JUPYTERHUB_*`
    /// variables, signing users in through the hub's OAuth provider and reporting activity.
    Jupyterhub,
}

impl Contract {
    /// The database, form and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Labhub => "labhub",
            Self::Jupyterhub => "jupyterhub",
        }
    }

    /// Reads the database, form and API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "labhub" => Some(Self::Labhub),
            "jupyterhub" => Some(Self::Jupyterhub),
            _ => None,
        }
    }
}

/// What an admin sets on a catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFields {
    /// The name people see.
    pub display_name: String,
    /// A sentence or two on what is inside.
    pub description: String,
    /// The image the runtime starts.
    pub reference: ImageRef,
    /// What kind of server it runs.
    pub kind: ImageKind,
    /// The port a custom server listens on.
    pub port: Option<u16>,
    /// A custom server's command (`{base_url}` and `{port}` are filled in).
    pub command: Option<Vec<String>>,
    /// The CPU a server gets unless its start asks otherwise, in millicores.
    pub cpu_millis: u32,
    /// The memory a server gets unless its start asks otherwise, in bytes.
    pub memory_bytes: u64,
    /// Whether members may start it.
    pub enabled: bool,
    /// The built-in recipe the hub builds it from when the runtime lacks it.
    pub recipe: Option<String>,
    /// The contract its servers speak (only a Jupyter image may speak JupyterHub's).
    pub contract: Contract,
    /// Which Swarm nodes its servers may run on (with `[docker] mode = "swarm"`; one engine
    /// has one node, so the engine mode has nothing to choose).
    pub placement: Vec<crate::Placement>,
}

/// The longest registry path: with a name part of [`NAME_PART_MAX`], `:sha256-` and 64 hex
/// digits, a reference stays within Docker's 255 characters.
pub const REGISTRY_PATH_MAX: usize = 128;
/// The longest name part of a reference in a registry path.
const NAME_PART_MAX: usize = 48;

/// A registry path that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a registry path: write a registry host and a lower-case path, like registry.example.org:5000/lab (no tag or digest)"
)]
pub struct RegistryPathError(pub String);

crate::name_type!(
    /// A repository prefix in a registry, `host[:port]/path`: where labhub pushes the images
    /// that the nodes of a swarm pull.
    RegistryPath, error = RegistryPathError
);

impl RegistryPath {
    /// Validates `host[:port]/path` (a host with a '.' or ':', or `localhost`; no tag or
    /// digest; at most [`REGISTRY_PATH_MAX`] characters, leaving room for a name and a tag).
    pub fn parse(raw: &str) -> Result<Self, RegistryPathError> {
        let err = || RegistryPathError(raw.to_string());
        let (host, path) = raw.split_once('/').ok_or_else(err)?;
        let has_host = host.contains('.') || host.contains(':') || host == "localhost";
        let last = path.rsplit('/').next().unwrap_or_default();
        if !has_host || path.is_empty() || raw.contains('@') || last.contains(':') || raw.len() > REGISTRY_PATH_MAX {
            return Err(err());
        }
        ImageRef::parse(&format!("{raw}/image:tag")).map_err(|_| err())?;
        Ok(Self(raw.to_string()))
    }

    /// Whether its host is a loopback one, which each node would take for its own.
    pub fn is_loopback(&self) -> bool {
        let host = self.0.split('/').next().unwrap_or_default();
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The reference under which `image`, of content id `id` (`sha256:` and 64 hex digits),
    /// is kept here: `{path}/{last part of its name}:sha256-{hex}`, so one tag never names two
    /// contents; the name part is shortened to keep the reference within Docker's limit.
    pub fn reference_for(&self, image: &ImageRef, id: &str) -> Result<ImageRef, ImageRefError> {
        let repository = image.repository();
        let base = &repository[repository.rfind('/').map_or(0, |i| i + 1)..];
        let mut base = &base[..base.len().min(NAME_PART_MAX)];
        // A cut name must still end in a letter or digit.
        base = base.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        let hex = id.strip_prefix("sha256:").filter(|h| h.len() == 64).ok_or_else(|| ImageRefError(id.to_string()))?;
        ImageRef::parse(&format!("{}/{base}:sha256-{hex}", self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_paths_name_a_registry_and_keep_one_content_per_tag() {
        let path = RegistryPath::parse("registry.lab.example:5000/labhub").unwrap();
        let image = ImageRef::parse("lab-env/scipy-stack:b7").unwrap();
        let id = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            path.reference_for(&image, &id).unwrap().as_str(),
            format!("registry.lab.example:5000/labhub/scipy-stack:sha256-{}", "ab".repeat(32))
        );
        let pinned = ImageRef::parse(&format!("quay.io/jupyter/base:1@sha256:{}", "cd".repeat(32))).unwrap();
        assert!(
            path.reference_for(&pinned, &id)
                .unwrap()
                .as_str()
                .starts_with("registry.lab.example:5000/labhub/base:sha256-")
        );
        assert!(RegistryPath::parse("localhost/lab").is_ok());
        for bad in [
            "labhub",
            "lab/images",
            "registry.lab:5000",
            "registry.lab:5000/lab:1",
            "registry.lab/Lab",
            "r.lab/x@sha256:00",
        ] {
            assert!(RegistryPath::parse(bad).is_err(), "{bad}");
        }
        assert!(RegistryPath::parse("localhost:5000/lab").unwrap().is_loopback());
        assert!(RegistryPath::parse("127.0.0.1:5000/lab").unwrap().is_loopback());
        assert!(!path.is_loopback());
        // A long name is shortened to fit; a long path is refused; an id must be a sha256.
        let long = ImageRef::parse(&format!("lab/{}-x:1", "n".repeat(120))).unwrap();
        let r = path.reference_for(&long, &id).unwrap();
        assert!(r.as_str().len() <= 255 && r.as_str().contains(&format!("/{}:sha256-", "n".repeat(48))), "{r}");
        let longest = RegistryPath::parse(&format!("r.lab/{}", "p".repeat(REGISTRY_PATH_MAX - 6))).unwrap();
        assert!(longest.reference_for(&long, &id).is_ok());
        assert!(RegistryPath::parse(&format!("r.lab/{}", "p".repeat(REGISTRY_PATH_MAX))).is_err());
        assert!(path.reference_for(&image, "abc").is_err());
    }

    #[test]
    fn the_repository_is_the_name_without_tag_or_digest() {
        for (reference, repository) in [
            ("labhub/jupyterlab:1", "labhub/jupyterlab"),
            ("jupyter/base", "jupyter/base"),
            ("127.0.0.1:9/labhub-missing:1", "127.0.0.1:9/labhub-missing"),
            ("localhost:5000/img", "localhost:5000/img"),
        ] {
            assert_eq!(ImageRef::parse(reference).unwrap().repository(), repository);
        }
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(ImageRef::parse(&format!("rocker/rstudio:4.4@{d}")).unwrap().repository(), "rocker/rstudio");
        assert_eq!(ImageRef::parse(&format!("host:5/img@{d}")).unwrap().repository(), "host:5/img");
    }

    #[test]
    fn image_references() {
        for ok in [
            "labhub/jupyterlab:4",
            "jupyter/scipy-notebook",
            "quay.io/jupyter/base-notebook:2024-01-01",
            "localhost:5000/lab/img:v1.2",
            "rocker/rstudio:4.4@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "my_org/my__img",
        ] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "UPPER/case", "a//b", "img:", "img:-x", "-img", "img@sha256:zz", "a b", "img:tag:tag"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
