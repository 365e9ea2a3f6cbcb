//! The directory as the hub uses it: checking a person's password (by a bind DN template or
//! by search-then-bind), reading who they are and which groups they are in.

use std::path::Path;
use std::sync::Arc;

use labhub_core::{Secret, UserName};
use ldap3::{Scope, SearchEntry};

use super::LdapError;
use super::config::{DN, LdapConfig, LdapTls, USERNAME};
use super::escape::{Dn, dn_value, filter_value, normalise_dn};
use super::session::{Bound, Reach, Session, tls_config};
use crate::oidc::{AccessRules, ExternalIdentity};

/// Active Directory's "in chain" matching rule: membership through nested groups.
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";
/// The longest name a person may type (a directory login is far shorter).
const MAX_NAME: usize = 256;

/// A group a person is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryGroup {
    /// The group's name (its `group_name_attribute`, or its DN's first value), as the directory spells it.
    pub name: String,
    /// The group's DN, normalised.
    pub dn: String,
}

/// A person as the directory knows them.
#[derive(Debug, Clone)]
pub struct DirectoryPerson {
    /// Their entry's DN.
    pub dn: String,
    /// A stable id: `entryUUID` (OpenLDAP), `objectGUID` (Active Directory), else the DN.
    pub subject: String,
    /// Their login name from `username_attribute` (else what they typed).
    pub username: String,
    /// Their groups.
    pub groups: Vec<DirectoryGroup>,
}

impl DirectoryPerson {
    /// The person as the sign-in policy sees every identity: groups by name and by DN, in
    /// lower case, as `allowed_groups` and `admin_groups` are compared.
    pub fn identity(&self) -> ExternalIdentity {
        let mut groups = Vec::new();
        for g in &self.groups {
            groups.push(g.name.to_lowercase());
            groups.push(g.dn.clone());
        }
        ExternalIdentity { subject: self.subject.clone(), username: self.username.clone(), email: None, groups }
    }
}

/// One step of checking the configuration, as `labhub ldap test` reports it.
#[derive(Debug, Clone)]
pub enum Step {
    /// Connected (and TLS set up) to this URL.
    Connected { url: String, tls: &'static str },
    /// The service account bound.
    ServiceBound { dn: String },
    /// The person's entry was found.
    Found { dn: String, username: String, subject: String },
    /// The person's password was accepted.
    PasswordAccepted,
    /// Their groups were read.
    Groups { names: Vec<String> },
}

/// The configured directory.
pub struct Directory {
    config: LdapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    service_password: Option<Secret<String>>,
    rules: AccessRules,
    display_name: String,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("url", &self.config.url).finish_non_exhaustive()
    }
}

/// A group list entry as it is compared: a DN normalised, a name in lower case.
fn group_key(entry: &str) -> String {
    if entry.contains('=') { normalise_dn(entry) } else { entry.trim().to_lowercase() }
}

/// The first value of an attribute, whatever case the directory spells its name in.
fn attr<'e>(entry: &'e SearchEntry, name: &str) -> Option<&'e str> {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.first()).map(String::as_str)
}

/// Every value of an attribute.
fn attrs<'e>(entry: &'e SearchEntry, name: &str) -> &'e [String] {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map_or(&[], |(_, v)| v.as_slice())
}

/// Active Directory's objectGUID as it is usually written (its first three parts little-endian).
fn guid(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// The stable id of an entry.
fn subject_of(entry: &SearchEntry) -> String {
    if let Some(u) = attr(entry, "entryUUID") {
        return u.to_lowercase();
    }
    let bin = entry.bin_attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case("objectGUID"));
    if let Some(g) = bin.and_then(|(_, v)| v.first()).and_then(|b| guid(b)) {
        return g;
    }
    normalise_dn(&entry.dn)
}

impl Directory {
    /// Sets the directory up from its checked configuration: reads the CA file and the
    /// service account's password file now, so a mistake stops the hub at start.
    pub fn new(config: &LdapConfig) -> Result<Self, LdapError> {
        let tls = match config.tls_mode() {
            LdapTls::None => None,
            _ => Some(tls_config(config.ca_file.as_deref())?),
        };
        let service_password = match (&config.bind_password, &config.bind_password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => Some(read_password_file(path)?),
            (None, None) => None,
        };
        let rules = AccessRules {
            allowed_users: config.allowed_users.clone(),
            allowed_groups: config.allowed_groups.iter().map(|g| group_key(g)).collect(),
            admin_groups: config.admin_groups.iter().map(|g| group_key(g)).collect(),
            auto_create: config.auto_create,
        };
        Ok(Self { config: config.clone(), tls, service_password, rules, display_name: config.display_name() })
    }

