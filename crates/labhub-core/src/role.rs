//! Who may do what.

use serde::{Deserialize, Serialize};

/// A user's site-wide role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A lab member: their own account, tokens and servers.
    User,
    /// Everything, for every user.
    Admin,
}

/// A user's role inside one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupRole {
    /// Belongs to the group and runs servers under its quota.
    Member,
    /// Manages the group's members, quota and images, within the ceiling an admin set.
    Lead,
}

impl GroupRole {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Lead => "lead",
        }
    }

    /// Reads the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Self::Member),
            "lead" => Some(Self::Lead),
            _ => None,
        }
    }
}

/// Whether an account may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    /// May sign in.
    Active,
    /// Signed up and waiting for an admin's approval.
    Pending,
    /// Locked out by an admin; their sessions and tokens stop working.
    Disabled,
}

impl AccountState {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Pending => "pending",
            Self::Disabled => "disabled",
        }
    }
}

impl TryFrom<String> for AccountState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "active" => Ok(Self::Active),
            "pending" => Ok(Self::Pending),
            "disabled" => Ok(Self::Disabled),
            _ => Err(format!("unknown account state {s:?}")),
        }
    }
}
