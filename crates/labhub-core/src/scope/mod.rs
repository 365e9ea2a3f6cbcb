//! JupyterHub's access model: scopes, their filters, and the sets a principal holds.
//!
//! A scope as written (`read:users!group=lab`, `self`, `access:servers!server`) is a
//! [`ScopeSpec`]: what roles and tokens store. Expanded for its holder ([`Holder`]) — `self`
//! into the user's own scopes, `inherit` into the owner's, bare filters into the holder's
//! name, each scope into everything it implies — it becomes a [`ScopeSet`], which answers
//! [`ScopeSet::allows`] for a scope and a [`Target`]. A token's effective set is its own set
//! intersected with its owner's ([`ScopeSet::intersect`]), so it never outgrows its owner
//! when the owner's roles shrink.

mod set;
mod vocabulary;

use std::fmt;

pub use set::{Grant, ScopeSet, Target};
pub use vocabulary::Scope;

use crate::{GroupName, NameError, ServerName, ServiceName, UserName};

/// Why a scope as written was refused, worded for whoever wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope '{0}'")]
    Unknown(String),
    #[error("'{0}' is not a custom scope: write custom: then lower-case letters, digits, '_', '-', ':' or '*'")]
    BadCustom(String),
    #[error("'{scope}' has an unknown filter: use !user=, !group=, !server= or !service=")]
    UnknownFilter { scope: String },
    #[error("'{scope}' has a bad filter: {reason}")]
    BadFilter { scope: String, reason: String },
    #[error("'{0}' takes no filter")]
    FilteredKeyword(String),
}

/// What a filtered scope applies to; unfiltered scopes apply to everything ([`Filter::All`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Filter {
    /// No filter.
    All,
    /// `!user=name`: the user and their servers.
    User(UserName),
    /// `!group=name`: the group, its members and their servers.
    Group(GroupName),
    /// `!server=user/name` (the default server: `user/`): that one server.
    Server(UserName, Option<ServerName>),
    /// `!service=name`: that service.
    Service(ServiceName),
}

impl Filter {
    /// Whether a scope with this filter applies to `target`.
    pub fn matches(&self, target: &Target<'_>) -> bool {
        match (self, target) {
            (Filter::All, _) => true,
            (Filter::User(u), Target::User { name, .. }) => u == *name,
            (Filter::User(u), Target::Server { owner, .. }) => u == *owner,
            (Filter::Group(g), Target::User { groups, .. } | Target::Server { groups, .. }) => groups.contains(g),
            (Filter::Group(g), Target::Group(name)) => g == *name,
            (Filter::Server(u, s), Target::Server { owner, server, .. }) => u == *owner && s.as_ref() == *server,
            (Filter::Service(s), Target::Service(name)) => s == *name,
            _ => false,
        }
    }

    fn parse(scope: &str, raw: &str) -> Result<Filter, ScopeError> {
        let bad = |e: NameError| ScopeError::BadFilter { scope: scope.to_string(), reason: e.to_string() };
        let (kind, value) =
            raw.split_once('=').ok_or_else(|| ScopeError::UnknownFilter { scope: scope.to_string() })?;
        match kind {
            "user" => UserName::parse(value).map(Filter::User).map_err(bad),
            "group" => GroupName::parse(value).map(Filter::Group).map_err(bad),
            "service" => ServiceName::parse(value).map(Filter::Service).map_err(bad),
            "server" => {
                let (user, server) = value.split_once('/').ok_or_else(|| ScopeError::BadFilter {
                    scope: scope.to_string(),
                    reason: "a server filter is !server=user/name (user/ for the default server)".to_string(),
                })?;
                Ok(Filter::Server(
                    UserName::parse(user).map_err(bad)?,
                    ServerName::parse_optional(server).map_err(bad)?,
                ))
            }
            _ => Err(ScopeError::UnknownFilter { scope: scope.to_string() }),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::All => Ok(()),
            Filter::User(u) => write!(f, "!user={u}"),
            Filter::Group(g) => write!(f, "!group={g}"),
            Filter::Server(u, s) => write!(f, "!server={u}/{}", s.as_ref().map_or("", ServerName::as_str)),
            Filter::Service(s) => write!(f, "!service={s}"),
        }
    }
}

/// A filter as roles may write it: fixed, or bare (`!user`, `!server`, `!service`), meaning
/// whoever holds the role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FilterSpec {
    /// A fixed filter (or none).
    Fixed(Filter),
    /// `!user`: the holding user.
    OwnUser,
    /// `!server`: the server the holding token was issued for.
    OwnServer,
    /// `!service`: the holding service.
    OwnService,
}

/// A scope as roles and tokens store it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScopeSpec {
    /// `self`: the holding user's own scopes (their account, servers, tokens, activity).
    Own,
    /// `inherit`: everything the token's owner holds.
    Inherit,
    /// A scope with its filter.
    Scope(Scope, FilterSpec),
}

