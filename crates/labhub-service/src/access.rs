//! Who is acting, and the one decision of who may reach a user's server.
//!
//! Both proxy paths (the fast lane and the general path) and the API's server endpoints ask
//! [`Access::may_reach`]; nothing else decides it. It answers from what the principal and the
//! server already carry and from the in-memory share index (`crate::shares`), without I/O,
//! because it is on every proxied request's path.

use labhub_core::{ServerName, UserId};

use crate::shares::Rights;
use crate::{Hub, Principal, SYSTEM_ACTOR, ServiceError};

/// Who is acting: a signed-in user, or the hub itself (its CLI, its timers).
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// A user, through the web or the API.
    User(&'a Principal),
    /// The operator at the command line, or the hub's own background work.
    System,
}

impl Actor<'_> {
    /// The name written to the audit log.
    pub fn name(&self) -> &str {
        match self {
            Actor::User(p) => p.name.as_str(),
            Actor::System => SYSTEM_ACTOR,
        }
    }

    /// Whether the actor has site-wide admin rights.
    pub fn is_admin(&self) -> bool {
        match self {
            Actor::User(p) => p.admin,
            Actor::System => true,
        }
    }

    /// Whether the actor is this account itself.
    pub fn is(&self, user: labhub_core::UserId) -> bool {
        matches!(self, Actor::User(p) if p.user_id == user)
    }

    /// Refuses unless the actor is an admin.
    pub fn require_admin(&self) -> Result<(), ServiceError> {
        if self.is_admin() { Ok(()) } else { Err(ServiceError::Forbidden("this needs an admin".into())) }
    }

    /// Refuses unless the actor is the account `user` or an admin (for accounts' own things:
    /// tokens, sessions, identities).
    pub fn require_self_or_admin(&self, user: labhub_core::UserId) -> Result<(), ServiceError> {
        if self.is(user) || self.is_admin() {
            Ok(())
        } else {
            Err(ServiceError::Forbidden("you may only do this for your own account".into()))
        }
    }
}

/// Why a principal may reach a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// It is theirs.
    Owner,
    /// They administer the hub.
    Admin,
    /// Its owner (or a lead of their group) shared it with them, or with a group of theirs:
    /// they may do what these rights say, acting as the owner inside the server.
    Shared(Rights),
}

/// What an API call about a server needs of the asker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reach it, as the proxy does (and count as activity on it).
    Access,
    /// See its state and follow its progress.
    Read,
    /// Start it.
    Start,
    /// Stop it.
    Stop,
    /// What only its owner and admins do (remove a named server, its storage).
    Own,
}

impl Need {
    /// The share rights that satisfy this need; `None` when no share does.
    fn rights(self) -> Option<Rights> {
        match self {
            Need::Access => Some(Rights::ACCESS),
            // Any share lets its visitors see the server they were given.
            Need::Read => Some(Rights::NONE),
            Need::Start => Some(Rights::START),
            Need::Stop => Some(Rights::STOP),
            Need::Own => None,
        }
    }
}

/// The server a principal wants to reach: its owner's account id (never a name, which may
/// have passed to another account) and its name.
#[derive(Debug, Clone, Copy)]
pub struct ServerRef<'a> {
    pub owner: UserId,
    /// `None` for the default server.
    pub server: Option<&'a ServerName>,
}

impl Hub {
    /// Who may reach which server: the one gate both proxy paths and the API ask.
    pub fn access(&self) -> Access<'_> {
        Access::new(self)
    }
}

/// The gate to users' servers: the principal, the server's owner, and the share index.
#[derive(Clone, Copy)]
pub struct Access<'h> {
    hub: &'h Hub,
}

/// The decision itself, over what it needs and nothing else (no I/O). The share index is
/// looked at only for someone who is neither the owner nor an admin, so their requests never
/// touch its lock.
fn decide(
    who: &Principal,
    server: ServerRef<'_>,
    shared: impl FnOnce(UserId, &str, UserId) -> Rights,
) -> Option<Reach> {
    if who.user_id == server.owner {
        return Some(Reach::Owner);
    }
    if who.admin {
        return Some(Reach::Admin);
    }
    let rights = shared(server.owner, server.server.map_or("", ServerName::as_str), who.user_id);
    (!rights.is_empty()).then_some(Reach::Shared(rights))
}

