//! Sharing for people: a server's share page (who has access, add and revoke, share links),
//! "Shared with me" on the home page, and the page that accepts a share link.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use labhub_core::{GroupName, ServerName, UserName};
use labhub_service::shares::{CodeChoice, OwnerServers, Rights, ShareCodeView, ShareView, ShareWith};
use labhub_service::{Actor, Principal, ServiceError};
use serde::Deserialize;

use crate::extract::{CsrfForm, CurrentUser};
use crate::views::{Chrome, Page, When, exact, redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};

/// The most shares or links a page lists.
const LISTED: i64 = 500;

/// Share link lifetimes offered: (seconds, label).
const LIFETIMES: [(u64, &str); 5] =
    [(3600, "1 hour"), (86_400, "1 day"), (7 * 86_400, "1 week"), (30 * 86_400, "30 days"), (365 * 86_400, "1 year")];

/// What visitors may do, as the page words it.
fn rights_text(rights: Rights) -> &'static str {
    match (rights.contains(Rights::ACCESS), rights.contains(Rights::START)) {
        (true, true) => "use it, start and stop it",
        (true, false) => "use it",
        (false, true) => "start and stop it",
        (false, false) => "see it",
    }
}

fn server_path(base: &str, owner: &UserName, server: Option<&ServerName>) -> String {
    match server {
        Some(s) => format!("{base}/{owner}/{s}"),
        None => format!("{base}/{owner}"),
    }
}

fn label(owner: &UserName, server: Option<&ServerName>) -> String {
    match server {
        Some(s) => format!("{owner}'s server {s}"),
        None => format!("{owner}'s default server"),
    }
}

/// A server shared with the signed-in user, as the home page lists it.
pub struct SharedRow {
    pub label: String,
    pub owner: String,
    pub server: String,
    pub ready: bool,
    pub url: String,
    /// Where to start it, when the share allows it.
    pub start_url: Option<String>,
    pub can_use: bool,
    /// Shared with them directly (they may leave it), or through a group (they may not).
    pub direct: bool,
    pub via: String,
    pub what: &'static str,
}

/// The servers shared with `me`, for the home page.
pub async fn shared_with_me(state: &AppState, me: &Principal) -> Result<Vec<SharedRow>, AppError> {
    let (shares, _) = state.hub().shares().reaching(Actor::User(me), &me.name, 0, LISTED).await?;
    Ok(shares
        .into_iter()
        .map(|s| {
            let rights = s.rights();
            let (direct, via) = match &s.with {
                ShareWith::User(_) => (true, "you".to_string()),
                ShareWith::Group(g) => (false, format!("group {g}")),
            };
            SharedRow {
                label: label(&s.owner, s.server.as_ref()),
                owner: s.owner.to_string(),
                server: s.server.as_ref().map_or(String::new(), ServerName::to_string),
                ready: s.ready,
                url: s.url(),
                start_url: (rights.contains(Rights::START) && !s.ready)
                    .then(|| server_path("/hub/spawn", &s.owner, s.server.as_ref())),
                can_use: rights.contains(Rights::ACCESS),
                direct,
                via,
                what: rights_text(rights),
            }
        })
        .collect())
}

/// One share as the share page lists it.
struct GrantRow {
    kind: &'static str,
    name: String,
    what: &'static str,
    since: When,
}

/// One share link as the share page lists it.
struct LinkRow {
    id: String,
    what: &'static str,
    expires: String,
    exchanges: i64,
    last_used: When,
}