impl ScopeSpec {
    /// Parses one scope as written.
    pub fn parse(raw: &str) -> Result<ScopeSpec, ScopeError> {
        let (name, filter) = match raw.split_once('!') {
            Some((name, filter)) => (name, Some(filter)),
            None => (raw, None),
        };
        if name == "self" || name == "inherit" {
            if filter.is_some() {
                return Err(ScopeError::FilteredKeyword(name.to_string()));
            }
            return Ok(if name == "self" { ScopeSpec::Own } else { ScopeSpec::Inherit });
        }
        let scope = Scope::parse(name)?;
        let filter = match filter {
            None => FilterSpec::Fixed(Filter::All),
            Some("user") => FilterSpec::OwnUser,
            Some("server") => FilterSpec::OwnServer,
            Some("service") => FilterSpec::OwnService,
            Some(f) => FilterSpec::Fixed(Filter::parse(raw, f)?),
        };
        Ok(ScopeSpec::Scope(scope, filter))
    }

    /// Parses a list, failing on the first bad one.
    pub fn parse_all<S: AsRef<str>>(raw: impl IntoIterator<Item = S>) -> Result<Vec<ScopeSpec>, ScopeError> {
        raw.into_iter().map(|s| ScopeSpec::parse(s.as_ref())).collect()
    }
}

impl fmt::Display for ScopeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeSpec::Own => f.write_str("self"),
            ScopeSpec::Inherit => f.write_str("inherit"),
            ScopeSpec::Scope(scope, FilterSpec::Fixed(filter)) => write!(f, "{scope}{filter}"),
            ScopeSpec::Scope(scope, FilterSpec::OwnUser) => write!(f, "{scope}!user"),
            ScopeSpec::Scope(scope, FilterSpec::OwnServer) => write!(f, "{scope}!server"),
            ScopeSpec::Scope(scope, FilterSpec::OwnService) => write!(f, "{scope}!service"),
        }
    }
}

/// Who holds a set of scopes, for `self` and bare filters.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    /// A user (their session, or one of their tokens).
    User(&'a UserName),
    /// A user's token issued for one of their servers (`!server` names it).
    Server(&'a UserName, Option<&'a ServerName>),
    /// A registered service.
    Service(&'a ServiceName),
}

impl Holder<'_> {
    fn user(&self) -> Option<&UserName> {
        match self {
            Holder::User(u) | Holder::Server(u, _) => Some(u),
            Holder::Service(_) => None,
        }
    }

    /// The filter a bare filter stands for; `None` when it names nothing of this holder, and
    /// then the scope is dropped (as JupyterHub does).
    fn resolve(&self, spec: &FilterSpec) -> Option<Filter> {
        match (spec, self) {
            (FilterSpec::Fixed(f), _) => Some(f.clone()),
            (FilterSpec::OwnUser, _) => self.user().map(|u| Filter::User(u.clone())),
            (FilterSpec::OwnServer, Holder::Server(u, s)) => Some(Filter::Server((*u).clone(), s.cloned())),
            (FilterSpec::OwnService, Holder::Service(s)) => Some(Filter::Service((*s).clone())),
            _ => None,
        }
    }
}

/// What `self` stands for: a user's own account, servers, tokens, activity and shares given
/// to them (JupyterHub's `_expand_self_scope`).
pub const SELF_SCOPES: &[Scope] = &[
    Scope::AccessServers,
    Scope::DeleteServers,
    Scope::ReadServers,
    Scope::ReadTokens,
    Scope::ReadUsers,
    Scope::ReadUsersActivity,
    Scope::ReadUsersGroups,
    Scope::ReadUsersName,
    Scope::ReadUsersShares,
    Scope::Servers,
    Scope::Tokens,
    Scope::UsersActivity,
    Scope::UsersShares,
];

/// The built-in roles, as JupyterHub defines them (names and scopes as written).
pub mod builtin {
    /// Every user: their own things.
    pub const USER: &[&str] = &["self"];
    /// Admins: everything JupyterHub's `admin` role has.
    pub const ADMIN: &[&str] = &[
        "admin-ui",
        "admin:users",
        "admin:servers",
        "tokens",
        "admin:groups",
        "list:services",
        "read:services",
        "read:hub",
        "proxy",
        "shutdown",
        "access:services",
        "access:servers",
        "read:roles",
        "read:metrics",
        "shares",
    ];
    /// What a single-user server's own token holds.
    pub const SERVER: &[&str] = &["users:activity!user", "access:servers!server"];
    /// A token minted without scopes: its owner's.
    pub const TOKEN: &[&str] = &["inherit"];
}

#[cfg(test)]
mod tests;
