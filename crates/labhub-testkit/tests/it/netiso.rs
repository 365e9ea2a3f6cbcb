//! What users' servers can reach on the network around the hub, and that isolation fails
//! closed: a server opens real TCP connections (the test server's `connect` endpoint) to a
//! listener in a network namespace the test makes, on a private address and a link-local one;
//! firewall rules removed behind the hub's back come back at its next check; without a usable
//! iptables, or on a network with IPv6 on, no server starts and admins are told why.
//!
//! Network manners: the only addresses these tests connect to are loopback, containers they
//! started, and the namespace they made (a veth pair from the host, `10.a.b.2` and
//! `169.254.b.2`, a listener inside). They need root for `ip netns`, as CI has; where that is
//! impossible they say so and skip.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use labhub_core::spawner::{ServerSpec, SpawnError, Spawner, Started};
use labhub_core::{ImageKind, Resources, Secret, Storage, UserId, UserName};
use labhub_spawner::PrivateRange;
use labhub_testkit::TestApp;
use labhub_testkit::app::csrf_of;
use labhub_testkit::docker::{DockerScope, firewall_rules, remove_firewall_rules};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::common::test_server_binary;

/// A network namespace joined to the host by a veth pair, with listeners on ports 8888 and 53
/// of both its addresses. Removed (with the pair and the listeners) when dropped.
struct Netns {
    name: String,
    host_side: String,
    /// `10.a.b.0/24`, the namespace's private network.
    private_range: String,
    /// The listener at `10.a.b.2`.
    private: SocketAddr,
    /// The listener at `169.254.b.2`.
    link_local: SocketAddr,
    /// The listeners, and their output, kept open so that they can go on printing.
    _listeners: Vec<(tokio::process::Child, Listening)>,
}

type Listening = tokio::io::BufReader<tokio::process::ChildStdout>;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// Makes the namespace, or says why none can be made here.
    async fn new() -> Result<Self, String> {
        sweep_dead_namespaces();
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let name = format!("lhns{}x{tag}", std::process::id());
        let (host_side, inside) = (format!("lhh{tag}"), format!("lhp{tag}"));
        let routes = std::process::Command::new("ip").args(["-4", "route"]).output().map_err(|e| e.to_string())?;
        let routes = String::from_utf8_lossy(&routes.stdout).to_string();
        // Subnets no route of this host uses yet (another namespace's, a LAN's).
        let (a, b) = std::iter::repeat_with(|| {
            let r = uuid::Uuid::new_v4();
            (200 + r.as_bytes()[0] % 50, r.as_bytes()[1])
        })
        .find(|(a, b)| !routes.contains(&format!("10.{a}.{b}.")) && !routes.contains(&format!("169.254.{b}.")))
        .unwrap_or_default();
        ip(&["netns", "add", &name])?;
        let made = Self::wire(&name, &host_side, &inside, a, b).await;
        match made {
            Ok(listeners) => Ok(Self {
                name,
                host_side,
                private_range: format!("10.{a}.{b}.0/24"),
                private: SocketAddr::from((Ipv4Addr::new(10, a, b, 2), 8888)),
                link_local: SocketAddr::from((Ipv4Addr::new(169, 254, b, 2), 8888)),
                _listeners: listeners,
            }),
            Err(e) => {
                let _ = ip(&["netns", "del", &name]);
                let _ = ip(&["link", "del", &host_side]);
                // Only a namespace that cannot be made at all is a reason to skip.
                panic!("the namespace {name} was made but could not be wired: {e}");
            }
        }
    }

    async fn wire(
        name: &str,
        host_side: &str,
        inside: &str,
        a: u8,
        b: u8,
    ) -> Result<Vec<(tokio::process::Child, Listening)>, String> {
        ip(&["link", "add", host_side, "type", "veth", "peer", "name", inside])?;
        ip(&["link", "set", inside, "netns", name])?;
        for (addr, there) in [(format!("10.{a}.{b}"), "private"), (format!("169.254.{b}"), "link-local")] {
            ip(&["addr", "add", &format!("{addr}.1/24"), "dev", host_side])?;
            ip(&["-n", name, "addr", "add", &format!("{addr}.2/24"), "dev", inside])
                .map_err(|e| format!("cannot give the namespace a {there} address: {e}"))?;
        }
        ip(&["link", "set", host_side, "up"])?;
        ip(&["-n", name, "link", "set", inside, "up"])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&["-n", name, "route", "add", "default", "via", &format!("10.{a}.{b}.1")])?;
        let mut listeners = Vec::new();
        for port in ["8888", "53"] {
            listeners.push(Self::listen(name, port).await?);
        }
        Ok(listeners)
    }

    /// Runs the test server in the namespace on `port` of every address; returns once it listens.
    async fn listen(name: &str, port: &str) -> Result<(tokio::process::Child, Listening), String> {
        let mut listener = tokio::process::Command::new("ip")
            .args(["netns", "exec", name])
            .arg(test_server_binary())
            .args(["--ip", "0.0.0.0", "--port", port, "--base-url", "/"])
            .env("JUPYTER_TOKEN", "netns-listener")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start a listener in the namespace: {e}"))?;
        let stdout = listener.stdout.take().ok_or("the listener has no output")?;
        let mut first = String::new();
        // It prints one line once it listens; the timeout only guards against a hang.
        let mut lines = tokio::io::BufReader::new(stdout);
        match tokio::time::timeout(Duration::from_secs(30), lines.read_line(&mut first)).await {
            Ok(Ok(_)) if first.contains("listening on") => Ok((listener, lines)),
            other => Err(format!("the listener in the namespace did not start: {other:?} {first:?}")),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pair, and ends the listener's network with it.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_side]);
    }
}

