//! Sharing, as JupyterHub 5 has it: an owner lets other users, or every member of a group,
//! reach one of their servers (a share), or hands out a code that any signed-in user may
//! accept for one (`codes.rs`).
//!
//! Who may share: a server's owner and admins, with anyone; a lead of a group the owner is in,
//! with that group only and only `access:servers`/`read:servers`. A non-admin shares only with
//! what they may see: people who are in a group with them and groups they are in.
//!
//! What a share grants is stored in JupyterHub's scope names (`index.rs`) and decided from an
//! in-memory index ([`ShareIndex`]) that the one gate (`crate::access`) reads. The index is
//! rebuilt from Postgres after every change this process makes, before the change is answered,
//! and whenever Postgres says shares or group memberships changed (a trigger notifies
//! `labhub_shares`; [`Hub::follow_shares`] listens), which covers other hub processes and the
//! CLI. A rebuild closes the WebSockets of visitors who lost their access.

mod codes;
mod index;
mod lists;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use labhub_core::{GroupId, GroupName, GroupRole, ServerName, UserId, UserName};
use labhub_db::shares::{self, Grantee};
use labhub_db::{groups, servers, users};
use serde_json::json;
use time::OffsetDateTime;

pub use codes::{CodeChoice, NewShareCode, ShareCodeView};
pub use index::{Rights, SHAREABLE_SCOPES, ShareIndex};

use crate::access::{Actor, ServerRef};
use crate::model::server_label;
use crate::{Hub, ServiceError};

impl Hub {
    /// Sharing servers with other users and groups.
    pub fn shares(&self) -> Shares<'_> {
        Shares { hub: self }
    }

    /// Loads the share index, then reloads it whenever Postgres says shares or group
    /// memberships changed, until `shutdown` resolves. A lost connection is reopened and the
    /// index reloaded, since notifications sent meanwhile are lost.
    pub async fn follow_shares(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut missed = true;
        let mut listener = None;
        loop {
            // Listening first, then loading: no change can fall between the two.
            if listener.is_none() {
                match labhub_db::shares::listen(self.db()).await {
                    Ok(l) => {
                        listener = Some(l);
                        missed = true;
                    }
                    Err(e) => tracing::debug!(error = %e, "not listening for share changes yet"),
                }
            }
            if missed && self.shares().refresh().await.is_ok() {
                missed = false;
            }
            let Some(l) = listener.as_mut() else {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(RETRY), if missed => {}
                heard = labhub_db::shares::next_change(l) => match heard {
                    Ok(true) => missed |= self.shares().refresh().await.is_err(),
                    // The connection was lost: listen again on a new one, then reload.
                    Ok(false) => listener = None,
                    Err(e) => {
                        tracing::debug!(error = %e, "lost the share change channel");
                        listener = None;
                    }
                },
            }
        }
    }
}

/// How soon a failed reload or listen is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Whom to share with, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareWith {
    User(UserName),
    Group(GroupName),
}

/// Which of an owner's servers a list is about.
#[derive(Debug, Clone, Copy)]
pub enum OwnerServers<'a> {
    /// All of them.
    All,
    /// One: the default (`None`) or a named one.
    One(Option<&'a ServerName>),
}

/// One share, as the API and the pages show it.
#[derive(Debug, Clone)]
pub struct ShareView {
    pub owner: UserName,
    /// `None` for the default server.
    pub server: Option<ServerName>,
    /// Whether the server is running.
    pub ready: bool,
    pub with: ShareWith,
    /// JupyterHub's scope names, without their filter.
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
}

impl ShareView {
    /// The scopes as JupyterHub shows them, filtered to the server
    /// (`access:servers!server=alice/`).
    pub fn filtered_scopes(&self) -> Vec<String> {
        filtered(&self.scopes, &self.owner, self.server.as_ref())
    }

    /// What the share lets its visitors do.
    pub fn rights(&self) -> Rights {
        Rights::of_scopes(self.scopes.iter().map(String::as_str))
    }

