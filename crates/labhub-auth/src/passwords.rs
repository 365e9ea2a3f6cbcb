//! Password hashing with argon2id, always on a blocking thread, a few at a time.
//!
//! Default parameters follow OWASP's argon2id recommendation: 19 MiB of memory, 2 passes,
//! 1 lane (about 20-40 ms per hash on a current core in a release build). Stored hashes
//! carry their own parameters, so raising them later only affects new hashes.
//!
//! Each hash holds its 19 MiB and a core for its whole run, so a burst of sign-ins must not
//! start them all at once: at most [`HashingLimits::concurrent`] run, a bounded queue waits
//! (waiting costs no hashing memory), and past that the hasher answers [`PasswordError::Busy`]
//! at once, which the hub turns into 503 with `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use labhub_core::Secret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a password was refused or could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {0} characters long")]
    TooShort(usize),
    #[error("the password must be at most {0} characters long")]
    TooLong(usize),
    #[error("the password hashing failed: {0}")]
    Hashing(String),
    /// Every hashing slot and queue place is taken; try again in a moment.
    #[error("the hub is busy checking other passwords; try again in a few seconds")]
    Busy,
}

/// What a new password must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    /// Fewest characters.
    pub min_len: usize,
}

impl PasswordPolicy {
    /// Most characters accepted; bounds the hashing work an attacker can ask for.
    pub const MAX_LEN: usize = 1024;

    /// Checks a new password against the policy.
    pub fn check(&self, password: &str) -> Result<(), PasswordError> {
        let n = password.chars().count();
        if n < self.min_len {
            Err(PasswordError::TooShort(self.min_len))
        } else if n > Self::MAX_LEN {
            Err(PasswordError::TooLong(Self::MAX_LEN))
        } else {
            Ok(())
        }
    }
}

/// argon2id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl HashCost {
    /// OWASP's recommendation for argon2id.
    pub const DEFAULT: Self = Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };
    /// The cheapest the library allows, for tests only (fast, worthless against attack).
    pub const INSECURE_FOR_TESTS: Self = Self { memory_kib: 8, iterations: 1, parallelism: 1 };
}

/// How many hashes may run and wait at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingLimits {
    /// Hashes running at once (each holds a blocking thread and its memory cost).
    pub concurrent: usize,
    /// Hashes waiting for a slot; past it, [`PasswordError::Busy`].
    pub queued: usize,
}

impl HashingLimits {
    /// One running hash per core, and a queue of a few per slot: a class signing in at once
    /// waits a moment rather than being turned away.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self { concurrent: cores, queued: cores * 16 }
    }
}

/// The slots hashes run in and the count of those waiting for one.
struct Gate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// A place in the queue, given back when the wait ends either way.
struct InQueue<'a>(&'a AtomicUsize);

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    fn new(limits: HashingLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: limits.queued,
        }
    }

    /// A slot to hash in, after waiting in the queue if it has room.
    async fn enter(&self) -> Result<OwnedSemaphorePermit, PasswordError> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(PasswordError::Busy);
        }
        let _place = InQueue(&self.waiting);
        self.slots.clone().acquire_owned().await.map_err(|_| PasswordError::Hashing("the hasher is closed".into()))
    }
}

