//! Every value that goes into an LDAP filter or a DN passes through here: RFC 4515 escaping
//! for filter values, RFC 4514 escaping for DN attribute values, and the reading of DNs the
//! directory sends back (group names from `memberOf`, DNs compared without regard to case or
//! spacing). A person's typed name is never placed in a filter or DN any other way.

use std::fmt::Write;

/// A value for an LDAP search filter (RFC 4515): `*`, `(`, `)`, `\` and NUL become `\2a`,
/// `\28`, `\29`, `\5c`, `\00`, and so does every other control character, so the value can
/// only ever match itself.
pub fn filter_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => push_hex(&mut out, c),
            c if c.is_control() => push_hex(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// A value for an attribute of a DN (RFC 4514): `,` `+` `"` `\` `<` `>` `;` `=` are escaped
/// with a backslash, a leading space or `#` and a trailing space too, and NUL and other
/// control characters as `\XX`, so the value cannot end its RDN or start another.
pub fn dn_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 2);
    let last = raw.chars().count().saturating_sub(1);
    for (i, c) in raw.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            c if c.is_control() => push_hex(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// Writes `c` as `\XX` per UTF-8 byte.
fn push_hex(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        let _ = write!(out, "\\{b:02x}");
    }
}

/// One relative distinguished name: its attribute type (lower case) and its value (unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rdn {
    pub attr: String,
    pub value: String,
}

/// A DN as the directory sent it, read into its RDNs (RFC 4514: backslash escapes, `\XX`
/// hex pairs, quoted values; a multi-valued RDN keeps only its first part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dn(pub Vec<Rdn>);

impl Dn {
    /// Reads a DN; `None` when it is not one.
    pub fn parse(raw: &str) -> Option<Dn> {
        let mut rdns = Vec::new();
        let mut chars = raw.chars().peekable();
        if raw.trim().is_empty() {
            return Some(Dn(rdns));
        }
        loop {
            let mut attr = String::new();
            let mut equals = false;
            for c in chars.by_ref() {
                if c == '=' {
                    equals = true;
                    break;
                }
                attr.push(c);
            }
            let attr = attr.trim().to_ascii_lowercase();
            if attr.is_empty() || !equals {
                return None;
            }
            let mut value = Vec::<u8>::new();
            let mut quoted = false;
            let mut skipping = false; // past a '+' of a multi-valued RDN
            while chars.peek() == Some(&' ') && value.is_empty() {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                quoted = true;
            }
            let mut ended = false;
            // Unescaped trailing spaces are not part of the value; escaped ones are.
            let mut keep = 0;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        let a = chars.next()?;
                        if a.is_ascii_hexdigit() && chars.peek().is_some_and(char::is_ascii_hexdigit) {
                            let b = chars.next()?;
                            let byte = u8::from_str_radix(&format!("{a}{b}"), 16).ok()?;
                            if !skipping {
                                value.push(byte);
                            }
                        } else if !skipping {
                            let mut buf = [0u8; 4];
                            value.extend_from_slice(a.encode_utf8(&mut buf).as_bytes());
                        }
                        keep = value.len();
                    }
                    '"' if quoted => {
                        quoted = false;
                        keep = value.len();
                    }
                    ',' | ';' if !quoted => {
                        ended = true;
                        break;
                    }
                    '+' if !quoted => skipping = true,
                    c if !skipping => {
                        let mut buf = [0u8; 4];
                        value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        if c != ' ' || quoted {
                            keep = value.len();
                        }
                    }
                    _ => {}
                }
            }
            value.truncate(keep);
            let value = String::from_utf8(value).ok()?;
            rdns.push(Rdn { attr, value });
            if !ended {
                return Some(Dn(rdns));
            }
        }
    }

    /// The value of the first RDN (a group's `cn`, say).
    pub fn first_value(&self) -> Option<&str> {
        self.0.first().map(|r| r.value.as_str())
    }

    /// The DN written back, escaped, in lower case and without spaces between RDNs: two
    /// spellings of one DN give the same string.
    pub fn normalised(&self) -> String {
        let parts: Vec<String> =
            self.0.iter().map(|r| format!("{}={}", r.attr, dn_value(&r.value.to_lowercase()))).collect();
        parts.join(",")
    }
}