    /// The server's address under the hub.
    pub fn url(&self) -> String {
        crate::model::route_prefix(&self.owner, self.server.as_ref())
    }
}

/// Scopes with JupyterHub's `!server=owner/name` filter.
fn filtered(scopes: &[String], owner: &UserName, server: Option<&ServerName>) -> Vec<String> {
    let filter = server_filter(owner, server);
    scopes.iter().map(|s| format!("{s}!{filter}")).collect()
}

fn server_filter(owner: &UserName, server: Option<&ServerName>) -> String {
    format!("server={owner}/{}", server.map_or("", ServerName::as_str))
}

/// Whom an actor may share an owner's servers with, for the pickers.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    pub users: Vec<UserName>,
    pub groups: Vec<GroupName>,
}

/// How far an actor's say over an owner's servers goes.
enum Authority {
    /// The owner or an admin: any shareable scope, with anyone an admin names (`seer: None`)
    /// or whom the owner may see (`seer: Some(owner)`).
    Full { seer: Option<UserId> },
    /// A lead of these groups, which the owner is in: only with those groups.
    Lead(Vec<(GroupId, GroupName)>),
}

/// Sharing servers with other users and groups.
#[derive(Clone, Copy)]
pub struct Shares<'h> {
    hub: &'h Hub,
}