/// Removes namespaces left by test runs whose process is gone.
fn sweep_dead_namespaces() {
    let Ok(out) = std::process::Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let pid = name.strip_prefix("lhns").and_then(|r| r.split('x').next()).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The namespace, or `None` after saying why this test cannot run here.
async fn netns_or_skip(test: &str) -> Option<Netns> {
    match Netns::new().await {
        Ok(ns) => Some(ns),
        Err(why) => {
            eprintln!("SKIPPED {test}: a network namespace cannot be made here ({why}); run as root");
            None
        }
    }
}

fn spec(scope: &DockerScope, user: &str) -> ServerSpec {
    let owner = UserId::new(1);
    ServerSpec {
        owner,
        user: UserName::parse(user).unwrap(),
        home: Storage::Home { owner, server: None },
        mounts: Vec::new(),
        server: None,
        image: scope.test_image.clone(),
        kind: ImageKind::Jupyter,
        port: 8888,
        command: None,
        resources: Resources { cpu_millis: 500, memory_bytes: 256 << 20, gpus: 0 },
        base_url: format!("/user/{user}/"),
        token: Secret::new(uuid::Uuid::new_v4().simple().to_string()),
        env: Default::default(),
        contract: labhub_core::Contract::Labhub,
        placement: Vec::new(),
        start_timeout: Duration::from_secs(30),
        node: None,
    }
}

async fn start(scope: &DockerScope, user: &str) -> (ServerSpec, Started) {
    let spec = spec(scope, user);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let started = scope.spawner.start(&spec, tx).await.unwrap_or_else(|e| panic!("{e}"));
    (spec, started)
}

/// What became of a TCP connection that `server` opened to `to`: `open`, `refused`,
/// `unreachable`, `timeout`.
async fn reach(server: &(ServerSpec, Started), to: SocketAddr) -> String {
    let (spec, started) = server;
    let url = format!("http://{}{}connect?to={to}", started.endpoint, spec.base_url);
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let answer: Value = client
        .get(url)
        .header("Authorization", format!("token {}", spec.token.expose()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    eprintln!("{} -> {to}: {answer}", spec.user);
    answer["result"].as_str().unwrap().to_string()
}

async fn bridge_of(scope: &DockerScope) -> String {
    let net = scope.docker().inspect_network(scope.config.network.as_str(), None).await.unwrap();
    net.options.unwrap()["com.docker.network.bridge.name"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_cannot_reach_link_local_or_private_ranges_unless_allowed() {
    let Some(ns) = netns_or_skip("servers_cannot_reach_link_local_or_private_ranges_unless_allowed").await else {
        return;
    };
    let closed = DockerScope::new(test_server_binary()).await;
    let allowed = PrivateRange::parse(&ns.private_range).unwrap();
    let open = DockerScope::with(test_server_binary(), |c| c.allow_private = vec![allowed]).await;
    // The namespace's address stands for the host's name server (a cloud's is private too).
    let std::net::IpAddr::V4(resolver) = ns.private.ip() else { unreachable!("the namespace is IPv4") };
    let resolving = DockerScope::with(test_server_binary(), |c| c.dns_servers = Some(vec![resolver])).await;
    let kept = start(&closed, "kept").await;
    let let_through = start(&open, "let").await;
    let asking = start(&resolving, "dns").await;

    assert_eq!(reach(&kept, ns.private).await, "unreachable", "a private range is refused at once");
    let dns = SocketAddr::new(ns.private.ip(), 53);
    assert_eq!(
        reach(&kept, dns).await,
        "unreachable",
        "port 53 of a private address that is no name server of the host"
    );
    assert_eq!(
        reach(&asking, dns).await,
        "open",
        "DNS passes to the host's name server: Docker's resolver asks from the container"
    );
    assert_eq!(reach(&asking, ns.private).await, "unreachable", "and only DNS");
    assert_eq!(reach(&kept, ns.link_local).await, "unreachable", "link-local is refused at once");
    assert_eq!(reach(&let_through, ns.private).await, "open", "an allowed range is reached");
    assert_eq!(reach(&let_through, ns.link_local).await, "unreachable", "link-local is never allowed");
    // The hub, on the host, still reaches both servers at their addresses on the bridge.
    assert!(closed.spawner.poll(&kept.1.state).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_removed_behind_the_hubs_back_are_put_back_by_its_check() {
    let Some(ns) = netns_or_skip("rules_removed_behind_the_hubs_back_are_put_back_by_its_check").await else {
        return;
    };
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let app = TestApp::builder().docker(scope.clone()).spawn().await;
    assert!(app.hub.servers().check_isolation().await.unwrap());
    let server = start(&scope, "ren").await;
    assert_eq!(reach(&server, ns.private).await, "unreachable");
    let bridge = bridge_of(&scope).await;
    let rules = firewall_rules(&bridge);
    let dns: Vec<String> = rules.iter().map(|(_, r)| r.join(" ")).filter(|r| r.contains("--dport 53")).collect();
    assert!(dns.len().is_multiple_of(2) && dns.iter().all(|r| r.contains("/32 ")), "to name servers only: {dns:?}");
    let dns = dns.len();
    assert_eq!(
        rules.len(),
        1 + 1 + 1 + dns + 5,
        "INPUT, the jump, replies, DNS to the host's name servers, five refused ranges: {rules:?}"
    );

    // A firewall reload behind the hub's back: the server reaches the private network again.
    remove_firewall_rules(&bridge);
    assert_eq!(firewall_rules(&bridge), vec![]);
    assert_eq!(reach(&server, ns.private).await, "open", "the hole a reload leaves");

    assert!(app.hub.servers().check_isolation().await.unwrap(), "the check puts the rules back");
    assert_eq!(firewall_rules(&bridge), rules);
    assert_eq!(reach(&server, ns.private).await, "unreachable", "and the running server is kept off again");
}

/// An `iptables` that works only while a file `works` lies next to it, and otherwise answers as
/// iptables does for a hub that is not root.
fn switchable_iptables(dir: &Path) -> PathBuf {
    let real = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("iptables"))
        .find(|p| p.is_file())
        .expect("iptables is installed");
    let script = dir.join("iptables");
    let text = format!(
        "#!/bin/sh\nif [ -e '{}' ]; then exec '{}' \"$@\"; fi\n\
         echo 'iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)' >&2\n\
         exit 4\n",
        dir.join("works").display(),
        real.display()
    );
    std::fs::write(&script, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_iptables_no_server_starts_and_admins_see_why() {
    let dir = tempfile::tempdir().unwrap();
    let iptables = switchable_iptables(dir.path());
    let scope = Arc::new(DockerScope::with(test_server_binary(), |c| c.iptables = iptables.clone()).await);
    let app = TestApp::builder().docker(scope.clone()).spawn().await;
    app.add_test_image("test").await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    let alice = app.api_for("alice").await;

    // The first start checks, finds iptables unusable, and is refused: nothing runs.
    let refused = alice.start("alice", None, json!({"image": "test"})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{refused:?}");
    assert!(refused.message.contains("cannot keep them isolated"), "{}", refused.message);
    assert!(refused.message.contains("Permission denied (you must be root)"), "says why: {}", refused.message);
    assert!(scope.spawner.list().await.unwrap().is_empty(), "no container was made");
    let health: Value = reqwest::get(app.at("/hub/health")).await.unwrap().json().await.unwrap();
    assert_eq!(health["isolation"], "failing");

    // The spawn page says so before and after the form is sent.
    let member = app.signed_in("alice", "correct horse").await;
    let form = member.get(app.at("/hub/spawn")).send().await.unwrap().text().await.unwrap();
    assert!(form.contains("Servers cannot start right now") && form.contains("role=\"alert\""), "{form}");
    assert!(!form.contains("data-banner"), "members get no admin banner");
    let csrf = csrf_of(&form);
    let sent =
        member.post(app.at("/hub/spawn")).form(&[("_csrf", csrf.as_str()), ("image", "test")]).send().await.unwrap();
    assert_eq!(sent.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(sent.text().await.unwrap().contains("you must be root"));

    // Admins see why on their pages.
    let admin = app.signed_in("root", "correct horse").await;
    let page = admin.get(app.at("/hub/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("data-banner") && page.contains("cannot keep them isolated"), "{page}");
    assert!(page.contains("you must be root"), "{page}");

    // Fixed: the next check lifts the refusal and the banner; servers start.
    std::fs::write(dir.path().join("works"), "").unwrap();
    assert!(app.hub.servers().check_isolation().await.unwrap());
    let page = admin.get(app.at("/hub/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("data-banner"), "{page}");
    crate::common::start_ready(&alice, "alice").await;

    // Broken again: the check turns the refusal back on, running servers are left alone.
    std::fs::remove_file(dir.path().join("works")).unwrap();
    assert!(!app.hub.servers().check_isolation().await.unwrap());
    let refused = alice.start("alice", Some("other"), json!({"image": "test"})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{refused:?}");
    assert!(alice.user("alice").await.is_ready(None), "the running server keeps running");
    // Working again, so that the scope's cleanup can remove the rules.
    std::fs::write(dir.path().join("works"), "").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_network_with_ipv6_is_refused() {
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..4];
    let request = bollard::models::NetworkCreateRequest {
        name: scope.config.network.to_string(),
        driver: Some("bridge".into()),
        enable_ipv6: Some(true),
        ipam: Some(bollard::models::Ipam {
            config: Some(vec![bollard::models::IpamConfig {
                subnet: Some(format!("fd4c:{tag}:9b3d:1::/64")),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        options: Some([("com.docker.network.bridge.enable_icc".to_string(), "false".to_string())].into()),
        labels: Some([(labhub_spawner::LABEL_HUB.to_string(), scope.config.hub_id.to_string())].into()),
        ..Default::default()
    };
    scope.docker().create_network(request).await.unwrap();

    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let refused = scope.spawner.start(&spec(&scope, "ivy"), tx).await.unwrap_err();
    assert!(matches!(&refused, SpawnError::Isolation(m) if m.contains("IPv6 on")), "{refused}");
    assert!(scope.spawner.list().await.unwrap().is_empty(), "no container was made");

    let app = TestApp::builder().docker(scope.clone()).spawn().await;
    app.add_user("root", "correct horse", true).await;
    assert!(!app.hub.servers().check_isolation().await.unwrap());
    let admin = app.signed_in("root", "correct horse").await;
    let page = admin.get(app.at("/hub/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("data-banner") && page.contains("IPv6 on"), "{page}");
}
