//! One connection to the directory: connecting (trying each URL in turn), TLS with the
//! hub's one crypto provider, and the few operations a sign-in needs, each under the
//! configured timeout. Passwords pass through here and nowhere are they logged.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use url::Url;

use super::LdapError;
use super::config::LdapTls;

/// Result codes that mean "these credentials are not good" (RFC 4511).
const INVALID_CREDENTIALS: u32 = 49;

/// The TLS settings for the directory: the CA file's certificates (or the system's), with
/// the *ring* provider the rest of the hub uses, so the binary carries one crypto provider.
pub(super) fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, LdapError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let unreadable = |e: &dyn std::fmt::Display| LdapError::Setup(format!("ca_file {}: {e}", path.display()));
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                let cert = cert.map_err(|e| unreadable(&e))?;
                roots.add(cert).map_err(|e| unreadable(&e))?;
            }
            if roots.is_empty() {
                return Err(unreadable(&"no certificate in the file"));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system certificate rustls cannot use is simply not trusted.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::Setup(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An open connection, and the URL it went to.
pub(super) struct Session {
    ldap: Ldap,
    pub(super) url: Url,
    timeout: Duration,
}

/// How to reach the directory.
pub(super) struct Reach<'a> {
    pub(super) urls: &'a [Url],
    pub(super) mode: LdapTls,
    pub(super) tls: Option<&'a Arc<rustls::ClientConfig>>,
    pub(super) timeout: Duration,
}

impl Reach<'_> {
    /// Connects to the first URL that answers (and completes TLS); the error of the last one
    /// otherwise.
    pub(super) async fn connect(&self) -> Result<Session, LdapError> {
        let mut last = LdapError::Setup("no url configured".into());
        for url in self.urls {
            match self.connect_one(url).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::warn!(url = %url, error = %e, "the directory could not be reached at this URL");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn connect_one(&self, url: &Url) -> Result<Session, LdapError> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.timeout);
        if let Some(tls) = self.tls {
            settings = settings.set_config(tls.clone());
        }
        if self.mode == LdapTls::Starttls {
            settings = settings.set_starttls(true);
        }
        let (conn, ldap) = LdapConnAsync::from_url_with_settings(settings, url).await.map_err(|e| {
            let where_ = url.to_string();
            match e {
                ldap3::LdapError::Timeout { .. } => LdapError::Timeout { what: format!("connecting to {where_}") },
                ldap3::LdapError::Io { source } => LdapError::Unreachable { url: where_, detail: source.to_string() },
                ldap3::LdapError::Rustls { source } => LdapError::Tls { url: where_, detail: source.to_string() },
                ldap3::LdapError::LdapResult { result } => {
                    LdapError::Tls { url: where_, detail: format!("StartTLS refused ({}: {})", result.rc, result.text) }
                }
                other => LdapError::Unreachable { url: where_, detail: other.to_string() },
            }
        })?;
        ldap3::drive!(conn);
        Ok(Session { ldap, url: url.clone(), timeout: self.timeout })
    }
}

/// An operation's failure that is about the connection, not the answer.
fn broken(what: &str, e: ldap3::LdapError, url: &Url) -> LdapError {
    match e {
        ldap3::LdapError::Timeout { .. } => LdapError::Timeout { what: what.to_string() },
        other => LdapError::Unreachable { url: url.to_string(), detail: format!("{what}: {other}") },
    }
}

/// What a bind said.
pub(super) enum Bound {
    Yes,
    /// Invalid credentials (result 49).
    No,
    /// Refused for another reason, with the result code and text.
    Refused(u32, String),
}

impl Session {
    /// A simple bind. The caller makes sure the password is not empty.
    pub(super) async fn bind(&mut self, dn: &str, password: &str) -> Result<Bound, LdapError> {
        let result = self.ldap.with_timeout(self.timeout).simple_bind(dn, password).await;
        let result = result.map_err(|e| broken("binding", e, &self.url))?;
        Ok(match result.rc {
            0 => Bound::Yes,
            INVALID_CREDENTIALS => Bound::No,
            rc => Bound::Refused(rc, result.text),
        })
    }

    /// A search; every entry with the attributes asked for. A base that does not exist is an
    /// error that names it.
    pub(super) async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<SearchEntry>, LdapError> {
        let result = self.ldap.with_timeout(self.timeout).search(base, scope, filter, attrs.to_vec()).await;
        let result = result.map_err(|e| broken("searching", e, &self.url))?;
        let (entries, _) = result.non_error().map_err(|e| LdapError::Search {
            base: base.to_string(),
            detail: match e {
                ldap3::LdapError::LdapResult { result } => format!("result {}: {}", result.rc, result.text),
                other => other.to_string(),
            },
        })?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// Says goodbye; the directory closes the connection.
    pub(super) async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}