/// Hashes and verifies passwords on blocking threads, with uniform timing for unknown users.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Arc<Argon2<'static>>,
    /// Verified instead when there is no user, so "no such user" costs as long as "wrong password".
    dummy_hash: Arc<String>,
    gate: Arc<Gate>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with the given cost, running at most `limits` hashes at once.
    pub fn new(cost: HashCost, limits: HashingLimits) -> Result<Self, PasswordError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| PasswordError::Hashing(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = argon
            .hash_password(b"labhub timing equaliser")
            .map_err(|e| PasswordError::Hashing(e.to_string()))?
            .to_string();
        Ok(Self { argon: Arc::new(argon), dummy_hash: Arc::new(dummy_hash), gate: Arc::new(Gate::new(limits)) })
    }

    /// Hashes a password into a PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: Secret<String>) -> Result<String, PasswordError> {
        let argon = self.argon.clone();
        let slot = self.gate.enter().await?;
        // The slot moves into the blocking task: it is held until the hash is done, even if
        // the caller gave up waiting, because that is how long the memory is.
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            argon
                .hash_password(password.expose().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Hashing(e.to_string()))
        })
        .await
        .map_err(|e| PasswordError::Hashing(e.to_string()))?
    }

    /// Checks a password against a stored hash; with no hash (no such user, or an account
    /// without a password) it does the same work and answers false.
    pub async fn verify(&self, password: Secret<String>, hash: Option<String>) -> Result<bool, PasswordError> {
        let argon = self.argon.clone();
        let (hash, real) = match hash {
            Some(h) => (h, true),
            None => (self.dummy_hash.as_str().to_string(), false),
        };
        let slot = self.gate.enter().await?;
        Ok(tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let ok = argon.verify_password(password.expose().as_bytes(), hash.as_str()).is_ok();
            ok && real
        })
        .await
        .unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_AT_A_TIME: HashingLimits = HashingLimits { concurrent: 1, queued: 1 };

    fn secret(s: &str) -> Secret<String> {
        Secret::new(s.into())
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = PasswordHasher::new(HashCost::INSECURE_FOR_TESTS, ONE_AT_A_TIME).unwrap();
        let hash = h.hash(secret("correct horse")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"));
        assert_eq!(h.verify(secret("correct horse"), Some(hash.clone())).await, Ok(true));
        assert_eq!(h.verify(secret("wrong"), Some(hash)).await, Ok(false));
        assert_eq!(h.verify(secret("labhub timing equaliser"), None).await, Ok(false));
    }

    /// Lock-step: the test holds the only slot itself, so which call runs, waits or is turned
    /// away depends on nothing but the limits.
    #[tokio::test]
    async fn past_the_running_and_waiting_limits_hashing_is_refused_at_once() {
        let h = PasswordHasher::new(HashCost::INSECURE_FOR_TESTS, ONE_AT_A_TIME).unwrap();
        let held = h.gate.enter().await.unwrap();
        let waiting = tokio::spawn({
            let h = h.clone();
            async move { h.verify(secret("x"), None).await }
        });
        while h.gate.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(h.verify(secret("y"), None).await, Err(PasswordError::Busy), "the queue is full");
        assert_eq!(
            h.hash(secret("z")).await,
            Err(PasswordError::Busy),
            "hashing new passwords waits in the same queue"
        );
        drop(held);
        assert_eq!(waiting.await.unwrap(), Ok(false), "the one waiting ran once the slot was free");
        assert_eq!(h.gate.waiting.load(Ordering::Acquire), 0);
        assert_eq!(h.verify(secret("y"), None).await, Ok(false), "free again");
    }

    /// A caller that stops waiting (its client went away) gives its queue place back.
    #[tokio::test]
    async fn giving_up_while_queued_frees_the_place() {
        let h = PasswordHasher::new(HashCost::INSECURE_FOR_TESTS, ONE_AT_A_TIME).unwrap();
        let held = h.gate.enter().await.unwrap();
        let waiting = tokio::spawn({
            let h = h.clone();
            async move { h.verify(secret("x"), None).await }
        });
        while h.gate.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(h.gate.waiting.load(Ordering::Acquire), 0);
        drop(held);
    }

    /// Unknown users must cost what wrong passwords cost (no user enumeration by timing). By
    /// construction rather than by stopwatch, which a busy machine makes flaky: the stand-in
    /// checked for them is an argon2id hash with exactly the real hashes' parameters.
    #[tokio::test]
    async fn the_stand_in_for_unknown_users_costs_what_a_real_hash_costs() {
        let h = PasswordHasher::new(HashCost::DEFAULT, ONE_AT_A_TIME).unwrap();
        let real = h.hash(secret("correct horse")).await.unwrap();
        let algorithm_and_params = |phc: &str| phc.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(algorithm_and_params(&real), "$argon2id$v=19$m=19456,t=2,p=1");
        assert_eq!(algorithm_and_params(&h.dummy_hash), algorithm_and_params(&real));
    }

    #[test]
    fn policy() {
        let p = PasswordPolicy { min_len: 8 };
        assert_eq!(p.check("short"), Err(PasswordError::TooShort(8)));
        assert!(p.check("long enough").is_ok());
        assert_eq!(p.check(&"x".repeat(2000)), Err(PasswordError::TooLong(1024)));
    }
}
