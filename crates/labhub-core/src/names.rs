//! Validated names: one rule per kind of name, applied everywhere a name enters the hub.
//!
//! The user-name rule (documented in the README):
//! - ASCII only; upper case is folded to lower case, so `Alice` and `alice` are one user;
//! - 1 to 64 characters from `a-z`, `0-9`, `.`, `_`, `-`, `@`;
//! - starts and ends with a letter or a digit.
//!
//! ASCII-only rules out look-alike letters (Cyrillic `а` for Latin `a`), and the
//! first/last-character rule rules out `..`, `.` and trailing dots as whole names.

/// Why a name was refused, worded for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} must be at most {max} characters long")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} may only use the letters a-z, digits and {extra}")]
    BadCharacter { kind: &'static str, extra: &'static str },
    #[error("{kind} must start and end with a letter or a digit")]
    BadEdge { kind: &'static str },
    #[error("'{name}' is reserved: it is a path of the servers themselves; choose another server name")]
    Reserved { name: String },
}

/// The shared validation: fold ASCII case, then check length, alphabet and edges.
fn validate(
    raw: &str,
    kind: &'static str,
    max: usize,
    extra_chars: &[u8],
    extra: &'static str,
) -> Result<String, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty { kind });
    }
    // Count characters, not bytes, so a long unicode name gets the length message
    // only when it is really too long; the alphabet check below refuses it anyway.
    if raw.chars().count() > max {
        return Err(NameError::TooLong { kind, max });
    }
    let folded = raw.to_ascii_lowercase();
    let bytes = folded.as_bytes();
    if !bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra_chars.contains(b)) {
        return Err(NameError::BadCharacter { kind, extra });
    }
    let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(edge_ok) || !bytes.last().is_some_and(edge_ok) {
        return Err(NameError::BadEdge { kind });
    }
    Ok(folded)
}

