//! JSON models with JupyterHub's field names.

use labhub_db::tokens::ApiToken;
use labhub_db::users::User;
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
}

impl UserModel {
    /// The model of an account.
    pub fn of(user: &User) -> Self {
        Self {
            kind: "user",
            name: user.name.to_string(),
            admin: user.admin,
            roles: if user.admin { vec!["admin", "user"] } else { vec!["user"] },
            groups: Vec::new(),
            server: None,
            pending: None,
            created: iso(user.created_at),
            last_activity: user.last_activity.map(iso),
            servers: serde_json::Map::new(),
            account_state: user.state.as_str(),
        }
    }
}

/// The models of several accounts, with their servers and groups.
pub async fn user_models(_hub: &labhub_service::Hub, users: Vec<User>) -> Result<Vec<UserModel>, crate::AppError> {
    Ok(users.iter().map(UserModel::of).collect())
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
    pub scopes: Vec<&'static str>,
    pub session_id: Option<String>,
    pub oauth_client: Option<String>,
    /// The token itself: only in the answer that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl TokenModel {
    /// The model of a token (never the token itself).
    pub fn of(owner: &str, t: &ApiToken) -> Self {
        Self {
            id: format!("a{}", t.token_id),
            kind: "api_token",
            user: owner.to_string(),
            note: t.note.clone(),
            created: iso(t.created_at),
            expires_at: t.expires_at.map(iso),
            last_activity: t.last_used_at.map(iso),
            prefix: t.prefix.clone(),
            // A labhub token acts with its owner's full rights.
            roles: Vec::new(),
            scopes: vec!["inherit"],
            session_id: None,
            oauth_client: None,
            token: None,
        }
    }
}

/// Reads a token id as JupyterHub writes it (`a12`) or bare (`12`).
pub fn parse_token_id(s: &str) -> Option<i64> {
    s.strip_prefix('a').unwrap_or(s).parse().ok().filter(|n| *n > 0)
}
