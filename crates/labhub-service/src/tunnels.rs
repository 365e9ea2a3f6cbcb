//! Open WebSockets, decided again after they were let in. Each is held by a watch naming its
//! holder and the credential it came with (`labhub_proxy::TunnelWatch`, taken before the gate
//! decides). When shares, roles or accounts change, visitors are decided again by the one gate
//! (`Shares::recheck_visitors`); when a session or an API token ends on any replica (signed
//! out, revoked, a session reaped past its limits: Postgres announces it), every WebSocket
//! opened with it closes, the owner's own too, as every new request with it is refused. An
//! API token past its expiry is deleted by no one, so nothing announces it: its WebSockets
//! close at the next whole reload (`servers.route_reload_interval`, which runs the same pass
//! as a safety net for anything an announcement could not say).
//!
//! One window is left by the order of things: an upgrade whose credential was looked up just
//! before an announcement, and whose watch was taken just after this process acted on it, is
//! seen by neither. [`Tunnels::changes`] counts the passes made; an upgrade that saw the count
//! move between its lookup and its watch asks Postgres about its own credential
//! ([`Tunnels::still_valid`]) before it is forwarded. (A visitor's rights changed in that
//! window are not asked about again: the next pass decides about them.)

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use labhub_core::{Credential, SessionId, TokenId};
use labhub_db::{sessions, tokens};

use crate::{AuthVia, Hub, ServiceError};

/// This process's count of passes over open WebSockets begun.
#[derive(Default)]
pub(crate) struct TunnelsState {
    changes: AtomicU64,
}

/// The WebSockets this process holds open, decided again.
#[derive(Clone, Copy)]
pub struct Tunnels<'h> {
    hub: &'h Hub,
}

impl Hub {
    /// The WebSockets this process holds open, decided again when credentials end.
    pub fn tunnels(&self) -> Tunnels<'_> {
        Tunnels { hub: self }
    }
}

impl AuthVia {
    /// The credential a connection let in this way closes with, if it can end.
    pub fn credential(&self) -> Option<Credential> {
        match *self {
            Self::Session { session_id } => Some(Credential::Session(session_id)),
            Self::Token { token_id } => Some(Credential::Token(token_id)),
            Self::Recheck | Self::SingleUser => None,
        }
    }
}

impl Tunnels<'_> {
    /// How many passes over open WebSockets this process has begun (on announcements and
    /// whole reloads): read it before the credential of an upgrade is looked up, and again
    /// once its watch is taken.
    pub fn changes(&self) -> u64 {
        self.hub.0.tunnels.changes.load(Ordering::SeqCst)
    }

    /// Whether a connection let in by `via` may still be held open: its session or token
    /// still exists (a token also unexpired), for an active account. Asks Postgres.
    pub async fn still_valid(&self, via: AuthVia) -> Result<bool, ServiceError> {
        let Some(credential) = via.credential() else { return Ok(true) };
        Ok(self.live(&HashSet::from([credential])).await?.contains(&credential))
    }

    /// After Postgres announced that credentials ended or accounts' rights changed (or after
    /// the announcements were lost): counts it, closes every WebSocket opened with a session or
    /// token that ended, then decides visitors again by the one gate. The count moves first,
    /// so an upgrade whose watch this pass may not see asks for itself.
    pub(crate) async fn credentials_changed(&self) -> Result<(), ServiceError> {
        self.hub.0.tunnels.changes.fetch_add(1, Ordering::SeqCst);
        let closed = self.close_ended().await?;
        if closed > 0 {
            tracing::info!(tunnels = closed, "closed WebSockets opened with a session or token that ended");
        }
        self.hub.shares().recheck_visitors().await
    }

    /// Closes the WebSockets, to users' servers and to services, whose credential ended; how
    /// many. Only the credentials asked about are judged: one first held meanwhile waits for
    /// the next pass (its upgrade saw the count move and asked for itself).
    async fn close_ended(&self) -> Result<usize, ServiceError> {
        let routes = self.hub.routes();
        let targets = self.hub.services().targets();
        let mut held = routes.credentials();
        held.extend(targets.iter().flat_map(|t| t.credentials()));
        if held.is_empty() {
            return Ok(0);
        }
        let live = self.live(&held).await?;
        let ended = |c: Credential| held.contains(&c) && !live.contains(&c);
        let mut closed = routes.close_credentials_where(ended);
        for target in &targets {
            closed += target.close_credentials_where(ended);
        }
        Ok(closed)
    }

    /// Of `asked`, those still valid (see [`Tunnels::still_valid`]).
    async fn live(&self, asked: &HashSet<Credential>) -> Result<HashSet<Credential>, ServiceError> {
        let mut session_ids: Vec<SessionId> = Vec::new();
        let mut token_ids: Vec<TokenId> = Vec::new();
        for c in asked {
            match *c {
                Credential::Session(id) => session_ids.push(id),
                Credential::Token(id) => token_ids.push(id),
            }
        }
        let mut live = HashSet::new();
        if !session_ids.is_empty() {
            let found = sessions::live_ids(self.hub.db(), &session_ids).await?;
            live.extend(found.into_iter().map(Credential::Session));
        }
        if !token_ids.is_empty() {
            let found = tokens::live_ids(self.hub.db(), &token_ids, self.hub.now()).await?;
            live.extend(found.into_iter().map(Credential::Token));
        }
        Ok(live)
    }
}
