//! A provider's signing keys (its JWKS), cached for a while and fetched again as soon as a
//! token is signed with a key the cache does not hold: that is how a provider rotating its
//! keys looks from here.

use std::sync::Mutex;

use openidconnect::core::CoreJsonWebKeySet;
use openidconnect::{ClaimsVerificationError, JsonWebKeySet, JsonWebKeySetUrl, SignatureVerificationError};
use time::OffsetDateTime;

use super::SsoError;
use super::http::ProviderHttp;

/// How long fetched keys are trusted without a token asking for a key they lack.
pub(crate) const KEYS_TTL: time::Duration = time::Duration::hours(1);

struct Fetched {
    uri: String,
    keys: CoreJsonWebKeySet,
    at: OffsetDateTime,
}

/// The cached keys of one provider.
pub(crate) struct KeyCache {
    http: ProviderHttp,
    cached: Mutex<Option<Fetched>>,
}

impl KeyCache {
    /// An empty cache fetching through `http`.
    pub(crate) fn new(http: ProviderHttp) -> Self {
        Self { http, cached: Mutex::new(None) }
    }

    /// Keeps keys that arrived another way (with the discovery document).
    pub(crate) fn store(&self, uri: &JsonWebKeySetUrl, keys: CoreJsonWebKeySet, now: OffsetDateTime) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(Fetched { uri: uri.to_string(), keys, at: now });
    }

    fn fresh(&self, uri: &JsonWebKeySetUrl, now: OffsetDateTime) -> Option<CoreJsonWebKeySet> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached.as_ref().filter(|f| f.uri == **uri && now - f.at < KEYS_TTL).map(|f| f.keys.clone())
    }

    async fn fetch(&self, uri: &JsonWebKeySetUrl, now: OffsetDateTime) -> Result<CoreJsonWebKeySet, SsoError> {
        let keys = JsonWebKeySet::fetch_async(uri, self.http.client()).await.map_err(|e| match e {
            openidconnect::DiscoveryError::Request(e) => self.http.client_failure(&e),
            other => self.http.bad_answer(format!("its signing keys could not be read: {other}")),
        })?;
        self.store(uri, keys.clone(), now);
        Ok(keys)
    }

    /// Runs `check` with the provider's keys. When the token names a key the cached set lacks,
    /// the keys are fetched once more and `check` runs again: a rotated key is picked up at its
    /// first use, and a token signed with an unknown key costs one fetch, not a loop.
    pub(crate) async fn verify<T>(
        &self,
        uri: &JsonWebKeySetUrl,
        now: OffsetDateTime,
        check: impl Fn(CoreJsonWebKeySet) -> Result<T, ClaimsVerificationError>,
    ) -> Result<Result<T, ClaimsVerificationError>, SsoError> {
        let (keys, just_fetched) = match self.fresh(uri, now) {
            Some(keys) => (keys, false),
            None => (self.fetch(uri, now).await?, true),
        };
        match check(keys) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey))
                if !just_fetched =>
            {
                tracing::info!(
                    provider = self.http.provider(),
                    "a token names an unknown signing key; fetching the keys again"
                );
                Ok(check(self.fetch(uri, now).await?))
            }
            answer => Ok(answer),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openidconnect::core::{CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey};
    use openidconnect::{
        Audience, ClientId, ClientSecret, IdTokenClaims, IssuerUrl, JsonWebKeyId, Nonce, PrivateSigningKey,
        StandardClaims, SubjectIdentifier,
    };

    use super::*;
    use crate::oidc::openid::{Expected, LabIdToken, check_id_token};

    /// A provider's JWKS endpoint that the test can rotate, counting how often it is read.
    struct FakeJwks {
        uri: JsonWebKeySetUrl,
        keys: Arc<Mutex<serde_json::Value>>,
        fetches: Arc<AtomicUsize>,
    }

    impl FakeJwks {
        async fn start(keys: &[&CoreRsaPrivateSigningKey]) -> Self {
            let served = Arc::new(Mutex::new(serde_json::Value::Null));
            let fetches = Arc::new(AtomicUsize::new(0));
            let (s, f) = (served.clone(), fetches.clone());
            let app = axum::Router::new().route(
                "/jwks",
                axum::routing::get(move || {
                    let (s, f) = (s.clone(), f.clone());
                    async move {
                        f.fetch_add(1, Ordering::SeqCst);
                        axum::Json(s.lock().unwrap().clone())
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let uri = JsonWebKeySetUrl::new(format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            let fake = Self { uri, keys: served, fetches };
            fake.serve(keys);
            fake
        }

        fn serve(&self, keys: &[&CoreRsaPrivateSigningKey]) {
            let set = CoreJsonWebKeySet::new(keys.iter().map(|k| k.as_verification_key()).collect());
            *self.keys.lock().unwrap() = serde_json::to_value(set).unwrap();
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    fn rsa_key(kid: &str) -> CoreRsaPrivateSigningKey {
        // openssl makes a 2048-bit key in milliseconds (the rsa crate takes seconds in a debug build);
        // `-traditional` writes the PKCS#1 form the JWK crate reads.
        let out = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "2048"])
            .output()
            .expect("openssl (Debian package openssl)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pem = String::from_utf8(out.stdout).unwrap();
        CoreRsaPrivateSigningKey::from_pem(&pem, Some(JsonWebKeyId::new(kid.into()))).unwrap()
    }

    const ISSUER: &str = "https://id.example.org";

    fn token(key: &CoreRsaPrivateSigningKey, now: OffsetDateTime) -> LabIdToken {
        let t = |d: time::Duration| chrono::DateTime::from_timestamp((now + d).unix_timestamp(), 0).unwrap();
        let claims = IdTokenClaims::new(
            IssuerUrl::new(ISSUER.into()).unwrap(),
            vec![Audience::new("labhub".into())],
            t(time::Duration::hours(3)),
            t(time::Duration::ZERO),
            StandardClaims::new(SubjectIdentifier::new("person-1".into())),
            Default::default(),
        )
        .set_nonce(Some(Nonce::new("n".into())));
        LabIdToken::new(claims, key, CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, None, None).unwrap()
    }

    async fn verify(
        cache: &KeyCache,
        fake: &FakeJwks,
        token: &LabIdToken,
        at: OffsetDateTime,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ClaimsVerificationError> {
        let (issuer, client_id) = (IssuerUrl::new(ISSUER.into()).unwrap(), ClientId::new("labhub".into()));
        let (secret, nonce) = (ClientSecret::new("s".into()), Nonce::new("n".into()));
        let expected = Expected {
            issuer: &issuer,
            client_id: &client_id,
            client_secret: &secret,
            algs: &[],
            nonce: &nonce,
            now: at,
            access_token: None,
        };
        cache.verify(&fake.uri, at, |keys| check_id_token(token, keys, &expected)).await.unwrap()
    }

    #[tokio::test]
    async fn unknown_key_ids_refetch_the_keys_once() {
        let (a, b, c) = (rsa_key("a"), rsa_key("b"), rsa_key("c"));
        let fake = FakeJwks::start(&[&a]).await;
        let cache = KeyCache::new(ProviderHttp::new("Fake", std::time::Duration::from_secs(5)).unwrap());
        let now = OffsetDateTime::now_utc();

        assert!(verify(&cache, &fake, &token(&a, now), now).await.is_ok());
        assert!(verify(&cache, &fake, &token(&a, now), now).await.is_ok());
        assert_eq!(fake.fetches(), 1, "fresh keys come from the cache");

        fake.serve(&[&b]);
        assert!(verify(&cache, &fake, &token(&b, now), now).await.is_ok(), "a rotated key is picked up");
        assert_eq!(fake.fetches(), 2);

        let refused = verify(&cache, &fake, &token(&c, now), now).await.unwrap_err();
        assert!(matches!(
            refused,
            ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)
        ));
        assert_eq!(fake.fetches(), 3, "an unknown key costs one fetch, not a loop");

        let later = now + KEYS_TTL + time::Duration::minutes(1);
        assert!(verify(&cache, &fake, &token(&b, now), later).await.is_ok());
        assert_eq!(fake.fetches(), 4, "stale keys are fetched again");
    }

    #[tokio::test]
    async fn expiry_allows_a_little_clock_skew_and_no_more() {
        let a = rsa_key("a");
        let fake = FakeJwks::start(&[&a]).await;
        let cache = KeyCache::new(ProviderHttp::new("Fake", std::time::Duration::from_secs(5)).unwrap());
        let now = OffsetDateTime::now_utc();
        let expires = now + time::Duration::hours(3);
        let within = expires + time::Duration::seconds(30);
        assert!(verify(&cache, &fake, &token(&a, now), within).await.is_ok(), "30 s of skew is forgiven");
        let beyond = expires + time::Duration::seconds(90);
        let refused = verify(&cache, &fake, &token(&a, now), beyond).await.unwrap_err();
        assert!(matches!(refused, ClaimsVerificationError::Expired(_)), "{refused:?}");
        let early = now - time::Duration::minutes(5);
        let refused = verify(&cache, &fake, &token(&a, now), early).await.unwrap_err();
        assert!(matches!(refused, ClaimsVerificationError::Expired(_)), "issued in the future: {refused:?}");
    }
}