    /// How the sign-in page and messages name the directory.
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// Who may sign in, and who is an admin.
    pub fn rules(&self) -> &AccessRules {
        &self.rules
    }

    /// Whether directory groups become labhub groups.
    pub fn syncs_groups(&self) -> bool {
        self.config.sync_groups
    }

    /// Whether finding a person needs their password (templates without a service account).
    pub fn needs_password_to_find(&self) -> bool {
        !self.config.searches() && self.config.bind_dn.is_none()
    }

    fn reach(&self) -> Reach<'_> {
        Reach {
            urls: &self.config.url,
            mode: self.config.tls_mode(),
            tls: self.tls.as_ref(),
            timeout: self.config.timeout,
        }
    }

    /// Checks a person's name and password and says who they are. An empty password, or a
    /// name with control characters, is refused before anything is sent.
    pub async fn authenticate(&self, typed: &str, password: &Secret<String>) -> Result<DirectoryPerson, LdapError> {
        self.run(typed, Some(password), &mut |_| {}).await
    }

    /// Goes through a sign-in step by step without signing anyone in, reporting each step
    /// that succeeded; the error says which one failed. Without a password the person's bind
    /// is left out (and a bind template cannot find them unless a service account is set).
    pub async fn check(
        &self,
        typed: &str,
        password: Option<&Secret<String>>,
        report: &mut (dyn FnMut(Step) + Send),
    ) -> Result<DirectoryPerson, LdapError> {
        self.run(typed, password, report).await
    }

    async fn run(
        &self,
        typed: &str,
        password: Option<&Secret<String>>,
        report: &mut (dyn FnMut(Step) + Send),
    ) -> Result<DirectoryPerson, LdapError> {
        let typed = typed.trim();
        if typed.is_empty() || typed.len() > MAX_NAME || typed.chars().any(char::is_control) {
            return Err(LdapError::BadName);
        }
        if password.is_some_and(|p| p.expose().is_empty()) {
            return Err(LdapError::EmptyPassword);
        }
        if password.is_none() && self.needs_password_to_find() {
            return Err(LdapError::NeedsPassword);
        }
        let mut session = self.reach().connect().await?;
        report(Step::Connected { url: session.url.to_string(), tls: super::config::tls_word(self.config.tls_mode()) });
        let result = self.sign_in(&mut session, typed, password, report).await;
        session.close().await;
        result
    }

    async fn sign_in(
        &self,
        s: &mut Session,
        typed: &str,
        password: Option<&Secret<String>>,
        report: &mut (dyn FnMut(Step) + Send),
    ) -> Result<DirectoryPerson, LdapError> {
        let entry = if self.config.searches() { self.search_person(s, typed, report).await? } else { None };
        let (dn, entry) = match (entry, password) {
            (Some(entry), Some(pw)) => {
                self.bind_person(s, &entry.dn, pw).await?;
                report(Step::PasswordAccepted);
                (entry.dn.clone(), Some(entry))
            }
            (Some(entry), None) => (entry.dn.clone(), Some(entry)),
            (None, Some(pw)) => {
                let dn = self.bind_template(s, typed, pw).await?;
                report(Step::PasswordAccepted);
                (dn.clone(), self.read_entry(s, &dn).await?)
            }
            (None, None) => self.find_by_template(s, typed, report).await?,
        };
        let username = entry.as_ref().and_then(|e| attr(e, &self.config.username_attribute)).unwrap_or(typed);
        let subject = entry.as_ref().map_or_else(|| normalise_dn(&dn), subject_of);
        if entry.is_some() && !self.config.searches() {
            report(Step::Found { dn: dn.clone(), username: username.to_string(), subject: subject.clone() });
        }
        // Groups are read with the service account's rights when there is one.
        if password.is_some() && self.config.bind_dn.is_some() {
            self.bind_service(s, &mut |_| {}).await?;
        }
        let mut groups = self.groups(s, &dn, username, entry.as_ref()).await?;
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        report(Step::Groups { names: groups.iter().map(|g| g.name.clone()).collect() });
        Ok(DirectoryPerson { dn, subject, username: username.to_string(), groups })
    }

    async fn bind_service(&self, s: &mut Session, report: &mut (dyn FnMut(Step) + Send)) -> Result<(), LdapError> {
        let (Some(dn), Some(pw)) = (&self.config.bind_dn, &self.service_password) else {
            return Err(LdapError::Setup("no service account (bind_dn) is configured".into()));
        };
        match s.bind(dn, pw.expose()).await? {
            Bound::Yes => {
                report(Step::ServiceBound { dn: dn.clone() });
                Ok(())
            }
            Bound::No => Err(LdapError::ServiceBind { detail: "invalid credentials".into() }),
            Bound::Refused(rc, text) => Err(LdapError::ServiceBind { detail: format!("result {rc}: {text}") }),
        }
    }

    fn person_attrs(&self) -> Vec<&str> {
        vec![&self.config.username_attribute, &self.config.member_of_attribute, "entryUUID", "objectGUID"]
    }

    /// Search-then-bind's first half: exactly one entry for the typed name.
    async fn search_person(
        &self,
        s: &mut Session,
        typed: &str,
        report: &mut (dyn FnMut(Step) + Send),
    ) -> Result<Option<SearchEntry>, LdapError> {
        self.bind_service(s, report).await?;
        let base = self.config.search_base.as_deref().unwrap_or_default();
        let default = format!("({}={USERNAME})", self.config.username_attribute);
        let filter = self.config.search_filter.as_deref().unwrap_or(&default).replace(USERNAME, &filter_value(typed));
        let mut found = s.search(base, Scope::Subtree, &filter, &self.person_attrs()).await?;
        match found.len() {
            0 => Err(LdapError::BadCredentials),
            1 => {
                let entry = found.remove(0);
                let username = attr(&entry, &self.config.username_attribute).unwrap_or(typed).to_string();
                report(Step::Found { dn: entry.dn.clone(), username, subject: subject_of(&entry) });
                Ok(Some(entry))
            }
            count => Err(LdapError::Ambiguous { count }),
        }
    }

    async fn bind_person(&self, s: &mut Session, dn: &str, password: &Secret<String>) -> Result<(), LdapError> {
        match s.bind(dn, password.expose()).await? {
            Bound::Yes => Ok(()),
            Bound::No => Err(LdapError::BadCredentials),
            Bound::Refused(rc, text) => Err(LdapError::Refused { rc, text }),
        }
    }

    /// Binds with each template in turn; the DN that took the password.
    async fn bind_template(
        &self,
        s: &mut Session,
        typed: &str,
        password: &Secret<String>,
    ) -> Result<String, LdapError> {
        let escaped = dn_value(typed);
        for template in &self.config.bind_dn_template {
            let dn = template.replace(USERNAME, &escaped);
            match s.bind(&dn, password.expose()).await? {
                Bound::Yes => return Ok(dn),
                Bound::No => continue,
                Bound::Refused(rc, text) => return Err(LdapError::Refused { rc, text }),
            }
        }
        Err(LdapError::BadCredentials)
    }

    /// Without the person's password: the first template DN that exists, read with the
    /// service account's rights.
    async fn find_by_template(
        &self,
        s: &mut Session,
        typed: &str,
        report: &mut (dyn FnMut(Step) + Send),
    ) -> Result<(String, Option<SearchEntry>), LdapError> {
        self.bind_service(s, report).await?;
        let escaped = dn_value(typed);
        for template in &self.config.bind_dn_template {
            let dn = template.replace(USERNAME, &escaped);
            if let Some(entry) = self.read_entry(s, &dn).await? {
                return Ok((dn, Some(entry)));
            }
        }
        Err(LdapError::BadCredentials)
    }

    /// One entry by its DN; `None` when it does not exist or cannot be read.
    async fn read_entry(&self, s: &mut Session, dn: &str) -> Result<Option<SearchEntry>, LdapError> {
        match s.search(dn, Scope::Base, "(objectClass=*)", &self.person_attrs()).await {
            Ok(mut entries) if !entries.is_empty() => Ok(Some(entries.remove(0))),
            Ok(_) | Err(LdapError::Search { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The person's groups: a group search when `group_search_base` is set, else the DNs in
    /// their `memberOf`.
    async fn groups(
        &self,
        s: &mut Session,
        dn: &str,
        username: &str,
        entry: Option<&SearchEntry>,
    ) -> Result<Vec<DirectoryGroup>, LdapError> {
        let Some(base) = &self.config.group_search_base else {
            let values = entry.map_or(&[][..], |e| attrs(e, &self.config.member_of_attribute));
            return Ok(values
                .iter()
                .filter_map(|v| {
                    let parsed = Dn::parse(v)?;
                    Some(DirectoryGroup { name: parsed.first_value()?.to_string(), dn: parsed.normalised() })
                })
                .collect());
        };
        let filter = self.group_filter(dn, username);
        let found = s.search(base, Scope::Subtree, &filter, &[self.config.group_name_attribute.as_str()]).await?;
        Ok(found
            .iter()
            .filter_map(|g| {
                let name = attr(g, &self.config.group_name_attribute)
                    .map(str::to_string)
                    .or_else(|| Dn::parse(&g.dn)?.first_value().map(str::to_string))?;
                Some(DirectoryGroup { name, dn: normalise_dn(&g.dn) })
            })
            .collect())
    }

    /// The group search filter with the person's DN and name put in, escaped.
    fn group_filter(&self, dn: &str, username: &str) -> String {
        let template = match (&self.config.group_filter, self.config.nested_groups) {
            (Some(f), _) => f.clone(),
            (None, true) => format!("(member:{IN_CHAIN}:={DN})"),
            (None, false) => format!("(|(member={DN})(uniqueMember={DN})(memberUid={USERNAME}))"),
        };
        template.replace(DN, &filter_value(dn)).replace(USERNAME, &filter_value(username))
    }
}

/// The first line of a password file.
fn read_password_file(path: &Path) -> Result<Secret<String>, LdapError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LdapError::Setup(format!("bind_password_file {}: {e}", path.display())))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(LdapError::Setup(format!("bind_password_file {} is empty", path.display())));
    }
    Ok(Secret::new(line))
}

