//! The secrets of one sign-in: a random `state`, and the PKCE verifier and the nonce derived
//! from it with the hub's key. Deriving them means the hub stores nothing secret while the
//! browser is away at the provider, and a stolen `state` (it travels in URLs) is useless
//! without the key. Beside them, the [`BrowserBinding`] ties a sign-in to the browser that
//! started it.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::{Nonce, PkceCodeChallenge, PkceCodeVerifier};
use subtle::ConstantTimeEq;

use crate::tokens::looks_like_token;
use crate::{HubKey, TokenHash, new_token, sha256};

/// The secrets of one sign-in.
pub struct LoginSecrets {
    state: String,
    pkce_verifier: String,
    nonce: String,
}

impl fmt::Debug for LoginSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginSecrets([redacted])")
    }
}

impl LoginSecrets {
    /// Secrets for a new sign-in.
    pub fn new(key: &HubKey) -> Self {
        let (state, _) = new_token();
        Self::recover(key, &state)
    }

    /// The secrets of the sign-in that `state` started.
    pub fn recover(key: &HubKey, state: &str) -> Self {
        // 32 bytes in unpadded base64url are 43 characters: the shortest PKCE verifier allowed.
        let derive = |purpose: &str| URL_SAFE_NO_PAD.encode(key.derive(purpose, &[state.as_bytes()]));
        Self { state: state.to_string(), pkce_verifier: derive("oauth-pkce-verifier"), nonce: derive("oidc-nonce") }
    }

    /// The `state` sent to the provider and expected back.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// The PKCE verifier, sent with the code to the token endpoint.
    pub(crate) fn pkce_verifier(&self) -> PkceCodeVerifier {
        PkceCodeVerifier::new(self.pkce_verifier.clone())
    }

    /// The PKCE challenge (S256 of the verifier), sent with the authorization request.
    pub(crate) fn pkce_challenge(&self) -> PkceCodeChallenge {
        PkceCodeChallenge::from_code_verifier_sha256(&self.pkce_verifier())
    }

    /// The nonce the ID token must carry.
    pub fn nonce(&self) -> Nonce {
        Nonce::new(self.nonce.clone())
    }
}

/// A random value the browser keeps in a cookie while it is away at the provider. The hub
/// stores only its hash with the sign-in, so a `state` that reaches another browser (a link
/// sent to someone, a login CSRF) cannot be finished there.
pub struct BrowserBinding(String);

impl fmt::Debug for BrowserBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrowserBinding([redacted])")
    }
}

impl BrowserBinding {
    /// A new binding for a browser that has none.
    pub fn generate() -> Self {
        Self(new_token().0)
    }

    /// The binding a cookie carries, if it looks like one.
    pub fn from_cookie(value: &str) -> Option<Self> {
        looks_like_token(value).then(|| Self(value.to_string()))
    }

    /// The cookie's value.
    pub fn value(&self) -> &str {
        &self.0
    }

    /// What the hub stores.
    pub fn hash(&self) -> TokenHash {
        sha256(&self.0)
    }

    /// Whether a stored hash is this binding's, compared in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        stored.len() == 32 && bool::from(self.hash().ct_eq(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recovered_from_the_state_and_the_key_only() {
        let key = HubKey::generate();
        let started = LoginSecrets::new(&key);
        let again = LoginSecrets::recover(&key, started.state());
        assert_eq!(started.pkce_verifier().secret(), again.pkce_verifier().secret());
        assert_eq!(started.nonce().secret(), again.nonce().secret());
        assert_eq!(started.pkce_verifier().secret().len(), 43);
        assert_ne!(started.nonce().secret(), started.pkce_verifier().secret(), "one purpose, one secret");
        let other_key = LoginSecrets::recover(&HubKey::generate(), started.state());
        assert_ne!(started.nonce().secret(), other_key.nonce().secret());
        assert_ne!(started.state(), LoginSecrets::new(&key).state());
    }

    #[test]
    fn bindings_match_only_their_own_hash() {
        let b = BrowserBinding::generate();
        assert!(b.matches(&b.hash()));
        assert!(!b.matches(&BrowserBinding::generate().hash()));
        assert!(!b.matches(&b.hash()[..31]));
        assert!(BrowserBinding::from_cookie(b.value()).is_some());
        assert!(BrowserBinding::from_cookie("not-a-binding").is_none());
    }
}
