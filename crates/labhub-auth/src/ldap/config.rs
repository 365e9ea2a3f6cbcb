//! `[auth.ldap]` as the operator writes it, and the checks serde cannot make.

use std::path::PathBuf;
use std::time::Duration;

use labhub_core::{Secret, UserName};
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use crate::oidc::ConfigProblem;

/// How the connection to the directory is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LdapTls {
    /// `ldap://`, upgraded with StartTLS before anything is sent.
    Starttls,
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
    /// No TLS: passwords cross the network in the clear. Loopback only, unless
    /// `allow_plaintext = true`.
    None,
}

/// The placeholder for the name the person typed (escaped for where it goes).
pub const USERNAME: &str = "{username}";
/// The placeholder for the person's DN in `group_filter` (escaped for a filter).
pub const DN: &str = "{dn}";

/// `[auth.ldap]`: signing in with an LDAP directory or Active Directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// The directory: `ldap://host[:port]` or `ldaps://host[:port]`; several are tried in
    /// turn when one cannot be reached.
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<Url>,
    /// `starttls`, `ldaps` or `none`; by default `ldaps` for `ldaps://` URLs, else `starttls`.
    #[serde(default)]
    pub tls: Option<LdapTls>,
    /// Lets `tls = "none"` reach a directory that is not on this machine.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// PEM file of the CA(s) that sign the directory's certificate; unset: the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// DNs to bind as, each with `{username}` (tried in turn): the person binds directly.
    #[serde(default, deserialize_with = "one_or_many")]
    pub bind_dn_template: Vec<String>,
    /// The service account that searches for people (search-then-bind) and their groups.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// The service account's password.
    #[serde(default)]
    pub bind_password: Option<Secret<String>>,
    /// A file holding the service account's password (its first line).
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Where people are searched for.
    #[serde(default)]
    pub search_base: Option<String>,
    /// The filter that finds one person; `{username}` is the typed name. Default:
    /// `(<username_attribute>={username})`.
    #[serde(default)]
    pub search_filter: Option<String>,
    /// The attribute that holds the person's login name (`uid`, `sAMAccountName`); its value
    /// becomes the account name.
    #[serde(default = "default_username_attribute")]
    pub username_attribute: String,
    /// Accounts allowed (with `allowed_groups`: either suffices; both empty: anyone the
    /// directory knows).
    #[serde(default)]
    pub allowed_users: Vec<UserName>,
    /// Groups whose members may sign in: names (`cn`) or full DNs.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Groups whose members are admins, checked at every sign-in.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Where groups are searched for; unset: the person's `memberOf` attribute.
    #[serde(default)]
    pub group_search_base: Option<String>,
    /// The filter finding a person's groups, with `{dn}` and `{username}`. Default:
    /// `(|(member={dn})(uniqueMember={dn})(memberUid={username}))`, or with
    /// `nested_groups` Active Directory's transitive `(member:1.2.840.113556.1.4.1941:={dn})`.
    #[serde(default)]
    pub group_filter: Option<String>,
    /// The attribute naming a group (`cn`).
    #[serde(default = "default_group_name_attribute")]
    pub group_name_attribute: String,
    /// The attribute listing a person's groups when there is no group search.
    #[serde(default = "default_member_of_attribute")]
    pub member_of_attribute: String,
    /// Active Directory: groups inside groups count (LDAP_MATCHING_RULE_IN_CHAIN).
    #[serde(default)]
    pub nested_groups: bool,
    /// Directory groups become labhub groups at each sign-in (memberships the directory gave
    /// are taken away when it no longer does; others are left alone).
    #[serde(default)]
    pub sync_groups: bool,
    /// Create an account at a person's first sign-in (pending when `signup = "approval"`).
    #[serde(default = "yes")]
    pub auto_create: bool,
    /// How the sign-in page and messages name the directory (default `LDAP`).
    #[serde(default)]
    pub display_name: Option<String>,
    /// How long connecting, and each operation, may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_username_attribute() -> String {
    "uid".into()
}

fn default_group_name_attribute() -> String {
    "cn".into()
}

fn default_member_of_attribute() -> String {
    "memberOf".into()
}

fn yes() -> bool {
    true
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A list written as one value or as a list (`url = "ldaps://…"` or `url = ["…", "…"]`).
fn one_or_many<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(v) => v,
    })
}

fn problem(key: &'static str, why: impl Into<String>) -> Result<(), ConfigProblem> {
    Err(ConfigProblem { key, why: why.into() })
}

/// Whether a URL's host is this machine (`ldap:` is not a scheme the URL parser knows, so
/// an address arrives as text).
fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `attr` can be an attribute description (letters, digits, `-`, `;`, or an OID).
fn is_attribute(attr: &str) -> bool {
    !attr.is_empty() && attr.bytes().all(|b| b.is_ascii_alphanumeric() || b"-;.".contains(&b))
}