/// Whether a reach satisfies a need.
fn satisfies(reach: Reach, need: Need) -> bool {
    match reach {
        Reach::Owner | Reach::Admin => true,
        Reach::Shared(rights) => need.rights().is_some_and(|r| rights.contains(r)),
    }
}

impl<'h> Access<'h> {
    pub(crate) fn new(hub: &'h Hub) -> Self {
        Self { hub }
    }

    /// Whether `who` may reach `server` through the proxy (send it requests, open its
    /// WebSockets), and why; `None` refuses. A share counts only with `access:servers`.
    pub fn may_reach(&self, who: &Principal, server: ServerRef<'_>) -> Option<Reach> {
        let reach = decide(who, server, |o, n, v| self.hub.shares().index().rights(o, n, v))?;
        satisfies(reach, Need::Access).then_some(reach)
    }

    /// Refuses unless `actor` may do what `need` says with `server`: its owner, an admin, or a
    /// visitor whose share grants it. The hub itself may do everything.
    pub(crate) fn require(&self, actor: Actor<'_>, server: ServerRef<'_>, need: Need) -> Result<Reach, ServiceError> {
        let p = match actor {
            Actor::System => return Ok(Reach::Admin),
            Actor::User(p) => p,
        };
        match decide(p, server, |o, n, v| self.hub.shares().index().rights(o, n, v)) {
            Some(reach) if satisfies(reach, need) => Ok(reach),
            _ => Err(ServiceError::Forbidden("you may only do this for your own servers".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use labhub_core::{SessionId, UserName};

    use super::*;
    use crate::AuthVia;
    use crate::shares::ShareIndex;

    fn principal(id: i64, name: &str, admin: bool) -> Principal {
        Principal {
            user_id: UserId::new(id),
            name: UserName::parse(name).unwrap(),
            admin,
            via: AuthVia::Session { session_id: SessionId::new(id) },
        }
    }

    #[test]
    fn owners_admins_and_visitors_with_a_share_reach_a_server_and_nobody_else_does() {
        let none = ShareIndex::default();
        let alice = UserId::new(1);
        let gpu = ServerName::parse("gpu").unwrap();
        for server in [None, Some(&gpu)] {
            let to = ServerRef { owner: alice, server };
            assert_eq!(decide(&principal(1, "alice", false), to, |o, n, v| none.rights(o, n, v)), Some(Reach::Owner));
            assert_eq!(decide(&principal(2, "root", true), to, |o, n, v| none.rights(o, n, v)), Some(Reach::Admin));
            assert_eq!(decide(&principal(3, "bob", false), to, |o, n, v| none.rights(o, n, v)), None);
            // Being an admin does not make someone the owner.
            assert_eq!(decide(&principal(1, "alice", true), to, |o, n, v| none.rights(o, n, v)), Some(Reach::Owner));
            // A new account that took the owner's old name is someone else.
            assert_eq!(decide(&principal(4, "alice", false), to, |o, n, v| none.rights(o, n, v)), None);
        }
        // bob may reach alice's default server (not her `gpu`); carol may only start it.
        let shares = ShareIndex::build([
            (alice, String::new(), UserId::new(3), Rights::ACCESS),
            (alice, String::new(), UserId::new(5), Rights::of_scopes(["servers"])),
        ]);
        let default = ServerRef { owner: alice, server: None };
        let bob = principal(3, "bob", false);
        let carol = principal(5, "carol", false);
        let reach = decide(&bob, default, |o, n, v| shares.rights(o, n, v)).unwrap();
        assert_eq!(reach, Reach::Shared(Rights::ACCESS));
        assert!(satisfies(reach, Need::Access) && satisfies(reach, Need::Read));
        assert!(!satisfies(reach, Need::Start) && !satisfies(reach, Need::Stop) && !satisfies(reach, Need::Own));
        assert_eq!(
            decide(&bob, ServerRef { owner: alice, server: Some(&gpu) }, |o, n, v| shares.rights(o, n, v)),
            None
        );
        let reach = decide(&carol, default, |o, n, v| shares.rights(o, n, v)).unwrap();
        assert!(!satisfies(reach, Need::Access), "`servers` alone does not reach it, as in JupyterHub");
        assert!(satisfies(reach, Need::Start) && satisfies(reach, Need::Stop));
        assert!(satisfies(Reach::Owner, Need::Own) && satisfies(Reach::Admin, Need::Own));
    }
}
