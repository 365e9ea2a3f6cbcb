use proptest::prelude::*;

use super::*;

fn user(n: &str) -> UserName {
    UserName::parse(n).unwrap()
}

fn group(n: &str) -> GroupName {
    GroupName::parse(n).unwrap()
}

fn set(specs: &[&str], holder: Holder<'_>) -> ScopeSet {
    ScopeSet::expand(&ScopeSpec::parse_all(specs).unwrap(), holder, None)
}

fn no_members(_: &UserName, _: &GroupName) -> bool {
    false
}

#[test]
fn filters_reach_what_they_name() {
    let (alice, bob, lab) = (user("alice"), user("bob"), group("lab"));
    let in_lab = [lab.clone()];
    let scopes = set(
        &["read:servers!group=lab", "access:servers!server=bob/gpu", "read:users!user=alice"],
        Holder::User(&alice),
    );
    let bob_default = Target::Server { owner: &bob, server: None, groups: &[] };
    let gpu = ServerName::parse("gpu").unwrap();
    let bob_gpu = Target::Server { owner: &bob, server: Some(&gpu), groups: &[] };
    assert!(scopes.allows(&Scope::AccessServers, &bob_gpu));
    assert!(!scopes.allows(&Scope::AccessServers, &bob_default));
    assert!(scopes.allows(&Scope::ReadServers, &Target::Server { owner: &bob, server: None, groups: &in_lab }));
    assert!(!scopes.allows(&Scope::ReadServers, &bob_default));
    assert!(scopes.allows(&Scope::ReadUsersName, &Target::User { name: &alice, groups: &[] }), "implied, same filter");
    assert!(!scopes.allows(&Scope::ReadUsers, &Target::User { name: &bob, groups: &in_lab }));
    assert!(!scopes.allows(&Scope::ReadServers, &Target::Hub), "a filtered scope never reaches the hub as a whole");
    assert!(set(&["read:metrics"], Holder::User(&alice)).allows(&Scope::ReadMetrics, &Target::Hub));
}

#[test]
fn self_expands_to_the_holders_own_things_and_bare_filters_to_the_holder() {
    let (alice, bob) = (user("alice"), user("bob"));
    let own = set(&["self"], Holder::User(&alice));
    let mine = Target::Server { owner: &alice, server: None, groups: &[] };
    let theirs = Target::Server { owner: &bob, server: None, groups: &[] };
    assert!(own.allows(&Scope::Servers, &mine) && own.allows(&Scope::AccessServers, &mine));
    assert!(!own.allows(&Scope::AccessServers, &theirs));
    assert!(own.grant(&Scope::ListUsers).is_none(), "self does not list users");
    assert!(own.grant(&Scope::AdminUsers).is_none());

    let gpu = ServerName::parse("gpu").unwrap();
    let server = set(builtin::SERVER, Holder::Server(&alice, Some(&gpu)));
    assert!(server.allows(&Scope::AccessServers, &Target::Server { owner: &alice, server: Some(&gpu), groups: &[] }));
    assert!(!server.allows(&Scope::AccessServers, &mine), "only the server it was issued for");
    assert!(server.allows(&Scope::UsersActivity, &Target::User { name: &alice, groups: &[] }));
    assert!(set(builtin::SERVER, Holder::User(&alice)).grant(&Scope::AccessServers).is_none(), "no server, no !server");

    let culler = ServiceName::parse("culler").unwrap();
    assert!(set(&["self", "read:users!user"], Holder::Service(&culler)).is_empty());
}

#[test]
fn inherit_is_the_owners_set_and_tokens_intersect_with_their_owner() {
    let alice = user("alice");
    let owner = set(builtin::USER, Holder::User(&alice));
    let token = ScopeSet::expand(&[ScopeSpec::Inherit], Holder::User(&alice), Some(&owner));
    assert_eq!(token, owner);
    // A token that asked for everything while its owner had it keeps only what the owner keeps.
    let admin = set(builtin::ADMIN, Holder::User(&alice));
    let effective = admin.intersect(&owner, &no_members);
    assert_eq!(effective, owner);
    assert!(admin.beyond(&owner, &no_members).contains(&"admin:users".to_string()));
    assert!(owner.beyond(&admin, &no_members).is_empty());
}

#[test]
fn group_filters_meet_user_filters_through_membership() {
    let (alice, bob) = (user("alice"), user("bob"));
    let lead = set(&["servers!group=lab"], Holder::User(&alice));
    let asked = set(&["servers!user=bob", "servers!user=carol"], Holder::User(&alice));
    let members = |u: &UserName, g: &GroupName| u.as_str() == "bob" && g.as_str() == "lab";
    let effective = asked.intersect(&lead, &members);
    assert_eq!(effective.grant(&Scope::Servers), Some(&Grant::Only([Filter::User(bob)].into())));
    let beyond = asked.beyond(&lead, &members);
    assert!(beyond.contains(&"servers!user=carol".to_string()), "{beyond:?}");
    assert!(beyond.iter().all(|s| s.ends_with("!user=carol")), "bob is in lab: {beyond:?}");
}

