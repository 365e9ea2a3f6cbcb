//! Typed row ids: each table's `i64` key as a type of its own, so a user id cannot be handed
//! where a server id is wanted. The database crate converts them to and from SQL.

use serde::{Deserialize, Serialize};

/// Declares a `Copy` newtype over `i64`, serialised as the bare number.
macro_rules! id_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $ty(i64);

        impl $ty {
            /// Wraps a raw id.
            pub const fn new(id: i64) -> Self {
                Self(id)
            }

            /// The raw id.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl From<i64> for $ty {
            fn from(id: i64) -> Self {
                Self(id)
            }
        }

        impl From<$ty> for i64 {
            fn from(id: $ty) -> Self {
                id.0
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// A user (`users.user_id`).
    UserId
);
id_type!(
    /// A server (`servers.server_id`).
    ServerId
);
id_type!(
    /// A group (`groups.group_id`).
    GroupId
);
id_type!(
    /// An API token (`api_tokens.token_id`).
    TokenId
);
id_type!(
    /// A browser session (`sessions.session_id`).
    SessionId
);
id_type!(
    /// A catalogue image (`images.image_id`).
    ImageId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bare_numbers_in_json_and_text() {
        let id = UserId::new(42);
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert_eq!(serde_json::from_str::<UserId>("42").unwrap(), id);
        assert_eq!(id.to_string(), "42");
        assert_eq!(i64::from(ServerId::from(-7)), -7);
        assert_eq!(GroupId::new(3).get(), 3);
        assert!(serde_json::from_str::<TokenId>("\"42\"").is_err(), "a string is not an id");
        let both: (SessionId, ImageId) = serde_json::from_str("[1, 2]").unwrap();
        assert_eq!(both, (SessionId::new(1), ImageId::new(2)));
    }
}
