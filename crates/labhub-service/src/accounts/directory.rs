//! Password sign-in through the directory (`[auth.ldap]`): the directory checks the password,
//! then the one sign-in policy decides as for an identity provider's identity (name rule,
//! allow lists, admin groups, approval, audit), and with `sync_groups` the person's directory
//! groups become their labhub groups.

use std::collections::HashSet;

use labhub_auth::ldap::{Directory, DirectoryGroup, DirectoryPerson, LDAP_ID, LdapError};
use labhub_core::{GroupName, Secret, UserId};
use serde_json::json;

use super::admission::{Admission, Checked};
use super::{Accounts, SignIn, Source};
use crate::ServiceError;
use crate::access::Actor;
use crate::hub::HubTx;

impl Accounts<'_> {
    /// The directory's verdict on a name and password. A refusal of the credentials is
    /// `Checked::Wrong` (a guess, counted); a directory that cannot be asked is an error (not
    /// counted), logged and counted in the metrics, and worded for the sign-in page.
    pub(super) async fn check_directory_password(
        &self,
        raw_name: &str,
        password: &Secret<String>,
    ) -> Result<Checked, ServiceError> {
        let Some(directory) = &self.state().directory else {
            return Err(ServiceError::Internal("password_login uses the directory, but [auth.ldap] is not set".into()));
        };
        match directory.authenticate(raw_name, password).await {
            Ok(person) => Ok(Checked::Directory(person)),
            Err(e) if e.is_outage() => {
                metrics::counter!("labhub_ldap_errors_total", "kind" => e.kind()).increment(1);
                tracing::error!(error = %e, kind = e.kind(), "the directory could not check a password");
                let local = if self.state().settings.password_login.local() {
                    " Accounts local to this hub can still sign in."
                } else {
                    ""
                };
                Err(ServiceError::Unavailable(format!(
                    "The directory ({}) cannot be reached right now, so its accounts cannot sign in. Try again in a few minutes.{local}",
                    directory.display_name()
                )))
            }
            Err(e) => {
                if matches!(e, LdapError::Ambiguous { .. } | LdapError::Refused { .. }) {
                    tracing::warn!(error = %e, "the directory refused a sign-in");
                }
                Ok(Checked::Wrong)
            }
        }
    }

    /// The sign-in policy for a person the directory vouched for: their name and groups must
    /// pass the lists, their identity finds (or makes) the account, admin rights follow
    /// `admin_groups`, and with `sync_groups` their groups follow the directory — all in one
    /// transaction, so a refusal leaves nothing behind.
    pub(super) async fn admit_directory_person(&self, person: &DirectoryPerson) -> Result<Admission, ServiceError> {
        let directory = self
            .state()
            .directory
            .as_ref()
            .ok_or_else(|| ServiceError::Internal("a directory sign-in without [auth.ldap]".into()))?;
        let source = Source { id: LDAP_ID, display_name: directory.display_name(), rules: directory.rules() };
        let identity = person.identity();
        let (name, in_admin_group) = self.check_identity(source, &identity)?;
        let mut tx = self.hub.begin().await?;
        let user = self.account_for_identity(&mut tx, source, &identity, &name).await?;
        let user_id = user.user_id;
        let admission = self.admit(&mut tx, SignIn::Provider { user, provider: LDAP_ID, in_admin_group }).await?;
        if directory.syncs_groups() {
            self.sync_directory_groups(&mut tx, directory, user_id, &name, &person.groups).await?;
        }
        tx.commit().await?;
        Ok(admission)
    }

    /// Makes the groups the directory gave a user the groups it names now: each named group
    /// (created if missing, with the site default quota) gets them as a member unless they
    /// are in it already, and the groups it gave before and names no more are taken away.
    /// Memberships given by an admin or a lead are never touched. A directory group whose
    /// name cannot be a labhub group name is left out, with a warning.
    async fn sync_directory_groups(
        &self,
        tx: &mut HubTx<'_>,
        directory: &Directory,
        user_id: UserId,
        user: &labhub_core::UserName,
        groups: &[DirectoryGroup],
    ) -> Result<(), ServiceError> {
        let now = self.hub.now();
        let audit = self.hub.audit();
        let mut named = HashSet::new();
        for g in groups {
            let Ok(name) = GroupName::parse(&g.name.to_lowercase()) else {
                tracing::warn!(group = %g.name, directory = %directory.display_name(), "a directory group's name is not a valid group name; not synced");
                continue;
            };
            if !named.insert(name.clone()) {
                continue;
            }
            let (group, created) = labhub_db::directory::ensure_group(tx, &name, now).await?;
            if created {
                let detail = json!({ "after": { "name": name }, "source": LDAP_ID });
                audit.record(&mut **tx, Actor::System, "group.create", name.as_str(), detail).await?;
            }
            if labhub_db::directory::give(&mut **tx, group.group_id, user_id, now).await? {
                let detail = json!({ "user": user, "before": null, "after": "member", "source": LDAP_ID });
                audit.record(&mut **tx, Actor::System, "group.add_member", name.as_str(), detail).await?;
            }
        }
        for (group_id, group_name) in labhub_db::directory::groups_given(&mut **tx, user_id).await? {
            let still = GroupName::parse(&group_name).is_ok_and(|n| named.contains(&n));
            if !still && labhub_db::directory::take_back(&mut **tx, group_id, user_id).await? {
                let detail = json!({ "user": user, "source": LDAP_ID });
                audit.record(&mut **tx, Actor::System, "group.remove_member", &group_name, detail).await?;
            }
        }
        Ok(())
    }
}
