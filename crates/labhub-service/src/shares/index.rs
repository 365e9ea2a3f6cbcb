//! What shares grant, in JupyterHub's scope names, and the in-memory index the one gate reads
//! on every proxied request.

use std::collections::HashMap;

use labhub_core::UserId;

/// The scopes a share may carry, as JupyterHub names them. Stored without their filter; shown
/// with `!server=owner/name`.
pub const SHAREABLE_SCOPES: [&str; 4] = ["access:servers", "read:servers", "servers", "delete:servers"];

/// What a share lets its visitors do with one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights(u8);

impl Rights {
    /// None at all.
    pub const NONE: Rights = Rights(0);
    /// Reach it through the proxy: pages, API calls, WebSockets (`access:servers`).
    pub const ACCESS: Rights = Rights(1);
    /// See its model and progress (`read:servers`).
    pub const READ: Rights = Rights(2);
    /// Start it (`servers`).
    pub const START: Rights = Rights(4);
    /// Stop it (`servers`, `delete:servers`).
    pub const STOP: Rights = Rights(8);

    /// The rights of one of [`SHAREABLE_SCOPES`]; `None` for any other name.
    pub fn of_scope(base: &str) -> Option<Rights> {
        Some(match base {
            "access:servers" => Rights::ACCESS,
            "read:servers" => Rights::READ,
            "servers" => Rights(Rights::READ.0 | Rights::START.0 | Rights::STOP.0),
            "delete:servers" => Rights::STOP,
            _ => return None,
        })
    }

    /// The rights of a list of scope names (unknown names grant nothing).
    pub fn of_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Rights {
        scopes.into_iter().filter_map(Rights::of_scope).fold(Rights::NONE, Rights::union)
    }

    /// Both sets together.
    #[must_use]
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// Whether every right of `other` is here.
    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether there is none.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Who may reach which server through a share: owner id → server name (`""` for the
/// default) → visitor id → rights, with group shares resolved to their members. Rebuilt whole
/// from Postgres whenever shares or group memberships change, and swapped in: a reader never
/// sees half of a change.
#[derive(Debug, Default)]
pub struct ShareIndex {
    by_owner: HashMap<UserId, HashMap<String, HashMap<UserId, Rights>>>,
}

impl ShareIndex {
    /// The index of these resolved grants.
    pub fn build(grants: impl IntoIterator<Item = (UserId, String, UserId, Rights)>) -> Self {
        let mut by_owner: HashMap<UserId, HashMap<String, HashMap<UserId, Rights>>> = HashMap::new();
        for (owner, server, visitor, rights) in grants {
            // An owner's share with a group they are in does not make them a visitor.
            if owner == visitor {
                continue;
            }
            let slot = by_owner.entry(owner).or_default().entry(server).or_default().entry(visitor).or_default();
            *slot = slot.union(rights);
        }
        Self { by_owner }
    }

    /// What `visitor` may do with `owner`'s server `server` (`""`: the default one) through
    /// shares. No allocation: it is on the proxy's path.
    pub fn rights(&self, owner: UserId, server: &str, visitor: UserId) -> Rights {
        self.by_owner
            .get(&owner)
            .and_then(|servers| servers.get(server))
            .and_then(|visitors| visitors.get(&visitor))
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_map_to_rights_and_grants_add_up() {
        assert_eq!(Rights::of_scope("access:servers"), Some(Rights::ACCESS));
        assert!(Rights::of_scope("servers").unwrap().contains(Rights::START.union(Rights::STOP)));
        assert!(!Rights::of_scope("servers").unwrap().contains(Rights::ACCESS), "as in JupyterHub");
        assert_eq!(Rights::of_scope("admin:users"), None);
        let (alice, bob, carol) = (UserId::new(1), UserId::new(2), UserId::new(3));
        let index = ShareIndex::build([
            (alice, String::new(), bob, Rights::ACCESS),
            (alice, String::new(), bob, Rights::of_scopes(["servers"])),
            (alice, "gpu".into(), carol, Rights::READ),
            (alice, String::new(), alice, Rights::ACCESS),
        ]);
        let bob_default = index.rights(alice, "", bob);
        assert!(bob_default.contains(Rights::ACCESS) && bob_default.contains(Rights::START));
        assert_eq!(index.rights(alice, "gpu", bob), Rights::NONE);
        assert_eq!(index.rights(alice, "gpu", carol), Rights::READ);
        assert_eq!(index.rights(bob, "", alice), Rights::NONE);
        assert_eq!(index.rights(alice, "", alice), Rights::NONE, "owners are never their own visitors");
    }
}
