//! JSON models with JupyterHub's field names.

use labhub_core::ServerState;
use labhub_service::model::{Account, ServerView, TokenInfo};
use labhub_service::views::UserView;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An ISO 8601 time in UTC with a `Z`, as JupyterHub writes them.
pub fn iso(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_default()
}

/// JupyterHub's user model.
#[derive(Debug, Serialize)]
pub struct UserModel {
    pub kind: &'static str,
    pub name: String,
    pub admin: bool,
    pub roles: Vec<&'static str>,
    pub groups: Vec<String>,
    pub server: Option<String>,
    pub pending: Option<String>,
    pub created: String,
    pub last_activity: Option<String>,
    pub servers: serde_json::Map<String, serde_json::Value>,
    /// labhub's own: whether the account may sign in (active, pending approval, disabled).
    pub account_state: &'static str,
    /// labhub's own: the identity provider whose identity of this name may claim the account
    /// while it has no password and no linked identity.
    pub provider: Option<String>,
    /// The asker's own scopes, expanded (only in `GET /hub/api/user`, as JupyterHub does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

impl UserModel {
    /// The model of an account, with its groups and active servers.
    pub fn of(view: &UserView) -> Self {
        let mut m = Self::account(&view.account);
        m.groups = view.groups.clone();
        for s in view.servers.iter().filter(|s| s.state != ServerState::Stopped) {
            let model = ServerModel::of(s);
            if s.name.is_none() {
                m.server = model.ready.then(|| model.url.clone());
                m.pending = model.pending.map(str::to_string);
            }
            m.servers.insert(s.name_str().to_string(), serde_json::to_value(model).unwrap_or_default());
        }
        m
    }

    /// The model of an account alone (no groups, no servers).
    pub fn account(a: &Account) -> Self {
        Self {
            kind: "user",
            name: a.name.to_string(),
            admin: a.admin,
            roles: if a.admin { vec!["admin", "user"] } else { vec!["user"] },
            groups: Vec::new(),
            server: None,
            pending: None,
            created: iso(a.created_at),
            last_activity: a.last_activity.map(iso),
            servers: serde_json::Map::new(),
            account_state: a.state.as_str(),
            provider: a.link_provider.clone(),
            scopes: None,
        }
    }
}

/// JupyterHub's server model.
#[derive(Debug, Serialize)]
pub struct ServerModel {
    pub name: String,
    pub ready: bool,
    /// `"spawn"` while starting, `"stop"` while stopping.
    pub pending: Option<&'static str>,
    pub stopped: bool,
    pub url: String,
    pub progress_url: String,
    pub started: Option<String>,
    pub last_activity: Option<String>,
    pub state: serde_json::Value,
    pub user_options: serde_json::Value,
    /// labhub's own: the image reference and the content id it really runs.
    pub image: Option<String>,
    pub image_digest: Option<String>,
    /// labhub's own: why it last stopped.
    pub stop_reason: Option<String>,
    /// labhub's own: when the built-in culler will stop it unless it is used (`null`: never).
    pub cull_at: Option<String>,
    /// labhub's own: why it will (`idle` or `lifetime`), with `cull_at`.
    pub cull_reason: Option<&'static str>,
}

impl ServerModel {
    /// The model of a server slot.
    pub fn of(s: &ServerView) -> Self {
        let owner = &s.owner;
        let progress_url = match &s.name {
            Some(n) => format!("/hub/api/users/{owner}/servers/{n}/progress"),
            None => format!("/hub/api/users/{owner}/server/progress"),
        };
        Self {
            name: s.name_str().to_string(),
            ready: s.state == ServerState::Running,
            pending: match s.state {
                ServerState::Pending => Some("spawn"),
                ServerState::Stopping => Some("stop"),
                _ => None,
            },
            stopped: s.state == ServerState::Stopped,
            url: s.url(),
            progress_url,
            started: s.started_at.map(iso),
            last_activity: s.last_activity.map(iso),
            state: serde_json::json!({}),
            user_options: serde_json::json!({}),
            image: s.image.clone(),
            image_digest: s.image_digest.clone(),
            stop_reason: s.stop_reason.clone(),
            cull_at: s.cull.map(|c| iso(c.at)),
            cull_reason: s.cull.map(|c| c.reason.as_str()),
        }
    }
}

/// JupyterHub's token model.
#[derive(Debug, Serialize)]
pub struct TokenModel {
    pub id: String,
    pub kind: &'static str,
    pub user: String,
    pub note: String,
    pub created: String,
    pub expires_at: Option<String>,
    pub last_activity: Option<String>,
    pub prefix: String,
    pub roles: Vec<&'static str>,
    pub scopes: Vec<String>,
    pub session_id: Option<String>,
    pub oauth_client: Option<String>,
    /// The token itself: only in the answer that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl TokenModel {
    /// The model of a token (never the token itself).
    pub fn of(owner: &str, t: &TokenInfo) -> Self {
        Self {
            id: format!("a{}", t.id),
            kind: "api_token",
            user: owner.to_string(),
            note: t.note.clone(),
            created: iso(t.created_at),
            expires_at: t.expires_at.map(iso),
            last_activity: t.last_used_at.map(iso),
            prefix: t.prefix.clone(),
            // JupyterHub 5 gives tokens scopes, not roles.
            roles: Vec::new(),
            scopes: t.scopes.clone(),
            session_id: None,
            oauth_client: None,
            token: None,
        }
    }
}

/// Reads a token id as JupyterHub writes it (`a12`) or bare (`12`).
pub fn parse_token_id(s: &str) -> Option<labhub_core::TokenId> {
    s.strip_prefix('a').unwrap_or(s).parse().ok().filter(|n| *n > 0).map(labhub_core::TokenId::new)
}
