//! Reading shares: an owner's, those reaching a user, a group's, and single ones.

use labhub_core::{GroupId, GroupName, ServerName, UserName};
use labhub_db::shares::{self, Grantee, ShareFilter};
use labhub_db::{groups, servers, users};

use super::{OwnerServers, ShareView, ShareWith, Shares, label, no_server, page, view};
use crate::ServiceError;
use crate::access::Actor;

impl Shares<'_> {
    /// One page of the shares of `owner`'s servers (the owner, admins, leads of their groups).
    pub async fn of_owner(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        which: OwnerServers<'_>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ShareView>, i64), ServiceError> {
        let owner_row = self.hub.user_row(owner).await?;
        self.authority(actor, &owner_row).await?;
        let server = match which {
            OwnerServers::All => None,
            OwnerServers::One(server) => {
                match servers::get(self.hub.db(), owner_row.user_id, server.map_or("", ServerName::as_str)).await? {
                    Some(row) => Some(row.server_id),
                    None if server.is_none() => return Ok((Vec::new(), 0)),
                    None => return Err(no_server(owner, server)),
                }
            }
        };
        let filter = ShareFilter::Owner { owner: owner_row.user_id, server };
        page(shares::list(self.hub.db(), filter, offset, limit).await?)
    }

    /// One page of the shares that reach `user`, directly or through their groups (the user
    /// and admins).
    pub async fn reaching(
        &self,
        actor: Actor<'_>,
        user: &UserName,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ShareView>, i64), ServiceError> {
        let row = self.hub.user_row(user).await?;
        actor.require_self_or_admin(row.user_id)?;
        page(shares::list(self.hub.db(), ShareFilter::Reaching(row.user_id), offset, limit).await?)
    }

    /// One page of the shares granted to a group (its members and admins).
    pub async fn of_group(
        &self,
        actor: Actor<'_>,
        group: &GroupName,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ShareView>, i64), ServiceError> {
        let g = self.group_seen_by(actor, group).await?;
        page(shares::list(self.hub.db(), ShareFilter::Group(g), offset, limit).await?)
    }

    /// The group, if `actor` is in it or an admin; otherwise a refusal that tells nothing.
    async fn group_seen_by(&self, actor: Actor<'_>, group: &GroupName) -> Result<GroupId, ServiceError> {
        let nobody = || ServiceError::NotFound(format!("no group named {group}"));
        let g = groups::by_name(self.hub.db(), group).await?.ok_or_else(nobody)?;
        if let Actor::Service(_) = actor {
            return Err(nobody());
        }
        if let Actor::User(p) = actor
            && !p.admin
            && groups::role_of(self.hub.db(), g.group_id, p.user_id).await?.is_none()
        {
            return Err(nobody());
        }
        Ok(g.group_id)
    }

    /// The direct share of `owner`'s server with `user` (the user and admins).
    pub async fn of_user_on(
        &self,
        actor: Actor<'_>,
        user: &UserName,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<ShareView, ServiceError> {
        let row = self.hub.user_row(user).await?;
        actor.require_self_or_admin(row.user_id)?;
        let share = self.find(Grantee::User(row.user_id), &ShareWith::User(user.clone()), owner, server).await?;
        view(share)
    }

    /// The share of `owner`'s server with `group` (its members and admins).
    pub async fn of_group_on(
        &self,
        actor: Actor<'_>,
        group: &GroupName,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<ShareView, ServiceError> {
        let g = self.group_seen_by(actor, group).await?;
        let share = self.find(Grantee::Group(g), &ShareWith::Group(group.clone()), owner, server).await?;
        view(share)
    }

    /// The share of `owner`'s server with one grantee; `NotFound` in JupyterHub's words.
    pub(super) async fn find(
        &self,
        grantee: Grantee,
        with: &ShareWith,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<shares::Share, ServiceError> {
        let none = || {
            let (kind, name) = match with {
                ShareWith::User(u) => ("user", u.to_string()),
                ShareWith::Group(g) => ("group", g.to_string()),
            };
            ServiceError::NotFound(format!("No such share for {kind} {name} on {}", label(owner, server)))
        };
        let owner_row = users::by_name(self.hub.db(), owner).await?.ok_or_else(none)?;
        let server_row = servers::get(self.hub.db(), owner_row.user_id, server.map_or("", ServerName::as_str))
            .await?
            .ok_or_else(none)?;
        shares::find(self.hub.db(), server_row.server_id, grantee).await?.ok_or_else(none)
    }
}
