//! The API's one scope check: every matched endpoint says what it needs here, in one table
//! (JupyterHub's scope for each of its endpoints), and the service's `Roles::require`
//! decides. Server endpoints are decided by the one server gate (`Access`, through the
//! service's server calls), which reads the same scopes; labhub's own endpoints (images,
//! quotas, backups…) have no JupyterHub scope and need a credential with all its account's
//! powers (a session, a token with `inherit`), then the service's own checks decide; a
//! registered service's token (no account) never has that, so only scopes admit it.

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use labhub_core::{GroupName, Scope, ServerName, ServiceName, UserName};
use labhub_service::roles::Resource;

use labhub_service::Requester;

use crate::extract::MaybeCaller;
use crate::{AppError, AppState};

/// What an endpoint acts on, read from its path parameters.
#[derive(Debug, Clone, Copy)]
enum On {
    /// The hub itself.
    Hub,
    /// The user `{name}`.
    User,
    /// The group `{name}`.
    Group,
    /// `{owner}`'s server `{server}` (the default one when the path has none).
    OwnerServer,
    /// The user `{owner}` (all of their servers).
    Owner,
    /// The service `{name}`.
    Service,
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// Nothing beyond what its handler asks (public, or about the asker themselves).
    Nothing,
    /// One of these scopes on what the path names.
    Any(&'static [Scope], On),
    /// One of these scopes, with any filter: a list, filtered by the handler to what the asker
    /// may see.
    Held(&'static [Scope]),
    /// A server: decided by the one server gate in the service.
    Server,
    /// labhub's own: a credential with all its account's powers.
    Full,
}

use Need::{Any, Full, Held, Nothing};
use On::{Group, Hub, Owner, OwnerServer, Service, User};

/// The table: (method, route as registered) → what it needs.
fn need(method: &Method, route: &str) -> Need {
    let m = method.as_str();
    match (m, route) {
        (_, "/hub/api" | "/hub/api/" | "/hub/api/user" | "/hub/api/{*rest}") => Nothing,
        // The single-user contract's: its handlers know the server's and the OAuth provider's
        // tokens (and HTTP Basic client credentials), which are no hub credential.
        ("POST", "/hub/api/users/{name}/activity" | "/hub/api/oauth2/token") => Nothing,
        ("GET", "/hub/api/info") => Any(&[Scope::ReadHub], Hub),
        ("GET", "/hub/api/users") => Held(&[Scope::ListUsers]),
        ("POST", "/hub/api/users") => Any(&[Scope::AdminUsers], Hub),
        ("GET", "/hub/api/users/{name}") => Any(&[Scope::ReadUsers], User),
        ("POST", "/hub/api/users/{name}") => Any(&[Scope::AdminUsers], Hub),
        ("PATCH", "/hub/api/users/{name}") => Any(&[Scope::AdminUsers], User),
        ("DELETE", "/hub/api/users/{name}") => Any(&[Scope::DeleteUsers], User),
        (_, r) if r.starts_with("/hub/api/users/{name}/server") => Need::Server,
        ("GET", "/hub/api/users/{name}/tokens" | "/hub/api/users/{name}/tokens/{id}") => {
            Any(&[Scope::ReadTokens], User)
        }
        (_, "/hub/api/users/{name}/tokens" | "/hub/api/users/{name}/tokens/{id}") => Any(&[Scope::Tokens], User),
        ("GET", "/hub/api/groups") => Held(&[Scope::ListGroups]),
        ("POST", "/hub/api/groups") => Any(&[Scope::AdminGroups], Hub),
        ("GET", "/hub/api/groups/{name}") => Any(&[Scope::ReadGroups], Group),
        // Properties (JupyterHub's `groups`, which leads hold for their groups); creating and
        // deleting a group is `admin:groups`.
        ("PATCH", "/hub/api/groups/{name}") => Any(&[Scope::Groups], Group),
        (_, "/hub/api/groups/{name}") => Any(&[Scope::AdminGroups], Group),
        (_, "/hub/api/groups/{name}/users") => Any(&[Scope::Groups], Group),
        ("GET", "/hub/api/shares/{owner}" | "/hub/api/share-codes/{owner}") => Any(&[Scope::ReadShares], Owner),
        ("GET", r) if r.starts_with("/hub/api/shares/") || r.starts_with("/hub/api/share-codes/") => {
            Any(&[Scope::ReadShares], OwnerServer)
        }
        (_, r) if r.starts_with("/hub/api/shares/") || r.starts_with("/hub/api/share-codes/") => {
            Any(&[Scope::Shares], OwnerServer)
        }
        ("GET", r) if r.starts_with("/hub/api/users/{name}/shared") => Any(&[Scope::ReadUsersShares], User),
        (_, r) if r.starts_with("/hub/api/users/{name}/shared") => Any(&[Scope::UsersShares], User),
        ("GET", r) if r.starts_with("/hub/api/groups/{name}/shared") => Any(&[Scope::ReadGroupsShares], Group),
        (_, r) if r.starts_with("/hub/api/groups/{name}/shared") => Any(&[Scope::GroupsShares], Group),
        ("GET", "/hub/api/services") => Held(&[Scope::ListServices]),
        ("GET", "/hub/api/services/{name}") => Any(&[Scope::ReadServices], Service),
        _ => Full,
    }
}

/// The layer: finds who is asking (the handlers' extractors reuse the answer), then refuses
/// what the table says they may not do. Requests without credentials pass on to their
/// handler, which asks for them (401) or serves the public.
pub async fn check(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let route = parts.extensions.get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let need = need(&parts.method, &route);
    // Nothing to decide here: the handler finds who asks (some credentials it accepts are
    // not the hub's, so looking them up here would refuse them).
    if matches!(need, Nothing) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let params = RawPathParams::from_request_parts(&mut parts, &state).await.ok();
    let who = match MaybeCaller::from_request_parts(&mut parts, &state).await {
        Ok(MaybeCaller(who)) => who,
        Err(e) => return e.into_response(),
    };
    if let Some(who) = who {
        let param = |key: &str| params.as_ref().and_then(|p| p.iter().find(|(k, _)| *k == key).map(|(_, v)| v));
        let refused = match need {
            Nothing | Need::Server => None,
            Full if matches!(&who, Requester::User(p) if p.full) => None,
            Full => Some(AppError::Forbidden(
                "this endpoint needs a credential with all of its account's powers (a token without scopes)".into(),
            )),
            Held(scopes) if scopes.iter().any(|s| who.scopes().grant(s).is_some()) => None,
            Held(scopes) => Some(AppError::Forbidden(format!(
                "Action is not authorized with current scopes; requires any of [{}]",
                scopes.iter().map(Scope::as_str).collect::<Vec<_>>().join(", ")
            ))),
            Any(scopes, on) => match resource(on, param) {
                // A name that cannot exist: the handler answers 404 as before.
                None => None,
                Some(resource) => {
                    state.hub().roles().require_of(who.actor(), scopes, &resource).await.err().map(AppError::from)
                }
            },
        };
        if let Some(e) = refused {
            return e.into_response();
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

/// What the path names, by name; `None` when a name is not valid (nothing by it exists).
fn resource<'a>(on: On, param: impl Fn(&str) -> Option<&'a str>) -> Option<Resource> {
    Some(match on {
        Hub => Resource::Hub,
        User => Resource::User(UserName::parse(param("name")?).ok()?),
        Owner => Resource::User(UserName::parse(param("owner")?).ok()?),
        Group => Resource::Group(GroupName::parse(param("name")?).ok()?),
        Service => Resource::Service(ServiceName::parse(param("name")?).ok()?),
        OwnerServer => {
            let owner = UserName::parse(param("owner")?).ok()?;
            let server = ServerName::parse_optional(param("server").unwrap_or("")).ok()?;
            Resource::Server(owner, server)
        }
    })
}
