//! The quota policy as pure functions: given the facts of a start (gathered by the caller, the
//! contended ones under lock), which group it is charged to and what it gets, or why not; and
//! how limits compare with a ceiling. No I/O here, so every rule is tested directly.

use std::time::Duration;

use labhub_core::{GroupId, GroupName, ImageAllowance, Quota, Resources, UserName};

/// The smallest memory a start may ask for (the catalogue's own minimum).
pub(crate) const MIN_MEMORY_BYTES: u64 = 64 << 20;

/// Whom to ask for more: a group's leads, or (with no group, or no leads) an admin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Ask {
    pub(crate) group: Option<GroupName>,
    pub(crate) leads: Vec<UserName>,
}

/// One group (or the site default) a start may be charged to, with what it holds now.
#[derive(Debug, Clone)]
pub(crate) struct GroupFacts {
    /// `None`: the site default of users in no group.
    pub(crate) group: Option<(GroupId, GroupName)>,
    /// Its limits in force.
    pub(crate) quota: Quota,
    /// Its leads, for "ask …".
    pub(crate) leads: Vec<UserName>,
    /// The starting member's active servers charged to it.
    pub(crate) member_servers: u64,
    /// What its active servers reserve: millicores and bytes.
    pub(crate) charged: (u64, u64),
}

impl GroupFacts {
    fn ask(&self) -> Ask {
        Ask { group: self.group.as_ref().map(|g| g.1.clone()), leads: self.leads.clone() }
    }

    fn under(&self) -> String {
        match &self.group {
            Some((_, g)) => format!("group {g}"),
            None => "the site default for users in no group".to_string(),
        }
    }
}

/// What a start asks for, with the catalogue image's own defaults.
#[derive(Debug, Clone)]
pub(crate) struct Wanted<'a> {
    pub(crate) user: &'a UserName,
    pub(crate) image: &'a str,
    pub(crate) image_cpu_millis: u32,
    pub(crate) image_memory_bytes: u64,
    pub(crate) cpu_millis: Option<u32>,
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) gpus: Option<u32>,
}

/// Everything the policy needs to decide a start.
#[derive(Debug, Clone)]
pub(crate) struct StartFacts<'a> {
    pub(crate) wanted: Wanted<'a>,
    /// The groups the start may be charged to (the one asked for, or all of the member's); for
    /// a member of no group, the site default alone.
    pub(crate) candidates: Vec<GroupFacts>,
    /// The member's storage as last measured.
    pub(crate) storage_used: u64,
    /// Their storage limit (the most generous of their groups') and whom to ask about it.
    pub(crate) storage_limit: (Option<u64>, Ask),
}

/// What a start is charged to, and the resources it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) group: Option<(GroupId, GroupName)>,
    pub(crate) resources: Resources,
}

/// Why a start is refused, with the facts its message gives (`words.rs` puts it in words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The request gives no CPU.
    NoCpu,
    /// The request gives too little memory.
    TooLittleMemory,
    /// Past the storage limit.
    Storage { used: u64, limit: u64, ask: Ask },
    /// The group may not use the image.
    Image { image: String, under: String, allowed: ImageAllowance, ask: Ask },
    /// More CPU than one server may have there.
    Cpu { asked: u32, limit: u32, under: String, ask: Ask },
    /// More memory than one server may have there.
    Memory { asked: u64, limit: u64, under: String, ask: Ask },
    /// More GPUs than one server may have there.
    Gpus { asked: u32, limit: u32, under: String, ask: Ask },
    /// The member runs as many servers there as they may.
    Servers { user: UserName, running: u64, limit: u32, under: String, ask: Ask },
    /// The group's CPU budget is spent.
    CpuBudget { budget: u64, used: u64, asked: u32, under: String, ask: Ask },
    /// The group's memory budget is spent.
    MemoryBudget { budget: u64, used: u64, asked: u64, under: String, ask: Ask },
    /// The member holds as many snapshots as they may (`environments.snapshots_per_member`).
    Snapshots { held: u64, limit: u32 },
    /// A snapshot would save more than one may (`environments.snapshot_max_size`).
    SnapshotSize { size: u64, limit: u64 },
}