/// Declares a validated name: a newtype over `String` whose only way in is the type's own
/// `parse(&str) -> Result<Self, Error>`, which the caller writes in an `impl` of its own.
///
/// The macro adds what every such name needs: `as_str`, `Display` (the name as written),
/// `Debug` (the quoted name; `debug = named` prints `Type(name)` instead), `AsRef<str>`,
/// `FromStr` and `TryFrom<String>` through `parse`, `From<Type> for String`, and serde as a
/// plain string that is validated again on deserialising (the error's `Display` becomes
/// serde's message).
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// #[error("'{0}' is not a code: use 1 to 4 digits")]
/// pub struct CodeError(String);
///
/// labhub_core::name_type!(
///     /// A short code.
///     Code, error = CodeError
/// );
///
/// impl Code {
///     /// Validates a code.
///     pub fn parse(raw: &str) -> Result<Self, CodeError> {
///         let ok = (1..=4).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit());
///         if ok { Ok(Self(raw.to_string())) } else { Err(CodeError(raw.to_string())) }
///     }
/// }
///
/// let code: Code = serde_json::from_str("\"42\"").unwrap();
/// assert_eq!((code.as_str(), format!("{code:?}")), ("42", "\"42\"".to_string()));
/// assert!(serde_json::from_str::<Code>("\"x\"").unwrap_err().to_string().contains("not a code"));
/// ```
#[macro_export]
macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, error = $err:ty, debug = named) => {
        $crate::name_type!(@type $(#[$doc])* $ty, $err);

        impl ::core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::write!(f, "{}({})", ::core::stringify!($ty), self.0)
            }
        }
    };
    ($(#[$doc:meta])* $ty:ident, error = $err:ty) => {
        $crate::name_type!(@type $(#[$doc])* $ty, $err);

        impl ::core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Debug::fmt(&self.0, f)
            }
        }
    };
    (@type $(#[$doc:meta])* $ty:ident, $err:ty) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(::std::string::String);

        impl $ty {
            /// The name as validated.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::core::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::core::convert::AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::core::convert::TryFrom<::std::string::String> for $ty {
            type Error = $err;
            fn try_from(s: ::std::string::String) -> ::core::result::Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl ::core::str::FromStr for $ty {
            type Err = $err;
            fn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl ::core::convert::From<$ty> for ::std::string::String {
            fn from(name: $ty) -> Self {
                name.0
            }
        }

        impl $crate::__private::serde::Serialize for $ty {
            fn serialize<S: $crate::__private::serde::Serializer>(
                &self,
                s: S,
            ) -> ::core::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $ty {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(
                d: D,
            ) -> ::core::result::Result<Self, D::Error> {
                let raw = <::std::string::String as $crate::__private::serde::Deserialize>::deserialize(d)?;
                Self::parse(&raw).map_err(<D::Error as $crate::__private::serde::de::Error>::custom)
            }
        }
    };
}

crate::name_type!(
    /// A user's name, normalised to lower case (see the module docs for the rule).
    UserName, error = NameError
);
crate::name_type!(
    /// A named server's name; the default server has none (see `ServerName::parse`).
    ServerName, error = NameError
);
crate::name_type!(
    /// A group's name.
    GroupName, error = NameError
);
crate::name_type!(
    /// A dataset's name: the folder it is mounted as, `~/datasets/{name}`.
    DatasetName, error = NameError
);
crate::name_type!(
    /// A registered service's name: its route `/services/{name}/` and its `!service=` filter.
    ServiceName, error = NameError
);
crate::name_type!(
    /// A Swarm node's host name (`node.hostname`), where a user's servers are pinned.
    NodeName, error = NameError
);
crate::name_type!(
    /// A role's name (`user`, `admin`, `server`, `token` are built in).
    RoleName, error = NameError
);

impl UserName {
    /// The longest user name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates and normalises a user name.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        validate(raw, "a user name", Self::MAX_LEN, b"._-@", "'.', '_', '-', '@'").map(Self)
    }
}

impl ServerName {
    /// The longest server name accepted.
    pub const MAX_LEN: usize = 32;

    /// Names a server may not take: `/user/alice/<name>/` would shadow a path of the default
    /// server's Jupyter or RStudio.
    pub const RESERVED: &'static [&'static str] = &[
        "api",
        "auth-sign-in",
        "custom",
        "doc",
        "edit",
        "files",
        "kernels",
        "lab",
        "login",
        "logout",
        "nbconvert",
        "nbextensions",
        "notebooks",
        "rpc",
        "rstudio",
        "server",
        "static",
        "terminals",
        "tree",
        "view",
        "voila",
    ];

    /// Validates a server name: 1 to 32 of `a-z`, `0-9`, `-`, starting and ending alphanumeric,
    /// and not one of [`ServerName::RESERVED`]. Narrower than user names because it becomes part
    /// of a container name and a URL segment.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let name = validate(raw, "a server name", Self::MAX_LEN, b"-", "'-'")?;
        if Self::RESERVED.contains(&name.as_str()) {
            return Err(NameError::Reserved { name });
        }
        Ok(Self(name))
    }

    /// Parses the optional name used by the API and the database, where `""` is the default server.
    pub fn parse_optional(raw: &str) -> Result<Option<Self>, NameError> {
        if raw.is_empty() { Ok(None) } else { Self::parse(raw).map(Some) }
    }
}

impl GroupName {
    /// The longest group name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates and normalises a group name (the user-name alphabet without `@`).
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        validate(raw, "a group name", Self::MAX_LEN, b"._-", "'.', '_', '-'").map(Self)
    }
}

impl ServiceName {
    /// The longest service name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates and normalises a service name (the group-name alphabet: a URL segment).
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        validate(raw, "a service name", Self::MAX_LEN, b"._-", "'.', '_', '-'").map(Self)
    }
}

impl NodeName {
    /// The longest host name accepted (DNS's limit).
    pub const MAX_LEN: usize = 253;

