//! Roles and scopes (JupyterHub's access model): what each principal may do, worked out from
//! the roles Postgres holds when a credential is recognised, and the one check every API
//! endpoint asks ([`Roles::require`]).
//!
//! A user holds `user` (their own things), `admin` when the account is an admin, the member
//! and lead scopes of each group of theirs (filtered `!group=`), and every role given to them
//! or to a group of theirs. A token holds its own scopes (`inherit` by default) intersected with its
//! owner's, so it never outgrows the owner. Credentials are cached for a short time; every
//! change of roles, assignments or memberships empties those caches (in this process at
//! once, in others through `labhub_roles` / `labhub_shares`, see `Hub::follow_shares`).

mod admin;

use std::collections::HashSet;
use std::sync::Arc;

use labhub_core::{GroupName, Holder, Scope, ScopeSet, ScopeSpec, ServerName, ServiceName, Target, UserName};
use labhub_db::{roles, users};

pub use admin::{Assignee, RoleView};

use crate::access::Actor;
use crate::{AuthVia, Hub, Principal, ServiceError};

impl Hub {
    /// Roles, scopes and the one scope check of the API.
    pub fn roles(&self) -> Roles<'_> {
        Roles { hub: self }
    }
}

/// Roles and scopes.
#[derive(Clone, Copy)]
pub struct Roles<'h> {
    hub: &'h Hub,
}

/// What a lead holds over each group they lead, as scopes filtered to it: its members'
/// accounts and servers, its membership, and sharing its members' servers.
const LEAD_SCOPES: &[&str] = &["read:users", "list:users", "servers", "groups", "shares"];
/// What every member holds over each group of theirs: seeing what is shared with it.
const MEMBER_SCOPES: &[&str] = &["read:groups:shares"];

/// What an API request acts on, by name.
#[derive(Debug, Clone)]
pub enum Resource {
    /// The hub as a whole (lists, the hub's own information).
    Hub,
    /// A user (their account, tokens, activity).
    User(UserName),
    /// A user's server.
    Server(UserName, Option<ServerName>),
    /// A group.
    Group(GroupName),
    /// A registered service.
    Service(ServiceName),
}

impl<'h> Roles<'h> {
    /// The principal for an active account presenting a credential: a session (`token_scopes`
    /// `None`) or a token with its scopes as stored.
    pub(crate) async fn principal(
        &self,
        user: users::User,
        via: AuthVia,
        token_scopes: Option<&[String]>,
    ) -> Result<Principal, ServiceError> {
        let own = self.of_account(&user).await?;
        let (scopes, full) = match token_scopes {
            None => (own, true),
            Some(raw) => {
                let specs = parse_stored(raw);
                let asked = ScopeSet::expand(&specs, Holder::User(&user.name), Some(&own));
                let members = self.members(&[&asked, &own]).await?;
                let effective = asked.intersect(&own, &|u, g| members.contains(&(u.clone(), g.clone())));
                let full = effective == own;
                (effective, full)
            }
        };
        Ok(Principal {
            user_id: user.user_id,
            name: user.name,
            admin: user.admin && full,
            via,
            scopes: Arc::new(scopes),
            full,
        })
    }

    /// The account `user_id` as the gate sees it with all its powers (as a session would), for
    /// deciding again about connections it opened; `None` once it is gone or may not sign in.
    pub(crate) async fn recheck(&self, user_id: labhub_core::UserId) -> Result<Option<Principal>, ServiceError> {
        match users::by_id(self.hub.db(), user_id).await? {
            Some(user) if user.state == labhub_core::AccountState::Active => {
                Ok(Some(self.principal(user, AuthVia::Recheck, None).await?))
            }
            _ => Ok(None),
        }
    }

    /// Everything an account holds through its roles, expanded.
    pub(crate) async fn of_account(&self, user: &users::User) -> Result<ScopeSet, ServiceError> {
        let db = self.hub.db();
        let mut specs = Vec::new();
        for role in roles::of_user(db, user.user_id, user.admin).await? {
            specs.extend(parse_stored(&role.scopes));
        }
        for (group, leads) in roles::groups_of(db, user.user_id).await? {
            let scopes = MEMBER_SCOPES.iter().chain(if leads { LEAD_SCOPES } else { &[] });
            specs.extend(scopes.filter_map(|s| ScopeSpec::parse(&format!("{s}!group={group}")).ok()));
        }
        Ok(ScopeSet::expand(&specs, Holder::User(&user.name), None))
    }

