//! The service's types: what its handles take and return. Never a database row: no password
//! hash, no token hash, no spawner state leaves the service.

use std::time::Duration;

use labhub_core::{
    AccountState, GroupId, GroupName, GroupRole, ImageFields, ImageId, ImageKind, Quota, Resources, ServerId,
    ServerName, ServerState, SessionId, TokenId, UserId, UserName,
};
use labhub_db::{audit, groups, identities, images, servers, sessions, tokens, usage, users};
use serde::Serialize;
use time::OffsetDateTime;

use crate::progress::ProgressLog;
use crate::words::format_duration;

/// An account as people and the API see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: UserId,
    pub name: UserName,
    pub admin: bool,
    pub state: AccountState,
    pub created_at: OffsetDateTime,
    pub last_activity: Option<OffsetDateTime>,
    /// Whether it has a password (accounts made for a provider's sign-in have none).
    pub has_password: bool,
    /// The identity provider whose identity of this name may claim the account while it has
    /// no password and no linked identity.
    pub link_provider: Option<String>,
}

impl From<&users::User> for Account {
    fn from(u: &users::User) -> Self {
        Self {
            id: u.user_id,
            name: u.name.clone(),
            admin: u.admin,
            state: u.state,
            created_at: u.created_at,
            last_activity: u.last_activity,
            has_password: u.password_hash.is_some(),
            link_provider: u.link_provider.clone(),
        }
    }
}

impl From<users::User> for Account {
    fn from(u: users::User) -> Self {
        Self::from(&u)
    }
}

/// The URL prefix a server is reached under: `/user/alice/` or `/user/alice/gpu/`.
pub fn route_prefix(user: &UserName, server: Option<&ServerName>) -> String {
    match server {
        Some(s) => format!("/user/{user}/{s}/"),
        None => format!("/user/{user}/"),
    }
}

/// `alice` or `alice/gpu`, as logs and the audit trail name a server.
pub fn server_label(user: &UserName, server: Option<&ServerName>) -> String {
    match server {
        Some(s) => format!("{user}/{s}"),
        None => user.to_string(),
    }
}

/// One of a user's server slots: the default one (listed even before its first start) or a
/// named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    /// `None` for a default server never started.
    pub id: Option<ServerId>,
    pub owner: UserName,
    /// `None` for the default server.
    pub name: Option<ServerName>,
    pub state: ServerState,
    /// The image reference of its latest start.
    pub image: Option<String>,
    /// The content id that start really ran.
    pub image_digest: Option<String>,
    pub kind: Option<ImageKind>,
    /// What its latest start got.
    pub resources: Option<Resources>,
    pub started_at: Option<OffsetDateTime>,
    pub last_activity: Option<OffsetDateTime>,
    /// Why it last stopped.
    pub stop_reason: Option<String>,
    /// When the culler will stop it and why (running servers under a limit, while the
    /// built-in culler runs).
    pub cull: Option<CullPlan>,
    /// The group its latest start was charged to.
    pub(crate) group_id: Option<GroupId>,
    /// Its group's cull policy, while it runs.
    pub(crate) policy: Option<CullPolicy>,
}

impl ServerView {
    /// The default slot of a user who never started it.
    pub(crate) fn never_started(owner: &UserName) -> Self {
        Self {
            id: None,
            owner: owner.clone(),
            name: None,
            state: ServerState::Stopped,
            image: None,
            image_digest: None,
            kind: None,
            resources: None,
            started_at: None,
            last_activity: None,
            stop_reason: None,
            cull: None,
            group_id: None,
            policy: None,
        }
    }

    pub(crate) fn of(owner: &UserName, s: &servers::Server) -> Self {
        let resources = match (s.cpu_millis, s.memory_bytes) {
            (Some(c), Some(m)) => Some(Resources {
                cpu_millis: u32::try_from(c).unwrap_or(0),
                memory_bytes: u64::try_from(m).unwrap_or(0),
                gpus: u32::try_from(s.gpus).unwrap_or(0),
            }),
            _ => None,
        };
        Self {
            id: Some(s.server_id),
            owner: owner.clone(),
            name: ServerName::parse_optional(&s.name).ok().flatten(),
            state: s.state,
            image: s.image_ref.clone(),
            image_digest: s.image_digest.clone(),
            kind: s.kind.as_deref().and_then(ImageKind::parse),
            resources,
            started_at: s.started_at,
            last_activity: s.last_activity,
            stop_reason: s.stop_reason.clone(),
            cull: None,
            group_id: s.group_id,
            policy: None,
        }
    }