impl LdapConfig {
    /// The TLS mode in force.
    pub fn tls_mode(&self) -> LdapTls {
        self.tls.unwrap_or(if self.url.iter().all(|u| u.scheme() == "ldaps") {
            LdapTls::Ldaps
        } else {
            LdapTls::Starttls
        })
    }

    /// The name the sign-in page and messages use for the directory.
    pub fn display_name(&self) -> String {
        self.display_name.as_deref().map(str::trim).unwrap_or("LDAP").to_string()
    }

    /// Whether people are found by a search (else they bind through `bind_dn_template`).
    pub fn searches(&self) -> bool {
        self.bind_dn_template.is_empty()
    }

    /// Whether a plaintext connection is used (and should be warned about).
    pub fn plaintext(&self) -> bool {
        self.tls_mode() == LdapTls::None
    }

    /// Checks what serde cannot: URL schemes that fit `tls`, plaintext only on loopback, one
    /// way of finding people, placeholders where they are needed, a sane timeout.
    pub fn check(&self) -> Result<(), ConfigProblem> {
        if self.url.is_empty() {
            return problem("url", "must name at least one ldap:// or ldaps:// URL");
        }
        for u in &self.url {
            if !matches!(u.scheme(), "ldap" | "ldaps") || u.host_str().is_none_or(str::is_empty) {
                return problem("url", format!("'{u}' is not an ldap:// or ldaps:// URL with a host"));
            }
            if !matches!(u.path(), "" | "/") || u.query().is_some() {
                return problem(
                    "url",
                    format!("'{u}' has a path or query; write the base and filter as their own keys"),
                );
            }
        }
        let mode = self.tls_mode();
        let want = if mode == LdapTls::Ldaps { "ldaps" } else { "ldap" };
        if let Some(u) = self.url.iter().find(|u| u.scheme() != want) {
            return problem("url", format!("'{u}' does not fit tls = \"{}\": use {want}:// URLs", tls_word(mode)));
        }
        if mode == LdapTls::None && !self.allow_plaintext && !self.url.iter().all(is_loopback) {
            return problem(
                "tls",
                "is \"none\" for a directory that is not on this machine: passwords would cross the network in the clear (use starttls or ldaps, or set allow_plaintext = true)",
            );
        }
        if mode == LdapTls::None && self.ca_file.is_some() {
            return problem("ca_file", "is for starttls or ldaps, not tls = \"none\"");
        }
        if self.bind_password.is_some() && self.bind_password_file.is_some() {
            return problem("bind_password_file", "and bind_password are two ways to give one password: keep one");
        }
        if self.bind_dn.is_none() && (self.bind_password.is_some() || self.bind_password_file.is_some()) {
            return problem("bind_dn", "is needed with bind_password (the service account's DN)");
        }
        if self.bind_dn.as_deref().is_some_and(|d| d.trim().is_empty()) {
            return problem("bind_dn", "must not be empty (leave it out to bind as people only)");
        }
        if self.bind_dn.is_some() && self.bind_password.is_none() && self.bind_password_file.is_none() {
            return problem("bind_password", "is needed with bind_dn (or bind_password_file)");
        }
        if self.bind_password.as_ref().is_some_and(|p| p.expose().is_empty()) {
            return problem("bind_password", "must not be empty: an empty password is an anonymous bind");
        }
        if self.searches() {
            if self.bind_dn.is_none() {
                return problem(
                    "bind_dn_template",
                    "or bind_dn is needed: either people bind with a DN template, or a service account searches for them",
                );
            }
            if self.search_base.as_deref().is_none_or(|b| b.trim().is_empty()) {
                return problem("search_base", "is needed to search for people (search-then-bind)");
            }
        } else if let Some(t) = self.bind_dn_template.iter().find(|t| !t.contains(USERNAME)) {
            return problem("bind_dn_template", format!("'{t}' has no {USERNAME}"));
        }
        if let Some(f) = &self.search_filter
            && (!f.contains(USERNAME) || !f.trim().starts_with('('))
        {
            return problem("search_filter", format!("must be a filter in parentheses with {USERNAME}"));
        }
        if let Some(f) = &self.group_filter
            && (!(f.contains(DN) || f.contains(USERNAME)) || !f.trim().starts_with('('))
        {
            return problem("group_filter", format!("must be a filter in parentheses with {DN} or {USERNAME}"));
        }
        if self.group_filter.is_some() && self.group_search_base.is_none() {
            return problem("group_filter", "needs group_search_base");
        }
        if self.nested_groups && self.group_search_base.is_none() {
            return problem("nested_groups", "needs group_search_base (Active Directory: the domain's base DN)");
        }
        for (key, attr) in [
            ("username_attribute", &self.username_attribute),
            ("group_name_attribute", &self.group_name_attribute),
            ("member_of_attribute", &self.member_of_attribute),
        ] {
            if !is_attribute(attr) {
                return problem(key, "must be an attribute name");
            }
        }
        for (key, groups) in [("allowed_groups", &self.allowed_groups), ("admin_groups", &self.admin_groups)] {
            if groups.iter().any(|g| g.trim().is_empty()) {
                return problem(key, "must not contain empty names");
            }
        }
        if self.display_name.as_ref().is_some_and(|d| d.trim().is_empty() || d.chars().count() > 60) {
            return problem("display_name", "must be 1–60 characters");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(120)).contains(&self.timeout) {
            return problem("timeout", "must be between 1s and 2m");
        }
        Ok(())
    }
}

