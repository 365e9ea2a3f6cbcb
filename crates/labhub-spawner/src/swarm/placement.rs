//! Where a user with no node yet is pinned (`swarm_homes = "pinned"`): among the nodes that
//! may run servers and are up, the one holding the fewest pinned users, ties to the first by
//! name (so two hubs asked at once answer alike). A pure function, unit-tested.

use std::collections::BTreeMap;

use labhub_core::NodeName;

/// The node to pin a new user to; `None` when no candidate is up.
pub(crate) fn choose(candidates: &[NodeName], pinned: &BTreeMap<NodeName, u64>) -> Option<NodeName> {
    candidates.iter().min_by_key(|n| (pinned.get(*n).copied().unwrap_or(0), n.as_str())).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::parse(s).unwrap()
    }

    #[test]
    fn the_least_loaded_node_wins_and_ties_go_by_name() {
        let nodes = [n("lab2"), n("lab1"), n("lab3")];
        assert_eq!(choose(&nodes, &BTreeMap::new()), Some(n("lab1")));
        let pinned = BTreeMap::from([(n("lab1"), 4), (n("lab2"), 1), (n("lab3"), 1)]);
        assert_eq!(choose(&nodes, &pinned), Some(n("lab2")));
        // Users pinned to a node no longer a candidate do not count for the others.
        let pinned = BTreeMap::from([(n("gone"), 0), (n("lab1"), 2), (n("lab2"), 2), (n("lab3"), 3)]);
        assert_eq!(choose(&nodes, &pinned), Some(n("lab1")));
        assert_eq!(choose(&[], &pinned), None);
    }
}
