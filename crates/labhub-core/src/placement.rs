//! Where a server may run on a Swarm: a placement constraint as Docker Swarm reads it
//! (`node.labels.gpu==true`, `node.hostname!=lab3`), checked when an admin writes it so a
//! typo is an error on the form rather than a server that never finds a node.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The node attributes Swarm matches on (a label's key follows `node.labels.` or
/// `engine.labels.`).
const ATTRIBUTES: [&str; 5] = ["node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch"];
const LABEL_PREFIXES: [&str; 2] = ["node.labels.", "engine.labels."];

/// One placement constraint, normalised to `attribute==value` or `attribute!=value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Placement(String);

/// Why a placement constraint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("placement {given:?}: {why}")]
pub struct PlacementError {
    given: String,
    why: &'static str,
}

impl Placement {
    /// Reads `attribute==value` or `attribute!=value` (spaces around the operator allowed).
    pub fn parse(given: &str) -> Result<Self, PlacementError> {
        let err = |why| PlacementError { given: given.to_string(), why };
        let (attribute, op, value) = if let Some((a, v)) = given.split_once("==") {
            (a, "==", v)
        } else if let Some((a, v)) = given.split_once("!=") {
            (a, "!=", v)
        } else {
            return Err(err("must be ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, e.g. node.labels.gpu==true"));
        };
        let (attribute, value) = (attribute.trim(), value.trim());
        let label = LABEL_PREFIXES.iter().find_map(|p| attribute.strip_prefix(p));
        match label {
            Some(key) if key.is_empty() || !key.chars().all(label_char) => {
                return Err(err("a label's key is letters, digits, '.', '-' and '_'"));
            }
            Some(_) => {}
            None if !ATTRIBUTES.contains(&attribute) => {
                return Err(err("the attribute must be node.id, node.hostname, node.role, node.platform.os, \
                     node.platform.arch, node.labels.KEY or engine.labels.KEY"));
            }
            None => {}
        }
        if value.is_empty() || value.contains(['=', '!']) || value.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(err("the value must be one word without '=', '!' or spaces"));
        }
        Ok(Self(format!("{attribute}{op}{value}")))
    }

    /// As Swarm reads it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Placement {
    type Error = PlacementError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Placement> for String {
    fn from(p: Placement) -> Self {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_are_read_as_swarm_reads_them_and_normalised() {
        for (given, stored) in [
            ("node.labels.gpu==true", "node.labels.gpu==true"),
            ("node.hostname != lab3", "node.hostname!=lab3"),
            ("engine.labels.storage.fast == yes", "engine.labels.storage.fast==yes"),
            ("node.role==worker", "node.role==worker"),
            ("node.platform.arch==x86_64", "node.platform.arch==x86_64"),
        ] {
            assert_eq!(Placement::parse(given).unwrap().as_str(), stored, "{given}");
        }
    }

    #[test]
    fn what_swarm_would_not_match_is_refused_with_the_reason() {
        for (given, says) in [
            ("gpu", "ATTRIBUTE==VALUE"),
            ("node.gpu==true", "the attribute must be"),
            ("node.labels.==x", "label's key"),
            ("node.labels.a b==x", "label's key"),
            ("node.hostname==", "one word"),
            ("node.hostname==a b", "one word"),
            ("node.hostname==a==b", "one word"),
        ] {
            let e = Placement::parse(given).unwrap_err().to_string();
            assert!(e.contains(says), "{given}: {e}");
        }
    }
}