/// The account name a directory login becomes, if it passes the hub's name rule.
pub fn account_name(person: &DirectoryPerson) -> Option<UserName> {
    UserName::parse(person.username.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory(extra: &str) -> Directory {
        let c: LdapConfig = toml::from_str(&format!(
            "url = \"ldap://127.0.0.1:1\"\ntls = \"none\"\nbind_dn_template = \"uid={{username}},dc=x\"\n{extra}"
        ))
        .unwrap();
        c.check().unwrap();
        Directory::new(&c).unwrap()
    }

    #[test]
    fn group_filters_carry_escaped_values() {
        let d = directory("group_search_base = \"dc=x\"\n");
        assert_eq!(
            d.group_filter("uid=a\\,b,dc=x", "a*"),
            "(|(member=uid=a\\5c,b,dc=x)(uniqueMember=uid=a\\5c,b,dc=x)(memberUid=a\\2a))"
        );
        let ad = directory("group_search_base = \"dc=x\"\nnested_groups = true\n");
        assert_eq!(ad.group_filter("CN=Al (x),DC=x", "al"), "(member:1.2.840.113556.1.4.1941:=CN=Al \\28x\\29,DC=x)");
    }

    #[test]
    fn group_lists_compare_names_without_case_and_dns_normalised() {
        let d = directory("allowed_groups = [\"Lab-Members\", \"CN=Admins, OU=Groups,DC=x\"]\n");
        assert_eq!(d.rules().allowed_groups, ["lab-members", "cn=admins,ou=groups,dc=x"]);
        let person = DirectoryPerson {
            dn: "uid=a,dc=x".into(),
            subject: "s".into(),
            username: "a".into(),
            groups: vec![DirectoryGroup { name: "Admins".into(), dn: normalise_dn("cn=Admins,ou=groups,dc=x") }],
        };
        assert_eq!(person.identity().groups, ["admins", "cn=admins,ou=groups,dc=x"]);
    }

    #[test]
    fn an_active_directory_guid_reads_as_people_write_it() {
        let raw = [0x78, 0x56, 0x34, 0x12, 0x34, 0x12, 0x78, 0x56, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
        assert_eq!(guid(&raw).unwrap(), "12345678-1234-5678-1234-56789abcdef0");
        assert!(guid(&raw[..15]).is_none());
    }

    #[tokio::test]
    async fn empty_passwords_and_control_characters_never_reach_the_directory() {
        // The URL points nowhere: reaching it would be a different error.
        let d = directory("");
        let empty = d.authenticate("alice", &Secret::new(String::new())).await.unwrap_err();
        assert!(matches!(empty, LdapError::EmptyPassword), "{empty:?}");
        let nul = d.authenticate("alice\0", &Secret::new("pw".into())).await.unwrap_err();
        assert!(matches!(nul, LdapError::BadName), "{nul:?}");
        let far = d.authenticate("alice", &Secret::new("pw".into())).await.unwrap_err();
        assert!(far.is_outage(), "{far:?}");
    }
}