    /// Validates and normalises a node's host name (DNS's alphabet, folded to lower case).
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        validate(raw, "a node's host name", Self::MAX_LEN, b".-_", "'.', '-', '_'").map(Self)
    }
}

impl RoleName {
    /// The longest role name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates and normalises a role name (JupyterHub's alphabet: letters, digits, `-_~.`).
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        validate(raw, "a role name", Self::MAX_LEN, b"-_~.", "'-', '_', '~', '.'").map(Self)
    }
}

impl DatasetName {
    /// The longest dataset name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates and normalises a dataset name (lower-case letters, digits and `-`).
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        validate(raw, "a dataset name", Self::MAX_LEN, b"-", "'-'").map(Self)
    }
}

/// Escapes a name so that it can be joined with `_` into a Docker object name and still
/// be read back unambiguously: `a-z`, `0-9` and `.` stay, every other byte becomes `-XX`
/// (lower-case hex). The output never contains `_`, so `_` is a safe separator and
/// distinct (user, server) pairs give distinct joined names.
pub fn docker_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' {
            out.push(b as char);
        } else {
            out.push_str(&format!("-{b:02x}"));
        }
    }
    out
}

/// Reverses [`docker_escape`]; `None` when the input is not an escaped name.
pub fn docker_unescape(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_fold_case_and_keep_the_safe_alphabet() {
        assert_eq!(UserName::parse("Alice").unwrap().as_str(), "alice");
        assert_eq!(UserName::parse("a.b_c-d@uni.edu").unwrap().as_str(), "a.b_c-d@uni.edu");
        assert_eq!(UserName::parse("ALICE").unwrap(), UserName::parse("alice").unwrap());
    }

    #[test]
    fn hostile_user_names_are_refused_with_a_reason() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty { kind: "a user name" }),
            ("../etc", NameError::BadCharacter { kind: "a user name", extra: "'.', '_', '-', '@'" }),
            ("..", NameError::BadEdge { kind: "a user name" }),
            ("alice.", NameError::BadEdge { kind: "a user name" }),
            ("-alice", NameError::BadEdge { kind: "a user name" }),
            ("al ice", NameError::BadCharacter { kind: "a user name", extra: "'.', '_', '-', '@'" }),
            // Cyrillic 'а' (U+0430) looks like Latin 'a'.
            ("\u{0430}lice", NameError::BadCharacter { kind: "a user name", extra: "'.', '_', '-', '@'" }),
            ("al%2fice", NameError::BadCharacter { kind: "a user name", extra: "'.', '_', '-', '@'" }),
        ];
        for (raw, want) in cases {
            assert_eq!(UserName::parse(raw).unwrap_err(), *want, "{raw:?}");
        }
        let long = "a".repeat(65);
        assert!(matches!(UserName::parse(&long), Err(NameError::TooLong { max: 64, .. })));
        assert!(UserName::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn server_names_are_narrower() {
        assert!(ServerName::parse("gpu-1").is_ok());
        assert!(ServerName::parse("a.b").is_err());
        assert!(ServerName::parse("a_b").is_err());
        assert_eq!(ServerName::parse_optional("").unwrap(), None);
        assert!(ServerName::parse(&"a".repeat(33)).is_err());
        assert!(matches!(ServerName::parse("Lab"), Err(NameError::Reserved { .. })));
        assert!(ServerName::parse("lab2").is_ok());
    }

    #[test]
    fn docker_escape_is_reversible_and_never_emits_the_separator() {
        for name in ["alice", "a-b", "a_b", "a@b.c", "x-2d", "-", "_"] {
            let e = docker_escape(name);
            assert!(!e.contains('_'), "{e}");
            assert_eq!(docker_unescape(&e).as_deref(), Some(name));
        }
        // The pair that naive joining confuses: user "alice-foo" vs user "alice" + server "foo".
        let a = format!("{}_{}", docker_escape("alice"), docker_escape("foo"));
        let b = docker_escape("alice-foo");
        assert_ne!(a, b);
    }
}