    /// Every slot of `owner` from their rows: the default one first, listed even before its
    /// first start, then the named ones by name.
    pub(crate) fn slots(owner: &UserName, rows: &[servers::Server]) -> Vec<Self> {
        let mut out: Vec<Self> = rows.iter().map(|r| Self::of(owner, r)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        if out.first().is_none_or(|s| s.name.is_some()) {
            out.insert(0, Self::never_started(owner));
        }
        out
    }

    /// `""` for the default server, as JupyterHub names it.
    pub fn name_str(&self) -> &str {
        self.name.as_ref().map_or("", ServerName::as_str)
    }

    /// Where it is reached: `/user/alice/` or `/user/alice/gpu/`.
    pub fn url(&self) -> String {
        route_prefix(&self.owner, self.name.as_ref())
    }

    /// `alice` or `alice/gpu`.
    pub fn label(&self) -> String {
        server_label(&self.owner, self.name.as_ref())
    }
}

/// What a start request asks for.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// The catalogue image's name; the first enabled image when not given.
    pub image: Option<String>,
    /// The group to start under (and charge); when not given and the owner is in several,
    /// the most generous group whose limits admit the request.
    pub group: Option<GroupName>,
    /// A CPU limit in millicores; the image's own, within the group's limit, when not given.
    pub cpu_millis: Option<u32>,
    /// A memory limit in bytes; the image's own, within the group's limit, when not given.
    pub memory_bytes: Option<u64>,
    /// GPUs to request; none when not given.
    pub gpus: Option<u32>,
    /// Run exactly this image id (`sha256:…`) instead of what the catalogue entry names now
    /// (a session relaunched as it ran); the entry still says how to run it.
    pub exact_image: Option<String>,
}

/// A start under way: the server's id and its progress (the same events the SSE stream sends).
#[derive(Debug, Clone)]
pub struct StartTicket {
    pub server_id: ServerId,
    pub progress: std::sync::Arc<ProgressLog>,
}

/// What a start request led to.
#[derive(Debug, Clone)]
pub enum StartOutcome {
    /// A new start is under way.
    Started(StartTicket),
    /// The server was already starting (a double click): nothing new happened.
    AlreadyPending(ServerId),
    /// The server was already running: nothing new happened.
    AlreadyRunning(ServerId),
}

/// What a stop request led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It is stopped.
    Stopped,
    /// It is being stopped.
    Stopping,
}

/// Why a server stops, in words for its owner.
#[derive(Debug, Clone)]
pub enum StopReason {
    /// Its owner, an admin or a lead of its group asked.
    Requested { by: String, owner: bool },
    /// The culler: no proxied activity for longer than its group's idle timeout.
    Idle(Duration),
    /// The culler: it ran for its group's maximum lifetime.
    Lifetime(Duration),
    /// The hub stopped it for another reason, with why.
    Hub(String),
}

impl StopReason {
    /// The reason as its owner reads it on the home page.
    pub fn text(&self) -> String {
        match self {
            StopReason::Requested { owner: true, .. } => "stopped by you".into(),
            StopReason::Requested { by, owner: false } => format!("stopped by {by}"),
            StopReason::Idle(limit) => format!("stopped after {} without activity", format_duration(*limit)),
            StopReason::Lifetime(limit) => {
                format!("stopped after running for {}, the longest a server may run", format_duration(*limit))
            }
            StopReason::Hub(why) => why.clone(),
        }
    }
}

/// An API token as its owner sees it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: TokenId,
    pub prefix: String,
    pub note: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    /// Its scopes as written (`inherit`: its owner's).
    pub scopes: Vec<String>,
}

impl From<tokens::ApiToken> for TokenInfo {
    fn from(t: tokens::ApiToken) -> Self {
        Self {
            id: t.token_id,
            prefix: t.prefix,
            note: t.note,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            scopes: t.scopes,
        }
    }
}

