//! Docker object names and labels derived from (hub, owner, server).
//!
//! Everything is keyed by the owner's account id, never by a name: names change and are
//! reused, and a new account of an old name must not find the old account's container or
//! home. A name joins parts with `_`: the owner as `U` and the id (`labhub_U42`,
//! `labhub_U42_gpu`, `labhub-home_U42`), a server by its escaped name. `docker_escape` never
//! emits `_` nor upper case, so distinct (owner, server) pairs give distinct names, and none
//! can equal a name of the hubs before ids (`labhub_alice`, escaped names only). The longest
//! name (a 32-byte hub id, the largest id, a 32-byte server name escaped) stays well under
//! 200 bytes (a volume name becomes a directory name, at most 255 bytes).

use std::collections::HashMap;

use labhub_core::names::docker_escape;
use labhub_core::{GroupId, Owner, ServerName, UserId, UserName};

use crate::config::HubId;

/// Longest container or volume name produced.
#[cfg(test)]
const MAX_NAME_LEN: usize = 200;

/// Label naming the hub that owns a container, volume or network.
pub const LABEL_HUB: &str = "io.labhub.hub";
/// Label holding the owner's account id (what the hub trusts).
pub const LABEL_USER_ID: &str = "io.labhub.user-id";
/// Label holding the owning group's id, on a group's shared folder.
pub const LABEL_GROUP_ID: &str = "io.labhub.group-id";
/// Label holding the owner's name when the object was made, unescaped (for people reading
/// `docker ps`; objects made before ids carry only this).
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
    /// The names of `owner`'s server, mounting `volume` as its home.
    pub fn new(hub: &HubId, owner: UserId, server: Option<&ServerName>, volume: String) -> Self {
        Self { container: container_name(hub, owner, server), volume }
    }
}

/// The container of an account's server.
pub(crate) fn container_name(hub: &HubId, owner: UserId, server: Option<&ServerName>) -> String {
    let owner_part = format!("U{owner}");
    let server_part = server.map(|s| docker_escape(s.as_str()));
    let mut parts = vec![owner_part.as_str()];
    parts.extend(server_part.as_deref());
    join(hub.as_str(), &parts)
}

/// The volume holding an account's home (or, given a server, that server's own home).
pub(crate) fn home_volume(hub: &HubId, owner: UserId, server: Option<&ServerName>) -> String {
    let owner_part = format!("U{owner}");
    let server_part = server.map(|s| docker_escape(s.as_str()));
    let mut parts = vec![owner_part.as_str()];
    parts.extend(server_part.as_deref());
    join(&format!("{hub}-home"), &parts)
}

/// The volume holding a group's shared folder.
pub(crate) fn group_volume(hub: &HubId, group: GroupId) -> String {
    join(&format!("{hub}-group"), &[&format!("G{group}")])
}

/// A volume of an account's besides its home; `key` keeps to `a-z0-9.` (the service makes it).
pub(crate) fn attached_volume(hub: &HubId, owner: UserId, key: &str) -> String {
    join(&format!("{hub}-attached"), &[&format!("U{owner}"), &docker_escape(key)])
}

/// `prefix_part1_part2`.
fn join(prefix: &str, parts: &[&str]) -> String {
    format!("{prefix}_{}", parts.join("_"))
}

/// The labels every object of one server carries (its owner's name, when known, is added
/// by the caller as [`LABEL_USER`], for people reading `docker ps`).
pub(crate) fn server_labels(hub: &HubId, owner: UserId, server: Option<&ServerName>) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_HUB.to_string(), hub.to_string()),
        (LABEL_USER_ID.to_string(), owner.to_string()),
        (LABEL_SERVER.to_string(), server.map(ServerName::to_string).unwrap_or_default()),
    ])
}

