//! Password hashing with argon2id, always on a blocking thread.
//!
//! Default parameters follow OWASP's argon2id recommendation: 19 MiB of memory, 2 passes,
//! 1 lane (about 20-40 ms per hash on a current core in a release build). Stored hashes
//! carry their own parameters, so raising them later only affects new hashes.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use labhub_core::Secret;

/// Why a password was refused or could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {0} characters long")]
    TooShort(usize),
    #[error("the password must be at most {0} characters long")]
    TooLong(usize),
    #[error("the password hashing failed: {0}")]
    Hashing(String),
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

/// Hashes and verifies passwords on blocking threads, with uniform timing for unknown users.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Arc<Argon2<'static>>,
    /// Verified instead when there is no user, so "no such user" costs as long as "wrong password".
    dummy_hash: Arc<String>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with the given cost.
    pub fn new(cost: HashCost) -> Result<Self, PasswordError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| PasswordError::Hashing(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = argon
            .hash_password(b"labhub timing equaliser")
            .map_err(|e| PasswordError::Hashing(e.to_string()))?
            .to_string();
        Ok(Self { argon: Arc::new(argon), dummy_hash: Arc::new(dummy_hash) })
    }

    /// Hashes a password into a PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: Secret<String>) -> Result<String, PasswordError> {
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || {
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
    pub async fn verify(&self, password: Secret<String>, hash: Option<String>) -> bool {
        let argon = self.argon.clone();
        let (hash, real) = match hash {
            Some(h) => (h, true),
            None => (self.dummy_hash.as_str().to_string(), false),
        };
        tokio::task::spawn_blocking(move || {
            let ok = argon.verify_password(password.expose().as_bytes(), hash.as_str()).is_ok();
            ok && real
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = PasswordHasher::new(HashCost::INSECURE_FOR_TESTS).unwrap();
        let hash = h.hash(Secret::new("correct horse".into())).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"));
        assert!(h.verify(Secret::new("correct horse".into()), Some(hash.clone())).await);
        assert!(!h.verify(Secret::new("wrong".into()), Some(hash)).await);
        assert!(!h.verify(Secret::new("labhub timing equaliser".into()), None).await);
    }

    /// Unknown users must cost what wrong passwords cost (no user enumeration by timing). By
    /// construction rather than by stopwatch, which a busy machine makes flaky: the stand-in
    /// checked for them is an argon2id hash with exactly the real hashes' parameters.
    #[tokio::test]
    async fn the_stand_in_for_unknown_users_costs_what_a_real_hash_costs() {
        let h = PasswordHasher::new(HashCost::DEFAULT).unwrap();
        let real = h.hash(Secret::new("correct horse".into())).await.unwrap();
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
