//! Reading `/user/{name}/[{server}/]…` from a raw request path, refusing every trick that
//! could make one request look like it belongs to another user.
//!
//! The path is read as the browser sent it, still percent-encoded, and never decoded: the
//! user and server segments are only accepted when they are already in their one canonical
//! spelling, so the route chosen here and the path forwarded upstream can never disagree.

use labhub_core::{NameError, ServerName, UserName};

/// Why a path under `/user/` was refused, worded for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with /user/{{name}}")]
    NotUserPath,
    #[error("the path has an empty segment (a double slash) in its user or server part")]
    EmptySegment,
    #[error("the path has a '.' or '..' segment")]
    DotSegment,
    #[error("the path has a percent-encoded dot, slash, backslash or NUL")]
    EncodedSeparator,
    #[error("the user or server part of the path is percent-encoded")]
    EncodedName,
    #[error("the path has a malformed percent escape")]
    MalformedEscape,
    #[error("the path has a backslash")]
    Backslash,
    #[error("the path has a character that is not printable ASCII")]
    BadCharacter,
    /// The user segment has upper-case letters; `canonical` is the same path in lower case,
    /// for a redirect.
    #[error("user names in paths are lower case: use {canonical}")]
    NotLowerCase { canonical: String },
    #[error("the path does not name a valid user: {0}")]
    BadUser(NameError),
}

/// A request path under `/user/`, split into the user, the segment that may name one of
/// the user's servers, and what follows.
///
/// `/user/alice/lab` is either the default server's path `lab` or the named server `lab`:
/// the route table decides (see `RouteTable::resolve`), so both readings are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPath<'a> {
    /// The user named by the path.
    pub user: UserName,
    /// The segment after the user's, when it is a valid server name.
    pub server: Option<ServerName>,
    raw: &'a str,
    /// Where the path continues after `/user/{name}/` (or its end, for `/user/{name}`).
    user_rest: usize,
    /// Where the path continues after `/user/{name}/{server}/`, when there is a candidate.
    server_rest: usize,
}

impl<'a> UserPath<'a> {
    /// What follows the route's prefix, for the default server (`None`) or the named one:
    /// `tree/x` for `/user/alice/tree/x` and the default server.
    pub fn rest(&self, server: Option<&ServerName>) -> &'a str {
        let at = if server.is_some() && server == self.server.as_ref() { self.server_rest } else { self.user_rest };
        self.raw.get(at..).unwrap_or("")
    }
}

const USER_PREFIX: &str = "/user/";

/// Splits a raw (still percent-encoded) path that starts with `/user/`, refusing `.` and
/// `..` segments in any spelling, encoded separators, backslashes, NUL, non-ASCII, empty
/// user or server segments and user names that are not already lower case.
pub fn parse_user_path(raw: &str) -> Result<UserPath<'_>, PathError> {
    let after = raw.strip_prefix(USER_PREFIX).ok_or(PathError::NotUserPath)?;
    check_characters(raw)?;
    if after.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(PathError::DotSegment);
    }

    let mut segments = after.split('/');
    let user_seg = segments.next().unwrap_or("");
    if user_seg.is_empty() {
        return Err(PathError::EmptySegment);
    }
    let user = parse_user_segment(raw, user_seg)?;
    let user_end = USER_PREFIX.len() + user_seg.len();
    let user_rest = (user_end + 1).min(raw.len());

    let second = segments.next();
    let mut server = None;
    let mut server_rest = user_rest;
    if let Some(seg) = second {
        // `/user/alice/` is fine; `/user/alice//x` is a double slash in the user part.
        if seg.is_empty() && raw.len() > user_rest {
            return Err(PathError::EmptySegment);
        }
        if let Ok(name) = ServerName::parse(seg)
            && name.as_str() == seg
        {
            server_rest = (user_rest + seg.len() + 1).min(raw.len());
            let third = segments.clone().next();
            if third == Some("") && raw.len() > server_rest {
                return Err(PathError::EmptySegment);
            }
            server = Some(name);
        }
    }
    Ok(UserPath { user, server, raw, user_rest, server_rest })
}

