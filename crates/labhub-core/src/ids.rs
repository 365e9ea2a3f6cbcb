//! Typed ids: the immutable keys of what the hub stores. A `UserId` cannot be passed where a
//! `ServerId` is meant, and user-owned resources are keyed by these, never by names (names
//! change and are reused).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        pub struct $ty(i64);

        impl $ty {
            /// The id as stored.
            pub const fn new(raw: i64) -> Self {
                Self(raw)
            }

            /// The raw number, for storage and for names built from it.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self.0)
            }
        }

        impl From<i64> for $ty {
            fn from(raw: i64) -> Self {
                Self(raw)
            }
        }
    };
}

id_type!(
    /// An account, for as long as it exists; a new account of the same name gets a new one.
    UserId
);
id_type!(
    /// One of a user's server slots (the default or a named one).
    ServerId
);
id_type!(
    /// A group.
    GroupId
);
id_type!(
    /// An API token.
    TokenId
);
id_type!(
    /// A browser session.
    SessionId
);
id_type!(
    /// A catalogue entry.
    ImageId
);
id_type!(
    /// An archive in the backup directory.
    BackupId
);
id_type!(
    /// A share code (JupyterHub writes it `sc_<number>`).
    ShareCodeId
);
id_type!(
    /// An environment (a catalogue entry the hub builds from a source).
    EnvironmentId
);
id_type!(
    /// One build of an environment.
    BuildId
);
id_type!(
    /// A registered service (not an account: it holds no user's things).
    ServiceId
);

/// A credential a request was let in with, by its id: what a connection it opened is closed
/// with when that credential ends (signed out, revoked, expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Credential {
    /// A browser session.
    Session(SessionId),
    /// An API token.
    Token(TokenId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_numbers_in_json_and_keep_their_kind_in_debug() {
        let id = UserId::new(42);
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert_eq!(serde_json::from_str::<UserId>("42").unwrap(), id);
        assert_eq!(format!("{id} {id:?}"), "42 UserId(42)");
        assert_eq!(ServerId::from(7).get(), 7);
    }
}
