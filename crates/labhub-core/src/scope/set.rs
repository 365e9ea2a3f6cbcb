//! The expanded set of scopes a principal holds, and the questions asked of it.

use std::collections::{BTreeMap, BTreeSet};

use super::{Filter, Holder, SELF_SCOPES, Scope, ScopeSpec};
use crate::{GroupName, ServerName, ServiceName, UserName};

/// What a request acts on, for the filters to match against.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The hub as a whole (only unfiltered scopes reach it).
    Hub,
    /// A user, with the groups they belong to.
    User { name: &'a UserName, groups: &'a [GroupName] },
    /// A user's server, with the groups its owner belongs to.
    Server { owner: &'a UserName, server: Option<&'a ServerName>, groups: &'a [GroupName] },
    /// A group.
    Group(&'a GroupName),
    /// A registered service.
    Service(&'a ServiceName),
}

/// Where a held scope applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Everywhere.
    All,
    /// Only where one of these filters matches (never empty).
    Only(BTreeSet<Filter>),
}

impl Grant {
    /// Whether the grant reaches `target`.
    pub fn matches(&self, target: &Target<'_>) -> bool {
        match self {
            Grant::All => true,
            Grant::Only(filters) => filters.iter().any(|f| f.matches(target)),
        }
    }
}

/// A principal's scopes, expanded: every implied scope is present with the filter of the
/// scope that implied it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeMap<Scope, Grant>);

/// Whether a user belongs to a group, for intersecting group filters with user filters.
pub type Members<'a> = &'a dyn Fn(&UserName, &GroupName) -> bool;

impl ScopeSet {
    /// No scopes at all.
    pub fn empty() -> ScopeSet {
        ScopeSet::default()
    }

    /// Expands scopes as written for their holder; `inherit` stands for `owner` (nothing
    /// when there is none).
    pub fn expand(specs: &[ScopeSpec], holder: Holder<'_>, owner: Option<&ScopeSet>) -> ScopeSet {
        let mut set = ScopeSet::empty();
        for spec in specs {
            match spec {
                ScopeSpec::Own => {
                    if let Some(user) = holder.user() {
                        for scope in SELF_SCOPES {
                            set.insert(scope, Filter::User(user.clone()));
                        }
                    }
                }
                ScopeSpec::Inherit => {
                    if let Some(owner) = owner {
                        set.extend(owner);
                    }
                }
                ScopeSpec::Scope(scope, filter) => {
                    if let Some(filter) = holder.resolve(filter) {
                        set.insert(scope, filter);
                    }
                }
            }
        }
        set
    }

    /// Adds a scope with its filter, and everything it implies.
    pub fn insert(&mut self, scope: &Scope, filter: Filter) {
        for implied in scope.implied() {
            self.add(implied, filter.clone());
        }
    }

    /// Adds everything `other` holds.
    pub fn extend(&mut self, other: &ScopeSet) {
        for (scope, grant) in &other.0 {
            match grant {
                Grant::All => self.add(scope.clone(), Filter::All),
                Grant::Only(filters) => filters.iter().for_each(|f| self.add(scope.clone(), f.clone())),
            }
        }
    }

    fn add(&mut self, scope: Scope, filter: Filter) {
        let grant = self.0.entry(scope).or_insert_with(|| Grant::Only(BTreeSet::new()));
        match (grant, filter) {
            (Grant::All, _) => {}
            (grant, Filter::All) => *grant = Grant::All,
            (Grant::Only(filters), filter) => {
                filters.insert(filter);
            }
        }
    }

    /// Whether `scope` is held for `target`.
    pub fn allows(&self, scope: &Scope, target: &Target<'_>) -> bool {
        self.0.get(scope).is_some_and(|grant| grant.matches(target))
    }

    /// Where `scope` is held, if anywhere (to filter a list, or to tell "not at all" from
    /// "not this one").
    pub fn grant(&self, scope: &Scope) -> Option<&Grant> {
        self.0.get(scope)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes held in both sets: for each scope, the narrower of each pair of filters
    /// (a user inside a group filter, a server inside a user filter); pairs that do not nest
    /// grant nothing, as in JupyterHub.
    pub fn intersect(&self, other: &ScopeSet, members: Members<'_>) -> ScopeSet {
        let mut out = ScopeSet::empty();
        for (scope, a) in &self.0 {
            let Some(b) = other.0.get(scope) else { continue };
            match (a, b) {
                (Grant::All, g) | (g, Grant::All) => {
                    out.0.insert(scope.clone(), g.clone());
                }
                (Grant::Only(fa), Grant::Only(fb)) => {
                    for x in fa {
                        for y in fb {
                            if let Some(meet) = meet(x, y, members) {
                                out.add(scope.clone(), meet);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The scopes of this set (as JupyterHub writes them) that `owner` does not hold:
    /// what a token asked for beyond its owner. Empty when this set is within `owner`.
    pub fn beyond(&self, owner: &ScopeSet, members: Members<'_>) -> Vec<String> {
        let mut out = Vec::new();
        for (scope, grant) in &self.0 {
            let theirs = owner.0.get(scope);
            let covered = |f: &Filter| match theirs {
                None => false,
                Some(Grant::All) => true,
                Some(Grant::Only(fb)) => fb.iter().any(|b| contains(b, f, members)),
            };
            match grant {
                Grant::All if !covered(&Filter::All) => out.push(scope.to_string()),
                Grant::All => {}
                Grant::Only(filters) => {
                    out.extend(filters.iter().filter(|f| !covered(f)).map(|f| format!("{scope}{f}")));
                }
            }
        }
        out
    }

    /// Every scope held, as JupyterHub lists them (`name` or `name!filter`), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .0
            .iter()
            .flat_map(|(scope, grant)| match grant {
                Grant::All => vec![scope.to_string()],
                Grant::Only(filters) => filters.iter().map(|f| format!("{scope}{f}")).collect(),
            })
            .collect();
        out.sort();
        out
    }
}

/// Whether everything filter `b` reaches, `a` reaches too.
fn contains(a: &Filter, b: &Filter, members: Members<'_>) -> bool {
    match (a, b) {
        (Filter::All, _) => true,
        (a, b) if a == b => true,
        (Filter::User(u), Filter::Server(owner, _)) => u == owner,
        (Filter::Group(g), Filter::User(u) | Filter::Server(u, _)) => members(u, g),
        _ => false,
    }
}

/// The narrower of two filters when one holds the other.
fn meet(a: &Filter, b: &Filter, members: Members<'_>) -> Option<Filter> {
    if contains(a, b, members) {
        Some(b.clone())
    } else if contains(b, a, members) {
        Some(a.clone())
    } else {
        None
    }
}
