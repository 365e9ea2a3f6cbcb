//! Signing in with an LDAP directory or Active Directory: a person's name and password are
//! checked by a bind (through DN templates, or after a service account's search), and their
//! groups are read (a group search, nested groups in Active Directory, or `memberOf`).
//!
//! This module says who the directory vouches for ([`DirectoryPerson`]); whether that person
//! gets in, and as which account, is the service's sign-in policy, as for identity providers.
//! Every value placed in a filter or a DN is escaped in `escape`; TLS uses the same crypto
//! provider (*ring*) as the rest of the hub; the service account's password is a [`Secret`]
//! and is never logged.
//!
//! [`Secret`]: labhub_core::Secret

mod config;
mod directory;
mod error;
pub mod escape;
mod session;

pub use config::{LdapConfig, LdapTls, tls_word};
pub use directory::{Directory, DirectoryGroup, DirectoryPerson, Step, account_name};
pub use error::LdapError;

/// The id directory identities are stored under, and `admin_users` entries name
/// (`ldap:alice`); no `[[auth.providers]]` entry may use it while `[auth.ldap]` is set.
pub const LDAP_ID: &str = "ldap";
