//! The hub's own secret key and the secrets derived from it.

use hmac::{KeyInit, Mac};
use labhub_core::Secret;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The hub's secret key. Every other hub secret (CSRF tokens, servers' tokens, the key that
/// encrypts providers' tokens) is derived from it with HMAC and a purpose label, so one
/// purpose's secret never works for another.
#[derive(Clone)]
pub struct HubKey(Secret<Vec<u8>>);

impl std::fmt::Debug for HubKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubKey([redacted])")
    }
}

impl HubKey {
    /// Wraps key material (at least 32 bytes).
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() >= 32).then(|| Self(Secret::new(bytes)))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        use rand::Rng;
        let mut bytes = vec![0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(Secret::new(bytes))
    }

    /// HMAC-SHA256 of `parts` (each length-prefixed, so part boundaries cannot be shifted) under a purpose.
    pub fn derive(&self, purpose: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(self.0.expose()).expect("HMAC takes keys of any length");
        mac.update(&(purpose.len() as u64).to_be_bytes());
        mac.update(purpose.as_bytes());
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// The secret token of one run of a user's server: the proxy injects it, the server accepts
    /// nothing else. Derived, so it is never stored; `spawn_id` makes each start's token new.
    pub fn server_token(&self, user: &str, server: &str, spawn_id: &str) -> Secret<String> {
        let d = self.derive("server-token", &[user.as_bytes(), server.as_bytes(), spawn_id.as_bytes()]);
        Secret::new(hex::encode(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_secrets_depend_on_every_part() {
        let k = HubKey::generate();
        let a = k.server_token("alice", "", "1");
        assert_eq!(a.expose(), k.server_token("alice", "", "1").expose());
        assert_ne!(a.expose(), k.server_token("alice", "", "2").expose());
        assert_ne!(a.expose(), k.server_token("alic", "e", "1").expose());
        assert_ne!(a.expose(), HubKey::generate().server_token("alice", "", "1").expose());
        assert!(HubKey::new(vec![0; 16]).is_none());
    }
}