/// A DN in its normalised form when it reads as one, else the text in lower case.
pub fn normalise_dn(raw: &str) -> String {
    Dn::parse(raw).map_or_else(|| raw.trim().to_lowercase(), |d| d.normalised())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn filter_values_cannot_change_a_filter() {
        assert_eq!(filter_value("alice"), "alice");
        assert_eq!(filter_value("*"), "\\2a");
        assert_eq!(filter_value(")(uid=*"), "\\29\\28uid=\\2a");
        assert_eq!(filter_value("a\\b"), "a\\5cb");
        assert_eq!(filter_value("a\0b"), "a\\00b");
        assert_eq!(filter_value("a\nb"), "a\\0ab");
        assert_eq!(filter_value("zoë"), "zoë", "UTF-8 is sent as it is (RFC 4515 allows it)");
    }

    #[test]
    fn dn_values_cannot_end_their_rdn() {
        assert_eq!(dn_value("alice"), "alice");
        assert_eq!(dn_value("alice,ou=staff"), "alice\\,ou\\=staff");
        assert_eq!(dn_value("a+b"), "a\\+b");
        assert_eq!(dn_value(" lead"), "\\ lead");
        assert_eq!(dn_value("trail "), "trail\\ ");
        assert_eq!(dn_value("#hash"), "\\#hash");
        assert_eq!(dn_value("in#side"), "in#side");
        assert_eq!(dn_value("a\0b"), "a\\00b");
        assert_eq!(dn_value("q\"<>;\\"), "q\\\"\\<\\>\\;\\\\");
    }

    #[test]
    fn dns_are_read_and_normalised() {
        let dn = Dn::parse("CN=Lab Admins, OU=Groups,DC=lab,DC=example").unwrap();
        assert_eq!(dn.first_value(), Some("Lab Admins"));
        assert_eq!(dn.normalised(), "cn=lab admins,ou=groups,dc=lab,dc=example");
        let escaped = Dn::parse("cn=a\\,b,ou=x").unwrap();
        assert_eq!(escaped.first_value(), Some("a,b"));
        assert_eq!(escaped.0.len(), 2);
        let hex = Dn::parse("cn=caf\\C3\\A9,o=x").unwrap();
        assert_eq!(hex.first_value(), Some("café"));
        let quoted = Dn::parse("cn=\"a, b\",o=x").unwrap();
        assert_eq!(quoted.first_value(), Some("a, b"));
        let multi = Dn::parse("cn=a+uid=b,o=x").unwrap();
        assert_eq!(multi.first_value(), Some("a"));
        assert_eq!(normalise_dn("UID=Alice,DC=Lab"), normalise_dn("uid=alice, dc=lab"));
        assert!(Dn::parse("no equals sign").is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(4515), ..ProptestConfig::default() })]

        /// Whatever a person types, the escaped filter value holds none of the characters that
        /// structure a filter, and reads back to exactly what was typed.
        #[test]
        fn a_filter_value_holds_no_filter_syntax(raw in "\\PC*|[*()\\\\\\x00a-z,=]*") {
            let escaped = filter_value(&raw);
            prop_assert!(!escaped.contains(['*', '(', ')', '\0']));
            prop_assert_eq!(unescape_filter(&escaped), raw);
        }

        /// An escaped DN value placed in a DN reads back as one RDN holding exactly that value.
        #[test]
        fn a_dn_value_stays_one_rdn(raw in "\\PC*|[ #,+=\"\\\\<>;\\x00a-z]*") {
            let dn = format!("uid={},ou=people,dc=lab", dn_value(&raw));
            let parsed = Dn::parse(&dn).expect("a DN");
            prop_assert_eq!(parsed.0.len(), 3);
            prop_assert_eq!(parsed.first_value(), Some(raw.as_str()));
        }
    }

    /// Reads `\XX` escapes back (the test's oracle).
    fn unescape_filter(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
}