/// Reads owner and server back from labels: the group's or the account's id when there is
/// one (a label that is there but not a number is no owner at all), else the name of an
/// object made before ids; `None` when they are absent or not valid.
pub(crate) fn owner_from_labels(labels: &HashMap<String, String>) -> Option<(Owner, Option<ServerName>)> {
    let id = |raw: &String| raw.parse().ok().filter(|n: &i64| *n > 0);
    if let Some(group) = labels.get(LABEL_GROUP_ID) {
        return Some((Owner::Group(GroupId::new(id(group)?)), None));
    }
    let owner = match labels.get(LABEL_USER_ID) {
        Some(user) => Owner::User(UserId::new(id(user)?)),
        None => Owner::LegacyName(UserName::parse(labels.get(LABEL_USER)?).ok()?),
    };
    let server = ServerName::parse_optional(labels.get(LABEL_SERVER)?).ok()?;
    Some((owner, server))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn names(owner: i64, server: Option<&str>, per_server: bool) -> ServerNames {
        let hub = HubId::parse("labhub").unwrap();
        let server = server.map(|s| ServerName::parse(s).unwrap());
        let volume = home_volume(&hub, UserId::new(owner), server.as_ref().filter(|_| per_server));
        ServerNames::new(&hub, UserId::new(owner), server.as_ref(), volume)
    }

    fn docker_name_ok(name: &str) -> bool {
        let b = name.as_bytes();
        b.len() <= MAX_NAME_LEN
            && b[0].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
    }

    #[test]
    fn names_are_keyed_by_the_owners_id() {
        assert_eq!(names(42, None, false).container, "labhub_U42");
        assert_eq!(names(42, Some("gpu"), false).container, "labhub_U42_gpu");
        assert_eq!(names(42, Some("gpu"), false).volume, "labhub-home_U42");
        assert_eq!(names(42, Some("gpu"), true).volume, "labhub-home_U42_gpu");
        assert_eq!(names(42, None, true).volume, "labhub-home_U42");
        assert_eq!(names(7, Some("a-b"), false).container, "labhub_U7_a-2db");
    }

    #[test]
    fn distinct_owners_and_servers_never_collide_and_names_stay_valid() {
        let longest = "z".repeat(ServerName::MAX_LEN);
        let servers = [None, Some("b"), Some("a-b"), Some("2d"), Some("u1"), Some("5fy"), Some(longest.as_str())];
        let mut containers = HashSet::new();
        let mut volumes = HashSet::new();
        for owner in [1, 2, 11, 12, 112] {
            for s in servers {
                let n = names(owner, s, true);
                assert!(docker_name_ok(&n.container), "{}", n.container);
                assert!(docker_name_ok(&n.volume), "{}", n.volume);
                assert!(containers.insert(n.container.clone()), "collision: {}", n.container);
                assert!(volumes.insert(n.volume.clone()), "collision: {}", n.volume);
            }
        }
        // Owner 1's server "12" is not owner 11's server "2", nor owner 112's default server.
        assert_ne!(names(1, Some("12"), true).volume, names(11, Some("2"), true).volume);
        assert_ne!(names(1, Some("12"), false).container, names(112, None, false).container);
        // The names of hubs before ids were escaped user names: lower case, never `U`.
        assert_ne!(names(42, None, false).container, format!("labhub_{}", docker_escape("u42")));
        // The longest name there can be fits.
        let hub = HubId::parse(&"h".repeat(HubId::MAX_LEN)).unwrap();
        let server = ServerName::parse(&format!("{}ab", "a-".repeat(ServerName::MAX_LEN / 2 - 1))).unwrap();
        let owner = UserId::new(i64::MAX);
        assert!(docker_name_ok(&home_volume(&hub, owner, Some(&server))));
        assert!(docker_name_ok(&container_name(&hub, owner, Some(&server))));
    }

    #[test]
    fn labels_read_back_with_the_id_first() {
        let hub = HubId::parse("labhub").unwrap();
        let user = UserName::parse("a@b.c").unwrap();
        let server = ServerName::parse("gpu-1").unwrap();
        let id = UserId::new(9);
        let labels = server_labels(&hub, id, Some(&server));
        assert_eq!(owner_from_labels(&labels), Some((Owner::User(id), Some(server))));
        let mut labels = server_labels(&hub, id, None);
        labels.insert(LABEL_USER.to_string(), user.to_string());
        assert_eq!(owner_from_labels(&labels), Some((Owner::User(id), None)));
        let mut legacy = labels.clone();
        legacy.remove(LABEL_USER_ID);
        assert_eq!(owner_from_labels(&legacy), Some((Owner::LegacyName(user), None)));
        let mut bad = labels.clone();
        bad.insert(LABEL_USER_ID.to_string(), "9x".to_string());
        assert_eq!(owner_from_labels(&bad), None, "a broken id is no owner, not a fall back to the name");
        legacy.insert(LABEL_USER.to_string(), "../x".to_string());
        assert_eq!(owner_from_labels(&legacy), None);
        let group = HashMap::from([
            (LABEL_HUB.to_string(), "labhub".to_string()),
            (LABEL_GROUP_ID.to_string(), "5".to_string()),
        ]);
        assert_eq!(owner_from_labels(&group), Some((Owner::Group(GroupId::new(5)), None)));
        assert_eq!(group_volume(&hub, GroupId::new(5)), "labhub-group_G5");
    }
}
