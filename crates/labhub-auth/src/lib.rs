//! Credentials: password hashing (argon2id, off the async runtime), random tokens stored as
//! SHA-256, CSRF tokens, the login throttle and device cookies, and secrets derived from the
//! hub's key.
//! Sign-in with identity providers (OAuth2/OIDC) lives in `oidc`, with a directory (LDAP,
//! Active Directory) in `ldap`.

pub mod csrf;
pub mod devices;
pub mod keys;
pub mod ldap;
pub mod oidc;
pub mod passwords;
pub mod throttle;
pub mod tokens;

pub use csrf::CsrfKey;
pub use devices::DeviceKey;
pub use keys::HubKey;
pub use passwords::{HashingLimits, PasswordError, PasswordHasher, PasswordPolicy};
pub use throttle::{Attempt, LoginThrottle, SignInClient, ThrottleSettings};
pub use tokens::{TokenHash, new_token, sha256};
