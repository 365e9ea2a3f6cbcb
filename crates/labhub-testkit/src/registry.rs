//! A real container registry for tests: Debian's `docker-registry` (the CNCF distribution
//! registry), started by the test with its storage in a temporary folder, no authentication.
//! Each registry is its own process, port and folder.
//!
//! - [`Registry::start`]: on a free loopback port, plain HTTP, which the engine pushes to and
//!   pulls from as it does for any registry on 127.0.0.0/8 (insecure by default).
//! - [`Registry::start_tls`]: on another address of this machine (the swarm's manager address,
//!   which a second node reaches), with TLS from a CA the test makes. Every engine of this
//!   machine trusts that CA for exactly that address and port through
//!   `/etc/docker/certs.d/<address>:<port>/ca.crt`, which the engine reads at each connection
//!   (no restart) and which is removed again on drop. A second node's engine runs in a mount
//!   namespace copied from the host's, so it reads the same folder.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::make_certificates;
use crate::pg::free_port;

/// Where Debian installs the registry.
const PROGRAM: &str = "/usr/bin/docker-registry";
/// Where the engine looks for the CA of a registry it reaches by TLS.
const ENGINE_CERTS: &str = "/etc/docker/certs.d";

/// A running registry. Dropping it kills the process and removes its storage (and the
/// engines' trust in it).
pub struct Registry {
    child: Child,
    /// Its `address:port`, as image references name it.
    host: String,
    /// The CA's certificate, with TLS.
    ca_pem: Option<Vec<u8>>,
    /// The engines' folder trusting it, with TLS.
    trusted: Option<PathBuf>,
    /// Whether `/etc/docker/certs.d` itself was made for it (and goes with it).
    made_certs_dir: bool,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A plain-HTTP registry on a free loopback port, answering once this returns.
    pub async fn start() -> Self {
        Self::launch("127.0.0.1", free_port(), false).await
    }

    /// A TLS registry on `ip:port` (an address of this machine), trusted by this machine's
    /// engines (see the module docs), answering once this returns.
    pub async fn start_tls(ip: &str, port: u16) -> Self {
        Self::launch(ip, port, true).await
    }

    async fn launch(ip: &str, port: u16, tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("a folder for the registry");
        let host = format!("{ip}:{port}");
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("storage").display()
        );
        let mut ca_pem = None;
        if tls {
            let (ca, cert, key) = make_certificates(dir.path(), ip);
            config.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
            ca_pem = Some(std::fs::read(&ca).expect("the registry's CA"));
        }
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
        // Made before the engines' trust is written, so its drop takes that away again.
        let mut registry = Self { child, host, ca_pem, trusted: None, made_certs_dir: false, _dir: dir };
        if let Some(pem) = &registry.ca_pem {
            registry.made_certs_dir = !std::path::Path::new(ENGINE_CERTS).exists();
            let folder = PathBuf::from(ENGINE_CERTS).join(&registry.host);
            registry.trusted = Some(folder.clone());
            std::fs::create_dir_all(&folder).expect("the engines' folder for the registry's CA");
            std::fs::write(folder.join("ca.crt"), pem).expect("the engines' trust in the registry");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = registry.client().get(registry.url("/v2/")).send().await
                && r.status().is_success()
            {
                return registry;
            }
            assert!(Instant::now() < deadline, "the registry on {} did not answer within 30 s", registry.host);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its address as image references name it: `address:port`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The repositories it holds (`/v2/_catalog`).
    pub async fn repositories(&self) -> Vec<String> {
        let r = self.client().get(self.url("/v2/_catalog")).send().await.unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        body["repositories"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
    }

    /// The digest of the manifest `repository:reference` names, as the registry serves it.
    pub async fn manifest_digest(&self, repository: &str, reference: &str) -> Option<String> {
        let r = self
            .client()
            .head(self.url(&format!("/v2/{repository}/manifests/{reference}")))
            // What an engine pushes: Docker's manifest or list, or OCI's manifest or index.
            .header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json, \
                 application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            )
            .send()
            .await
            .unwrap();
        if !r.status().is_success() {
            return None;
        }
        r.headers().get("Docker-Content-Digest").map(|d| d.to_str().unwrap().to_string())
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.host)
    }

    fn client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5));
        if let Some(pem) = &self.ca_pem {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("the CA parses"));
        }
        builder.build().expect("a client")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(folder) = &self.trusted {
            let _ = std::fs::remove_dir_all(folder);
            if self.made_certs_dir {
                // Only if empty: another registry's trust may have come meanwhile.
                let _ = std::fs::remove_dir(ENGINE_CERTS);
            }
        }
    }
}
