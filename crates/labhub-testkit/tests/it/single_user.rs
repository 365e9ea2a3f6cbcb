//! JupyterHub's single-user contract, against the real thing: a catalogue entry with
//! `contract = "jupyterhub"` runs the real `jupyterhub-singleuser` (the `jupyterhub` package
//! from PyPI in labhub's JupyterLab image), which signs a browser in through the hub's OAuth
//! provider, asks the hub who its tokens are and reports activity — all over the hub's internal
//! address on the users' network, the one port of the host a server may reach.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use labhub_core::spawner::{ServerSpec, Spawner, Started};
use labhub_core::{Contract, ImageKind, Resources, Secret, Storage, UserId, UserName};
use labhub_testkit::TestApp;
use labhub_testkit::app::browser;
use labhub_testkit::docker::DockerScope;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::test_server_binary;

/// What became of a TCP connection the test server in `started` opened to `to`: `open`,
/// `refused`, `unreachable` or `timeout`.
async fn reach(spec: &ServerSpec, started: &Started, to: SocketAddr) -> String {
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
    answer["result"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_reach_the_single_user_api_and_no_other_port_of_the_host() {
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let app = TestApp::builder().docker(scope.clone()).hub_api().spawn().await;
    let internal: SocketAddr = app.internal_url.as_deref().unwrap().trim_start_matches("http://").parse().unwrap();
    // Another port of the host on the same address, which a server must not reach.
    let other = tokio::net::TcpListener::bind((internal.ip(), 0)).await.unwrap();
    let other = other.local_addr().unwrap();

    let owner = UserId::new(1);
    let spec = ServerSpec {
        owner,
        user: UserName::parse("ina").unwrap(),
        home: Storage::Home { owner, server: None },
        mounts: Vec::new(),
        server: None,
        image: scope.test_image.clone(),
        kind: ImageKind::Jupyter,
        port: 8888,
        command: None,
        resources: Resources { cpu_millis: 500, memory_bytes: 256 << 20, gpus: 0 },
        base_url: "/user/ina/".into(),
        token: Secret::new(uuid::Uuid::new_v4().simple().to_string()),
        env: Default::default(),
        contract: Contract::Labhub,
        placement: Vec::new(),
        start_timeout: Duration::from_secs(30),
        node: None,
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let started = scope.spawner.start(&spec, tx).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reach(&spec, &started, internal).await, "open", "the single-user API is reachable");
    assert_eq!(reach(&spec, &started, other).await, "refused", "any other port of the host is refused");

    // On the internal address, only the single-user endpoints answer: not the hub's pages,
    // not the rest of its API, not an ordinary API token.
    app.add_user("root", "correct horse", true).await;
    let admin_token = app.token("root").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let at = |path: &str| format!("http://{internal}{path}");
    let get = |path: &str| client.get(at(path)).header("Authorization", format!("token {admin_token}")).send();
    for path in ["/hub/api/users", "/hub/api/users/root", "/hub/login", "/hub/home", "/user/ina/", "/hub/api/info"] {
        let answer = get(path).await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], 404, "{path}: {body}");
    }
    let me = get("/hub/api/user").await.unwrap();
    assert_eq!(me.status(), StatusCode::FORBIDDEN, "an ordinary token is not answered there");
    let posted = client.post(at("/hub/api/users/root/activity")).json(&json!({})).send().await.unwrap();
    assert_eq!(posted.status(), StatusCode::UNAUTHORIZED, "activity needs a server's token");
    let version: Value = client.get(at("/hub/api")).send().await.unwrap().json().await.unwrap();
    assert_eq!(version["version"], "5.3.0");
    scope.spawner.stop(&started.state).await.unwrap();
}

