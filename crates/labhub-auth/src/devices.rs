//! Device cookies (OWASP's "device cookies" against lockout): a browser that signed in to an
//! account gets a signed entry for it, and later attempts at that account from that browser
//! count against the device's own budget only (see `throttle`).
//!
//! The cookie holds up to [`MAX_ENTRIES`] entries, one per account the browser signed in to,
//! most recent first. An entry is a random device id and an HMAC of (account, id) under a key
//! derived from the hub's: it names no account, and it is valid only for the account it was
//! made for, so one account's cookie is worth nothing at another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::HubKey;

/// Entries one browser keeps (one per account signed in to from it).
pub const MAX_ENTRIES: usize = 4;
/// The purpose the signing key is derived for.
const PURPOSE: &str = "login-device";

/// Makes and reads device cookies.
#[derive(Debug, Clone)]
pub struct DeviceKey(HubKey);

impl DeviceKey {
    /// Device cookies signed with a key derived from the hub's.
    pub fn new(key: HubKey) -> Self {
        Self(key)
    }

    fn mac(&self, account: &str, id: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.0.derive(PURPOSE, &[account.as_bytes(), id.as_bytes()]))
    }

    /// The device id of the cookie's entry for `account`, if it has a valid one. `cookie` is
    /// every value the browser sent under the cookie's name, joined by `.`.
    pub fn device_for<'c>(&self, cookie: &'c str, account: &str) -> Option<&'c str> {
        entries(cookie)
            .find(|(id, mac)| {
                let expected = self.mac(account, id);
                expected.len() == mac.len() && bool::from(expected.as_bytes().ct_eq(mac.as_bytes()))
            })
            .map(|(id, _)| id)
    }

    /// The cookie's value after a successful sign-in to `account`: its entry (kept, or new)
    /// first, then the others the browser had, at most [`MAX_ENTRIES`].
    pub fn after_sign_in(&self, cookie: Option<&str>, account: &str) -> String {
        let cookie = cookie.unwrap_or_default();
        let id = match self.device_for(cookie, account) {
            Some(id) => id.to_string(),
            None => crate::new_token().0[..32].to_string(),
        };
        let mine = format!("{id}~{}", self.mac(account, &id));
        let others = entries(cookie).filter(|(other, _)| *other != id).map(|(i, m)| format!("{i}~{m}"));
        std::iter::once(mine).chain(others).take(MAX_ENTRIES).collect::<Vec<_>>().join(".")
    }
}

/// The well-formed `(id, mac)` entries of a cookie value, ignoring anything else (a browser
/// may send several cookies of the name; the caller joins them).
fn entries(cookie: &str) -> impl Iterator<Item = (&str, &str)> {
    cookie
        .split('.')
        .filter_map(|e| e.split_once('~'))
        .filter(|(id, mac)| {
            let ok = |s: &str| {
                !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            ok(id) && ok(mac)
        })
        .take(4 * MAX_ENTRIES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_valid_only_for_its_account_and_its_hub() {
        let k = DeviceKey::new(HubKey::generate());
        let c = k.after_sign_in(None, "alice");
        let id = k.device_for(&c, "alice").expect("alice's entry");
        assert_eq!(k.device_for(&c, "bob"), None);
        assert_eq!(DeviceKey::new(HubKey::generate()).device_for(&c, "alice"), None);
        assert_eq!(k.device_for(&c.replace('~', "~x"), "alice"), None, "a changed signature");
        assert_eq!(k.device_for("", "alice"), None);
        assert_eq!(k.device_for("garbage.~.~~", "alice"), None);
        // Signing in again keeps the device's id.
        let again = k.after_sign_in(Some(&c), "alice");
        assert_eq!(again, c);
        assert_eq!(k.device_for(&again, "alice"), Some(id));
    }

    #[test]
    fn one_browser_keeps_entries_for_the_last_few_accounts() {
        let k = DeviceKey::new(HubKey::generate());
        let mut c = k.after_sign_in(None, "alice");
        let alice = k.device_for(&c, "alice").unwrap().to_string();
        for name in ["bob", "carol", "dave"] {
            c = k.after_sign_in(Some(&c), name);
        }
        assert_eq!(k.device_for(&c, "alice"), Some(alice.as_str()));
        assert!(k.device_for(&c, "bob").is_some());
        c = k.after_sign_in(Some(&c), "erin");
        assert_eq!(k.device_for(&c, "alice"), None, "the oldest entry made room");
        assert!(k.device_for(&c, "erin").is_some() && k.device_for(&c, "dave").is_some());
    }
}