/// A live browser session, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: SessionId,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub user_agent: String,
    pub client_addr: String,
}

impl From<sessions::Session> for SessionInfo {
    fn from(s: sessions::Session) -> Self {
        Self {
            id: s.session_id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            user_agent: s.user_agent,
            client_addr: s.client_addr,
        }
    }
}

/// An identity at a provider, linked to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedIdentity {
    pub id: i64,
    pub provider: String,
    pub subject: String,
    pub username: String,
    pub email: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_login_at: OffsetDateTime,
}

impl From<identities::Identity> for LinkedIdentity {
    fn from(i: identities::Identity) -> Self {
        Self {
            id: i.identity_id,
            provider: i.provider,
            subject: i.subject,
            username: i.username,
            email: i.email,
            created_at: i.created_at,
            last_login_at: i.last_login_at,
        }
    }
}

/// One recorded action.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub audit_id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

impl From<audit::AuditEntry> for AuditRecord {
    fn from(e: audit::AuditEntry) -> Self {
        Self { audit_id: e.audit_id, at: e.at, actor: e.actor, action: e.action, target: e.target, detail: e.detail }
    }
}

/// A catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueImage {
    pub id: ImageId,
    /// Its name in the catalogue (what starts and quotas name).
    pub name: String,
    pub fields: ImageFields,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl From<images::Image> for CatalogueImage {
    fn from(i: images::Image) -> Self {
        Self { id: i.image_id, name: i.name, fields: i.fields, created_at: i.created_at, updated_at: i.updated_at }
    }
}

/// A group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub name: GroupName,
    pub created_at: OffsetDateTime,
    /// Whether it has a shared folder, mounted at `~/shared/{name}` in its members' servers.
    pub shared_folder: bool,
    /// Whether members (not leads) get the shared folder read-only.
    pub shared_read_only: bool,
}

impl From<groups::Group> for Group {
    fn from(g: groups::Group) -> Self {
        Self {
            id: g.group_id,
            name: g.name,
            created_at: g.created_at,
            shared_folder: g.shared_folder,
            shared_read_only: g.shared_read_only,
        }
    }
}

/// What becomes of an account's home, or a group's shared folder, when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageFate {
    /// Kept as an orphan an admin can copy elsewhere, archive or delete later; never mounted
    /// for anyone (the default).
    #[default]
    Keep,
    /// Deleted with it, for good.
    Delete,
}

impl StorageFate {
    /// Reads a form's or a body's `storage`: `keep` (or nothing) or `delete`.
    pub fn parse(raw: &str) -> Result<Self, crate::ServiceError> {
        match raw {
            "" | "keep" => Ok(Self::Keep),
            "delete" => Ok(Self::Delete),
            other => Err(crate::ServiceError::Invalid(format!("'storage' must be keep or delete, not {other:?}"))),
        }
    }

    /// `kept` or `deleted`, for the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageFate::Keep => "kept",
            StorageFate::Delete => "deleted",
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: UserId,
    pub name: UserName,
    pub role: GroupRole,
    pub added_at: OffsetDateTime,
}

impl From<groups::Member> for Member {
    fn from(m: groups::Member) -> Self {
        Self { id: m.user_id, name: m.name, role: m.role, added_at: m.added_at }
    }
}

/// A group someone belongs to, with their role there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub group: Group,
    pub role: GroupRole,
}

impl From<groups::Membership> for Membership {
    fn from(m: groups::Membership) -> Self {
        Self { group: m.group.into(), role: m.role }
    }
}

/// A group with its members and limits.
#[derive(Debug, Clone)]
pub struct GroupDetail {
    pub group: Group,
    /// Its members, leads first.
    pub members: Vec<Member>,
    /// The limits in force.
    pub quota: Quota,
    /// The most its leads may grant.
    pub ceiling: Quota,
    /// Whether its members may build personal environments.
    pub members_build_environments: bool,
    /// Which Swarm nodes its servers may run on.
    pub placement: Vec<labhub_core::Placement>,
}

