//! A real OpenID Connect provider for tests: the PyPI package `oidc-provider-mock` (pinned),
//! run as a child process on a free loopback port. It serves discovery, JWKS, an authorize
//! page, a token endpoint and userinfo, signs real RS256 ID tokens, and lets a test set a
//! person's claims with `PUT /users/{sub}`.
//!
//! The package lives in a Python venv the harness creates once (`python3 -m venv` and pip)
//! under the cargo target folder, or wherever `LABHUB_TEST_VENV` points (CI can prepare it
//! ahead). A file lock keeps parallel test processes from creating it twice.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode, redirect};
use serde_json::Value;

use crate::pg::free_port;

/// The version of `oidc-provider-mock` the suite is written against.
pub const MOCK_VERSION: &str = "0.3.4";

/// Where the venv is: `LABHUB_TEST_VENV`, else `<cargo target folder>/labhub-test-venv`.
pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LABHUB_TEST_VENV") {
        return dir.into();
    }
    // Test binaries run from <target>/<profile>/deps/; cargo marks <target> with CACHEDIR.TAG.
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()).map(Path::to_path_buf);
    target.unwrap_or_else(std::env::temp_dir).join("labhub-test-venv")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The venv with the pinned package, created on first use (blocking: pip needs the network
/// the first time, then never again).
pub fn ensure_venv() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY.get_or_init(|| with_package("oidc-provider-mock", MOCK_VERSION)).clone()
}

/// The venv with `package==version` installed into it (the venv made first if need be), each
/// package marked once installed; a file lock keeps parallel test processes apart.
pub fn with_package(package: &str, version: &str) -> PathBuf {
    let venv = venv_dir();
    let marker = venv.join(format!(".{package}-{version}"));
    if marker.is_file() {
        return venv;
    }
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent).expect("the venv's folder");
    }
    let lock = File::create(venv.with_extension("lock")).expect("the venv lock file");
    lock.lock().expect("locking the venv");
    // Another process may have finished it while this one waited for the lock.
    if !marker.is_file() {
        if !venv.join("bin/pip").is_file() {
            let _ = std::fs::remove_dir_all(&venv);
            let python = std::env::var("LABHUB_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
            run(Command::new(python).args(["-m", "venv"]).arg(&venv));
        }
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("{package}=={version}"),
        ]));
        std::fs::write(&marker, version).expect("the venv marker");
    }
    venv
}

/// How to run the provider.
#[derive(Debug, Clone, Default)]
pub struct MockOptions {
    /// `-e`: how long ID and access tokens live (the package's default is an hour).
    pub token_max_age: Option<Duration>,
}

/// A running `oidc-provider-mock`. Dropping it kills the process.
pub struct MockProvider {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
    http: Client,
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl MockProvider {
    /// Starts a provider with the package's defaults (nonce required, as the hub always sends one).
    pub async fn start() -> Self {
        Self::start_with(MockOptions::default()).await
    }

    /// Starts a provider.
    pub async fn start_with(options: MockOptions) -> Self {
        let venv = tokio::task::spawn_blocking(ensure_venv).await.expect("preparing the venv");
        let http = Client::builder().redirect(redirect::Policy::none()).build().expect("an HTTP client");
        let mut last_log = String::new();
        // A free port can be taken between asking for it and the child binding it: try again.
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!("labhub-oidc-mock-{}-{port}.log", std::process::id()));
            let mut cmd = Command::new(venv.join("bin/oidc-provider-mock"));
            cmd.args(["-p", &port.to_string(), "-n", "true"]);
            if let Some(age) = options.token_max_age {
                cmd.args(["-e", &age.as_secs().to_string()]);
            }
            let child = cmd
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("the provider's log file"))
                .spawn()
                .expect("starting oidc-provider-mock");
            let mut provider = Self { child: Some(child), port, log, http: http.clone() };
            if provider.wait_ready().await {
                return provider;
            }
            last_log = std::fs::read_to_string(&provider.log).unwrap_or_default();
        }
        panic!("oidc-provider-mock did not start:\n{last_log}");
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer());
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            if let Ok(r) = self.http.get(&discovery).send().await
                && r.status() == StatusCode::OK
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The issuer: the mock names itself after the host it is reached by.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the provider now (to test a provider that went away).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sets the claims of the person with subject `sub` (`email`, `email_verified`,
    /// `preferred_username`, `groups`, …).
    pub async fn set_user(&self, sub: &str, claims: Value) {
        let r = self
            .http
            .put(format!("{}/users/{sub}", self.issuer()))
            .json(&claims)
            .send()
            .await
            .expect("the provider's user endpoint");
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "setting {sub}'s claims");
    }

    /// Signs `sub` in for another application (`client_id`) straight at the provider, as that
    /// application would, and returns the ID token it gets.
    pub async fn id_token_for(&self, client_id: &str, sub: &str, nonce: &str) -> String {
        let redirect_uri = "http://127.0.0.1:9/elsewhere";
        let authorize = reqwest::Url::parse_with_params(
            &format!("{}/oauth2/authorize", self.issuer()),
            [
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("scope", "openid profile email"),
                ("state", "direct"),
                ("nonce", nonce),
            ],
        )
        .expect("an authorize URL");
        let r = self.http.post(authorize).form(&[("sub", sub)]).send().await.expect("the authorize answer");
        let location = r.headers().get("location").and_then(|l| l.to_str().ok()).expect("a redirect with a code");
        let code = reqwest::Url::parse(location)
            .expect("a URL")
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        let answer: Value = self
            .http
            .post(format!("{}/oauth2/token", self.issuer()))
            .basic_auth(client_id, Some("any secret"))
            .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", redirect_uri)])
            .send()
            .await
            .expect("the token answer")
            .json()
            .await
            .expect("token JSON");
        answer["id_token"].as_str().expect("an ID token").to_string()
    }
}
