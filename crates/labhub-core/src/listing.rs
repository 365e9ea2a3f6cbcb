//! What a list of users or audit records asks for: the filters and pages of the API's and the
//! admin pages' lists, shared by the service that checks them and the store that runs them.

use time::OffsetDateTime;

use crate::AccountState;

/// How a list of users is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserSort {
    #[default]
    Name,
    NameDesc,
    Created,
    CreatedDesc,
    LastActivity,
    LastActivityDesc,
}

impl UserSort {
    /// Reads the API's `sort` parameter: a field, optionally prefixed by `-` for descending.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "name" => Self::Name,
            "-name" => Self::NameDesc,
            "created" => Self::Created,
            "-created" => Self::CreatedDesc,
            "last_activity" => Self::LastActivity,
            "-last_activity" => Self::LastActivityDesc,
            _ => return None,
        })
    }
}

/// JupyterHub's `state` filter on user lists, by their servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStateFilter {
    /// Users with at least one server that is up and reachable.
    Ready,
    /// Users with at least one server that is starting, running or stopping.
    Active,
    /// Users with no active server.
    Inactive,
}

impl ServerStateFilter {
    /// Reads the API's `state` parameter.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ready" => Some(Self::Ready),
            "active" => Some(Self::Active),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
}

/// Which users to list, and which page of them.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Only names starting with this (JupyterHub's `name_filter`).
    pub name_prefix: Option<String>,
    /// Only names containing this (the admin page's search box).
    pub name_contains: Option<String>,
    /// Only users in this account state.
    pub account_state: Option<AccountState>,
    /// Only users whose servers are in this state.
    pub server_state: Option<ServerStateFilter>,
    pub sort: UserSort,
    pub offset: i64,
    pub limit: i64,
}

/// Which audit records to show.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// An action, or an action prefix ending in `.` (e.g. `user.`).
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub offset: i64,
    pub limit: i64,
}