#[test]
fn parse_errors_say_what_is_wrong() {
    let err = |s: &str| ScopeSpec::parse(s).unwrap_err().to_string();
    assert_eq!(err("read:userz"), "unknown scope 'read:userz'");
    assert_eq!(err("self!user=alice"), "'self' takes no filter");
    assert!(err("read:users!usr=alice").contains("unknown filter"));
    assert!(err("read:users!user=Al ice").contains("bad filter"));
    assert!(err("access:servers!server=alice").contains("!server=user/name"));
    assert!(err("access:servers!server=alice/api").contains("reserved"));
    assert_eq!(
        ScopeSpec::parse("access:servers!server=alice/").unwrap(),
        ScopeSpec::Scope(Scope::AccessServers, FilterSpec::Fixed(Filter::Server(user("alice"), None)))
    );
}

const NAMES: &[&str] = &["alice", "bob", "carol"];
const GROUPS: &[&str] = &["lab", "ops"];

fn arb_filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        Just(Filter::All),
        prop::sample::select(NAMES).prop_map(|n| Filter::User(user(n))),
        prop::sample::select(GROUPS).prop_map(|g| Filter::Group(group(g))),
        (prop::sample::select(NAMES), prop::option::of(Just("gpu")))
            .prop_map(|(n, s)| Filter::Server(user(n), s.map(|s| ServerName::parse(s).unwrap()))),
        Just(Filter::Service(ServiceName::parse("culler").unwrap())),
    ]
}

fn arb_set() -> impl Strategy<Value = ScopeSet> {
    prop::collection::vec((prop::sample::select(Scope::KNOWN), arb_filter()), 0..8).prop_map(|pairs| {
        let mut set = ScopeSet::empty();
        for (scope, filter) in pairs {
            set.insert(&scope, filter);
        }
        set
    })
}

/// A fixed membership: alice and bob are in lab, carol in ops.
fn members(u: &UserName, g: &GroupName) -> bool {
    matches!((u.as_str(), g.as_str()), ("alice" | "bob", "lab") | ("carol", "ops"))
}

fn groups_of(u: &str) -> Vec<GroupName> {
    GROUPS.iter().map(|g| group(g)).filter(|g| members(&user(u), g)).collect()
}

proptest! {
    #[test]
    fn spelled_scopes_parse_back(scope in prop::sample::select(Scope::KNOWN), filter in arb_filter()) {
        let spec = ScopeSpec::Scope(scope, FilterSpec::Fixed(filter));
        prop_assert_eq!(ScopeSpec::parse(&spec.to_string()).unwrap(), spec);
    }

    #[test]
    fn an_intersection_is_within_both_and_allows_only_what_both_allow(a in arb_set(), b in arb_set(), scope in prop::sample::select(Scope::KNOWN), who in prop::sample::select(NAMES), on_gpu in any::<bool>()) {
        let both = a.intersect(&b, &members);
        prop_assert_eq!(&both, &b.intersect(&a, &members));
        prop_assert!(both.beyond(&a, &members).is_empty());
        prop_assert!(both.beyond(&b, &members).is_empty());
        let owner = user(who);
        let groups = groups_of(who);
        let gpu = ServerName::parse("gpu").unwrap();
        let targets = [
            Target::Hub,
            Target::User { name: &owner, groups: &groups },
            Target::Server { owner: &owner, server: on_gpu.then_some(&gpu), groups: &groups },
            Target::Group(&groups.first().cloned().unwrap_or_else(|| group("ops"))),
        ];
        for target in &targets {
            if both.allows(&scope, target) {
                prop_assert!(a.allows(&scope, target) && b.allows(&scope, target));
            }
        }
    }

    #[test]
    fn a_set_is_within_itself_and_its_own_intersection(a in arb_set()) {
        prop_assert!(a.beyond(&a, &members).is_empty());
        prop_assert_eq!(a.intersect(&a, &members), a.clone());
        prop_assert_eq!(a.intersect(&ScopeSet::empty(), &members), ScopeSet::empty());
    }

    #[test]
    fn listed_names_expand_back_to_the_same_set(a in arb_set()) {
        let alice = user("alice");
        let again = ScopeSet::expand(&ScopeSpec::parse_all(a.names()).unwrap(), Holder::User(&alice), None);
        prop_assert_eq!(again, a);
    }
}
