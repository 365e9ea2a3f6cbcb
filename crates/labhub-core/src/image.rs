//! Container image references and the kinds of server an image can run.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An image reference that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not an image reference: write it like registry.example.org/lab/image:tag (lower case path, optional :tag and @sha256:digest)"
)]
pub struct ImageRefError(pub String);

/// A validated container image reference: `[host[:port]/]path[:tag][@sha256:hex]`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ImageRef(String);

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

    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.0
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

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
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

/// A registry path that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a registry path: write a registry host and a lower-case path, like registry.example.org:5000/lab (no tag or digest)"
)]
pub struct RegistryPathError(pub String);

/// A repository prefix in a registry, `host[:port]/path`: where labhub pushes the images that
/// the nodes of a swarm pull.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RegistryPath(String);

impl RegistryPath {
    /// Validates `host[:port]/path` (a host with a '.' or ':', or `localhost`; no tag or digest).
    pub fn parse(raw: &str) -> Result<Self, RegistryPathError> {
        let err = || RegistryPathError(raw.to_string());
        let (host, path) = raw.split_once('/').ok_or_else(err)?;
        let has_host = host.contains('.') || host.contains(':') || host == "localhost";
        let last = path.rsplit('/').next().unwrap_or_default();
        if !has_host || path.is_empty() || raw.contains('@') || last.contains(':') {
            return Err(err());
        }
        ImageRef::parse(&format!("{raw}/image:tag")).map_err(|_| err())?;
        Ok(Self(raw.to_string()))
    }

    /// The reference under which `image`, of content id `id` (`sha256:…`), is kept here:
    /// `{path}/{last part of its name}:sha256-{hex}`, so one tag never names two contents.
    pub fn reference_for(&self, image: &ImageRef, id: &str) -> ImageRef {
        let name = image.as_str().split('@').next().unwrap_or_default();
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let base = name[last_slash..].split(':').next().unwrap_or_default();
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        ImageRef::parse(&format!("{}/{base}:sha256-{hex}", self.0))
            .expect("a valid path, name and hex make a valid reference")
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RegistryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for RegistryPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn registry_paths_name_a_registry_and_keep_one_content_per_tag() {
        let path = RegistryPath::parse("registry.lab.example:5000/labhub").unwrap();
        let image = ImageRef::parse("lab-env/scipy-stack:b7").unwrap();
        let id = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            path.reference_for(&image, &id).as_str(),
            format!("registry.lab.example:5000/labhub/scipy-stack:sha256-{}", "ab".repeat(32))
        );
        let pinned = ImageRef::parse(&format!("quay.io/jupyter/base:1@sha256:{}", "cd".repeat(32))).unwrap();
        assert!(path.reference_for(&pinned, &id).as_str().starts_with("registry.lab.example:5000/labhub/base:sha256-"));
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
    }

    use super::*;

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
