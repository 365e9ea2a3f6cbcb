//! Registered services (JupyterHub's): the real `jupyterhub-idle-culler` from PyPI, run as a
//! service holding exactly the four scopes its README lists, stops an idle server and is
//! refused everything else; a removed service's token is refused at once; `/services/{name}/`
//! reaches the service's own address for those granted `access:services` on it, and no one
//! else.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labhub_core::{RoleName, ServiceName};
use labhub_service::Actor;
use labhub_service::roles::Assignee;
use labhub_testkit::docker::DockerScope;
use labhub_testkit::http::{browser, script};
use labhub_testkit::oidc::with_package;
use labhub_testkit::{Api, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{start_ready, test_server_binary};
use crate::groups::audited;
use crate::proxied::session_cookie;

/// The version of `jupyterhub-idle-culler` the suite runs.
const CULLER_VERSION: &str = "2.0.0";

/// The scopes its README says it needs to cull servers (no user culling).
const CULLER_SCOPES: [&str; 4] = ["list:users", "read:users:activity", "read:servers", "delete:servers"];

pub(crate) fn role(name: &str) -> RoleName {
    RoleName::parse(name).unwrap()
}

pub(crate) fn service(name: &str) -> ServiceName {
    ServiceName::parse(name).unwrap()
}

/// Registers a service (as the CLI does) with these roles; its API token.
pub(crate) async fn add_service(app: &TestApp, name: &str, url: Option<&str>, roles: &[&str]) -> String {
    let roles: Vec<RoleName> = roles.iter().map(|r| role(r)).collect();
    let (token, view) = app.hub.services().add(Actor::System, &service(name), url, &roles).await.unwrap();
    assert_eq!(view.name.as_str(), name);
    token.expose().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_idle_culler_runs_as_a_service_with_only_its_four_scopes_and_stops_an_idle_server() {
    let venv = tokio::task::spawn_blocking(|| with_package("jupyterhub-idle-culler", CULLER_VERSION)).await.unwrap();
    // The hub's clock starts two hours back, so the server alice starts now last saw traffic
    // two hours before the culler's own (real) clock reads once the hub's is brought forward.
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let past = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    let app = TestApp::builder()
        .docker(scope)
        .manual_clock_at(past)
        // The built-in culler stays out of it: this is the external one's work.
        .config(|c| c.culler.enabled = false)
        .spawn()
        .await;
    app.add_test_image("test").await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let (root, alice, bob) = (app.api_for("root").await, app.api_for("alice").await, app.api_for("bob").await);
    start_ready(&alice, "alice").await;
    app.clock.as_ref().unwrap().advance(time::Duration::hours(2));
    // bob's server starts now, by both clocks: busy enough to stay.
    start_ready(&bob, "bob").await;

    let scopes: Vec<String> = CULLER_SCOPES.iter().map(|s| s.to_string()).collect();
    app.hub.roles().put(Actor::System, &role("idle-culler"), "the idle culler's", &scopes).await.unwrap();
    let token = add_service(&app, "idle-culler", None, &["idle-culler"]).await;
    let culler = app.api(&token);

    // Who the token is: the service, with exactly its role's scopes (and what they imply).
    let me = culler.get("/hub/api/user").await.value();
    assert_eq!((me["kind"].as_str(), me["name"].as_str()), (Some("service"), Some("idle-culler")), "{me}");
    let held: Vec<&str> = me["scopes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for s in CULLER_SCOPES {
        assert!(held.contains(&s), "{s} in {held:?}");
    }
    assert!(!held.iter().any(|s| s.starts_with("admin") || s.starts_with("servers")), "{held:?}");

    let log = std::env::temp_dir().join(format!("labhub-idle-culler-{}.log", std::process::id()));
    let mut child = tokio::process::Command::new(venv.join("bin/python"))
        .args(["-m", "jupyterhub_idle_culler", "--timeout=3600", "--cull-every=2"])
        .env("JUPYTERHUB_API_TOKEN", &token)
        .env("JUPYTERHUB_API_URL", app.at("/hub/api"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("the idle culler starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if root.user("alice").await.server(None).is_none() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the culler exited ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "alice's idle server was never culled: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Another pass or two: bob's active server stays.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(child.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    child.kill().await.unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(root.user("bob").await.is_ready(None), "bob's server was in use");
    let stops = audited(&app, "server.stop").await;
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_eq!((stops[0].0.as_str(), stops[0].1.as_str()), ("service:idle-culler", "alice"), "{stops:?}");

    // Nothing beyond its scopes: creating users, starting servers, labhub's own endpoints.
    let r = culler.post_json("/hub/api/users", &json!({"usernames": ["mallory"]})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(r.message().contains("admin:users"), "{r:?}");
    assert_eq!(culler.post_json("/hub/api/users/alice/server", &json!({})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(culler.get("/hub/api/users/alice/tokens").await.status, StatusCode::FORBIDDEN);
    assert_eq!(culler.get("/hub/api/images").await.status, StatusCode::FORBIDDEN);
    assert_eq!(culler.get("/hub/api/services").await.status, StatusCode::FORBIDDEN, "no list:services");
    let r = script().get(app.at("/hub/home")).header("Authorization", culler.authorization()).send().await.unwrap();
    assert_ne!(r.status(), StatusCode::OK, "pages take no tokens, a service's neither");

    // A service given `servers!user=alice` starts her server again (and nobody else's).
    let scopes = vec!["servers!user=alice".to_string()];
    app.hub.roles().put(Actor::System, &role("alice-launcher"), "", &scopes).await.unwrap();
    let launcher = app.api(&add_service(&app, "launcher", None, &["alice-launcher"]).await);
    let (status, _) = launcher.start("alice", None, json!({"image": "test"})).await.unwrap();
    assert!(matches!(status, StatusCode::CREATED | StatusCode::ACCEPTED), "{status}");
    root.wait_ready("alice", None).await;
    assert_eq!(
        launcher.start("bob", Some("two"), json!({"image": "test"})).await.unwrap_err().status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(audited(&app, "server.start").await.last().map(|a| a.0.clone()), Some("service:launcher".into()));

    // Removed: its token is refused at once.
    assert_eq!(culler.get("/hub/api/users").await.status, StatusCode::OK);
    app.hub.services().remove(Actor::System, &service("idle-culler")).await.unwrap();
    let r = culler.get("/hub/api/users").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(audited(&app, "service.remove").await.len(), 1);
}

/// A tiny HTTP service on loopback that answers every request with what it received.
async fn echo_service() -> std::net::SocketAddr {
    async fn echo(req: axum::extract::Request) -> axum::Json<Value> {
        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        axum::Json(json!({
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "cookie": header("cookie"),
            "authorization": header("authorization"),
            "forwarded_for": header("x-forwarded-for"),
        }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(echo)).await });
    addr
}

async fn reach(api: &Api, path: &str) -> (StatusCode, Value) {
    let r = api.get(path).await;
    (r.status, if r.status == StatusCode::OK { r.value() } else { json!(r.message()) })
}

#[tokio::test]
async fn a_services_route_reaches_its_address_for_those_granted_access_and_no_one_else() {
    let app = TestApp::spawn().await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let (root, alice, bob) = (app.api_for("root").await, app.api_for("alice").await, app.api_for("bob").await);
    let addr = echo_service().await;
    let board_token = add_service(&app, "board", Some(&format!("http://{addr}")), &[]).await;
    add_service(&app, "headless", None, &[]).await;
    let scopes = vec!["access:services!service=board".to_string()];
    app.hub.roles().put(Actor::System, &role("board-viewer"), "", &scopes).await.unwrap();
    app.hub
        .roles()
        .assign(Actor::System, &role("board-viewer"), &Assignee::User("alice".parse().unwrap()), true)
        .await
        .unwrap();

    // alice reaches it, with the path as sent and the query without the hub's token.
    let (status, seen) = reach(&alice, "/services/board/d/panel?x=1").await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["uri"], "/services/board/d/panel?x=1");
    assert_eq!(seen["authorization"], Value::Null, "the hub token is not passed on: {seen}");
    assert!(seen["forwarded_for"].as_str().is_some(), "{seen}");
    let r = script().get(app.at(&format!("/services/board/?token={}", alice.token()))).send().await.unwrap();
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["uri"], "/services/board/");
    // A browser: signed in, its session cookie stays with the hub; the service's own go on.
    let session = session_cookie(&app, "alice").await;
    let cookies = format!("{}; board_pref=dark", session.split(';').next().unwrap());
    let r = script().get(app.at("/services/board/")).header("Cookie", &cookies).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["cookie"], "board_pref=dark", "{seen}");
    // Changing something by cookie needs the hub's own origin.
    let post = |origin: &str| {
        script().post(app.at("/services/board/save")).header("Cookie", &cookies).header("Origin", origin).send()
    };
    assert_eq!(post("http://evil.example").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(post(app.url.as_str().trim_end_matches('/')).await.unwrap().status(), StatusCode::OK);
    // The bare prefix gets its slash.
    let r =
        script().get(app.at("/services/board")).header("Authorization", alice.authorization()).send().await.unwrap();
    assert_eq!((r.status(), r.headers()["location"].to_str().unwrap()), (StatusCode::FOUND, "/services/board/"));

    // bob holds no such scope; nobody signed in is sent to sign in (a page) or told (a script).
    assert_eq!(reach(&bob, "/services/board/").await.0, StatusCode::FORBIDDEN);
    let r = script().get(app.at("/services/board/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = browser_anonymous(&app, "/services/board/").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["location"].to_str().unwrap().starts_with("/hub/login"));
    // alice's grant names board only; admins hold access:services whole.
    assert_eq!(reach(&alice, "/services/headless/").await.0, StatusCode::FORBIDDEN);
    assert_eq!(reach(&root, "/services/board/").await.0, StatusCode::OK);
    assert_eq!(reach(&root, "/services/headless/").await.0, StatusCode::NOT_FOUND, "no URL: nothing to reach");
    assert_eq!(reach(&root, "/services/nosuch/").await.0, StatusCode::NOT_FOUND);
    // A service's own token holds nothing unless given: not even its own route.
    assert_eq!(reach(&app.api(&board_token), "/services/board/").await.0, StatusCode::FORBIDDEN);

    // The API's model, as JupyterHub's: the admin sees both, alice (no list:services) neither.
    let listed = root.get("/hub/api/services").await.value();
    assert_eq!(listed.as_object().unwrap().keys().collect::<Vec<_>>(), ["board", "headless"]);
    let board = root.get("/hub/api/services/board").await.value();
    assert_eq!(board["prefix"], "/services/board/");
    assert_eq!(board["url"], format!("http://{addr}"));
    assert_eq!(board["oauth_client_id"], "service-board");
    assert_eq!((board["pid"].as_i64(), board["command"].clone()), (Some(0), json!([])));
    assert_eq!(alice.get("/hub/api/services").await.status, StatusCode::FORBIDDEN);
    let r = root.get("/hub/api/services/nosuch").await;
    assert_eq!((r.status, r.message()), (StatusCode::NOT_FOUND, "no service named nosuch".to_string()));

    // The admins' page lists them (read-only); a member is refused it.
    let page = |cookie: String| script().get(app.at("/hub/admin/services")).header("Cookie", cookie).send();
    let root_session = session_cookie(&app, "root").await;
    let r = page(root_session.split(';').next().unwrap().to_string()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<a href="/services/board/">"#) && html.contains("API only"), "{html}");
    assert_eq!(page(cookies.clone()).await.unwrap().status(), StatusCode::FORBIDDEN);

    // Moved or cleared by an admin, at once.
    app.hub.services().set_url(Actor::System, &service("board"), None).await.unwrap();
    assert_eq!(reach(&alice, "/services/board/").await.0, StatusCode::NOT_FOUND);
    let r = app.hub.services().set_url(Actor::System, &service("board"), Some("http://example.org/")).await;
    assert!(r.is_err(), "only an address the proxy connects to directly");
}

async fn browser_anonymous(app: &TestApp, path: &str) -> reqwest::Response {
    browser().get(app.at(path)).header("Accept", "text/html").send().await.unwrap()
}

#[tokio::test]
async fn a_service_signs_users_in_through_the_hubs_oauth_provider() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let addr = echo_service().await;
    let secret = add_service(&app, "board", Some(&format!("http://{addr}")), &[]).await;
    let scopes = vec!["access:services!service=board".to_string()];
    app.hub.roles().put(Actor::System, &role("board-viewer"), "", &scopes).await.unwrap();
    let alice_name = "alice".parse().unwrap();
    app.hub.roles().assign(Actor::System, &role("board-viewer"), &Assignee::User(alice_name), true).await.unwrap();
    let query = "client_id=service-board&response_type=code&redirect_uri=/services/board/oauth_callback&state=s1";
    let authorize_url = app.at(&format!("/hub/api/oauth2/authorize?{query}"));
    let authorize = |who: reqwest::Client| {
        let url = authorize_url.clone();
        async move { who.get(url).send().await.unwrap() }
    };

    // alice, signed in and granted access, is sent back to the service with a code.
    let alice = browser();
    app.login(&alice, "alice", "correct horse").await;
    let r = authorize(alice.clone()).await;
    assert!(r.status().is_redirection(), "{}", r.status());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/services/board/oauth_callback?code="), "{location}");
    assert!(location.ends_with("&state=s1"), "{location}");
    let code = url::Url::parse(&format!("http://x{location}"))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    // bob holds no access to it.
    let bob = browser();
    app.login(&bob, "bob", "correct horse").await;
    assert_eq!(authorize(bob).await.status(), StatusCode::FORBIDDEN);

    // The service exchanges the code with its API token as the client secret; a wrong secret
    // is refused (and the code is spent either way).
    let token_url = app.at("/hub/api/oauth2/token");
    let exchange = |secret: String, code: String| {
        let url = token_url.clone();
        async move {
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("client_id", "service-board"),
                ("client_secret", secret.as_str()),
                ("redirect_uri", "/services/board/oauth_callback"),
            ];
            script().post(url).form(&form).send().await.unwrap()
        }
    };
    let wrong = exchange("0".repeat(64), code.clone()).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let r = authorize(alice.clone()).await;
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let code = location.split("code=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let r = exchange(secret.clone(), code).await;
    assert_eq!(r.status(), StatusCode::OK);
    let issued: Value = r.json().await.unwrap();
    assert_eq!(issued["scope"], "access:services!service=board");
    let access = issued["access_token"].as_str().unwrap();

    // The access token names alice at /hub/api/user; its scope reaches nothing else of the API.
    let user = app.api(access);
    let me = user.get("/hub/api/user").await.value();
    assert_eq!((me["kind"].as_str(), me["name"].as_str()), (Some("user"), Some("alice")), "{me}");
    assert_eq!(me["scopes"], json!(["access:services!service=board"]));
    assert_eq!(user.get("/hub/api/users/alice").await.status, StatusCode::FORBIDDEN);

    // The service's URL cleared: it is no client any more, and what it was given is gone.
    app.hub.services().set_url(Actor::System, &service("board"), None).await.unwrap();
    assert_eq!(user.get("/hub/api/user").await.status, StatusCode::UNAUTHORIZED);
    let r = authorize(alice).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// `labhub ARGS` against the test's database, as the operator runs it: (status, out, err).
async fn labhub_cli(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_labhub-exe"))
        .args(args)
        .env_remove("LABHUB_CONFIG")
        .env("DATABASE_URL", labhub_testkit::pg::TestCluster::get().url(&app.db_name))
        .env("LABHUB_LOG", "warn")
        .output()
        .await
        .expect("running labhub");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Polls until `path` answers `want` to `api` (another process's change reaching this hub).
/// The deadline is shorter than the credential cache's life (30 s), so only Postgres's
/// announcement can make it.
async fn until_status(api: &Api, path: &str, want: StatusCode, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if api.get(path).await.status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never reached the running hub");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_services_and_a_running_hub_follows_every_change() {
    let app = TestApp::spawn().await;
    // What `labhub serve` runs: the listener for Postgres's announcements.
    let follower = tokio::spawn(app.hub.clone().follow_shares(std::future::pending()));
    app.add_user("alice", "correct horse", false).await;
    let (code, _, err) = labhub_cli(&app, &["role", "put", "lister", "--scope", "list:users"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, token, err) =
        labhub_cli(&app, &["service", "add", "stats", "--url", "http://127.0.0.1:9", "--role", "lister"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("shown only now"), "{err}");
    let stats = app.api(token.trim());
    assert_eq!(stats.get("/hub/api/users").await.status, StatusCode::OK);
    let me = stats.get("/hub/api/user").await.value();
    assert_eq!((me["kind"].as_str(), me["roles"].clone()), (Some("service"), json!(["lister"])), "{me}");
    let (_, out, _) = labhub_cli(&app, &["service", "list"]).await;
    assert_eq!(out.trim(), "stats http://127.0.0.1:9 roles: lister");
    let (code, _, err) = labhub_cli(&app, &["service", "add", "stats"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("exists already"), "{err}");
    let (code, _, err) = labhub_cli(&app, &["service", "add", "web", "--url", "http://example.org/"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("IP address"), "{err}");

    // Taking its role back, and removing it, reach the running hub at once (Postgres tells it).
    let (code, _, err) = labhub_cli(&app, &["role", "unassign", "lister", "--service", "stats"]).await;
    assert_eq!(code, 0, "{err}");
    until_status(&stats, "/hub/api/users", StatusCode::FORBIDDEN, "the role taken back").await;
    let (code, _, err) = labhub_cli(&app, &["role", "assign", "lister", "--service", "stats"]).await;
    assert_eq!(code, 0, "{err}");
    until_status(&stats, "/hub/api/users", StatusCode::OK, "the role given again").await;
    let (code, _, err) = labhub_cli(&app, &["service", "remove", "stats"]).await;
    assert_eq!(code, 0, "{err}");
    until_status(&stats, "/hub/api/users", StatusCode::UNAUTHORIZED, "the removal").await;
    let actions: Vec<String> = labhub_db::sqlx::query_scalar(
        "select action from audit_log where action like 'service.%' or target = 'lister' order by audit_id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(actions, ["role.put", "service.add", "role.unassign", "role.assign", "service.remove"]);
    follower.abort();
}