#[derive(Template, WebTemplate)]
#[template(path = "share.html")]
struct SharePage {
    c: Chrome,
    label: String,
    action: String,
    is_owner: bool,
    grants: Vec<GrantRow>,
    links: Vec<LinkRow>,
    /// Whether the asker may make links (the owner and admins, not leads).
    may_link: bool,
    users: Vec<String>,
    groups: Vec<String>,
    lifetimes: Vec<(u64, &'static str)>,
    /// A link just made: shown this once.
    new_link: Option<String>,
}

fn owner_server(p: &HashMap<String, String>) -> Result<(UserName, Option<ServerName>), AppError> {
    let raw = p.get("owner").map_or("", String::as_str);
    let owner = UserName::parse(raw).map_err(|_| AppError::NotFound(format!("There is no user named {raw:?}.")))?;
    let server = match p.get("server") {
        None => None,
        Some(s) => Some(ServerName::parse(s).map_err(|_| AppError::NotFound(format!("{owner} has no server {s:?}.")))?),
    };
    Ok((owner, server))
}

async fn share_page(
    state: &AppState,
    me: &Principal,
    page: &Page,
    owner: &UserName,
    server: Option<&ServerName>,
    new_link: Option<String>,
) -> Result<SharePage, AppError> {
    let hub = state.hub();
    let shares = hub.shares();
    let now = hub.now();
    let actor = Actor::User(me);
    let (grants, _) = shares.of_owner(actor, owner, OwnerServers::One(server), 0, LISTED).await?;
    let candidates = shares.candidates(actor, owner).await?;
    let links = match shares.codes(actor, owner, OwnerServers::One(server), 0, LISTED).await {
        Ok((codes, _)) => Some(codes),
        Err(ServiceError::Forbidden(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let grant_row = |s: ShareView| {
        let (kind, name) = match &s.with {
            ShareWith::User(u) => ("user", u.to_string()),
            ShareWith::Group(g) => ("group", g.to_string()),
        };
        GrantRow { kind, name, what: rights_text(s.rights()), since: When::new(now, s.created_at) }
    };
    let link_row = |c: ShareCodeView| LinkRow {
        id: format!("sc_{}", c.id),
        what: rights_text(Rights::of_scopes(c.scopes.iter().map(String::as_str))),
        expires: exact(c.expires_at),
        exchanges: c.exchange_count,
        last_used: When::opt(now, c.last_exchanged_at),
    };
    Ok(SharePage {
        c: page.chrome("home"),
        label: label(owner, server),
        action: server_path("/hub/share", owner, server),
        is_owner: me.name == *owner,
        grants: grants.into_iter().map(grant_row).collect(),
        may_link: links.is_some(),
        links: links.unwrap_or_default().into_iter().map(link_row).collect(),
        users: candidates.users.iter().map(ToString::to_string).collect(),
        groups: candidates.groups.iter().map(ToString::to_string).collect(),
        lifetimes: LIFETIMES.to_vec(),
        new_link,
    })
}

/// `GET /hub/share/{owner}[/{server}]` (the owner, admins, leads of the owner's groups).
pub async fn show(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let (owner, server) = owner_server(&p)?;
    let view = share_page(&state, &me, &page, &owner, server.as_ref(), None).await?;
    Ok(page.render(view))
}

/// What the share page's forms send: `what` says which form.
#[derive(Deserialize)]
pub struct ShareForm {
    what: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    /// "on" when visitors may also start and stop it.
    #[serde(default)]
    control: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    id: String,
}

fn with(kind: &str, name: &str) -> Result<ShareWith, ServiceError> {
    let name = name.trim();
    match kind {
        "group" => GroupName::parse(name).map(ShareWith::Group).map_err(|e| ServiceError::Invalid(e.to_string())),
        _ => UserName::parse(name).map(ShareWith::User).map_err(|e| ServiceError::Invalid(e.to_string())),
    }
}

/// `POST /hub/share/{owner}[/{server}]`: share, revoke, make a link, revoke a link.
pub async fn act(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    Path(p): Path<HashMap<String, String>>,
    CsrfForm(form): CsrfForm<ShareForm>,
) -> Result<Response, AppError> {
    let (owner, server) = owner_server(&p)?;
    let server = server.as_ref();
    let back = server_path("/hub/share", &owner, server);
    let shares = state.hub().shares();
    let actor = Actor::User(&me);
    let done = match form.what.as_str() {
        "grant" => {
            let mut scopes = vec!["access:servers".to_string()];
            if form.control.is_some() {
                scopes.push("servers".into());
            }
            match with(&form.kind, &form.name) {
                Ok(w) => shares.grant(actor, &owner, server, &w, Some(&scopes)).await.map(|s| match &s.with {
                    ShareWith::User(u) => format!("{u} can now {}.", rights_text(s.rights())),
                    ShareWith::Group(g) => format!("Members of {g} can now {}.", rights_text(s.rights())),
                }),
                Err(e) => Err(e),
            }
        }
        "revoke" => match with(&form.kind, &form.name) {
            Ok(w) => shares
                .revoke(actor, &owner, server, &w, None)
                .await
                .map(|_| format!("{} no longer has access; their open connections were closed.", form.name.trim())),
            Err(e) => Err(e),
        },
        "link" => {
            let made = shares.create_code(actor, &owner, server, None, form.expires_in).await;
            return match made {
                Ok(made) => {
                    let url = format!("/hub/accept-share?code={}", made.code.expose());
                    let full =
                        state.settings().public_url.join(url.trim_start_matches('/')).map_or(url, |u| u.to_string());
                    let view = share_page(&state, &me, &page, &owner, server, Some(full)).await?;
                    Ok(page.render(view))
                }
                Err(e @ (ServiceError::Invalid(_) | ServiceError::Forbidden(_))) => {
                    Ok(redirect_with_error(&state, &back, &e.to_string()))
                }
                Err(e) => Err(e.into()),
            };
        }
        "unlink" => shares
            .revoke_codes(actor, &owner, server, CodeChoice::Id(&form.id))
            .await
            .map(|()| "The link no longer works; those who accepted it keep their access until you revoke it.".into()),
        _ => Err(ServiceError::Invalid("this form does not say what to do".into())),
    };
    match done {
        Ok(message) => Ok(redirect_with_flash(&state, &back, &message)),
        Err(e @ (ServiceError::Invalid(_) | ServiceError::Forbidden(_) | ServiceError::NotFound(_))) => {
            Ok(redirect_with_error(&state, &back, &e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct LeaveForm {
    owner: String,
    #[serde(default)]
    server: String,
}

/// `POST /hub/shared/leave`: the signed-in user gives up a server shared with them.
pub async fn leave(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    CsrfForm(form): CsrfForm<LeaveForm>,
) -> Result<Response, AppError> {
    let owner = UserName::parse(&form.owner).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let server = match form.server.as_str() {
        "" => None,
        s => Some(ServerName::parse(s).map_err(|e| AppError::BadRequest(e.to_string()))?),
    };
    state.hub().shares().leave(Actor::User(&me), &me.name, &owner, server.as_ref()).await?;
    Ok(redirect_with_flash(&state, "/hub/home", &format!("You left {}.", label(&owner, server.as_ref()))))
}

#[derive(Template, WebTemplate)]
#[template(path = "accept_share.html")]
struct AcceptPage {
    c: Chrome,
    label: String,
    owner: String,
    what: &'static str,
    expires: String,
    code: String,
}

/// `GET /hub/accept-share?code=…` (signed in; others sign in first and come back): what the
/// link grants, and a button to accept it.
pub async fn accept_form(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    page: Page,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let code = q.get("code").cloned().unwrap_or_default();
    let view = state.hub().shares().peek_code(&code).await?;
    if view.owner == me.name {
        return Err(
            ServiceError::Invalid("This is a link to your own server: it is for others to accept.".into()).into()
        );
    }
    let rights = Rights::of_scopes(view.scopes.iter().map(String::as_str));
    let accept = AcceptPage {
        c: page.chrome("home"),
        label: label(&view.owner, view.server.as_ref()),
        owner: view.owner.to_string(),
        what: rights_text(rights),
        expires: exact(view.expires_at),
        code,
    };
    Ok(page.render(accept))
}

#[derive(Deserialize)]
pub struct AcceptForm {
    code: String,
}

/// `POST /hub/accept-share`: accepts the link, then goes to the server.
pub async fn accept(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    CsrfForm(form): CsrfForm<AcceptForm>,
) -> Result<Response, AppError> {
    let share = state.hub().shares().exchange(&me, &form.code).await?;
    if share.rights().contains(Rights::ACCESS) {
        return Ok(Redirect::to(&share.url()).into_response());
    }
    Ok(redirect_with_flash(
        &state,
        "/hub/home",
        &format!("{} is shared with you.", label(&share.owner, share.server.as_ref())),
    ))
}
