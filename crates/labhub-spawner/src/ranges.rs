//! The IPv4 ranges users' servers are kept from, and the private ranges a site allows again
//! (`allow_private`).
//!
//! Link-local addresses are where clouds serve a machine's credentials (169.254.169.254), so
//! they are refused always. The private ranges — RFC 1918 and carrier-grade NAT, where a
//! site's own machines live — are refused unless a range inside them is allowed. IPv6 needs no
//! list: the users' network has none (see `network`).

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// An IPv4 range: a network address and the length of its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Net {
    addr: u32,
    prefix: u8,
}

impl Net {
    const fn new(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self { addr: u32::from_be_bytes([a, b, c, d]), prefix }
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
    }

    /// Whether every address of `other` is in this range.
    fn contains(&self, other: &Net) -> bool {
        other.prefix >= self.prefix && other.addr & Self::mask(self.prefix) == self.addr
    }

    fn overlaps(&self, other: &Net) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.prefix)
    }
}

/// Link-local addresses, the cloud metadata service among them: refused always.
pub(crate) const LINK_LOCAL: Net = Net::new(169, 254, 0, 0, 16);

/// The private ranges (RFC 1918, then carrier-grade NAT): refused unless allowed.
pub(crate) const PRIVATE: [Net; 4] =
    [Net::new(10, 0, 0, 0, 8), Net::new(172, 16, 0, 0, 12), Net::new(192, 168, 0, 0, 16), Net::new(100, 64, 0, 0, 10)];

/// An entry of `allow_private` that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PrivateRangeError(String);

/// A range inside the private ranges that servers may reach all the same, e.g. `10.1.2.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PrivateRange(Net);

impl PrivateRange {
    /// Validates a range written as `address/prefix`.
    pub fn parse(raw: &str) -> Result<Self, PrivateRangeError> {
        let bad = |why: String| Err(PrivateRangeError(format!("'{raw}' {why}")));
        let Some((addr, prefix)) = raw.split_once('/') else {
            return bad("is not a range: write it as address/prefix, e.g. 10.1.2.0/24".into());
        };
        if addr.parse::<std::net::Ipv6Addr>().is_ok() {
            return bad("is an IPv6 range: the users' network is IPv4 only, so there is nothing to allow".into());
        }
        let (Ok(addr), Ok(prefix)) = (addr.parse::<Ipv4Addr>(), prefix.parse::<u8>()) else {
            return bad("is not a range: write it as address/prefix, e.g. 10.1.2.0/24".into());
        };
        if prefix > 32 {
            return bad("has a prefix longer than 32 bits".into());
        }
        let net = Net { addr: u32::from(addr) & Net::mask(prefix), prefix };
        if net.addr != u32::from(addr) {
            return bad(format!("has bits set after its /{prefix} prefix: did you mean {net}?"));
        }
        if net.overlaps(&LINK_LOCAL) {
            return bad(format!(
                "includes link-local addresses ({LINK_LOCAL}, where clouds serve a machine's credentials), \
                 which servers may never reach"
            ));
        }
        if !PRIVATE.iter().any(|p| p.contains(&net)) {
            let all = PRIVATE.iter().map(Net::to_string).collect::<Vec<_>>().join(", ");
            return bad(format!(
                "is not inside one of the private ranges servers are kept from ({all}); \
                 servers reach other addresses without it"
            ));
        }
        Ok(Self(net))
    }

    /// The range.
    pub(crate) fn net(&self) -> Net {
        self.0
    }
}

impl fmt::Display for PrivateRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for PrivateRange {
    type Error = PrivateRangeError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(raw.trim())
    }
}

impl From<PrivateRange> for String {
    fn from(r: PrivateRange) -> Self {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_accepted_in_network_form() {
        for good in ["10.1.2.0/24", "172.16.0.0/12", "192.168.7.9/32", "100.64.0.0/10", "10.0.0.0/8"] {
            assert_eq!(PrivateRange::parse(good).unwrap().to_string(), good);
        }
    }

    #[test]
    fn every_other_range_says_why_not() {
        let why = |raw: &str| PrivateRange::parse(raw).unwrap_err().to_string();
        assert!(why("10.1.2.3/24").contains("did you mean 10.1.2.0/24?"), "{}", why("10.1.2.3/24"));
        assert!(why("169.254.169.254/32").contains("never reach"));
        assert!(why("0.0.0.0/0").contains("link-local"), "a range around link-local is link-local too");
        assert!(why("8.8.8.0/24").contains("not inside one of the private ranges"));
        assert!(why("172.0.0.0/8").contains("not inside"), "wider than 172.16.0.0/12");
        assert!(why("fd00::/8").contains("IPv6"));
        for syntax in ["10.1.2.0", "10.1.2.0/33", "10.1.2/24", "ten/8", "/8", ""] {
            assert!(PrivateRange::parse(syntax).is_err(), "{syntax}");
        }
    }

    #[test]
    fn ranges_read_and_write_as_strings() {
        let r: Vec<PrivateRange> = serde_json::from_str(r#"["10.1.2.0/24", " 192.168.0.0/16 "]"#).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"["10.1.2.0/24","192.168.0.0/16"]"#);
        let e = serde_json::from_str::<PrivateRange>(r#""8.8.8.8/32""#).unwrap_err().to_string();
        assert!(e.contains("'8.8.8.8/32' is not inside"), "{e}");
    }
}
