//! JupyterHub's scope names (the subset its clients use) and the tree of what each implies,
//! as `jupyterhub/scopes.py` defines them.

use std::fmt;

use super::ScopeError;

macro_rules! scopes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal => [$($sub:ident),*];)*) => {
        /// One of JupyterHub's scopes, without its filter.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Scope {
            $($(#[$doc])* $variant,)*
            /// `custom:…`: a scope the hub gives no meaning of its own, for services to check.
            Custom(String),
        }

        impl Scope {
            /// Every named scope the hub knows (custom ones aside), in definition order.
            pub const KNOWN: &'static [Scope] = &[$(Scope::$variant),*];

            /// JupyterHub's spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Custom(name) => name,
                }
            }

            /// The scopes this one directly implies (JupyterHub's `subscopes`).
            pub fn subscopes(&self) -> &'static [Scope] {
                match self {
                    $(Self::$variant => &[$(Scope::$sub),*],)*
                    Self::Custom(_) => &[],
                }
            }

            fn known(name: &str) -> Option<Scope> {
                match name {
                    $($name => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

scopes! {
    /// Everything about users: create, rename, make admin, delete, plus `users`.
    AdminUsers = "admin:users" => [Users, DeleteUsers, ReadRolesUsers];
    /// Change users (not their admin flag) and report their activity.
    Users = "users" => [ReadUsers, ListUsers, UsersActivity];
    /// Delete users.
    DeleteUsers = "delete:users" => [];
    /// List users' names (who exists).
    ListUsers = "list:users" => [];
    /// Read users' models.
    ReadUsers = "read:users" => [ReadUsersName, ReadUsersGroups, ReadUsersActivity, ReadUsersShares];
    /// Read users' names.
    ReadUsersName = "read:users:name" => [];
    /// Read users' group memberships.
    ReadUsersGroups = "read:users:groups" => [];
    /// Read users' last activity.
    ReadUsersActivity = "read:users:activity" => [];
    /// Report users' activity.
    UsersActivity = "users:activity" => [ReadUsersActivity];
    /// Read what has been shared with users.
    ReadUsersShares = "read:users:shares" => [];
    /// Leave shares given to users.
    UsersShares = "users:shares" => [ReadUsersShares];
    /// Read roles' assignments to users.
    ReadRolesUsers = "read:roles:users" => [];
    /// Read roles and whom they are assigned to.
    ReadRoles = "read:roles" => [ReadRolesUsers, ReadRolesGroups, ReadRolesServices];
    /// Read roles' assignments to groups.
    ReadRolesGroups = "read:roles:groups" => [];
    /// Read roles' assignments to services.
    ReadRolesServices = "read:roles:services" => [];
    /// Everything about servers, including their spawner state.
    AdminServers = "admin:servers" => [Servers, AdminServerState];
    /// Read and change servers' spawner state.
    AdminServerState = "admin:server_state" => [];
    /// Start and stop servers, and read them.
    Servers = "servers" => [ReadServers, DeleteServers];
    /// Read servers' models.
    ReadServers = "read:servers" => [ReadUsersName];
    /// Stop and delete servers.
    DeleteServers = "delete:servers" => [];
    /// Reach servers through the proxy.
    AccessServers = "access:servers" => [];
    /// Create, read and revoke tokens.
    Tokens = "tokens" => [ReadTokens];
    /// Read tokens' models.
    ReadTokens = "read:tokens" => [];
    /// Create and delete groups, plus `groups`.
    AdminGroups = "admin:groups" => [Groups];
    /// Change groups' members, and read them.
    Groups = "groups" => [ReadGroups, ListGroups];
    /// List groups' names.
    ListGroups = "list:groups" => [];
    /// Read groups' models.
    ReadGroups = "read:groups" => [ReadGroupsName, ReadGroupsShares];
    /// Read groups' names.
    ReadGroupsName = "read:groups:name" => [];
    /// Read what has been shared with groups.
    ReadGroupsShares = "read:groups:shares" => [];
    /// Leave shares given to groups.
    GroupsShares = "groups:shares" => [ReadGroupsShares];
    /// Grant, change and revoke shares of servers.
    Shares = "shares" => [ReadShares, UsersShares, GroupsShares];
    /// Read shares of servers.
    ReadShares = "read:shares" => [];
    /// List services' names.
    ListServices = "list:services" => [];
    /// Read services' models.
    ReadServices = "read:services" => [ReadServicesName, ReadRolesServices];
    /// Read services' names.
    ReadServicesName = "read:services:name" => [];
    /// Reach services through the proxy.
    AccessServices = "access:services" => [];
    /// Read the hub's own information.
    ReadHub = "read:hub" => [];
    /// Read the hub's metrics.
    ReadMetrics = "read:metrics" => [];
    /// The admin pages.
    AdminUi = "admin-ui" => [];
    /// Shut the hub down.
    Shutdown = "shutdown" => [];
    /// Change the proxy's routes.
    Proxy = "proxy" => [];
}

impl Scope {
    /// Parses a scope name without filter; `custom:` names follow JupyterHub's rule
    /// (`custom:` then lower-case letters, digits, `_`, `-`, `:`, `*`, ending in none of `-`, `:`).
    pub fn parse(name: &str) -> Result<Scope, ScopeError> {
        if let Some(rest) = name.strip_prefix("custom:") {
            let body_ok = rest.len() >= 2
                && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*:".contains(&b))
                && rest.as_bytes()[0].is_ascii_alphanumeric()
                && !rest.ends_with(['-', ':']);
            return if body_ok {
                Ok(Scope::Custom(name.to_string()))
            } else {
                Err(ScopeError::BadCustom(name.to_string()))
            };
        }
        Scope::known(name).ok_or_else(|| ScopeError::Unknown(name.to_string()))
    }

    /// This scope and everything it implies, transitively (JupyterHub's expansion).
    pub fn implied(&self) -> Vec<Scope> {
        let mut out = vec![self.clone()];
        let mut i = 0;
        while i < out.len() {
            for sub in out[i].subscopes() {
                if !out.contains(sub) {
                    out.push(sub.clone());
                }
            }
            i += 1;
        }
        out
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_name_parses_back_to_itself() {
        for scope in Scope::KNOWN {
            assert_eq!(&Scope::parse(scope.as_str()).unwrap(), scope);
        }
    }

    #[test]
    fn the_tree_is_jupyterhubs() {
        let admin = Scope::AdminUsers.implied();
        for s in [Scope::Users, Scope::ReadUsers, Scope::ListUsers, Scope::ReadUsersActivity, Scope::UsersActivity] {
            assert!(admin.contains(&s), "admin:users implies {s}");
        }
        let servers = Scope::Servers.implied();
        assert!(servers.contains(&Scope::ReadServers) && servers.contains(&Scope::DeleteServers));
        assert!(!servers.contains(&Scope::AccessServers), "as in JupyterHub, servers does not grant access");
        assert!(!Scope::ReadUsers.implied().contains(&Scope::ListUsers), "reading is not listing");
        assert!(Scope::AdminGroups.implied().contains(&Scope::ReadGroups));
        assert_eq!(Scope::ListUsers.implied(), vec![Scope::ListUsers]);
    }

    #[test]
    fn unknown_and_malformed_names_are_refused_by_name() {
        assert_eq!(Scope::parse("read:userz").unwrap_err().to_string(), "unknown scope 'read:userz'");
        assert!(Scope::parse("custom:grafana:view").is_ok());
        assert!(matches!(Scope::parse("custom:"), Err(ScopeError::BadCustom(_))));
        assert!(matches!(Scope::parse("custom:Bad"), Err(ScopeError::BadCustom(_))));
        assert!(matches!(Scope::parse("custom:end:"), Err(ScopeError::BadCustom(_))));
    }
}