impl<'h> Shares<'h> {
    fn state(&self) -> &'h crate::state::SharesState {
        &self.hub.0.shares
    }

    /// The current index, read-locked for as long as it is held (no I/O, no allocation: the
    /// proxy's path; a rebuild only swaps the `Arc` under the write lock).
    pub(crate) fn index(&self) -> std::sync::RwLockReadGuard<'h, Arc<ShareIndex>> {
        self.state().index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rebuilds the index from Postgres, then closes the WebSockets of visitors the gate no
    /// longer lets reach the server they are on (a share or role ended, an account disabled).
    pub async fn refresh(&self) -> Result<(), ServiceError> {
        let _in_order = self.state().reload.lock().await;
        // Memberships and roles decide credentials' scopes too: work them out again.
        self.hub.roles().changed();
        let rows = shares::all_reach(self.hub.db()).await?;
        let index = Arc::new(ShareIndex::build(rows.into_iter().map(|r| {
            let rights = Rights::of_scopes(r.scopes.iter().map(String::as_str));
            (r.owner_id, r.server_name, r.visitor_id, rights)
        })));
        *self.state().index.write().unwrap_or_else(PoisonError::into_inner) = index;
        self.recheck_visitors().await
    }

    /// Closes the WebSockets of visitors the gate no longer lets reach the server they are on:
    /// everyone but the owner with a WebSocket open (through a share, their roles, as an admin)
    /// is decided again by the one gate, as each account now stands; then the same for the
    /// WebSockets to registered services. Called after every rebuild, and when another
    /// process announces that an account's rights changed (disabled, no longer an admin),
    /// which rebuilds nothing here.
    pub(crate) async fn recheck_visitors(&self) -> Result<(), ServiceError> {
        let mut now = HashMap::new();
        for visitor in self.hub.routes().visitors() {
            now.insert(visitor, self.hub.roles().recheck(visitor).await?);
        }
        let access = self.hub.access();
        let closed = self.hub.routes().close_visitors_where(|route, visitor| {
            let who = match now.get(&visitor) {
                Some(Some(who)) => who,
                // The account is gone or disabled.
                Some(None) => return true,
                // A visitor whose watch came after the list was taken: the gate decided about
                // them after this pass began, so on what it rechecks.
                None => return false,
            };
            let to = ServerRef {
                owner: route.route().owner,
                owner_name: &route.key().user,
                server: route.key().server.as_ref(),
            };
            access.may_reach(who, to).is_none()
        });
        if closed > 0 {
            tracing::info!(tunnels = closed, "closed WebSockets of visitors who lost access");
        }
        self.hub.services().recheck_tunnels().await
    }

    /// After a committed change to shares or group memberships: the index must follow before
    /// the change is answered. If the database went away in between, the listener reloads it
    /// once it is back.
    pub(crate) async fn changed(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "could not reload shares after a change; retried when the database answers");
        }
    }

    /// How far `actor`'s say over `owner`'s servers goes; refuses those with none.
    async fn authority(&self, actor: Actor<'_>, owner: &users::User) -> Result<Authority, ServiceError> {
        let p = match actor {
            Actor::System => return Ok(Authority::Full { seer: None }),
            Actor::User(p) if p.admin => return Ok(Authority::Full { seer: None }),
            Actor::User(p) if p.user_id == owner.user_id => return Ok(Authority::Full { seer: Some(p.user_id) }),
            Actor::User(p) => p,
            Actor::Service(_) => return Err(ServiceError::Forbidden("services do not share users' servers".into())),
        };
        // A lead's say covers their groups' members, not an admin's servers nor a fellow
        // lead's (a lead of the same group is a peer, not someone they manage).
        if owner.admin {
            return Err(ServiceError::Forbidden("you may not share an admin's servers".into()));
        }
        let theirs: Vec<_> = groups::of_user(self.hub.db(), owner.user_id)
            .await?
            .into_iter()
            .filter(|t| t.role == GroupRole::Member)
            .collect();
        let led: Vec<_> = groups::of_user(self.hub.db(), p.user_id)
            .await?
            .into_iter()
            .filter(|m| m.role == GroupRole::Lead && theirs.iter().any(|t| t.group.group_id == m.group.group_id))
            .map(|m| (m.group.group_id, m.group.name))
            .collect();
        if led.is_empty() {
            return Err(ServiceError::Forbidden("you may only share your own servers".into()));
        }
        Ok(Authority::Lead(led))
    }

    /// The id of `owner`'s server; the default one's row is made if it was never started.
    async fn server_id(
        &self,
        db: &mut labhub_db::PgConnection,
        owner: &users::User,
        server: Option<&ServerName>,
    ) -> Result<labhub_core::ServerId, ServiceError> {
        match server {
            None => Ok(servers::get_or_create_locked(db, owner.user_id, "", self.hub.now()).await?.server_id),
            Some(name) => servers::get(&mut *db, owner.user_id, name.as_str())
                .await?
                .map(|s| s.server_id)
                .ok_or_else(|| no_server(&owner.name, server)),
        }
    }

    /// The scopes asked for, checked and without their filter (`access:servers` when none).
    fn scopes(
        &self,
        asked: Option<&[String]>,
        owner: &UserName,
        server: Option<&ServerName>,
        authority: &Authority,
    ) -> Result<Vec<String>, ServiceError> {
        let filter = server_filter(owner, server);
        let asked = asked.filter(|a| !a.is_empty());
        let mut out = Vec::new();
        for scope in asked.map_or(&["access:servers".to_string()][..], |a| a) {
            let (base, given) = scope.split_once('!').map_or((scope.as_str(), None), |(b, f)| (b, Some(f)));
            if let Some(given) = given
                && given != filter
            {
                return Err(ServiceError::Invalid(format!("!{given} not allowed on sharing {scope}, only !{filter}")));
            }
            if Rights::of_scope(base).is_none() {
                return Err(ServiceError::Invalid(format!(
                    "scope {base} cannot be shared; a share carries {}",
                    SHAREABLE_SCOPES.join(", ")
                )));
            }
            if matches!(authority, Authority::Lead(_)) && !matches!(base, "access:servers" | "read:servers") {
                return Err(ServiceError::Forbidden(format!(
                    "Do not have permission to grant share with scope {base}!{filter}"
                )));
            }
            out.push(base.to_string());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The grantee, if `actor` may share with it (checked before whether it exists, so a
    /// refusal tells nothing about names the actor may not see).
    async fn grantee(
        &self,
        authority: &Authority,
        owner: &users::User,
        with: &ShareWith,
    ) -> Result<Grantee, ServiceError> {
        let db = self.hub.db();
        match (with, authority) {
            (ShareWith::User(name), Authority::Full { seer }) => {
                if let Some(seer) = seer {
                    let seen = shares::co_members(db, *seer).await?;
                    if !seen.iter().any(|(_, n)| n == name.as_str()) {
                        return Err(ServiceError::Forbidden(format!(
                            "you may share only with people in a group with you, and {name} is not"
                        )));
                    }
                }
                let user = users::by_name(db, name)
                    .await?
                    .ok_or_else(|| ServiceError::Invalid(format!("No such user: {name}")))?;
                if user.user_id == owner.user_id {
                    return Err(ServiceError::Invalid(format!("{name} owns this server")));
                }
                Ok(Grantee::User(user.user_id))
            }
            (ShareWith::User(_), Authority::Lead(_)) => {
                Err(ServiceError::Forbidden("a lead shares a member's server only with a group they lead".into()))
            }
            (ShareWith::Group(name), Authority::Full { seer }) => {
                if let Some(seer) = seer {
                    let mine = groups::of_user(db, *seer).await?;
                    if !mine.iter().any(|m| &m.group.name == name) {
                        return Err(ServiceError::Forbidden(format!(
                            "you may share only with groups you are in, and you are not in {name}"
                        )));
                    }
                }
                let group = groups::by_name(db, name)
                    .await?
                    .ok_or_else(|| ServiceError::Invalid(format!("No such group: {name}")))?;
                Ok(Grantee::Group(group.group_id))
            }
            (ShareWith::Group(name), Authority::Lead(led)) => {
                led.iter().find(|(_, n)| n == name).map(|(id, _)| Grantee::Group(*id)).ok_or_else(|| {
                    ServiceError::Forbidden(format!("you lead no group named {name} that the owner is in"))
                })
            }
        }
    }

    /// Grants `with` the scopes asked for (`access:servers` when none) on `owner`'s server,
    /// adding to what a share they have already grants.
    pub async fn grant(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        with: &ShareWith,
        scopes: Option<&[String]>,
    ) -> Result<ShareView, ServiceError> {
        let owner_row = self.hub.user_row(owner).await?;
        let authority = self.authority(actor, &owner_row).await?;
        let scopes = self.scopes(scopes, owner, server, &authority)?;
        let grantee = self.grantee(&authority, &owner_row, with).await?;
        let mut tx = self.hub.begin().await?;
        let server_id = self.server_id(&mut tx, &owner_row, server).await?;
        let row = shares::grant(&mut tx, server_id, grantee, &scopes, self.hub.now()).await?;
        let detail = json!({ "with": describe(with), "scopes": scopes, "now": row.scopes });
        self.hub.audit().record(&mut *tx, actor, "share.grant", &server_label(owner, server), detail).await?;
        tx.commit().await?;
        self.changed().await;
        view(row)
    }

    /// Revokes the listed scopes (all when none) from `with`'s share of `owner`'s server; the
    /// share that is left, if any. Revoking what was never granted changes nothing.
    pub async fn revoke(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        with: &ShareWith,
        scopes: Option<&[String]>,
    ) -> Result<Option<ShareView>, ServiceError> {
        let owner_row = self.hub.user_row(owner).await?;
        let authority = self.authority(actor, &owner_row).await?;
        // JupyterHub clients may name the scopes with their filter; they are stored without.
        let revoked: Option<Vec<String>> = scopes
            .filter(|s| !s.is_empty())
            .map(|s| s.iter().map(|x| x.split_once('!').map_or(x.as_str(), |(base, _)| base).to_string()).collect());
        let Some(grantee) = self.existing_grantee(&authority, with).await? else { return Ok(None) };
        let mut tx = self.hub.begin().await?;
        let Some(server_row) = servers::get(&mut *tx, owner_row.user_id, server.map_or("", ServerName::as_str)).await?
        else {
            return if server.is_none() { Ok(None) } else { Err(no_server(owner, server)) };
        };
        let Some(share) = shares::find_for_update(&mut *tx, server_row.server_id, grantee).await? else {
            return Ok(None);
        };
        let kept: Vec<String> = match &revoked {
            None => Vec::new(),
            Some(r) => share.scopes.iter().filter(|s| !r.contains(s)).cloned().collect(),
        };
        if kept == share.scopes {
            return view(share).map(Some);
        }
        if kept.is_empty() {
            shares::delete(&mut *tx, share.share_id).await?;
        } else {
            shares::set_scopes(&mut *tx, share.share_id, &kept).await?;
        }
        let detail = json!({ "with": describe(with), "revoked": revoked, "left": kept });
        self.hub.audit().record(&mut *tx, actor, "share.revoke", &server_label(owner, server), detail).await?;
        tx.commit().await?;
        self.changed().await;
        if kept.is_empty() {
            return Ok(None);
        }
        let mut share = share;
        share.scopes = kept;
        view(share).map(Some)
    }

    /// The grantee `with` names, if it exists and the actor may act on its shares.
    async fn existing_grantee(&self, authority: &Authority, with: &ShareWith) -> Result<Option<Grantee>, ServiceError> {
        let db = self.hub.db();
        Ok(match (with, authority) {
            (ShareWith::User(_), Authority::Lead(_)) => {
                return Err(ServiceError::Forbidden("a lead manages only their group's shares".into()));
            }
            (ShareWith::Group(name), Authority::Lead(led)) => {
                led.iter().find(|(_, n)| n == name).map(|(id, _)| Grantee::Group(*id))
            }
            (ShareWith::User(name), Authority::Full { .. }) => {
                users::by_name(db, name).await?.map(|u| Grantee::User(u.user_id))
            }
            (ShareWith::Group(name), Authority::Full { .. }) => {
                groups::by_name(db, name).await?.map(|g| Grantee::Group(g.group_id))
            }
        })
    }

    /// Revokes every share of `owner`'s server (owner and admins).
    pub async fn revoke_all(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<(), ServiceError> {
        let owner_row = self.hub.user_row(owner).await?;
        if !matches!(self.authority(actor, &owner_row).await?, Authority::Full { .. }) {
            return Err(ServiceError::Forbidden("only the owner or an admin revokes every share".into()));
        }
        let mut tx = self.hub.begin().await?;
        let Some(row) = servers::get(&mut *tx, owner_row.user_id, server.map_or("", ServerName::as_str)).await? else {
            return if server.is_none() { Ok(()) } else { Err(no_server(owner, server)) };
        };
        let removed = shares::delete_for_server(&mut *tx, row.server_id).await?;
        if removed > 0 {
            let detail = json!({ "with": "everyone", "shares": removed });
            self.hub.audit().record(&mut *tx, actor, "share.revoke", &server_label(owner, server), detail).await?;
        }
        tx.commit().await?;
        self.changed().await;
        Ok(())
    }

    /// Gives up `user`'s own share of `owner`'s server (the user and admins): "leave".
    pub async fn leave(
        &self,
        actor: Actor<'_>,
        user: &UserName,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<(), ServiceError> {
        let row = self.hub.user_row(user).await?;
        actor.require_self_or_admin(row.user_id)?;
        let share = self.find(Grantee::User(row.user_id), &ShareWith::User(user.clone()), owner, server).await?;
        self.remove(actor, share, "share.leave", json!({ "user": user.as_str() })).await
    }

    /// Removes a group's share of `owner`'s server (the owner, admins, the group's leads).
    pub async fn remove_group_share(
        &self,
        actor: Actor<'_>,
        group: &GroupName,
        owner: &UserName,
        server: Option<&ServerName>,
    ) -> Result<(), ServiceError> {
        let owner_row = self.hub.user_row(owner).await?;
        let authority = self.authority(actor, &owner_row).await?;
        let with = ShareWith::Group(group.clone());
        let Some(grantee) = self.existing_grantee(&authority, &with).await? else {
            return Err(ServiceError::NotFound(format!("No such share for group {group} on {}", label(owner, server))));
        };
        let share = self.find(grantee, &with, owner, server).await?;
        self.remove(actor, share, "share.revoke", json!({ "with": describe(&with) })).await
    }

    async fn remove(
        &self,
        actor: Actor<'_>,
        share: shares::Share,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<(), ServiceError> {
        let mut tx = self.hub.begin().await?;
        shares::delete(&mut *tx, share.share_id).await?;
        let target = format!("{}/{}", share.owner_name, share.server_name);
        self.hub.audit().record(&mut *tx, actor, action, &target, detail).await?;
        tx.commit().await?;
        self.changed().await;
        Ok(())
    }

    /// Whom `actor` may share `owner`'s servers with, for the pickers.
    pub async fn candidates(&self, actor: Actor<'_>, owner: &UserName) -> Result<Candidates, ServiceError> {
        let owner_row = self.hub.user_row(owner).await?;
        let (seer, groups_of) = match (self.authority(actor, &owner_row).await?, actor) {
            (Authority::Lead(led), _) => {
                return Ok(Candidates { users: Vec::new(), groups: led.into_iter().map(|(_, n)| n).collect() });
            }
            (Authority::Full { .. }, Actor::User(p)) => (p.user_id, p.user_id),
            (Authority::Full { .. }, Actor::System | Actor::Service(_)) => (owner_row.user_id, owner_row.user_id),
        };
        let users = shares::co_members(self.hub.db(), seer)
            .await?
            .into_iter()
            .filter(|(id, _)| *id != owner_row.user_id)
            .filter_map(|(_, n)| UserName::parse(&n).ok())
            .collect();
        let groups = groups::of_user(self.hub.db(), groups_of).await?.into_iter().map(|m| m.group.name).collect();
        Ok(Candidates { users, groups })
    }
}

fn no_server(owner: &UserName, server: Option<&ServerName>) -> ServiceError {
    ServiceError::NotFound(format!("No such server: {}", label(owner, server)))
}

/// `alice/` or `alice/gpu`, as JupyterHub names a server in sharing messages.
fn label(owner: &UserName, server: Option<&ServerName>) -> String {
    format!("{owner}/{}", server.map_or("", ServerName::as_str))
}

fn describe(with: &ShareWith) -> serde_json::Value {
    match with {
        ShareWith::User(u) => json!({ "user": u.as_str() }),
        ShareWith::Group(g) => json!({ "group": g.as_str() }),
    }
}

fn page((rows, total): (Vec<shares::Share>, i64)) -> Result<(Vec<ShareView>, i64), ServiceError> {
    Ok((rows.into_iter().map(view).collect::<Result<_, _>>()?, total))
}

fn stored<T: TryFrom<String>>(raw: String) -> Result<T, ServiceError> {
    T::try_from(raw).map_err(|_| ServiceError::Internal("a stored name no longer reads as one".into()))
}

/// The owner and server of a stored row, by name.
fn owner_and_server(owner: String, server: String) -> Result<(UserName, Option<ServerName>), ServiceError> {
    let server = if server.is_empty() { None } else { Some(stored(server)?) };
    Ok((stored(owner)?, server))
}

fn view(row: shares::Share) -> Result<ShareView, ServiceError> {
    let (owner, server) = owner_and_server(row.owner_name, row.server_name)?;
    let with = match (row.user_name, row.group_name) {
        (Some(u), _) => ShareWith::User(stored(u)?),
        (None, Some(g)) => ShareWith::Group(stored(g)?),
        (None, None) => return Err(ServiceError::Internal("a share with neither a user nor a group".into())),
    };
    Ok(ShareView {
        owner,
        server,
        ready: row.server_state == labhub_core::ServerState::Running,
        with,
        scopes: row.scopes,
        created_at: row.created_at,
    })
}
