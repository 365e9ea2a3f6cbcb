//! Docker object names and labels derived from (hub, user, server).
//!
//! A name joins escaped parts with `_` (`labhub_alice`, `labhub_alice_gpu`,
//! `labhub-home_alice`). `docker_escape` never emits `_` nor upper case, so distinct
//! (user, server) pairs give distinct names. A name that would be longer than
//! [`MAX_NAME_LEN`] (a volume name becomes a directory name, at most 255 bytes) keeps a
//! readable prefix and ends in `_H` plus 128 bits of a hash of the full name: the upper-case
//! `H` can never occur in an unhashed name, so the two forms cannot collide either.

use std::collections::HashMap;

use labhub_core::names::docker_escape;
use labhub_core::{ServerName, UserName};
use sha2::{Digest, Sha256};

use crate::config::HubId;

/// Longest container or volume name produced.
pub(crate) const MAX_NAME_LEN: usize = 200;

/// Label naming the hub that owns a container, volume or network.
pub const LABEL_HUB: &str = "io.labhub.hub";
/// Label holding the user name, unescaped.
pub const LABEL_USER: &str = "io.labhub.user";
/// Label holding the server name, `""` for the default server.
pub const LABEL_SERVER: &str = "io.labhub.server";
/// Label holding the image kind (`jupyter`, `rstudio`, `custom`).
pub const LABEL_KIND: &str = "io.labhub.kind";
/// Label holding the port the server listens on inside the container.
pub const LABEL_PORT: &str = "io.labhub.port";
/// Label holding the volume mounted as the user's home.
pub const LABEL_VOLUME: &str = "io.labhub.volume";
/// Label holding the catalogue image reference (the container itself runs the content id).
pub const LABEL_IMAGE: &str = "io.labhub.image";

/// The names of the Docker objects behind one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerNames {
    /// The container's name.
    pub container: String,
    /// The named volume mounted as the user's home.
    pub volume: String,
}

impl ServerNames {
    /// Derives the names; with `volume_per_server` a named server gets its own volume.
    pub fn new(hub: &HubId, user: &UserName, server: Option<&ServerName>, volume_per_server: bool) -> Self {
        let user_part = docker_escape(user.as_str());
        let server_part = server.map(|s| docker_escape(s.as_str()));
        let mut container_parts = vec![user_part.as_str()];
        container_parts.extend(server_part.as_deref());
        let mut volume_parts = vec![user_part.as_str()];
        if volume_per_server {
            volume_parts.extend(server_part.as_deref());
        }
        Self {
            container: join_bounded(hub.as_str(), &container_parts),
            volume: volume_name_from_parts(hub, &volume_parts),
        }
    }
}

/// The volume holding a user's home (per server when `volume_per_server`).
pub(crate) fn volume_name(
    hub: &HubId,
    user: &UserName,
    server: Option<&ServerName>,
    volume_per_server: bool,
) -> String {
    ServerNames::new(hub, user, server, volume_per_server).volume
}

fn volume_name_from_parts(hub: &HubId, parts: &[&str]) -> String {
    join_bounded(&format!("{hub}-home"), parts)
}

/// `prefix_part1_part2`, or the hashed form when too long (see the module docs).
fn join_bounded(prefix: &str, parts: &[&str]) -> String {
    let full = format!("{prefix}_{}", parts.join("_"));
    if full.len() <= MAX_NAME_LEN {
        return full;
    }
    let digest = Sha256::digest(full.as_bytes());
    let hash = hex::encode(&digest[..16]);
    // Room for "_H" and the hash; escaped text is ASCII, so slicing by bytes is safe.
    let keep = MAX_NAME_LEN - 2 - hash.len();
    format!("{}_H{hash}", &full[..keep])
}

/// The labels every object of one server carries.
pub(crate) fn server_labels(hub: &HubId, user: &UserName, server: Option<&ServerName>) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_HUB.to_string(), hub.to_string()),
        (LABEL_USER.to_string(), user.to_string()),
        (LABEL_SERVER.to_string(), server.map(ServerName::to_string).unwrap_or_default()),
    ])
}

