//! The `labhub` command as a real process: configuration, accounts, tokens, and `serve` with
//! its own embedded Postgres.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labhub_testkit::TestApp;
use labhub_testkit::pg::{TestCluster, free_port};

const EXE: &str = env!("CARGO_BIN_EXE_labhub-exe");

fn labhub(args: &[&str]) -> Command {
    let mut c = Command::new(EXE);
    c.args(args).env_remove("LABHUB_CONFIG").env_remove("DATABASE_URL").env("LABHUB_LOG", "warn");
    c
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("running labhub");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn config_check_prints_the_effective_configuration_without_secrets() {
    let (code, out, err) = run(labhub(&["config", "check"])
        .env("DATABASE_URL", "postgres://lab:hunter2@db.example/labhub")
        .env("LABHUB_SESSION__IDLE_TIMEOUT", "2h"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("idle_timeout = \"2h\""), "{out}");
    assert!(out.contains("[redacted]") && !out.contains("hunter2"), "{out}");
}

#[test]
fn configuration_mistakes_are_one_sentence_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labhub.toml");
    std::fs::write(&file, "[auth]\nsignup = \"sometimes\"\n").unwrap();
    let (code, _, err) = run(&mut labhub(&["--config", file.to_str().unwrap(), "config", "check"]));
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("'auth.signup'"), "{err}");
    let (code, _, err) = run(labhub(&["config", "check"]).env("LABHUB_BIND", "not-an-address"));
    assert_ne!(code, 0);
    assert!(err.contains("'bind'"), "{err}");
    let (code, _, err) = run(labhub(&["config", "check"]).env("LABHUB_NO_SUCH_KEY", "1"));
    assert_ne!(code, 0);
    assert!(err.contains("no_such_key"), "{err}");
    let (code, _, err) = run(&mut labhub(&["--config", "/nonexistent/labhub.toml", "config", "check"]));
    assert_ne!(code, 0);
    assert!(err.contains("does not exist"), "{err}");
}

#[tokio::test]
async fn user_and_token_commands_drive_the_same_database() {
    let app = TestApp::spawn().await;
    let url = TestCluster::get().url(&app.db_name);
    let (code, out, err) = run(labhub(&["user", "add", "Carol", "--admin"]).env("DATABASE_URL", &url));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Created carol (admin)."), "{out}");
    let password = out.lines().find_map(|l| l.strip_prefix("Password: ")).expect("a generated password").to_string();
    let mut add = labhub(&["user", "add", "dave", "--password-stdin"]);
    add.env("DATABASE_URL", &url).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = add.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"a chosen password\n").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    let (code, token, err) =
        run(labhub(&["token", "create", "carol", "--note", "ci", "--expires-in", "1d"]).env("DATABASE_URL", &url));
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_string();
    assert_eq!(token.len(), 64);
    let me: serde_json::Value = labhub_testkit::app::script()
        .get(app.at("/hub/api/user"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "carol");
    assert_eq!(me["admin"], true);
    assert_eq!(app.login(&labhub_testkit::app::browser(), "carol", &password).await.status(), 303);
    assert_eq!(app.login(&labhub_testkit::app::browser(), "dave", "a chosen password").await.status(), 303);

    let (code, out, _) = run(labhub(&["user", "list"]).env("DATABASE_URL", &url));
    assert_eq!(code, 0);
    assert!(out.contains("carol") && out.contains("dave"));

    let (code, _, err) = run(labhub(&["user", "add", "../evil"]).env("DATABASE_URL", &url));
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not a valid user name"), "{err}");
    let (code, _, err) = run(labhub(&["user", "add", "CAROL"]).env("DATABASE_URL", &url));
    assert_eq!(code, 1);
    assert!(err.contains("taken"), "{err}");
    let (code, _, err) = run(labhub(&["user", "add", "erin", "--provider", "github"]).env("DATABASE_URL", &url));
    assert_eq!(code, 2, "a provider only for an account without a password: {err}");
    let no_provider = ["user", "add", "erin", "--no-password", "--provider", "github"];
    let (code, _, err) = run(labhub(&no_provider).env("DATABASE_URL", &url));
    assert_eq!(code, 1);
    assert!(err.contains("there is no identity provider called 'github' on this hub"), "{err}");
    let (code, _, err) = run(labhub(&["user", "set-admin", "carol", "false"]).env("DATABASE_URL", &url));
    assert_eq!(code, 1, "the last admin stays");
    assert!(err.contains("last active admin"), "{err}");
}

