//! Who is acting, and the one decision of who may reach a user's server.
//!
//! Both proxy paths (the fast lane and the general path) and the API's server endpoints ask
//! [`Access::may_reach`]; nothing else decides it. It answers from what the principal and the
//! server already carry and from the in-memory share index (`crate::shares`), without I/O,
//! because it is on every proxied request's path. A principal's scopes count here too (a
//! narrowed token is held to them; roles can give reach to others' servers).

use labhub_core::{Scope, ServerName, Target, UserId, UserName};

use crate::services::ServicePrincipal;
use crate::shares::Rights;
use crate::{Hub, Principal, SYSTEM_ACTOR, ServiceError};

/// Who is acting: a signed-in user, a registered service, or the hub itself (its CLI, its
/// timers).
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// A user, through the web or the API.
    User(&'a Principal),
    /// A registered service with its API token: no account, only its roles' scopes, so it is
    /// never an owner nor an admin.
    Service(&'a ServicePrincipal),
    /// The operator at the command line, or the hub's own background work.
    System,
}

impl Actor<'_> {
    /// The name written to the audit log.
    pub fn name(&self) -> &str {
        match self {
            Actor::User(p) => p.name.as_str(),
            Actor::Service(s) => s.label.as_str(),
            Actor::System => SYSTEM_ACTOR,
        }
    }

    /// Whether the actor has site-wide admin rights.
    pub fn is_admin(&self) -> bool {
        match self {
            Actor::User(p) => p.admin,
            Actor::Service(_) => false,
            Actor::System => true,
        }
    }

    /// The account acting, if a person is.
    pub fn user_id(&self) -> Option<labhub_core::UserId> {
        match self {
            Actor::User(p) => Some(p.user_id),
            Actor::Service(_) | Actor::System => None,
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
    /// Their roles (or their token's scopes) grant what was asked on this server.
    Scoped,
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
    /// The scope that grants this need (JupyterHub's names).
    fn scope(self) -> Scope {
        match self {
            Need::Access => Scope::AccessServers,
            Need::Read => Scope::ReadServers,
            Need::Start => Scope::Servers,
            Need::Stop | Need::Own => Scope::DeleteServers,
        }
    }

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
    /// The owner's name of the day (what scope filters name).
    pub owner_name: &'a UserName,
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

/// The decision itself, over what it needs and nothing else (no I/O): a reach that satisfies
/// `need`, or `None`. A credential with all its account's powers (`full`) reaches its own
/// servers and, for an admin, everyone's, without a look at its scopes; otherwise the scopes
/// decide (the owner's group memberships are not known here, so `!group=` filters reach no
/// server through this gate: closed). Shares count only for full credentials (a narrowed
/// token carries none of its owner's), and the share index is looked at only when nothing
/// else decided, so owners' requests never touch its lock.
fn decide(
    who: &Principal,
    server: ServerRef<'_>,
    need: Need,
    shared: impl FnOnce(UserId, &str, UserId) -> Rights,
) -> Option<Reach> {
    let own = who.user_id == server.owner;
    if who.full && own {
        return Some(Reach::Owner);
    }
    if who.full && who.admin {
        return Some(Reach::Admin);
    }
    let target = Target::Server { owner: server.owner_name, server: server.server, groups: &[] };
    if who.scopes.allows(&need.scope(), &target) {
        return Some(if own { Reach::Owner } else { Reach::Scoped });
    }
    if !who.full {
        return None;
    }
    let rights = shared(server.owner, server.server.map_or("", ServerName::as_str), who.user_id);
    let reach = Reach::Shared(rights);
    (!rights.is_empty() && satisfies(reach, need)).then_some(reach)
}

/// Whether a reach satisfies a need.
fn satisfies(reach: Reach, need: Need) -> bool {
    match reach {
        Reach::Owner | Reach::Admin | Reach::Scoped => true,
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
        decide(who, server, Need::Access, |o, n, v| self.hub.shares().index().rights(o, n, v))
    }

    /// Refuses unless `actor` may do what `need` says with `server`: its owner, an admin, or a
    /// visitor whose share grants it. The hub itself may do everything.
    pub(crate) fn require(&self, actor: Actor<'_>, server: ServerRef<'_>, need: Need) -> Result<Reach, ServiceError> {
        let p = match actor {
            Actor::System => return Ok(Reach::Admin),
            Actor::User(p) => p,
            Actor::Service(s) => {
                // Only its scopes: a service owns no server and shares reach no service.
                let target = Target::Server { owner: server.owner_name, server: server.server, groups: &[] };
                return if s.scopes.allows(&need.scope(), &target) {
                    Ok(Reach::Scoped)
                } else {
                    Err(ServiceError::Forbidden(format!(
                        "Action is not authorized with current scopes; requires any of [{}]",
                        need.scope()
                    )))
                };
            }
        };
        decide(p, server, need, |o, n, v| self.hub.shares().index().rights(o, n, v)).ok_or_else(|| {
            ServiceError::Forbidden(if p.full {
                "you may only do this for your own servers".into()
            } else {
                format!("Action is not authorized with current scopes; requires any of [{}]", need.scope())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use labhub_core::{Holder, ScopeSet, ScopeSpec, SessionId, UserName, scope::builtin};

    use super::*;
    use crate::AuthVia;
    use crate::shares::ShareIndex;

    fn principal(id: i64, name: &str, admin: bool) -> Principal {
        let user = UserName::parse(name).unwrap();
        let mut specs = builtin::USER.to_vec();
        if admin {
            specs.extend(builtin::ADMIN);
        }
        let scopes = ScopeSet::expand(&ScopeSpec::parse_all(specs).unwrap(), Holder::User(&user), None);
        Principal {
            user_id: UserId::new(id),
            name: user,
            admin,
            via: AuthVia::Session { session_id: SessionId::new(id) },
            scopes: Arc::new(scopes),
            full: true,
        }
    }

    /// A token of `who` narrowed to `scopes`.
    fn narrowed(who: &Principal, scopes: &[&str]) -> Principal {
        let set = ScopeSet::expand(&ScopeSpec::parse_all(scopes).unwrap(), Holder::User(&who.name), None);
        Principal {
            scopes: Arc::new(set.intersect(&who.scopes, &|_, _| false)),
            full: false,
            admin: false,
            ..who.clone()
        }
    }

    #[test]
    fn owners_admins_and_visitors_with_a_share_reach_a_server_and_nobody_else_does() {
        let none = ShareIndex::default();
        let alice = UserId::new(1);
        let alice_name = UserName::parse("alice").unwrap();
        let gpu = ServerName::parse("gpu").unwrap();
        let reach =
            |who: &Principal, to, need, shares: &ShareIndex| decide(who, to, need, |o, n, v| shares.rights(o, n, v));
        for server in [None, Some(&gpu)] {
            let to = ServerRef { owner: alice, owner_name: &alice_name, server };
            assert_eq!(reach(&principal(1, "alice", false), to, Need::Own, &none), Some(Reach::Owner));
            assert_eq!(reach(&principal(2, "root", true), to, Need::Own, &none), Some(Reach::Admin));
            assert_eq!(reach(&principal(3, "bob", false), to, Need::Read, &none), None);
            // Being an admin does not make someone the owner.
            assert_eq!(reach(&principal(1, "alice", true), to, Need::Access, &none), Some(Reach::Owner));
        }
        // bob may reach alice's default server (not her `gpu`); carol may only start it.
        let shares = ShareIndex::build([
            (alice, String::new(), UserId::new(3), Rights::ACCESS),
            (alice, String::new(), UserId::new(5), Rights::of_scopes(["servers"])),
        ]);
        let default = ServerRef { owner: alice, owner_name: &alice_name, server: None };
        let bob = principal(3, "bob", false);
        let carol = principal(5, "carol", false);
        assert_eq!(reach(&bob, default, Need::Access, &shares), Some(Reach::Shared(Rights::ACCESS)));
        assert!(reach(&bob, default, Need::Read, &shares).is_some());
        for need in [Need::Start, Need::Stop, Need::Own] {
            assert_eq!(reach(&bob, default, need, &shares), None);
        }
        let gpu_server = ServerRef { owner: alice, owner_name: &alice_name, server: Some(&gpu) };
        assert_eq!(reach(&bob, gpu_server, Need::Access, &shares), None);
        assert_eq!(
            reach(&carol, default, Need::Access, &shares),
            None,
            "`servers` alone does not reach it, as in JupyterHub"
        );
        assert!(
            reach(&carol, default, Need::Start, &shares).is_some()
                && reach(&carol, default, Need::Stop, &shares).is_some()
        );
    }

    #[test]
    fn a_narrowed_token_reaches_only_what_its_scopes_say_and_carries_no_shares() {
        let alice = UserId::new(1);
        let alice_name = UserName::parse("alice").unwrap();
        let gpu = ServerName::parse("gpu").unwrap();
        let shares = ShareIndex::build([(alice, String::new(), UserId::new(3), Rights::ACCESS)]);
        let reach = |who: &Principal, to, need| decide(who, to, need, |o, n, v| shares.rights(o, n, v));
        let default = ServerRef { owner: alice, owner_name: &alice_name, server: None };
        let on_gpu = ServerRef { owner: alice, owner_name: &alice_name, server: Some(&gpu) };
        let owner = principal(1, "alice", false);
        let read_only = narrowed(&owner, &["read:servers!user=alice"]);
        assert_eq!(reach(&read_only, default, Need::Read), Some(Reach::Owner));
        assert_eq!(reach(&read_only, default, Need::Access), None);
        assert_eq!(reach(&read_only, default, Need::Start), None);
        let gpu_only = narrowed(&owner, &["access:servers!server=alice/gpu"]);
        assert_eq!(reach(&gpu_only, on_gpu, Need::Access), Some(Reach::Owner));
        assert_eq!(reach(&gpu_only, default, Need::Access), None);
        // An admin's narrowed token is no admin.
        let root = narrowed(&principal(2, "root", true), &["read:servers"]);
        assert_eq!(reach(&root, default, Need::Read), Some(Reach::Scoped));
        assert_eq!(reach(&root, default, Need::Access), None);
        // bob's share does not come with his narrowed token.
        let bob = narrowed(&principal(3, "bob", false), &["access:servers!user=bob"]);
        assert_eq!(reach(&bob, default, Need::Access), None);
    }
}