/// Reads user and server back from labels; `None` when they are absent or not valid names.
pub(crate) fn owner_from_labels(labels: &HashMap<String, String>) -> Option<(UserName, Option<ServerName>)> {
    let user = UserName::parse(labels.get(LABEL_USER)?).ok()?;
    let server = ServerName::parse_optional(labels.get(LABEL_SERVER)?).ok()?;
    Some((user, server))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn names(user: &str, server: Option<&str>, per_server: bool) -> ServerNames {
        let hub = HubId::parse("labhub").unwrap();
        let user = UserName::parse(user).unwrap();
        let server = server.map(|s| ServerName::parse(s).unwrap());
        ServerNames::new(&hub, &user, server.as_ref(), per_server)
    }

    fn docker_name_ok(name: &str) -> bool {
        let b = name.as_bytes();
        b.len() <= MAX_NAME_LEN
            && b[0].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
    }

    #[test]
    fn readable_names() {
        assert_eq!(names("alice", None, false).container, "labhub_alice");
        assert_eq!(names("alice", Some("gpu"), false).container, "labhub_alice_gpu");
        assert_eq!(names("alice", Some("gpu"), false).volume, "labhub-home_alice");
        assert_eq!(names("alice", Some("gpu"), true).volume, "labhub-home_alice_gpu");
        assert_eq!(names("alice", None, true).volume, "labhub-home_alice");
        assert_eq!(names("a@b.c", None, false).container, "labhub_a-40b.c");
    }

    #[test]
    fn hostile_names_never_collide_and_stay_valid() {
        let long_at = format!("a{}a", "@".repeat(62));
        let long_plain = "z".repeat(64);
        let long_dash = format!("a{}b", "-".repeat(62));
        let users =
            ["a", "a-b", "b", "x_y", "x-5fy", "a@b.c", "a.b", "ab", "a-2d", long_at.as_str(), &long_plain, &long_dash];
        let long_server = format!("s{}t", "-".repeat(30));
        let servers = [None, Some("b"), Some("a-b"), Some("2d"), Some("5fy"), Some(long_server.as_str())];
        let mut containers = HashSet::new();
        let mut volumes = HashSet::new();
        for u in users {
            for s in servers {
                let n = names(u, s, true);
                assert!(docker_name_ok(&n.container), "{}", n.container);
                assert!(docker_name_ok(&n.volume), "{}", n.volume);
                assert!(containers.insert(n.container.clone()), "collision: {}", n.container);
                assert!(volumes.insert(n.volume.clone()), "collision: {}", n.volume);
            }
        }
        // The classic trap: user "a-b" vs user "a" with server "b".
        assert_ne!(names("a-b", None, false).container, names("a", Some("b"), false).container);
    }

    #[test]
    fn long_names_are_hashed_and_distinct() {
        let a = format!("a{}a", "@".repeat(62));
        let b = format!("a{}b", "@".repeat(62));
        let na = names(&a, Some(&format!("s{}t", "-".repeat(30))), true);
        let nb = names(&b, Some(&format!("s{}t", "-".repeat(30))), true);
        assert!(na.volume.contains("_H"), "{}", na.volume);
        assert_eq!(na.volume.len(), MAX_NAME_LEN);
        assert_ne!(na.volume, nb.volume);
        assert_ne!(na.container, nb.container);
    }

    #[test]
    fn labels_read_back() {
        let hub = HubId::parse("labhub").unwrap();
        let user = UserName::parse("a@b.c").unwrap();
        let server = ServerName::parse("gpu-1").unwrap();
        let labels = server_labels(&hub, &user, Some(&server));
        assert_eq!(owner_from_labels(&labels), Some((user.clone(), Some(server))));
        let labels = server_labels(&hub, &user, None);
        assert_eq!(owner_from_labels(&labels), Some((user, None)));
        let mut bad = labels.clone();
        bad.insert(LABEL_USER.to_string(), "../x".to_string());
        assert_eq!(owner_from_labels(&bad), None);
    }
}