/// Decides a start: the storage limit first, then the most generous candidate group (one that
/// allows the image, then the largest servers; by name among equals) whose limits admit it.
/// When none does, the refusal of the most generous one.
pub(crate) fn decide_start(facts: &StartFacts<'_>) -> Result<Charge, Refusal> {
    if let (Some(limit), ask) = &facts.storage_limit
        && facts.storage_used > *limit
    {
        return Err(Refusal::Storage { used: facts.storage_used, limit: *limit, ask: ask.clone() });
    }
    let mut order: Vec<&GroupFacts> = facts.candidates.iter().collect();
    order.sort_by(|a, b| {
        let key = |g: &GroupFacts| {
            let q = &g.quota;
            (q.images.allows(facts.wanted.image), q.max_cpu_millis, q.max_memory_bytes, q.max_gpus)
        };
        let name = |g: &GroupFacts| g.group.as_ref().map(|g| g.1.clone());
        key(b).cmp(&key(a)).then_with(|| name(a).cmp(&name(b)))
    });
    let mut first_refusal = None;
    for g in order {
        match fits(&facts.wanted, g) {
            Ok(resources) => return Ok(Charge { group: g.group.clone(), resources }),
            Err(r @ (Refusal::NoCpu | Refusal::TooLittleMemory)) => return Err(r),
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    Err(first_refusal.expect("a start always has at least one candidate"))
}

/// Whether a start fits one group's limits: the resources it would get, or why not.
fn fits(w: &Wanted<'_>, g: &GroupFacts) -> Result<Resources, Refusal> {
    let q = &g.quota;
    if !q.images.allows(w.image) {
        return Err(Refusal::Image {
            image: w.image.to_string(),
            under: g.under(),
            allowed: q.images.clone(),
            ask: g.ask(),
        });
    }
    let cpu = w.cpu_millis.unwrap_or_else(|| w.image_cpu_millis.min(q.max_cpu_millis));
    let memory = w.memory_bytes.unwrap_or_else(|| w.image_memory_bytes.min(q.max_memory_bytes));
    let gpus = w.gpus.unwrap_or(0);
    if cpu == 0 {
        return Err(Refusal::NoCpu);
    }
    if memory < MIN_MEMORY_BYTES {
        return Err(Refusal::TooLittleMemory);
    }
    if cpu > q.max_cpu_millis {
        return Err(Refusal::Cpu { asked: cpu, limit: q.max_cpu_millis, under: g.under(), ask: g.ask() });
    }
    if memory > q.max_memory_bytes {
        return Err(Refusal::Memory { asked: memory, limit: q.max_memory_bytes, under: g.under(), ask: g.ask() });
    }
    if gpus > q.max_gpus {
        return Err(Refusal::Gpus { asked: gpus, limit: q.max_gpus, under: g.under(), ask: g.ask() });
    }
    if g.member_servers >= u64::from(q.max_servers_per_member) {
        return Err(Refusal::Servers {
            user: w.user.clone(),
            running: g.member_servers,
            limit: q.max_servers_per_member,
            under: g.under(),
            ask: g.ask(),
        });
    }
    let (used_cpu, used_memory) = g.charged;
    if let Some(budget) = q.budget_cpu_millis
        && used_cpu + u64::from(cpu) > budget
    {
        return Err(Refusal::CpuBudget { budget, used: used_cpu, asked: cpu, under: g.under(), ask: g.ask() });
    }
    if let Some(budget) = q.budget_memory_bytes
        && used_memory + memory > budget
    {
        return Err(Refusal::MemoryBudget { budget, used: used_memory, asked: memory, under: g.under(), ask: g.ask() });
    }
    Ok(Resources { cpu_millis: cpu, memory_bytes: memory, gpus })
}

/// A user's storage limit: the most generous among their groups' (each given with whom to
/// ask), or the site default's for a member of no group.
pub(crate) fn storage_limit(site: Option<u64>, groups: &[(Option<u64>, Ask)]) -> (Option<u64>, Ask) {
    let mut best: Option<(Option<u64>, &Ask)> = None;
    for (limit, ask) in groups {
        best = match best {
            Some((b, from)) if max_limit(b, *limit) == b => Some((b, from)),
            _ => Some((*limit, ask)),
        };
    }
    match best {
        Some((limit, ask)) => (limit, ask.clone()),
        None => (site, Ask::default()),
    }
}

/// A change to some of a quota's limits; the fields left `None` keep their value. For the
/// limits that may be absent, `Some(None)` removes the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaPatch {
    pub max_cpu_millis: Option<u32>,
    pub max_memory_bytes: Option<u64>,
    pub max_gpus: Option<u32>,
    pub images: Option<ImageAllowance>,
    pub max_servers_per_member: Option<u32>,
    pub budget_cpu_millis: Option<Option<u64>>,
    pub budget_memory_bytes: Option<Option<u64>>,
    pub storage_bytes: Option<Option<u64>>,
    pub idle_timeout: Option<Option<Duration>>,
    pub max_lifetime: Option<Option<Duration>>,
    pub cull_busy: Option<bool>,
    pub build_timeout: Option<Option<Duration>>,
}

impl QuotaPatch {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == QuotaPatch::default()
    }

    /// The quota with this change applied.
    pub fn apply(&self, q: &Quota) -> Quota {
        Quota {
            max_cpu_millis: self.max_cpu_millis.unwrap_or(q.max_cpu_millis),
            max_memory_bytes: self.max_memory_bytes.unwrap_or(q.max_memory_bytes),
            max_gpus: self.max_gpus.unwrap_or(q.max_gpus),
            images: self.images.clone().unwrap_or_else(|| q.images.clone()),
            max_servers_per_member: self.max_servers_per_member.unwrap_or(q.max_servers_per_member),
            budget_cpu_millis: self.budget_cpu_millis.unwrap_or(q.budget_cpu_millis),
            budget_memory_bytes: self.budget_memory_bytes.unwrap_or(q.budget_memory_bytes),
            storage_bytes: self.storage_bytes.unwrap_or(q.storage_bytes),
            idle_timeout: self.idle_timeout.unwrap_or(q.idle_timeout),
            max_lifetime: self.max_lifetime.unwrap_or(q.max_lifetime),
            cull_busy: self.cull_busy.unwrap_or(q.cull_busy),
            build_timeout: self.build_timeout.unwrap_or(q.build_timeout),
        }
    }
}