/// Printable ASCII only, no backslash, and every escape well-formed and harmless.
fn check_characters(raw: &str) -> Result<(), PathError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::MalformedEscape)?;
                let value = decode_hex_pair(hex).ok_or(PathError::MalformedEscape)?;
                // An encoded dot can only serve to hide a `..`; an encoded slash or backslash
                // to hide a segment boundary from us but not from the server; NUL to cut a
                // string short somewhere downstream.
                if matches!(value, b'.' | b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                i += 3;
                continue;
            }
            b if !(0x21..=0x7e).contains(&b) => return Err(PathError::BadCharacter),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn decode_hex_pair(hex: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    match hex {
        [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
        _ => None,
    }
}

/// The user segment must already be the canonical name: no escapes, no upper case.
fn parse_user_segment(raw: &str, seg: &str) -> Result<UserName, PathError> {
    if seg.contains('%') {
        return Err(PathError::EncodedName);
    }
    let user = UserName::parse(seg).map_err(PathError::BadUser)?;
    if user.as_str() != seg {
        let canonical = format!("{USER_PREFIX}{user}{}", &raw[USER_PREFIX.len() + seg.len()..]);
        return Err(PathError::NotLowerCase { canonical });
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, Option<String>, String, String) {
        let p = parse_user_path(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        let server = p.server.clone();
        (
            p.user.to_string(),
            server.as_ref().map(|s| s.to_string()),
            p.rest(None).into(),
            p.rest(server.as_ref()).into(),
        )
    }

    #[test]
    fn ordinary_paths_split_into_user_server_candidate_and_rest() {
        let cases: &[(&str, &str, Option<&str>, &str, &str)] = &[
            ("/user/alice", "alice", None, "", ""),
            ("/user/alice/", "alice", None, "", ""),
            // Reserved names (Jupyter's own paths) are never server candidates.
            ("/user/alice/lab", "alice", None, "lab", "lab"),
            ("/user/alice/lab/tree/x.ipynb", "alice", None, "lab/tree/x.ipynb", "lab/tree/x.ipynb"),
            ("/user/alice/work/tree/x.ipynb", "alice", Some("work"), "work/tree/x.ipynb", "tree/x.ipynb"),
            ("/user/alice/gpu/", "alice", Some("gpu"), "gpu/", ""),
            ("/user/alice/favicon.ico", "alice", None, "favicon.ico", "favicon.ico"),
            ("/user/a.b@uni.edu/api/kernels", "a.b@uni.edu", None, "api/kernels", "api/kernels"),
            (
                "/user/alice/data/contents/my%20file.txt",
                "alice",
                Some("data"),
                "data/contents/my%20file.txt",
                "contents/my%20file.txt",
            ),
            // A server-looking segment in upper case is only ever a path of the default server.
            ("/user/alice/GPU/x", "alice", None, "GPU/x", "GPU/x"),
            // Double slashes deeper in the remainder are the server's business.
            ("/user/alice/work/files//x", "alice", Some("work"), "work/files//x", "files//x"),
        ];
        for (raw, user, server, default_rest, named_rest) in cases {
            let got = ok(raw);
            assert_eq!(got.0, *user, "{raw}");
            assert_eq!(got.1.as_deref(), *server, "{raw}");
            assert_eq!(got.2, *default_rest, "{raw}");
            assert_eq!(got.3, *named_rest, "{raw}");
        }
    }

    #[test]
    fn every_path_trick_is_refused() {
        use PathError::*;
        let cases: &[(&str, PathError)] = &[
            ("/hub/home", NotUserPath),
            ("/user", NotUserPath),
            ("/users/alice/", NotUserPath),
            ("/User/alice/", NotUserPath),
            ("/user/", EmptySegment),
            ("/user//alice/", EmptySegment),
            ("/user/alice//bob/", EmptySegment),
            ("/user/alice/gpu//x", EmptySegment),
            ("/user/../bob/", DotSegment),
            ("/user/alice/../bob/", DotSegment),
            ("/user/alice/./x", DotSegment),
            ("/user/alice/x/..", DotSegment),
            ("/user/alice/%2e%2e/bob/", EncodedSeparator),
            ("/user/alice/%2E%2e/bob/", EncodedSeparator),
            ("/user/alice/.%2e/bob/", EncodedSeparator),
            ("/user/alice/%2e/x", EncodedSeparator),
            ("/user/alice%2fbob/", EncodedSeparator),
            ("/user/alice/x%2F..%2F..%2Fbob", EncodedSeparator),
            ("/user/alice%5cbob/", EncodedSeparator),
            ("/user/alice/x%5C", EncodedSeparator),
            ("/user/alice/x%00", EncodedSeparator),
            ("/user/alice\\..\\bob/", Backslash),
            ("/user/alice/x\\y", Backslash),
            ("/user/alice/x%", MalformedEscape),
            ("/user/alice/x%2", MalformedEscape),
            ("/user/alice/x%zz", MalformedEscape),
            ("/user/%61lice/", EncodedName),
            ("/user/alice%40uni.edu/", EncodedName),
            ("/user/alice\0/", BadCharacter),
            ("/user/al ice/", BadCharacter),
            ("/user/alice/x\u{7f}", BadCharacter),
            // Cyrillic 'а' (U+0430) for Latin 'a', raw and fullwidth 'ａ'.
            ("/user/\u{0430}lice/", BadCharacter),
            ("/user/\u{ff41}lice/", BadCharacter),
            ("/user/%D0%B0lice/", EncodedName),
            ("/user/alice./", BadUser(NameError::BadEdge { kind: "a user name" })),
            ("/user/alice.../", BadUser(NameError::BadEdge { kind: "a user name" })),
            ("/user/-alice/", BadUser(NameError::BadEdge { kind: "a user name" })),
            ("/user/al*ce/", BadUser(NameError::BadCharacter { kind: "a user name", extra: "'.', '_', '-', '@'" })),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_user_path(raw).as_ref().map(|p| p.user.to_string()), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn mixed_case_user_names_come_back_with_their_canonical_path() {
        for (raw, canonical) in [
            ("/user/Alice/lab?x", "/user/alice/lab?x"),
            ("/user/ALICE", "/user/alice"),
            ("/user/Alice/GPU/", "/user/alice/GPU/"),
        ] {
            assert_eq!(
                parse_user_path(raw).map(|p| p.user.to_string()),
                Err(PathError::NotLowerCase { canonical: canonical.into() }),
                "{raw}"
            );
        }
    }

    #[test]
    fn overlong_names_are_refused() {
        let long = format!("/user/{}/", "a".repeat(65));
        assert!(matches!(parse_user_path(&long), Err(PathError::BadUser(NameError::TooLong { .. }))));
        // A segment too long to be a server name is just a path of the default server.
        let p =
            parse_user_path("/user/alice/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.server, None);
    }
}
