//! Throttling of password guesses and of sign-ups, in memory.
//!
//! The policy (after OWASP's device cookies), so that guessing stays slow without locking
//! out members who share an address (a campus NAT) with someone guessing:
//!
//! - A browser that signed in to an account before (it shows a device cookie for it, see
//!   `devices`) is a *known device* of that account: its attempts at that account count
//!   only against its own budget, never against the account's or the address's.
//! - Anyone else's attempts count per (address, account), per account from all addresses,
//!   and per address across accounts (how many accounts it failed against: guessing one
//!   password for many accounts).
//! - A budget that runs out does not lock until the window ends: the next attempt may come
//!   a short delay after the last failure, and each further failure doubles that delay (up
//!   to the window). Failures older than the window are forgotten.
//! - An attempt is counted as a failure *before* its password is checked, under one lock
//!   with the budget check, so parallel attempts cannot all pass a budget; a success (or an
//!   attempt the hub could not check) takes it back.
//!
//! Names that do not exist are counted exactly like names that do, so the throttle reveals
//! nothing about which accounts exist. IPv6 addresses count by their /64 network, which one
//! host usually has to itself.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labhub_core::Clock;
use time::OffsetDateTime;

/// Budgets for sign-in attempts and sign-ups.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    /// Failures per account from browsers not known to it, all addresses together.
    pub per_account: usize,
    /// Failures per account from one address, by browsers not known to the account.
    pub per_account_and_address: usize,
    /// Accounts one address may fail to sign in to (browsers not known to them).
    pub accounts_per_address: usize,
    /// Failures of one known device at its account.
    pub per_device: usize,
    /// Sign-ups from one address.
    pub signups_per_address: usize,
    /// Failures and sign-ups older than this are forgotten.
    pub window: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            per_account: 10,
            per_account_and_address: 5,
            accounts_per_address: 30,
            per_device: 5,
            signups_per_address: 10,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// The delay after the failure that uses up a budget; it doubles with each further failure.
const FIRST_DELAY: Duration = Duration::from_secs(30);
/// Entries kept at most per table before those older than the window are pruned.
const MAX_ENTRIES: usize = 100_000;
/// Failures remembered past a budget: enough for the delay to reach any window.
const EXTRA: usize = 16;

/// Who is trying to sign in, as the throttle tells them apart.
#[derive(Debug, Clone, Copy)]
pub struct SignInClient<'a> {
    /// The account name tried (normalised).
    pub account: &'a str,
    /// The client's address.
    pub address: &'a str,
    /// The browser's device id, when its device cookie is valid for this account.
    pub device: Option<&'a str>,
}

/// An attempt counted in advance; hand it back with [`LoginThrottle::succeeded`] or
/// [`LoginThrottle::not_checked`], or drop it when it failed (it stays counted).
#[must_use = "an attempt stays counted as a failure unless handed back"]
#[derive(Debug)]
pub struct Attempt {
    kind: Kind,
    at: OffsetDateTime,
}

#[derive(Debug)]
enum Kind {
    KnownDevice { device: String },
    Unknown { account: String, address: String },
    SignUp { address: String },
}

/// Failure times within the window, oldest first.
#[derive(Default)]
struct Times(VecDeque<OffsetDateTime>);

impl Times {
    fn prune(&mut self, cutoff: OffsetDateTime) {
        while self.0.front().is_some_and(|t| *t <= cutoff) {
            self.0.pop_front();
        }
    }

    fn push(&mut self, at: OffsetDateTime, limit: usize) {
        self.0.push_back(at);
        while self.0.len() > limit + EXTRA {
            self.0.pop_front();
        }
    }

    /// Takes back one count made at `at`.
    fn forget(&mut self, at: OffsetDateTime) {
        if let Some(i) = self.0.iter().rposition(|t| *t == at) {
            self.0.remove(i);
        }
    }
}

#[derive(Default)]
struct Tables {
    devices: HashMap<String, Times>,
    pairs: HashMap<(String, String), Times>,
    accounts: HashMap<String, Times>,
    /// Per address: each account it failed at, with the last failure's time.
    addresses: HashMap<String, HashMap<String, OffsetDateTime>>,
    signups: HashMap<String, Times>,
}