/// `a <= b` where `None` is no limit (infinitely generous).
pub(crate) fn within<T: PartialOrd>(a: Option<T>, b: Option<T>) -> bool {
    match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a <= b,
    }
}

/// The smaller of two limits where `None` is no limit.
fn min_limit<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(a.min(b)),
    }
}

/// The larger of two limits where `None` is no limit.
fn max_limit<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (None, _) | (_, None) => None,
        (Some(a), Some(b)) => Some(a.max(b)),
    }
}

/// `q` lowered to fit under `ceiling`, limit by limit.
pub fn clamp(q: &Quota, ceiling: &Quota) -> Quota {
    Quota {
        max_cpu_millis: q.max_cpu_millis.min(ceiling.max_cpu_millis),
        max_memory_bytes: q.max_memory_bytes.min(ceiling.max_memory_bytes),
        max_gpus: q.max_gpus.min(ceiling.max_gpus),
        images: match (&q.images, &ceiling.images) {
            (x, ImageAllowance::All) => x.clone(),
            (ImageAllowance::All, only) => only.clone(),
            (ImageAllowance::Only(a), ImageAllowance::Only(b)) => {
                ImageAllowance::Only(a.iter().filter(|n| b.contains(n)).cloned().collect())
            }
        },
        max_servers_per_member: q.max_servers_per_member.min(ceiling.max_servers_per_member),
        budget_cpu_millis: min_limit(q.budget_cpu_millis, ceiling.budget_cpu_millis),
        budget_memory_bytes: min_limit(q.budget_memory_bytes, ceiling.budget_memory_bytes),
        storage_bytes: min_limit(q.storage_bytes, ceiling.storage_bytes),
        idle_timeout: min_limit(q.idle_timeout, ceiling.idle_timeout),
        max_lifetime: min_limit(q.max_lifetime, ceiling.max_lifetime),
        // Culling busy servers is the stricter rule: a ceiling that demands it wins.
        cull_busy: q.cull_busy || ceiling.cull_busy,
        build_timeout: min_limit(q.build_timeout, ceiling.build_timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quotas::words::above_ceiling;

    fn quota() -> Quota {
        crate::QuotaSettings::default().site_default
    }

    fn name(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    fn group(id: i64, n: &str, quota: Quota) -> GroupFacts {
        GroupFacts {
            group: Some((GroupId::new(id), GroupName::parse(n).unwrap())),
            quota,
            leads: vec![name("bob")],
            member_servers: 0,
            charged: (0, 0),
        }
    }

    fn wanted(user: &UserName) -> Wanted<'_> {
        Wanted {
            user,
            image: "lab",
            image_cpu_millis: 1000,
            image_memory_bytes: 1 << 30,
            cpu_millis: None,
            memory_bytes: None,
            gpus: None,
        }
    }

    fn facts<'a>(user: &'a UserName, candidates: Vec<GroupFacts>) -> StartFacts<'a> {
        StartFacts { wanted: wanted(user), candidates, storage_used: 0, storage_limit: (None, Ask::default()) }
    }

    #[test]
    fn the_most_generous_group_that_admits_the_start_is_charged() {
        let alice = name("alice");
        let small = group(1, "small", Quota { max_cpu_millis: 500, ..quota() });
        let big = group(2, "big", Quota { max_cpu_millis: 2000, ..quota() });
        let charge = decide_start(&facts(&alice, vec![small.clone(), big.clone()])).unwrap();
        assert_eq!(charge.group.unwrap().1.as_str(), "big");
        // The image's own size, within the group's limit.
        assert_eq!(charge.resources, Resources { cpu_millis: 1000, memory_bytes: 1 << 30, gpus: 0 });
        // A group that does not allow the image comes after every group that does.
        let no_image = Quota { max_cpu_millis: 4000, images: ImageAllowance::Only(vec!["other".into()]), ..quota() };
        let charge = decide_start(&facts(&alice, vec![group(3, "huge", no_image), small])).unwrap();
        assert_eq!(charge.group.unwrap().1.as_str(), "small");
        assert_eq!(charge.resources.cpu_millis, 500, "the image's size lowered to the group's limit");
    }

    #[test]
    fn when_no_group_admits_a_start_the_most_generous_ones_refusal_is_given() {
        let alice = name("alice");
        let full = group(1, "full", Quota { max_servers_per_member: 1, ..quota() });
        let full = GroupFacts { member_servers: 1, ..full };
        let spent = group(2, "spent", Quota { max_cpu_millis: 500, budget_cpu_millis: Some(1000), ..quota() });
        let spent = GroupFacts { charged: (800, 0), ..spent };
        let refusal = decide_start(&facts(&alice, vec![spent, full])).unwrap_err();
        let Refusal::Servers { running: 1, limit: 1, under, .. } = &refusal else { panic!("{refusal:?}") };
        assert_eq!(under, "group full");
        assert!(refusal.message().contains("alice already runs 1 server under group full"), "{}", refusal.message());
    }

    #[test]
    fn budgets_count_what_is_reserved_and_a_bad_request_is_refused_whatever_the_group() {
        let alice = name("alice");
        let g = group(1, "lab", Quota { budget_memory_bytes: Some(3 << 30), ..quota() });
        let fits = GroupFacts { charged: (0, 2 << 30), ..g.clone() };
        assert!(decide_start(&facts(&alice, vec![fits])).is_ok(), "2 GiB + 1 GiB fits a 3 GiB budget exactly");
        let over = GroupFacts { charged: (0, (2 << 30) + 1), ..g.clone() };
        assert!(matches!(decide_start(&facts(&alice, vec![over])), Err(Refusal::MemoryBudget { .. })));
        let mut no_cpu = facts(&alice, vec![g.clone()]);
        no_cpu.wanted.cpu_millis = Some(0);
        assert_eq!(decide_start(&no_cpu), Err(Refusal::NoCpu));
        let mut gpus = facts(&alice, vec![g]);
        gpus.wanted.gpus = Some(1);
        assert!(matches!(decide_start(&gpus), Err(Refusal::Gpus { asked: 1, limit: 0, .. })));
    }

    #[test]
    fn storage_past_the_most_generous_limit_refuses_before_any_group_is_asked() {
        let alice = name("alice");
        let lab = Ask { group: Some(GroupName::parse("lab").unwrap()), leads: vec![name("bob")] };
        let other = Ask { group: Some(GroupName::parse("other").unwrap()), leads: Vec::new() };
        let limit = storage_limit(Some(1), &[(Some(100), lab.clone()), (Some(50), other)]);
        assert_eq!(limit, (Some(100), lab.clone()), "the most generous group's, not the site default's");
        assert_eq!(storage_limit(Some(7), &[]), (Some(7), Ask::default()));
        assert_eq!(storage_limit(Some(7), &[(None, lab.clone()), (Some(50), Ask::default())]).0, None);
        let mut f = facts(&alice, vec![group(1, "lab", quota())]);
        f.storage_used = 101;
        f.storage_limit = (Some(100), lab);
        let refusal = decide_start(&f).unwrap_err();
        assert!(matches!(refusal, Refusal::Storage { used: 101, limit: 100, .. }));
        assert!(refusal.message().contains("ask bob (lead of lab) to raise the limit"), "{}", refusal.message());
        f.storage_used = 100;
        assert!(decide_start(&f).is_ok(), "at the limit is still within it");
    }

    #[test]
    fn ceilings_bound_every_limit_and_clamping_fits_under_them() {
        let ceiling = Quota {
            max_cpu_millis: 2000,
            images: ImageAllowance::Only(vec!["a".into(), "b".into()]),
            budget_cpu_millis: Some(8000),
            idle_timeout: Some(Duration::from_secs(3600)),
            build_timeout: Some(Duration::from_secs(600)),
            ..quota()
        };
        let ok = Quota { max_cpu_millis: 1000, images: ImageAllowance::Only(vec!["a".into()]), ..ceiling.clone() };
        assert_eq!(above_ceiling(&ok, &ceiling), None);
        let more_cpu = Quota { max_cpu_millis: 4000, ..ok.clone() };
        assert!(above_ceiling(&more_cpu, &ceiling).unwrap().contains("CPU limit per server of 4"));
        let all_images = Quota { images: ImageAllowance::All, ..ok.clone() };
        assert!(above_ceiling(&all_images, &ceiling).unwrap().contains("every catalogue image"));
        let no_budget = Quota { budget_cpu_millis: None, ..ok.clone() };
        assert!(above_ceiling(&no_budget, &ceiling).unwrap().contains("budget"));
        let never_idle = Quota { idle_timeout: None, ..ok.clone() };
        assert!(above_ceiling(&never_idle, &ceiling).unwrap().contains("idle timeout of never"));
        let site_builds = Quota { build_timeout: None, ..ok.clone() };
        assert!(above_ceiling(&site_builds, &ceiling).unwrap().contains("build time limit of the site's limit"));
        let clamped = clamp(&Quota { images: ImageAllowance::Only(vec!["b".into(), "c".into()]), ..quota() }, &ceiling);
        assert_eq!(above_ceiling(&clamped, &ceiling), None);
        assert_eq!(clamped.images, ImageAllowance::Only(vec!["b".into()]));
        assert_eq!(clamped.budget_cpu_millis, Some(8000));
        assert_eq!(clamped.build_timeout, Some(Duration::from_secs(600)));
    }

    #[test]
    fn patches_change_only_what_they_name() {
        let q = quota();
        let p = QuotaPatch { max_gpus: Some(2), storage_bytes: Some(Some(1 << 30)), ..QuotaPatch::default() };
        let after = p.apply(&q);
        assert_eq!(after.max_gpus, 2);
        assert_eq!(after.storage_bytes, Some(1 << 30));
        assert_eq!(after.max_cpu_millis, q.max_cpu_millis);
        assert!(QuotaPatch::default().is_empty());
        let unlimited = QuotaPatch { storage_bytes: Some(None), ..QuotaPatch::default() }.apply(&after);
        assert_eq!(unlimited.storage_bytes, None);
    }

    #[test]
    fn whom_to_ask() {
        let g = Some(GroupName::parse("lab").unwrap());
        let ask = |leads: Vec<UserName>| Ask { group: g.clone(), leads }.text();
        assert_eq!(ask(vec![name("bob")]), "ask bob (lead of lab)");
        assert_eq!(ask(vec![name("bob"), name("carol")]), "ask bob or carol (leads of lab)");
        assert_eq!(ask(vec![]), "ask an admin");
        assert_eq!(Ask::default().text(), "ask an admin");
    }
}