    /// The memberships the intersection of these sets needs: of the groups their filters name.
    async fn members(&self, sets: &[&ScopeSet]) -> Result<HashSet<(UserName, GroupName)>, ServiceError> {
        let groups: Vec<String> = sets.iter().flat_map(|s| s.filter_groups()).map(|g| g.as_str().to_string()).collect();
        if groups.is_empty() {
            return Ok(HashSet::new());
        }
        let rows = roles::memberships(self.hub.db(), &groups).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(u, g)| Some((UserName::parse(&u).ok()?, GroupName::parse(&g).ok()?)))
            .collect())
    }

    /// The scopes a new token of `owner` may be given, as asked: parsed (400 on an unknown
    /// one), and refused with 403 when they reach beyond what the owner holds, or beyond the
    /// narrowed token asking (`requester`).
    pub(crate) async fn check_token_scopes(
        &self,
        owner: &users::User,
        asked: &[String],
        requester: Option<&ScopeSet>,
    ) -> Result<Vec<String>, ServiceError> {
        let specs = ScopeSpec::parse_all(asked).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let own = self.of_account(owner).await?;
        let set = ScopeSet::expand(&specs, Holder::User(&owner.name), Some(&own));
        let members = self.members(&[&set, &own]).await?;
        let is_member = |u: &UserName, g: &GroupName| members.contains(&(u.clone(), g.clone()));
        let beyond = set.beyond(&own, &is_member);
        if !beyond.is_empty() {
            return Err(ServiceError::Forbidden(format!(
                "Not assigning requested scopes {} not held by {}",
                beyond.join(", "),
                owner.name
            )));
        }
        if let Some(mine) = requester {
            let beyond = set.beyond(mine, &is_member);
            if !beyond.is_empty() {
                return Err(ServiceError::Forbidden(format!(
                    "Not assigning requested scopes {} not held by the token asking",
                    beyond.join(", ")
                )));
            }
        }
        Ok(specs.iter().map(ToString::to_string).collect())
    }

    /// THE check of the API: refuses unless `who` holds one of `any_of` for `on`. A user's
    /// groups are looked up only when a `!group=` filter could decide it.
    pub async fn require(&self, who: &Principal, any_of: &[Scope], on: &Resource) -> Result<(), ServiceError> {
        self.require_scopes(&who.scopes, any_of, on).await
    }

    /// [`Roles::require`] over a set of scopes, whoever holds them.
    async fn require_scopes(&self, scopes: &ScopeSet, any_of: &[Scope], on: &Resource) -> Result<(), ServiceError> {
        let needs_groups = any_of.iter().any(|s| scopes.grant(s).is_some_and(|g| !g.matches(&Target::Hub)));
        let groups = match on {
            Resource::User(u) | Resource::Server(u, _) if needs_groups => {
                roles::group_names_of(self.hub.db(), u.as_str())
                    .await?
                    .iter()
                    .filter_map(|g| GroupName::parse(g).ok())
                    .collect()
            }
            _ => Vec::new(),
        };
        let target = match on {
            Resource::Hub => Target::Hub,
            Resource::User(name) => Target::User { name, groups: &groups },
            Resource::Server(owner, server) => Target::Server { owner, server: server.as_ref(), groups: &groups },
            Resource::Group(g) => Target::Group(g),
            Resource::Service(s) => Target::Service(s),
        };
        if any_of.iter().any(|s| scopes.allows(s, &target)) {
            return Ok(());
        }
        let names: Vec<&str> = any_of.iter().map(Scope::as_str).collect();
        Err(ServiceError::Forbidden(format!(
            "Action is not authorized with current scopes; requires any of [{}]",
            names.join(", ")
        )))
    }

    /// [`Roles::require`] for an actor: the hub itself may do everything.
    pub async fn require_of(&self, actor: Actor<'_>, any_of: &[Scope], on: &Resource) -> Result<(), ServiceError> {
        match actor {
            Actor::System => Ok(()),
            Actor::User(who) => self.require(who, any_of, on).await,
            Actor::Service(s) => self.require_scopes(&s.scopes, any_of, on).await,
        }
    }

    /// After a change to roles or their assignments: every credential is worked out again.
    pub(crate) fn changed(&self) {
        self.hub.sessions().forget_all();
        self.hub.tokens().forget_all();
        self.hub.services().forget_all();
    }
}

/// Scopes as stored: each parsed, those that no longer parse left out (with a warning), so a
/// role written by a newer version never fails a sign-in.
fn parse_stored(raw: &[String]) -> Vec<ScopeSpec> {
    raw.iter()
        .filter_map(|s| match ScopeSpec::parse(s) {
            Ok(spec) => Some(spec),
            Err(e) => {
                tracing::warn!(scope = %s, error = %e, "ignoring a stored scope");
                None
            }
        })
        .collect()
}