#[test]
fn serve_runs_its_own_postgres_and_stops_it_on_shutdown() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let port = free_port();
    // A hub id of this test's own, and no image build: the test must not touch what a real hub
    // on this machine owns.
    let hub_id = format!("lhtest{}xserve", std::process::id());
    let mut child = labhub(&["serve"])
        .env("LABHUB_DATA_DIR", dir.path())
        .env("LABHUB_BIND", format!("127.0.0.1:{port}"))
        .env("LABHUB_DOCKER__HUB_ID", &hub_id)
        .env("LABHUB_DOCKER__NETWORK", format!("{hub_id}-net"))
        .env("LABHUB_SERVERS__BUILD_MISSING_IMAGES_AT_BOOT", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        if let Ok(r) = reqwest::blocking_get(&format!("http://127.0.0.1:{port}/hub/health")) {
            break r;
        }
        assert!(Instant::now() < deadline, "the hub did not come up");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(health, 200);
    let password =
        std::fs::read_to_string(dir.path().join("initial-admin-password")).expect("the first admin's password");
    assert!(password.trim().len() >= 16);
    let pid_file = dir.path().join("postgres/data/postmaster.pid");
    assert!(pid_file.exists(), "the embedded database runs under the data dir");
    // A command run beside the hub uses the hub's database and leaves it running.
    let (code, out, err) = run(labhub(&["user", "add", "bob"]).env("LABHUB_DATA_DIR", dir.path()));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Created bob"), "{out}");
    assert!(pid_file.exists(), "the command did not stop the hub's database");
    assert_eq!(reqwest::blocking_get(&format!("http://127.0.0.1:{port}/hub/health")).unwrap(), 200);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(!pid_file.exists(), "the embedded database stopped with the hub");
    // The hub made its users' network (and its firewall rules) when it first checked them.
    let config = labhub_spawner::DockerConfig {
        hub_id: labhub_spawner::HubId::parse(&hub_id).unwrap(),
        network: labhub_spawner::NetworkName::parse(&format!("{hub_id}-net")).unwrap(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(labhub_testkit::docker::clean_up(config));
}

mod reqwest {
    /// A tiny blocking GET (status only), so this test needs no runtime of its own.
    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let u = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = u.split_once('/').unwrap_or((u, ""));
        let mut s = std::net::TcpStream::connect(host)?;
        write!(s, "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other("no status"))
    }
}

#[tokio::test]
async fn image_commands_manage_the_catalogue() {
    let app = TestApp::spawn().await;
    let url = TestCluster::get().url(&app.db_name);
    let (code, out, err) = run(labhub(&[
        "image",
        "add",
        "scipy",
        "--display-name",
        "SciPy",
        "--reference",
        "127.0.0.1:9/lab/scipy:1",
        "--kind",
        "jupyter",
        "--cpu",
        "1.5",
        "--memory",
        "3G",
    ])
    .env("DATABASE_URL", &url));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Added scipy"), "{out}");
    let (code, out, err) = run(labhub(&["image", "set", "scipy", "--enabled", "false"]).env("DATABASE_URL", &url));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Saved scipy"));
    let image = app.hub.catalogue().get("scipy").await.unwrap().fields;
    assert_eq!((image.cpu_millis, image.memory_bytes, image.enabled), (1500, 3 << 30, false));
    // Swarm placement: kept as Swarm reads it, refused when Swarm could never match it.
    let set = |placement: &'static [&'static str]| {
        let mut args = vec!["image", "set", "scipy"];
        for p in placement {
            args.extend(["--placement", p]);
        }
        run(labhub(&args).env("DATABASE_URL", &url))
    };
    let (code, _, err) = set(&["node.labels.gpu == true", "node.hostname!=lab3"]);
    assert_eq!(code, 0, "{err}");
    let placement = app.hub.catalogue().get("scipy").await.unwrap().fields.placement;
    assert_eq!(
        placement.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        ["node.labels.gpu==true", "node.hostname!=lab3"]
    );
    let (code, _, err) = set(&["gpu"]);
    assert_eq!(code, 1);
    assert!(err.contains("must be ATTRIBUTE==VALUE"), "{err}");
    let (code, _, err) = set(&[""]);
    assert_eq!(code, 0, "{err}");
    assert!(app.hub.catalogue().get("scipy").await.unwrap().fields.placement.is_empty(), "--placement '' clears them");
    let (code, out, _) = run(labhub(&["image", "list"]).env("DATABASE_URL", &url));
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("scipy")).expect("listed");
    assert!(line.contains("no") && line.ends_with("missing"), "{line}");
    let (code, _, err) = run(labhub(&[
        "image",
        "add",
        "bad",
        "--display-name",
        "x",
        "--reference",
        "UPPER/case",
        "--kind",
        "jupyter",
        "--cpu",
        "1",
        "--memory",
        "1G",
    ])
    .env("DATABASE_URL", &url));
    assert_eq!(code, 1);
    assert!(err.contains("is not an image reference"), "{err}");
    let (code, _, err) = run(labhub(&["image", "add", "half", "--reference", "lab/x:1"]).env("DATABASE_URL", &url));
    assert_eq!(code, 1);
    assert!(err.contains("is required"), "{err}");
    let (code, _, err) = run(labhub(&["image", "build", "scipy"]).env("DATABASE_URL", &url));
    assert_eq!(code, 1);
    assert!(err.contains("has no recipe"), "{err}");
    let (code, out, _) = run(labhub(&["image", "remove", "scipy"]).env("DATABASE_URL", &url));
    assert_eq!(code, 0);
    assert!(out.contains("Removed scipy"));
    assert!(app.hub.catalogue().get("scipy").await.is_err());
}

#[test]
fn the_compose_file_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let compose = |password: Option<&str>| {
        let mut c = Command::new("docker-compose");
        c.arg("config").current_dir(&root).env_remove("LABHUB_DB_PASSWORD");
        if let Some(p) = password {
            c.env("LABHUB_DB_PASSWORD", p);
        }
        c.output().expect("docker-compose")
    };
    let ok = compose(Some("s3cret"));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("/var/run/docker.sock") && text.contains("network_mode: host"), "{text}");
    let missing = compose(None);
    assert!(!missing.status.success(), "a database password is required");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("LABHUB_DB_PASSWORD"));
}