/// The configuration word for a TLS mode.
pub fn tls_word(mode: LdapTls) -> &'static str {
    match mode {
        LdapTls::Starttls => "starttls",
        LdapTls::Ldaps => "ldaps",
        LdapTls::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<LdapConfig, String> {
        toml::from_str::<LdapConfig>(extra).map_err(|e| e.to_string())
    }

    fn checked(extra: &str) -> Result<LdapConfig, String> {
        let c = config(extra)?;
        c.check().map_err(|p| format!("{}: {}", p.key, p.why))?;
        Ok(c)
    }

    #[test]
    fn a_template_or_a_search_finds_people() {
        let c = checked("url = \"ldaps://dir.example.org\"\nbind_dn_template = \"uid={username},ou=people,dc=x\"\n")
            .unwrap();
        assert_eq!(c.tls_mode(), LdapTls::Ldaps);
        assert!(!c.searches());
        let c = checked(
            "url = [\"ldap://a.example.org\", \"ldap://b.example.org:3389\"]\nbind_dn = \"cn=svc,dc=x\"\nbind_password = \"pw\"\nsearch_base = \"dc=x\"\n",
        )
        .unwrap();
        assert_eq!(c.tls_mode(), LdapTls::Starttls);
        assert_eq!(c.url.len(), 2);
        let e = checked("url = \"ldap://a.example.org\"\n").unwrap_err();
        assert!(e.starts_with("bind_dn_template"), "{e}");
        let e = checked("url = \"ldap://a\"\nbind_dn_template = \"uid=alice,dc=x\"\n").unwrap_err();
        assert!(e.contains("has no {username}"), "{e}");
        let e = checked("url = \"ldap://a\"\nbind_dn = \"cn=svc\"\nbind_password = \"\"\nsearch_base = \"dc=x\"\n")
            .unwrap_err();
        assert!(e.contains("anonymous bind"), "{e}");
    }

    #[test]
    fn plaintext_is_refused_off_this_machine() {
        let t = "bind_dn_template = \"uid={username},dc=x\"\ntls = \"none\"\n";
        checked(&format!("url = \"ldap://127.0.0.1:3389\"\n{t}")).unwrap();
        checked(&format!("url = \"ldap://localhost\"\n{t}")).unwrap();
        let e = checked(&format!("url = \"ldap://dir.example.org\"\n{t}")).unwrap_err();
        assert!(e.starts_with("tls:") && e.contains("in the clear"), "{e}");
        checked(&format!("url = \"ldap://dir.example.org\"\n{t}allow_plaintext = true\n")).unwrap();
        let e = checked(&format!("url = \"ldaps://dir.example.org\"\n{t}")).unwrap_err();
        assert!(e.starts_with("url:"), "{e}");
        let e = checked("url = \"ldap://dir.example.org\"\ntls = \"ldaps\"\nbind_dn_template = \"uid={username}\"\n")
            .unwrap_err();
        assert!(e.contains("use ldaps:// URLs"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_filters_are_named() {
        let e = config("url = \"ldap://a\"\nbind_dn_templat = \"x\"\n").unwrap_err();
        assert!(e.contains("bind_dn_templat"), "{e}");
        let base = "url = \"ldap://a\"\nbind_dn_template = \"uid={username},dc=x\"\n";
        let e = checked(&format!("{base}group_filter = \"(member=x)\"\ngroup_search_base = \"dc=x\"\n")).unwrap_err();
        assert!(e.starts_with("group_filter"), "{e}");
        let e = checked(&format!("{base}nested_groups = true\n")).unwrap_err();
        assert!(e.starts_with("nested_groups"), "{e}");
        let e = checked(&format!("{base}timeout = \"0s\"\n")).unwrap_err();
        assert!(e.starts_with("timeout"), "{e}");
    }

    #[test]
    fn the_service_password_is_never_printed() {
        let c =
            config("url = \"ldap://a\"\nbind_dn = \"cn=svc\"\nbind_password = \"hunter2\"\nsearch_base = \"dc=x\"\n")
                .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!toml::to_string(&c).unwrap().contains("hunter2"));
    }
}
