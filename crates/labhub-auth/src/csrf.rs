//! CSRF tokens: an HMAC of a per-browser secret (the session, or a pre-login cookie), so a
//! token from one browser is useless in another and nothing extra is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::HubKey;

/// Makes and checks CSRF tokens.
#[derive(Debug, Clone)]
pub struct CsrfKey(HubKey);

impl CsrfKey {
    /// CSRF tokens derived from the hub's key.
    pub fn new(key: HubKey) -> Self {
        Self(key)
    }

    /// The token forms carry for a browser identified by `binding` (a session's token hash,
    /// or the pre-login cookie's value).
    pub fn token(&self, binding: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.0.derive("csrf", &[binding]))
    }

    /// Whether `presented` is the token for `binding`, compared in constant time.
    pub fn verify(&self, binding: &[u8], presented: &str) -> bool {
        let expected = self.token(binding);
        expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_browser() {
        let k = CsrfKey::new(HubKey::generate());
        let t = k.token(b"session-a");
        assert!(k.verify(b"session-a", &t));
        assert!(!k.verify(b"session-b", &t));
        assert!(!k.verify(b"session-a", ""));
        assert!(!k.verify(b"session-a", &t[1..]));
    }
}
