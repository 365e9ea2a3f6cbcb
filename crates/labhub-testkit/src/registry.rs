//! A real container registry for tests: Debian's `docker-registry` (the CNCF distribution
//! registry), started by the test on a free loopback port with its storage in a temporary
//! folder, no authentication. The engine pushes to and pulls from `127.0.0.1:<port>` over
//! plain HTTP, as it does for any registry on a loopback address (Docker treats 127.0.0.0/8
//! as insecure registries by default). Each registry is its own process, port and folder.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pg::free_port;

/// Where Debian installs the registry.
const PROGRAM: &str = "/usr/bin/docker-registry";

/// A running registry. Dropping it kills the process and removes its storage.
pub struct Registry {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits until it answers `/v2/`.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a folder for the registry");
        let port = free_port();
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("the registry's configuration");
        let child = Command::new(PROGRAM)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            // It logs every 404 (a push asks for each layer first) as an error: to its folder.
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).expect("the registry's log"))
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {PROGRAM} (is docker-registry installed?): {e}"));
        let registry = Self { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = registry.get("/v2/").await
                && r.status().is_success()
            {
                return registry;
            }
            assert!(Instant::now() < deadline, "the registry on port {port} did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its address as image references name it: `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The repositories it holds (`/v2/_catalog`).
    pub async fn repositories(&self) -> Vec<String> {
        let body: serde_json::Value = self.get("/v2/_catalog").await.unwrap().json().await.unwrap();
        body["repositories"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
    }

    /// The digest of the manifest `repository:reference` names, as the registry serves it.
    pub async fn manifest_digest(&self, repository: &str, reference: &str) -> Option<String> {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = client
            .head(format!("http://{}/v2/{repository}/manifests/{reference}", self.host()))
            .header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
            .send()
            .await
            .unwrap();
        if !r.status().is_success() {
            return None;
        }
        r.headers().get("Docker-Content-Digest").map(|d| d.to_str().unwrap().to_string())
    }

    async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?;
        client.get(format!("http://{}{path}", self.host())).send().await
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
