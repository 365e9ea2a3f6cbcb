//! Random bearer tokens (session cookies, API tokens) and their stored form.

use rand::Rng;
use sha2::{Digest, Sha256};

/// The SHA-256 of a token: the only form in which the hub stores it.
pub type TokenHash = [u8; 32];

/// Hashes a token for storage and lookup.
pub fn sha256(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token (32 bytes from the OS generator, as 64 hex characters) and its hash.
/// Lookups go by hash, so the token's value never meets a comparison an attacker could time.
pub fn new_token() -> (String, TokenHash) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let hash = sha256(&token);
    (token, hash)
}

/// Whether two stored hashes are equal, compared in constant time.
pub fn same_hash(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Whether a presented string could be one of our tokens at all (cheap filter before hashing).
pub fn looks_like_token(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(sha256(&a), ha);
        assert!(looks_like_token(&a));
        assert!(!looks_like_token("short"));
    }
}
