//! `labhub serve` heals its own database: the embedded cluster's postmaster killed with
//! SIGKILL behind the hub's back (as the OOM killer does) is restarted, the hub serves again
//! without a restart of its own, and admins are told.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labhub_testkit::app::{browser, csrf_of};
use labhub_testkit::pg::free_port;

const EXE: &str = env!("CARGO_BIN_EXE_labhub-exe");
/// Hang guards only: the test passes as soon as the hub serves again.
const BOOT: Duration = Duration::from_secs(90);
const HEAL: Duration = Duration::from_secs(120);

/// The hub process, with everything it printed so far; killed when dropped, and the network
/// it made for servers removed.
struct Hub {
    child: Child,
    log: Arc<Mutex<String>>,
    url: String,
    network: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let _ = Command::new("docker").args(["network", "rm", &self.network]).output();
    }
}

impl Hub {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

async fn status(c: &reqwest::Client, url: &str) -> Option<u16> {
    c.get(url).timeout(Duration::from_secs(10)).send().await.ok().map(|r| r.status().as_u16())
}

fn postmaster_pid(data: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postgres/data/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_restarts_its_embedded_postgres_when_it_is_killed() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let port = free_port();
    // A hub id of this test's own, and no image build: the test must not touch what a real hub
    // on this machine owns.
    let hub_id = format!("lhtest{}xheal", std::process::id());
    let mut child = Command::new(EXE)
        .arg("serve")
        .env_remove("LABHUB_CONFIG")
        .env_remove("DATABASE_URL")
        .env("LABHUB_LOG", "info")
        .env("LABHUB_DATA_DIR", dir.path())
        .env("LABHUB_BIND", format!("127.0.0.1:{port}"))
        .env("LABHUB_DOCKER__HUB_ID", &hub_id)
        .env("LABHUB_DOCKER__NETWORK", format!("{hub_id}-net"))
        .env("LABHUB_SERVERS__BUILD_MISSING_IMAGES_AT_BOOT", "false")
        // The test reads the metrics anonymously (they need `read:metrics` by default).
        .env("LABHUB_HTTP__METRICS_PUBLIC", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let hub = Hub { child, log, url: format!("http://127.0.0.1:{port}"), network: format!("{hub_id}-net") };
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let health = format!("{}/hub/health", hub.url);
    let deadline = Instant::now() + BOOT;
    while status(&c, &health).await != Some(200) {
        assert!(Instant::now() < deadline, "the hub did not come up:\n{}", hub.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admin = browser();
    let password = std::fs::read_to_string(dir.path().join("initial-admin-password")).unwrap();
    let login = admin.get(format!("{}/hub/login", hub.url)).send().await.unwrap().text().await.unwrap();
    let r = admin
        .post(format!("{}/hub/login", hub.url))
        .header("Origin", hub.url.as_str())
        .form(&[
            ("_csrf", csrf_of(&login).as_str()),
            ("username", "admin"),
            ("password", password.trim()),
            ("next", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the first admin signs in");
    let page = admin.get(format!("{}/hub/admin/users", hub.url)).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("data-banner"), "nothing to report yet");

    let first = postmaster_pid(dir.path()).expect("the embedded database runs under the data dir");
    let killed = Command::new("kill").args(["-KILL", &first.to_string()]).status().unwrap();
    assert!(killed.success());

    // Served again by a new postmaster, without restarting the hub.
    // The banner follows the supervisor, which may note the restart a moment after the new
    // postmaster answers: until it does, the page still says it is restarting.
    let deadline = Instant::now() + HEAL;
    let mut last_page = String::new();
    loop {
        let again = postmaster_pid(dir.path()).is_some_and(|p| p != first);
        if again && status(&c, &health).await == Some(200) {
            let users = admin.get(format!("{}/hub/admin/users", hub.url)).send().await.unwrap();
            if users.status() == 200 {
                last_page = users.text().await.unwrap();
                if last_page.contains("data-banner") && last_page.contains("restarted it at") {
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "the hub did not heal:\n{}\nlast page:\n{last_page}", hub.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = hub.log();
    assert!(log.contains("stopped behind the hub's back"), "{log}");
    assert!(log.contains("runs again"), "{log}");
    let metrics = c.get(format!("{}/hub/metrics", hub.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("labhub_database_restarts_total 1"), "{metrics}");
    assert!(metrics.contains("labhub_database_up 1"), "{metrics}");
}