/// The value of a variable in a running container's environment.
async fn container_env(scope: &DockerScope, state: &Value, name: &str) -> String {
    let id = state["container_id"].as_str().expect("the container's id");
    let c = scope.docker().inspect_container(id, None).await.unwrap();
    let env = c.config.unwrap().env.unwrap();
    let prefix = format!("{name}=");
    env.iter().find_map(|e| e.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{name} is not set: {env:?}")).to_string()
}

/// Follows a browser's redirects by hand (keeping its cookies), returning each address it
/// visited and the last answer.
async fn follow(client: &reqwest::Client, app: &TestApp, path: &str) -> (Vec<String>, reqwest::Response) {
    let mut visited = vec![path.to_string()];
    let mut url = app.at(path);
    for _ in 0..10 {
        let answer = client.get(&url).send().await.unwrap();
        if !answer.status().is_redirection() {
            return (visited, answer);
        }
        let location = answer.headers()["location"].to_str().unwrap().to_string();
        visited.push(location.clone());
        url = if location.starts_with('/') { app.at(&location) } else { location };
    }
    panic!("too many redirects: {visited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterhub_singleuser_signs_in_through_the_hub_and_reports_activity() {
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let image = labhub_testkit::images::jupyterhub_image(&scope.spawner).await.unwrap_or_else(|e| panic!("{e}"));
    let app = TestApp::builder().docker(scope.clone()).hub_api().spawn().await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let admin = app.api_for("root").await;
    add_hub_entry(&admin, &image).await;
    assert_eq!(admin.get("/hub/api/images/hub").await.value()["contract"], "jupyterhub");

    // Started by an admin: alice has not signed in and nothing went through the proxy, so only
    // her server's report can give her account (the row, not the views, which add the
    // server's start) any activity.
    let alice_name = UserName::parse("alice").unwrap();
    let account = || async { labhub_db::users::by_name(&app.db, &alice_name).await.unwrap().unwrap() };
    assert!(account().await.last_activity.is_none(), "nobody was active yet");
    admin.start("alice", None, json!({"image": "hub"})).await.unwrap();
    admin.wait_ready("alice", None).await;
    let alice_id = account().await.user_id;
    let state = labhub_db::servers::get(&app.db, alice_id, "").await.unwrap().unwrap().spawner_state;
    let token = container_env(&scope, &state, "JUPYTERHUB_API_TOKEN").await;
    assert_eq!(container_env(&scope, &state, "JUPYTERHUB_CLIENT_ID").await, "jupyterhub-user-alice");
    assert_eq!(
        container_env(&scope, &state, "JUPYTERHUB_API_URL").await,
        format!("{}/hub/api", app.internal_url.clone().unwrap())
    );
    let stored = labhub_db::oauth::client_by_secret(&app.db, &labhub_auth::sha256(&token)).await.unwrap();
    assert_eq!(stored.unwrap().client_id, "jupyterhub-user-alice", "the server's token is stored as its SHA-256");

    let (alice, visited, page) = alice_reports_activity_and_signs_in(&app).await;
    assert!(visited[1].contains("client_id=jupyterhub-user-alice"), "{visited:?}");
    assert_eq!(visited.last().unwrap(), "/user/alice/lab", "{visited:?}");
    assert!(page.contains("jupyter-config-data"), "JupyterLab's page: {page}");
    // The hub menu's "Hub Control Panel" and "Log Out" go to the hub's home and logout.
    assert!(page.contains(r#""hubPrefix": "/hub/""#), "{page}");
    assert!(page.contains(r#""hubUser": "alice""#), "{page}");
    let home = alice.get(app.at("/hub/home")).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    let logout = alice.get(app.at("/hub/logout")).send().await.unwrap();
    assert!(logout.status().is_success() || logout.status().is_redirection(), "{}", logout.status());

    // A second exchange of the same code fails: codes are single-use.
    let code = visited[2].split("code=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let internal = app.internal_url.clone().unwrap();
    let again = client
        .post(format!("{internal}/hub/api/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", "jupyterhub-user-alice"),
            ("client_secret", token.as_str()),
            ("redirect_uri", "/user/alice/oauth_callback"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED, "a code serves one exchange");

    // Bob may not reach alice's server: the provider refuses him a code.
    let bob = browser();
    app.login(&bob, "bob", "correct horse").await;
    let refused = bob
        .get(app.at("/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice&response_type=code"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // The server's token says who it is; stopping the server revokes it.
    let me: Value = client
        .get(format!("{internal}/hub/api/user"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "alice");
    let scopes: Vec<&str> = me["scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(scopes.contains(&"access:servers!server=alice/") && scopes.contains(&"users:activity!user=alice"));
    admin.stop("alice", None).await.unwrap();
    admin.wait_stopped("alice", None).await;
    let gone = client.get(format!("{internal}/hub/api/user")).header("Authorization", format!("token {token}")).send();
    assert_eq!(gone.await.unwrap().status(), StatusCode::FORBIDDEN, "revoked when the server stopped");
}

/// Adds the catalogue entry `hub`: `image` (labhub's JupyterLab with `jupyterhub-singleuser`)
/// speaking JupyterHub's contract.
pub(crate) async fn add_hub_entry(admin: &labhub_testkit::Api, image: &labhub_core::ImageRef) {
    admin
        .add_image(json!({
            "name": "hub", "display_name": "JupyterHub single-user", "reference": image.as_str(),
            "kind": "jupyter", "cpu": 1, "memory": "1G", "contract": "jupyterhub",
        }))
        .await
        .unwrap();
}

/// Waits for alice's running server of JupyterHub's contract to report activity (its first
/// report is not delayed), then opens `/user/alice/lab` in a browser signed in to the hub as
/// alice: the server sends it to the hub's OAuth provider, which sends it back with a code;
/// the server exchanges the code (over the internal address) and lets the browser in. Returns
/// the browser, the addresses it visited and JupyterLab's page.
pub(crate) async fn alice_reports_activity_and_signs_in(app: &TestApp) -> (reqwest::Client, Vec<String>, String) {
    let name = UserName::parse("alice").unwrap();
    let mut tries = 0;
    while labhub_db::users::by_name(&app.db, &name).await.unwrap().unwrap().last_activity.is_none() {
        tries += 1;
        assert!(tries < 600, "her server never reported activity");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alice = browser();
    app.login(&alice, "alice", "correct horse").await;
    let (visited, lab) = follow(&alice, app, "/user/alice/lab").await;
    assert_eq!(lab.status(), StatusCode::OK, "{visited:?}");
    assert!(visited[1].starts_with("/hub/api/oauth2/authorize?"), "{visited:?}");
    assert!(visited[2].starts_with("/user/alice/oauth_callback?code="), "{visited:?}");
    let page = lab.text().await.unwrap();
    (alice, visited, page)
}

/// What a start of alice's default server of JupyterHub's contract registers (the start
/// itself is the test above's): returns the server's id and its API token.
pub(crate) async fn register_alices_server(app: &TestApp) -> (labhub_core::ServerId, String) {
    let alice = labhub_db::users::by_name(&app.db, &UserName::parse("alice").unwrap()).await.unwrap().unwrap();
    let now = app.hub.now();
    let mut conn = app.db.acquire().await.unwrap();
    let row = labhub_db::servers::get_or_create_locked(&mut conn, alice.user_id, "", now).await.unwrap();
    let (secret, hash) = labhub_auth::new_token();
    let client = labhub_db::oauth::Client {
        client_id: "jupyterhub-user-alice".into(),
        server_id: row.server_id,
        redirect_uri: "/user/alice/oauth_callback".into(),
        scopes: vec!["users:activity!user=alice".into(), "access:servers!server=alice/".into()],
    };
    labhub_db::oauth::register_server(&mut conn, &client, &hash, now).await.unwrap();
    (row.server_id, secret)
}

fn iso(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[tokio::test]
async fn the_oauth_provider_keeps_jupyterhubs_rules_and_activity_merges_newest_first() {
    let app = TestApp::builder().manual_clock().spawn().await;
    let clock = app.clock.clone().unwrap();
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let (server_id, secret) = register_alices_server(&app).await;
    let alice = browser();
    app.login(&alice, "alice", "correct horse").await;
    let authorize = |client: &reqwest::Client, query: &str| {
        client.get(app.at(&format!("/hub/api/oauth2/authorize?{query}"))).send()
    };
    let ok_query =
        "client_id=jupyterhub-user-alice&response_type=code&redirect_uri=/user/alice/oauth_callback&state=s1";

    // Someone not signed in signs in first and comes back.
    let anonymous = authorize(&browser(), ok_query).await.unwrap();
    assert!(anonymous.status().is_redirection());
    assert!(anonymous.headers()["location"].to_str().unwrap().starts_with("/hub/login?next="));
    // The request must be a code request, from a known client, back to its registered address.
    for (query, status) in [
        ("client_id=jupyterhub-user-alice&response_type=token", StatusCode::BAD_REQUEST),
        ("client_id=jupyterhub-user-nobody&response_type=code", StatusCode::NOT_FOUND),
        (
            "client_id=jupyterhub-user-alice&response_type=code&redirect_uri=https://evil.example/cb",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert_eq!(authorize(&alice, query).await.unwrap().status(), status, "{query}");
    }
    // Bob may not reach alice's server.
    let bob = browser();
    app.login(&bob, "bob", "correct horse").await;
    assert_eq!(authorize(&bob, ok_query).await.unwrap().status(), StatusCode::FORBIDDEN);

    let code = || async {
        let answer = authorize(&alice, ok_query).await.unwrap();
        assert!(answer.status().is_redirection(), "{}", answer.status());
        let location = answer.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with("/user/alice/oauth_callback?code="), "{location}");
        assert!(location.ends_with("&state=s1"), "the client's state comes back: {location}");
        location.split("code=").nth(1).unwrap().split('&').next().unwrap().to_string()
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let exchange = |code: String, secret: String, redirect: &'static str| {
        client
            .post(app.at("/hub/api/oauth2/token"))
            .form(&[
                ("grant_type", "authorization_code".to_string()),
                ("code", code),
                ("client_id", "jupyterhub-user-alice".to_string()),
                ("client_secret", secret),
                ("redirect_uri", redirect.to_string()),
            ])
            .send()
    };
    let callback = "/user/alice/oauth_callback";
    // A wrong secret fails, and spends the code.
    let spent = code().await;
    let wrong = exchange(spent.clone(), "0".repeat(64), callback).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(exchange(spent, secret.clone(), callback).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // Another redirect address than the code's fails.
    let elsewhere = exchange(code().await, secret.clone(), "/user/alice/elsewhere").await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    // A code past its five minutes fails.
    let late = code().await;
    clock.advance(time::Duration::minutes(6));
    assert_eq!(exchange(late, secret.clone(), callback).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // A good exchange, once.
    let good = code().await;
    let issued: Value = exchange(good.clone(), secret.clone(), callback).await.unwrap().json().await.unwrap();
    let access = issued["access_token"].as_str().unwrap().to_string();
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(exchange(good, secret.clone(), callback).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let stored = labhub_db::oauth::token(&app.db, &labhub_auth::sha256(&access)).await.unwrap();
    assert!(stored.is_some(), "the access token is stored as its SHA-256");

    // The access token says who signed in, with its scopes (the owner's may manage the
    // server's shares); its scopes reach nothing else of the API, nor do the server's own.
    let api =
        |token: &str, path: &str| client.get(app.at(path)).header("Authorization", format!("Bearer {token}")).send();
    let me: Value = api(&access, "/hub/api/user").await.unwrap().json().await.unwrap();
    assert_eq!(me["name"], "alice");
    assert_eq!(me["scopes"], json!(["access:servers!server=alice/", "shares!server=alice/"]));
    assert_eq!(api(&access, "/hub/api/users/alice").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(api(&secret, "/hub/api/users/alice").await.unwrap().status(), StatusCode::FORBIDDEN);

    // Activity from the server's own token: the newer time wins, a time ahead counts as now.
    let post = |name: &str, body: Value| {
        client
            .post(app.at(&format!("/hub/api/users/{name}/activity")))
            .header("Authorization", format!("token {secret}"))
            .json(&body)
            .send()
    };
    let server_activity = || async {
        let alice = labhub_db::users::by_name(&app.db, &UserName::parse("alice").unwrap()).await.unwrap().unwrap();
        let row = labhub_db::servers::get(&app.db, alice.user_id, "").await.unwrap().unwrap();
        assert_eq!(row.server_id, server_id);
        (row.last_activity, alice.last_activity)
    };
    // As Postgres keeps it: to the microsecond.
    let now = app.hub.now();
    let now = now.replace_microsecond(now.microsecond()).unwrap();
    let hour_ago = now - time::Duration::hours(1);
    let report = |t: time::OffsetDateTime| json!({"last_activity": iso(t), "servers": {"": {"last_activity": iso(t)}}});
    assert_eq!(post("alice", report(hour_ago)).await.unwrap().status(), StatusCode::OK);
    let (server_at, _) = server_activity().await;
    assert_eq!(server_at, Some(hour_ago));
    post("alice", report(now - time::Duration::hours(2))).await.unwrap();
    assert_eq!(server_activity().await.0, Some(hour_ago), "an older report does not move it back");
    post("alice", report(now + time::Duration::days(1))).await.unwrap();
    assert_eq!(server_activity().await.0, Some(now), "a time ahead of the hub's clock counts as now");
    assert_eq!(post("bob", report(now)).await.unwrap().status(), StatusCode::FORBIDDEN, "only its owner's");
    let unknown = json!({"servers": {"gpu": {"last_activity": iso(now)}}});
    assert_eq!(post("alice", unknown).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let bad_time = json!({"last_activity": "yesterday"});
    assert_eq!(post("alice", bad_time).await.unwrap().status(), StatusCode::BAD_REQUEST);
}

/// Seconds are generous: the machine has two cores and other tests run beside this one.
const STEP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_hub_signs_in_to_jupyterhub_singleuser_and_its_hub_menu_leads_back() {
    use labhub_testkit::browser::{BrowserError, Chromium};
    // The image is built (once) beside other tests; the browser then runs alone.
    let image = {
        let builder = DockerScope::new(test_server_binary()).await;
        labhub_testkit::images::jupyterhub_image(&builder.spawner).await.unwrap_or_else(|e| panic!("{e}"))
    };
    let scope = Arc::new(DockerScope::exclusive(test_server_binary()).await);
    let app = TestApp::builder().docker(scope).hub_api().spawn().await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    let admin = app.api_for("root").await;
    add_hub_entry(&admin, &image).await;
    admin.start("alice", None, json!({"image": "hub"})).await.unwrap();
    admin.wait_ready("alice", None).await;

    let b = Chromium::launch().await.unwrap_or_else(|e| panic!("{e}"));
    let steps = async {
        b.goto(&app.at("/hub/login")).await?;
        b.type_into("input[name=username]", "alice", STEP).await?;
        b.type_into("input[name=password]", "correct horse", STEP).await?;
        b.click("form[action='/hub/login'] button[type=submit]", STEP).await?;
        b.wait_for("the home page", "location.pathname === '/hub/home'", STEP).await?;
        // The server sends the browser through the hub's OAuth provider and back.
        b.goto(&app.at("/user/alice/lab")).await?;
        b.wait_for("JupyterLab after the OAuth round trip", "location.pathname.startsWith('/user/alice/lab')", STEP)
            .await?;
        b.wait_for_visible("#jp-main-dock-panel", STEP * 2).await?;
        b.wait_for_visible("#jp-MainMenu", STEP).await?;
        // The hub menu's addresses, as @jupyterlab/hub-extension makes them from the page's
        // config: "Hub Control Panel" is hubHost + hubPrefix + "home", "Log Out" is the
        // server's baseUrl + "logout" (the server's logout, which sends the browser on to the hub's).
        let config = "JSON.parse(document.getElementById('jupyter-config-data').textContent)";
        let panel = b.eval(&format!("(c => c.hubHost + c.hubPrefix + 'home')({config})")).await?;
        let logout = b.eval(&format!("(c => c.baseUrl + 'logout')({config})")).await?;
        let (panel, logout) =
            (panel.as_str().unwrap_or_default().to_string(), logout.as_str().unwrap_or_default().to_string());
        b.goto(&app.at(&panel)).await?;
        b.wait_for("Hub Control Panel: the hub's home", "location.pathname === '/hub/home'", STEP).await?;
        b.goto(&app.at(&logout)).await?;
        b.wait_for("Log Out: the hub's logout page", "location.pathname === '/hub/logout'", STEP).await?;
        b.click("form[action='/hub/logout'] button[type=submit]", STEP).await?;
        b.wait_for(
            "the logout to be answered",
            "!document.querySelector(\"form[action='/hub/logout']\") && document.readyState === 'complete'",
            STEP,
        )
        .await?;
        b.goto(&app.at("/hub/home")).await?;
        b.wait_for("signed out: the login page", "location.pathname === '/hub/login'", STEP).await?;
        Ok::<(), BrowserError>(())
    };
    let outcome = match tokio::time::timeout(STEP * 8, steps).await {
        Ok(outcome) => outcome,
        Err(_) => Err(BrowserError("the whole test took too long".into())),
    };
    if let Err(e) = outcome {
        let target = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = target.parent().map_or(target.clone(), std::path::PathBuf::from).join("test-output").join("browser");
        let kept = b.save_failure(&dir, &format!("single-user-{}", std::process::id()), &e.to_string()).await;
        b.close().await;
        panic!("{e}; the page is kept in {kept:?}");
    }
    b.close().await;
}
