//! Who is acting, and the one decision of who may reach a user's server.
//!
//! Both proxy paths (the fast lane and the general path) and the API's server endpoints ask
//! [`Access::may_reach`]; nothing else decides it. It answers from what the principal and the
//! server already carry, without I/O, because it is on every proxied request's path.

use std::marker::PhantomData;

use labhub_core::{ServerName, UserId};

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

/// The gate to users' servers. Today it decides from the principal and the server alone;
/// it is a handle of the hub's so that what it will consult (shares) lives with it.
#[derive(Clone, Copy)]
pub struct Access<'h> {
    hub: PhantomData<&'h Hub>,
}

impl<'h> Access<'h> {
    pub(crate) fn new(_hub: &'h Hub) -> Self {
        Self { hub: PhantomData }
    }

    /// Whether `who` may reach `server` (send it requests, open its WebSockets, and — through
    /// the API — start, stop and follow it), and why; `None` refuses.
    pub fn may_reach(&self, who: &Principal, server: ServerRef<'_>) -> Option<Reach> {
        if who.user_id == server.owner {
            Some(Reach::Owner)
        } else if who.admin {
            Some(Reach::Admin)
        } else {
            None
        }
    }

    /// [`Access::may_reach`] for an actor, as the service's own checks ask it: the hub itself
    /// reaches everything; a refusal is `Forbidden`.
    pub(crate) fn require(&self, actor: Actor<'_>, server: ServerRef<'_>) -> Result<Reach, ServiceError> {
        match actor {
            Actor::System => Ok(Reach::Admin),
            Actor::User(p) => self
                .may_reach(p, server)
                .ok_or_else(|| ServiceError::Forbidden("you may only do this for your own servers".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use labhub_core::{SessionId, UserName};

    use super::*;
    use crate::AuthVia;

    fn principal(id: i64, name: &str, admin: bool) -> Principal {
        Principal {
            user_id: UserId::new(id),
            name: UserName::parse(name).unwrap(),
            admin,
            via: AuthVia::Session { session_id: SessionId::new(id) },
        }
    }

    #[test]
    fn owners_and_admins_reach_a_server_and_nobody_else_does() {
        let access = Access { hub: PhantomData };
        let alice = UserId::new(1);
        let gpu = ServerName::parse("gpu").unwrap();
        for server in [None, Some(&gpu)] {
            let to = ServerRef { owner: alice, server };
            assert_eq!(access.may_reach(&principal(1, "alice", false), to), Some(Reach::Owner));
            assert_eq!(access.may_reach(&principal(2, "root", true), to), Some(Reach::Admin));
            assert_eq!(access.may_reach(&principal(3, "bob", false), to), None);
            // Being an admin does not make someone the owner.
            assert_eq!(access.may_reach(&principal(1, "alice", true), to), Some(Reach::Owner));
            // A new account that took the owner's old name is someone else.
            assert_eq!(access.may_reach(&principal(4, "alice", false), to), None);
        }
        let bob = principal(3, "bob", false);
        assert!(access.require(Actor::User(&bob), ServerRef { owner: alice, server: None }).is_err());
        assert_eq!(access.require(Actor::System, ServerRef { owner: alice, server: None }).unwrap(), Reach::Admin);
    }
}
