//! HTTP calls to a provider: one client per provider with connect and total timeouts and no
//! redirects (a token call that follows a redirect could be steered anywhere), failures
//! sorted into "down", "slow" and "answered badly", and paged GETs on forge APIs.

use std::time::Duration;

use openidconnect::HttpClientError;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, LINK};
use serde::de::DeserializeOwned;
use url::Url;

use super::SsoError;

/// Pages of a forge's list followed at most; past it, the list is cut short.
const MAX_PAGES: usize = 10;

/// The HTTP client for one provider.
#[derive(Clone)]
pub(crate) struct ProviderHttp {
    client: reqwest::Client,
    /// The provider's display name, for messages.
    provider: String,
    timeout: Duration,
}

impl ProviderHttp {
    /// A client whose calls give up after `timeout` (connecting alone after at most 5 s).
    pub(crate) fn new(provider: &str, timeout: Duration) -> Result<Self, SsoError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // GitHub's API refuses requests without a User-Agent.
            .user_agent(concat!("labhub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SsoError::Setup(e.to_string()))?;
        Ok(Self { client, provider: provider.to_string(), timeout })
    }

    /// The client, for the OAuth2 and OpenID Connect crates.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The provider's display name.
    pub(crate) fn provider(&self) -> &str {
        &self.provider
    }

    /// Sorts a failed call: slow, down, or something else.
    pub(crate) fn failure(&self, e: &reqwest::Error) -> SsoError {
        if e.is_timeout() {
            SsoError::Timeout { provider: self.provider.clone(), seconds: self.timeout.as_secs().max(1) }
        } else if e.is_connect() || e.is_request() {
            SsoError::Unreachable { provider: self.provider.clone(), detail: innermost(e) }
        } else {
            self.bad_answer(innermost(e))
        }
    }

    /// Sorts a failure reported through the OAuth2 crates' HTTP adapter.
    pub(crate) fn client_failure(&self, e: &HttpClientError<reqwest::Error>) -> SsoError {
        match e {
            HttpClientError::Reqwest(e) => self.failure(e),
            other => SsoError::Unreachable { provider: self.provider.clone(), detail: other.to_string() },
        }
    }

    /// "The provider answered, but not usefully."
    pub(crate) fn bad_answer(&self, detail: impl Into<String>) -> SsoError {
        SsoError::BadAnswer { provider: self.provider.clone(), detail: detail.into() }
    }

    /// GETs a JSON document from an API with a bearer token; returns it and the next page's URL.
    async fn get_page<T: DeserializeOwned>(
        &self,
        url: Url,
        token: &str,
        accept: &'static str,
    ) -> Result<(T, Option<Url>), SsoError> {
        let resp = self
            .client
            .get(url.clone())
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(ACCEPT, accept)
            .send()
            .await
            .map_err(|e| self.failure(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.bad_answer(format!("{} answered {status}", url.path())));
        }
        let next = next_page(resp.headers(), &url);
        let body = resp.bytes().await.map_err(|e| self.failure(&e))?;
        let value = serde_json::from_slice(&body)
            .map_err(|e| self.bad_answer(format!("{} is not the expected JSON: {e}", url.path())))?;
        Ok((value, next))
    }

    /// GETs one JSON document.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        url: Url,
        token: &str,
        accept: &'static str,
    ) -> Result<T, SsoError> {
        Ok(self.get_page(url, token, accept).await?.0)
    }

    /// GETs every page of a JSON list, following `Link: <…>; rel="next"` on the same origin.
    pub(crate) async fn get_all<T: DeserializeOwned>(
        &self,
        url: Url,
        token: &str,
        accept: &'static str,
    ) -> Result<Vec<T>, SsoError> {
        let mut all = Vec::new();
        let mut next = Some(url);
        for _ in 0..MAX_PAGES {
            let Some(url) = next.take() else { break };
            let (page, following) = self.get_page::<Vec<T>>(url, token, accept).await?;
            all.extend(page);
            next = following;
        }
        Ok(all)
    }
}

/// The deepest cause of an error: reqwest's own message is often just "error sending request".
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// The `rel="next"` URL of a `Link` header, if it stays on the origin of `current`: the bearer
/// token goes with it, so it must never be sent elsewhere.
fn next_page(headers: &HeaderMap, current: &Url) -> Option<Url> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let url = current.join(target).ok()?;
        (is_next && url.origin() == current.origin()).then_some(url)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(LINK, value.parse().unwrap());
        h
    }

    #[test]
    fn next_pages_stay_on_the_api() {
        let here = Url::parse("https://api.github.com/user/orgs?per_page=100").unwrap();
        let h = link(
            r#"<https://api.github.com/user/orgs?page=2>; rel="next", <https://api.github.com/user/orgs?page=5>; rel="last""#,
        );
        assert_eq!(next_page(&h, &here).unwrap().as_str(), "https://api.github.com/user/orgs?page=2");
        let h = link(r#"<https://evil.example/steal>; rel="next""#);
        assert_eq!(next_page(&h, &here), None);
        let h = link(r#"<https://api.github.com/user/orgs?page=1>; rel="prev""#);
        assert_eq!(next_page(&h, &here), None);
        assert_eq!(next_page(&HeaderMap::new(), &here), None);
    }
}