/// Counts sign-in attempts and sign-ups.
pub struct LoginThrottle {
    settings: ThrottleSettings,
    clock: Arc<dyn Clock>,
    tables: Mutex<Tables>,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl LoginThrottle {
    /// A throttle with these budgets.
    pub fn new(settings: ThrottleSettings, clock: Arc<dyn Clock>) -> Self {
        Self { settings, clock, tables: Mutex::new(Tables::default()) }
    }

    fn window(&self) -> time::Duration {
        time::Duration::try_from(self.settings.window).unwrap_or(time::Duration::MINUTE)
    }

    /// When a budget of `limit` with `count` failures in the window, the last at `last`,
    /// allows the next attempt; `None` while it is not used up.
    fn free_at(&self, count: usize, limit: usize, last: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
        let over = count.checked_sub(limit)?;
        let first = time::Duration::try_from(FIRST_DELAY).unwrap_or(time::Duration::SECOND).min(self.window());
        let delay = (first * 2i32.pow(over.min(EXTRA) as u32)).min(self.window());
        Some(last? + delay)
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic elsewhere cannot leave the counts half-updated in a way that matters.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an attempt to sign in before its password is checked, or says how long the
    /// client must wait.
    pub fn begin_sign_in(&self, client: &SignInClient<'_>) -> Result<Attempt, Duration> {
        let now = self.clock.now();
        let cutoff = now - self.window();
        let s = self.settings;
        let address = address_key(client.address);
        let mut t = self.tables();
        t.prune_if_full(cutoff);
        if let Some(device) = client.device {
            let times = t.devices.entry(device.to_string()).or_default();
            times.prune(cutoff);
            if self.free_at(times.0.len(), s.per_device, times.0.back().copied()).is_none_or(|at| at <= now) {
                times.push(now, s.per_device);
                return Ok(Attempt { kind: Kind::KnownDevice { device: device.to_string() }, at: now });
            }
            // A known device past its own budget is treated like any other browser.
        }
        let pair = (address.clone(), client.account.to_string());
        let mut free_at = Vec::new();
        let times = t.pairs.entry(pair.clone()).or_default();
        times.prune(cutoff);
        free_at.push(self.free_at(times.0.len(), s.per_account_and_address, times.0.back().copied()));
        let times = t.accounts.entry(pair.1.clone()).or_default();
        times.prune(cutoff);
        free_at.push(self.free_at(times.0.len(), s.per_account, times.0.back().copied()));
        let failed = t.addresses.entry(address.clone()).or_default();
        failed.retain(|_, last| *last > cutoff);
        free_at.push(self.free_at(failed.len(), s.accounts_per_address, failed.values().max().copied()));
        if let Some(at) = free_at.into_iter().flatten().max().filter(|at| *at > now) {
            return Err(wait(at - now));
        }
        t.pairs.entry(pair.clone()).or_default().push(now, s.per_account_and_address);
        t.accounts.entry(pair.1.clone()).or_default().push(now, s.per_account);
        let failed = t.addresses.entry(address.clone()).or_default();
        failed.insert(pair.1.clone(), now);
        if failed.len() > s.accounts_per_address + EXTRA
            && let Some(oldest) = failed.iter().min_by_key(|(_, at)| **at).map(|(a, _)| a.clone())
        {
            failed.remove(&oldest);
        }
        Ok(Attempt { kind: Kind::Unknown { account: pair.1, address }, at: now })
    }

    /// Counts a sign-up before its password is hashed, or says how long the client must wait.
    pub fn begin_sign_up(&self, address: &str) -> Result<Attempt, Duration> {
        let now = self.clock.now();
        let cutoff = now - self.window();
        let limit = self.settings.signups_per_address;
        let address = address_key(address);
        let mut t = self.tables();
        t.prune_if_full(cutoff);
        let times = t.signups.entry(address.clone()).or_default();
        times.prune(cutoff);
        if let Some(at) = self.free_at(times.0.len(), limit, times.0.back().copied()).filter(|at| *at > now) {
            return Err(wait(at - now));
        }
        times.push(now, limit);
        Ok(Attempt { kind: Kind::SignUp { address }, at: now })
    }

    /// The password was right: the account's owner is here. Their browser's and this
    /// address's failures at the account are forgotten; the account's failures from
    /// elsewhere stay counted. A sign-up stays counted.
    pub fn succeeded(&self, attempt: Attempt) {
        let mut t = self.tables();
        match attempt.kind {
            Kind::KnownDevice { device } => {
                t.devices.remove(&device);
            }
            Kind::Unknown { account, address } => {
                if let Some(times) = t.accounts.get_mut(&account) {
                    times.forget(attempt.at);
                }
                if let Some(failed) = t.addresses.get_mut(&address) {
                    failed.remove(&account);
                }
                t.pairs.remove(&(address, account));
            }
            Kind::SignUp { .. } => {}
        }
    }

    /// The hub could not check the attempt (too busy): it is taken back, as if never made.
    pub fn not_checked(&self, attempt: Attempt) {
        let mut t = self.tables();
        let at = attempt.at;
        match attempt.kind {
            Kind::KnownDevice { device } => forget_in(&mut t.devices, &device, at),
            Kind::Unknown { account, address } => {
                forget_in(&mut t.accounts, &account, at);
                if let Some(failed) = t.addresses.get_mut(&address)
                    && failed.get(&account) == Some(&at)
                {
                    failed.remove(&account);
                }
                forget_in(&mut t.pairs, &(address, account), at);
            }
            Kind::SignUp { address } => forget_in(&mut t.signups, &address, at),
        }
    }
}

impl Tables {
    /// Keeps memory bounded: once a table is full, entries with nothing in the window go.
    fn prune_if_full(&mut self, cutoff: OffsetDateTime) {
        fn prune<K>(map: &mut HashMap<K, Times>, cutoff: OffsetDateTime) {
            if map.len() >= MAX_ENTRIES {
                map.retain(|_, times| times.0.back().is_some_and(|t| *t > cutoff));
            }
        }
        prune(&mut self.devices, cutoff);
        prune(&mut self.pairs, cutoff);
        prune(&mut self.accounts, cutoff);
        prune(&mut self.signups, cutoff);
        if self.addresses.len() >= MAX_ENTRIES {
            self.addresses.retain(|_, failed| failed.values().any(|t| *t > cutoff));
        }
    }
}

fn forget_in<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Times>, key: &K, at: OffsetDateTime) {
    if let Some(times) = map.get_mut(key) {
        times.forget(at);
        if times.0.is_empty() {
            map.remove(key);
        }
    }
}

/// Whole seconds to wait, at least one.
fn wait(d: time::Duration) -> Duration {
    Duration::from_secs(d.whole_seconds().max(0) as u64 + u64::from(d.subsec_nanoseconds() > 0))
        .max(Duration::from_secs(1))
}

/// The key an address counts under: itself, or for IPv6 its /64 network.
fn address_key(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or_else(|| address.to_string(), |v4| v4.to_string()),
        _ => address.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labhub_core::ManualClock;

    const MINUTE: Duration = Duration::from_secs(60);

    fn throttle(settings: ThrottleSettings) -> (LoginThrottle, ManualClock) {
        let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        (LoginThrottle::new(settings, Arc::new(clock.clone())), clock)
    }

    fn small() -> ThrottleSettings {
        ThrottleSettings {
            per_account: 6,
            per_account_and_address: 3,
            accounts_per_address: 4,
            per_device: 2,
            signups_per_address: 2,
            window: Duration::from_secs(15 * 60),
        }
    }

    fn unknown<'a>(account: &'a str, address: &'a str) -> SignInClient<'a> {
        SignInClient { account, address, device: None }
    }

    /// Fails `n` times (each attempt must be let through).
    fn fail(t: &LoginThrottle, client: SignInClient<'_>, n: usize) {
        for i in 0..n {
            let attempt = t.begin_sign_in(&client).unwrap_or_else(|w| panic!("attempt {i} refused for {w:?}"));
            drop(attempt);
        }
    }

    #[test]
    fn attempts_are_counted_before_they_are_checked() {
        let (t, _) = throttle(small());
        // Three attempts in flight at once, none checked yet: the fourth must wait.
        let in_flight: Vec<_> = (0..3).map(|_| t.begin_sign_in(&unknown("alice", "1.1.1.1")).unwrap()).collect();
        assert!(t.begin_sign_in(&unknown("alice", "1.1.1.1")).is_err());
        // One of them turns out right: the owner is here, the others still count.
        let mut in_flight = in_flight.into_iter();
        t.succeeded(in_flight.next().unwrap());
        assert!(t.begin_sign_in(&unknown("alice", "1.1.1.1")).is_ok());
    }

    #[test]
    fn an_attempt_the_hub_could_not_check_is_taken_back() {
        let (t, _) = throttle(small());
        for _ in 0..10 {
            let a = t.begin_sign_in(&unknown("alice", "1.1.1.1")).unwrap();
            t.not_checked(a);
        }
        fail(&t, unknown("alice", "1.1.1.1"), 3);
    }

    #[test]
    fn a_used_up_budget_delays_rather_than_locks_and_the_delay_doubles() {
        let (t, clock) = throttle(small());
        fail(&t, unknown("alice", "1.1.1.1"), 3);
        assert_eq!(t.begin_sign_in(&unknown("alice", "1.1.1.1")).unwrap_err(), Duration::from_secs(30));
        clock.advance(time::Duration::seconds(30));
        fail(&t, unknown("alice", "1.1.1.1"), 1);
        assert_eq!(t.begin_sign_in(&unknown("alice", "1.1.1.1")).unwrap_err(), MINUTE);
        clock.advance(time::Duration::seconds(60));
        fail(&t, unknown("alice", "1.1.1.1"), 1);
        assert_eq!(t.begin_sign_in(&unknown("alice", "1.1.1.1")).unwrap_err(), 2 * MINUTE);
        // Never longer than the window; after it, everything is forgotten.
        clock.advance(time::Duration::minutes(15));
        fail(&t, unknown("alice", "1.1.1.1"), 3);
    }

    #[test]
    fn guessing_at_one_account_does_not_stop_others_from_the_same_address() {
        let (t, _) = throttle(small());
        for _ in 0..3 {
            fail(&t, unknown("alice", "10.0.0.1"), 1);
        }
        assert!(t.begin_sign_in(&unknown("alice", "10.0.0.1")).is_err(), "alice from here is slowed down");
        assert!(t.begin_sign_in(&unknown("bob", "10.0.0.1")).is_ok(), "bob behind the same NAT is not");
        assert!(t.begin_sign_in(&unknown("alice", "10.0.0.2")).is_ok(), "alice from elsewhere is not, yet");
    }

    #[test]
    fn guessing_at_one_account_from_many_addresses_is_throttled_per_account() {
        let (t, _) = throttle(small());
        for i in 0..6 {
            fail(&t, unknown("alice", &format!("10.0.0.{i}")), 1);
        }
        assert!(t.begin_sign_in(&unknown("alice", "10.9.9.9")).is_err());
    }

    #[test]
    fn one_address_failing_at_many_accounts_is_throttled_for_all_of_them() {
        let (t, _) = throttle(small());
        for name in ["a", "b", "c", "d"] {
            fail(&t, unknown(name, "10.0.0.1"), 1);
        }
        assert!(t.begin_sign_in(&unknown("e", "10.0.0.1")).is_err());
        assert!(t.begin_sign_in(&unknown("e", "10.0.0.2")).is_ok());
    }

    #[test]
    fn a_known_device_has_its_own_budget_and_then_is_treated_like_any_browser() {
        let (t, _) = throttle(small());
        fail(&t, unknown("alice", "10.0.0.1"), 3);
        for name in ["a", "b", "c"] {
            fail(&t, unknown(name, "10.0.0.1"), 1);
        }
        assert!(t.begin_sign_in(&unknown("d", "10.0.0.1")).is_err());
        let known = SignInClient { account: "alice", address: "10.0.0.1", device: Some("dev1") };
        // The account and the address are both past their budgets: the device is not.
        fail(&t, known, 2);
        assert!(t.begin_sign_in(&known).is_err(), "past its own budget, it is one more unknown browser");
        let other = SignInClient { device: Some("dev2"), ..known };
        t.succeeded(t.begin_sign_in(&other).unwrap());
    }

    #[test]
    fn the_owner_signing_in_forgets_their_failures_from_that_address() {
        let (t, _) = throttle(small());
        fail(&t, unknown("alice", "10.0.0.1"), 2);
        t.succeeded(t.begin_sign_in(&unknown("alice", "10.0.0.1")).unwrap());
        fail(&t, unknown("alice", "10.0.0.1"), 3);
    }

    #[test]
    fn sign_ups_are_counted_per_address() {
        let (t, clock) = throttle(small());
        t.succeeded(t.begin_sign_up("10.0.0.1").unwrap());
        drop(t.begin_sign_up("10.0.0.1").unwrap());
        assert_eq!(t.begin_sign_up("10.0.0.1").unwrap_err(), Duration::from_secs(30));
        assert!(t.begin_sign_up("10.0.0.2").is_ok());
        clock.advance(time::Duration::seconds(30));
        t.not_checked(t.begin_sign_up("10.0.0.1").unwrap());
        assert!(t.begin_sign_up("10.0.0.1").is_ok(), "the one not checked was taken back");
    }

    #[test]
    fn ipv6_addresses_count_by_their_network() {
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(address_key("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(address_key("10.0.0.1"), "10.0.0.1");
        assert_eq!(address_key("unknown"), "unknown");
        let (t, _) = throttle(small());
        fail(&t, unknown("alice", "2001:db8::1"), 3);
        assert!(t.begin_sign_in(&unknown("alice", "2001:db8::2")).is_err());
    }
}