impl GroupDetail {
    /// The names of its leads.
    pub fn leads(&self) -> Vec<UserName> {
        self.members.iter().filter(|m| m.role == GroupRole::Lead).map(|m| m.name.clone()).collect()
    }
}

/// What an actor may do to one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAccess {
    /// Everything (admins and the hub itself).
    Admin,
    /// What its leads may do.
    Lead,
}

/// An active server with the group it is charged to and its latest live use.
#[derive(Debug, Clone)]
pub struct ChargedServer {
    pub server_id: ServerId,
    pub owner: UserName,
    pub owner_id: UserId,
    pub name: Option<ServerName>,
    pub state: ServerState,
    pub group_id: Option<GroupId>,
    pub image: Option<String>,
    /// What it reserved (its limits).
    pub reserved: Resources,
    pub spawn_id: Option<uuid::Uuid>,
    pub started_at: Option<OffsetDateTime>,
    pub last_activity: Option<OffsetDateTime>,
    /// The latest live use the sampler saw: millicores and bytes.
    pub used: Option<(u64, u64)>,
}

impl From<usage::ChargedServer> for ChargedServer {
    fn from(s: usage::ChargedServer) -> Self {
        let unsigned = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        Self {
            server_id: s.server_id,
            name: ServerName::parse_optional(&s.name).ok().flatten(),
            owner: s.owner,
            owner_id: s.user_id,
            state: s.state,
            group_id: s.group_id,
            image: s.image_ref,
            reserved: Resources {
                cpu_millis: s.cpu_millis.and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
                memory_bytes: unsigned(s.memory_bytes).unwrap_or(0),
                gpus: u32::try_from(s.gpus).unwrap_or(0),
            },
            spawn_id: s.spawn_id,
            started_at: s.started_at,
            last_activity: s.last_activity,
            used: match (s.used_cpu_millis, s.used_memory_bytes) {
                (None, None) => None,
                (c, m) => Some((unsigned(c).unwrap_or(0), unsigned(m).unwrap_or(0))),
            },
        }
    }
}

/// One group's use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageSample {
    pub at: OffsetDateTime,
    /// CPU in use, in millicores.
    pub cpu_millis: i64,
    /// Memory in use, in bytes.
    pub memory_bytes: i64,
    /// CPU its active servers reserved (their limits).
    pub cpu_reserved: i64,
    /// Memory its active servers reserved.
    pub memory_reserved: i64,
}

impl From<usage::Sample> for UsageSample {
    fn from(s: usage::Sample) -> Self {
        Self {
            at: s.at,
            cpu_millis: s.cpu_millis,
            memory_bytes: s.memory_bytes,
            cpu_reserved: s.cpu_reserved,
            memory_reserved: s.memory_reserved,
        }
    }
}

/// What a server's group says about stopping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CullPolicy {
    /// Stopped after this long without activity; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Stopped after running this long; `None`: never.
    pub max_lifetime: Option<Duration>,
    /// Whether a busy kernel or an open terminal stops counting as use.
    pub cull_busy: bool,
}

impl From<&Quota> for CullPolicy {
    fn from(q: &Quota) -> Self {
        Self { idle_timeout: q.idle_timeout, max_lifetime: q.max_lifetime, cull_busy: q.cull_busy }
    }
}

/// Why the culler will stop a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CullReason {
    /// No activity since `since`, for the group's idle timeout.
    Idle { since: OffsetDateTime, limit: Duration },
    /// It will have run for the group's maximum lifetime.
    Lifetime { limit: Duration },
}

impl CullReason {
    /// `idle` or `lifetime`, as the API names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            CullReason::Idle { .. } => "idle",
            CullReason::Lifetime { .. } => "lifetime",
        }
    }

    /// The stop reason the owner reads afterwards.
    pub(crate) fn stop_reason(&self) -> StopReason {
        match *self {
            CullReason::Idle { limit, .. } => StopReason::Idle(limit),
            CullReason::Lifetime { limit } => StopReason::Lifetime(limit),
        }
    }
}

/// When the culler will stop a running server, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CullPlan {
    /// The first pass of the culler at or after this time stops it.
    pub at: OffsetDateTime,
    pub reason: CullReason,
}
