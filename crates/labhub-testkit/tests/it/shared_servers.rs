//! A shared server through the hub's proxy, with real containers of the test image: a visitor
//! reaches the owner's server through the fast lane and the general path and over WebSockets,
//! acting as the owner there; someone it was not shared with is refused everywhere; revoking
//! (or leaving the group a share went to) closes exactly that visitor's open WebSockets; a
//! share grants starting and stopping only with `servers`; a share link accepted in headless
//! Chromium leads into the server.

use std::sync::Arc;
use std::time::Duration;

use labhub_testkit::TestApp;
use labhub_testkit::browser::{Chromium, js_string};
use labhub_testkit::docker::DockerScope;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{docker_hub, start_ready, test_server_binary};
use crate::proxied::{
    HANG, echo, eventually, refused_status, server_secret, session_cookie, ws_connect, ws_end, ws_url,
};
use crate::proxy_auth::lane_takes;
use labhub_testkit::app::script;

/// A plain GET of `path` as a browser sends it with `cookie`, for the fast lane.
fn lane_get(app: &TestApp, path: &str, cookie: &str) -> String {
    let host = app.url.trim_start_matches("http://");
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: keep-alive\r\n\r\n")
}

/// The status of `path` asked with a token (the general path).
async fn with_token(app: &TestApp, path: &str, authorization: &str) -> StatusCode {
    script().get(app.at(path)).header("Authorization", authorization).send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_reaches_the_owners_server_on_both_paths_and_over_websockets_until_revoked() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    for name in ["bob", "carol"] {
        app.add_user(name, "correct horse", false).await;
    }
    root.post("/hub/api/groups/lab").await;
    root.post_json("/hub/api/groups/lab/users", &json!({"users": ["alice", "bob"]})).await;
    let (bob, carol) = (app.api_for("bob").await, app.api_for("carol").await);
    start_ready(&alice, "alice").await;
    let secret = server_secret(&app, "alice");
    let (bob_cookie, carol_cookie) = (session_cookie(&app, "bob").await, session_cookie(&app, "carol").await);

    // Before any share, neither gets in, on any path.
    assert_eq!(with_token(&app, "/user/alice/whoami", bob.authorization()).await, StatusCode::FORBIDDEN);
    assert_eq!(lane_takes(&app, &lane_get(&app, "/user/alice/whoami", &bob_cookie)).await, None);

    let shared = alice.post_json("/hub/api/shares/alice/", &json!({"user": "bob"})).await;
    assert_eq!(shared.status, StatusCode::OK, "{shared:?}");
    assert_eq!(shared.value()["server"]["ready"], true);

    // Bob: the general path (his token) and the fast lane (his session), acting as alice there.
    let r =
        script().get(app.at("/user/alice/whoami")).header("Authorization", bob.authorization()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let who: Value = r.json().await.unwrap();
    assert_eq!(
        who["headers"]["authorization"],
        json!([format!("token {secret}")]),
        "the server sees its owner's credential"
    );
    assert_eq!(lane_takes(&app, &lane_get(&app, "/user/alice/whoami", &bob_cookie)).await, Some(200));
    // Carol, with whom nothing is shared, is refused on both paths and on WebSockets.
    assert_eq!(with_token(&app, "/user/alice/whoami", carol.authorization()).await, StatusCode::FORBIDDEN);
    assert_eq!(lane_takes(&app, &lane_get(&app, "/user/alice/whoami", &carol_cookie)).await, None, "the lane declines");
    let by_cookie = script().get(app.at("/user/alice/whoami")).header("Cookie", &carol_cookie).send().await.unwrap();
    assert_eq!(by_cookie.status(), StatusCode::FORBIDDEN, "and the general path refuses");
    let url = ws_url(&app.url, "/user/alice/ws/echo");
    let refused = ws_connect(&url, &[("Authorization", carol.authorization())]).await.expect_err("carol's upgrade");
    assert_eq!(refused_status(&refused), 403);
    // A share grants access, not starting or stopping.
    let stop = bob.send(reqwest::Method::DELETE, "/hub/api/users/alice/server", None).await;
    assert_eq!(stop.status, StatusCode::FORBIDDEN, "{stop:?}");

    // WebSockets: bob's (token) and a browser's (cookie, the hub's Origin); alice's own too.
    let mut bob_ws = ws_connect(&url, &[("Authorization", bob.authorization())]).await.expect("bob's upgrade");
    assert_eq!(echo(&mut bob_ws, "as a visitor").await, "as a visitor");
    let mut bob_browser_ws =
        ws_connect(&url, &[("Cookie", bob_cookie.as_str()), ("Origin", app.url.as_str())]).await.expect("a browser's");
    assert_eq!(echo(&mut bob_browser_ws, "from bob's browser").await, "from bob's browser");
    let mut alice_ws = ws_connect(&url, &[("Authorization", alice.authorization())]).await.expect("alice's upgrade");

    // Revoking closes bob's open WebSockets at once, and only his.
    assert_eq!(alice.patch_json("/hub/api/shares/alice/", &json!({"user": "bob"})).await.value(), json!({}));
    ws_end(&mut bob_ws, HANG).await;
    ws_end(&mut bob_browser_ws, HANG).await;
    assert_eq!(echo(&mut alice_ws, "still here").await, "still here", "the owner's WebSocket stays");
    assert_eq!(with_token(&app, "/user/alice/whoami", bob.authorization()).await, StatusCode::FORBIDDEN);
    assert_eq!(lane_takes(&app, &lane_get(&app, "/user/alice/whoami", &bob_cookie)).await, None);

    // Shared with bob's group instead: leaving the group ends his access and his WebSockets.
    alice.post_json("/hub/api/shares/alice/", &json!({"group": "lab"})).await;
    let mut via_group = ws_connect(&url, &[("Authorization", bob.authorization())]).await.expect("through the group");
    assert_eq!(echo(&mut via_group, "via lab").await, "via lab");
    let removed = root.delete_json("/hub/api/groups/lab/users", &json!({"users": ["bob"]})).await;
    assert!(removed.status.is_success(), "{removed:?}");
    ws_end(&mut via_group, HANG).await;
    assert_eq!(with_token(&app, "/user/alice/whoami", bob.authorization()).await, StatusCode::FORBIDDEN);
    assert_eq!(echo(&mut alice_ws, "and still here").await, "and still here");
    assert!(eventually(|| app.hub.routes().open_tunnels() == 1).await, "only alice's tunnel is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_or_admin_right_taken_away_or_an_account_disabled_closes_the_websockets_it_let_in() {
    use labhub_core::{RoleName, UserName};
    use labhub_service::Actor;
    use labhub_service::roles::Assignee;

    let (app, root, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    let bob = app.api_for("bob").await;
    start_ready(&alice, "alice").await;
    let url = ws_url(&app.url, "/user/alice/ws/echo");
    // Bob reaches alice's server through a role (no share), as a teaching assistant would.
    let roles = app.hub.roles();
    let helper = RoleName::parse("alice-helper").unwrap();
    roles.put(Actor::System, &helper, "", &["access:servers!user=alice".to_string()]).await.unwrap();
    let to_bob = Assignee::User(UserName::parse("bob").unwrap());
    roles.assign(Actor::System, &helper, &to_bob, true).await.unwrap();
    let mut bob_ws = ws_connect(&url, &[("Authorization", bob.authorization())]).await.expect("bob's upgrade");
    assert_eq!(echo(&mut bob_ws, "by role").await, "by role");
    let mut alice_ws = ws_connect(&url, &[("Authorization", alice.authorization())]).await.expect("alice's upgrade");
    // Taking the role away closes his WebSocket, not alice's, and he is refused from then on.
    roles.assign(Actor::System, &helper, &to_bob, false).await.unwrap();
    ws_end(&mut bob_ws, HANG).await;
    assert_eq!(echo(&mut alice_ws, "still mine").await, "still mine");
    assert_eq!(with_token(&app, "/user/alice/whoami", bob.authorization()).await, StatusCode::FORBIDDEN);

    // As an admin, then no longer one: the WebSocket he opened as one closes.
    assert!(root.patch_json("/hub/api/users/bob", &json!({"admin": true})).await.status.is_success());
    let mut as_admin = ws_connect(&url, &[("Authorization", bob.authorization())]).await.expect("bob as an admin");
    assert_eq!(echo(&mut as_admin, "admin").await, "admin");
    assert!(root.patch_json("/hub/api/users/bob", &json!({"admin": false})).await.status.is_success());
    ws_end(&mut as_admin, HANG).await;

    // The role given again, and the account disabled by an admin: that closes it too.
    roles.assign(Actor::System, &helper, &to_bob, true).await.unwrap();
    let mut again = ws_connect(&url, &[("Authorization", bob.authorization())]).await.expect("bob's upgrade again");
    assert_eq!(echo(&mut again, "again").await, "again");
    let disabled = root.patch_json("/hub/api/users/bob", &json!({"account_state": "disabled"})).await;
    assert!(disabled.status.is_success(), "{disabled:?}");
    ws_end(&mut again, HANG).await;
    assert_eq!(echo(&mut alice_ws, "and still mine").await, "and still mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_with_servers_lets_the_visitor_start_and_stop_the_owners_server() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    root.post("/hub/api/groups/lab").await;
    root.post_json("/hub/api/groups/lab/users", &json!({"users": ["alice", "bob"]})).await;
    let bob = app.api_for("bob").await;
    let shared = alice
        .post_json("/hub/api/shares/alice/", &json!({"user": "bob", "scopes": ["access:servers", "servers"]}))
        .await;
    assert_eq!(shared.status, StatusCode::OK, "{shared:?}");
    // Bob starts alice's server (charged to alice), uses it, stops it; alice sees it happen.
    let (started, _) = bob.start("alice", None, json!({"image": "test"})).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(started.is_success(), "{started}");
    alice.wait_ready("alice", None).await;
    assert_eq!(with_token(&app, "/user/alice/whoami", bob.authorization()).await, StatusCode::OK);
    let stopped = bob.stop("alice", None).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(stopped.is_success());
    alice.wait_stopped("alice", None).await;
    // Reading alice's account stays hers: a share is about one server.
    assert_eq!(bob.get("/hub/api/users/alice").await.status, StatusCode::FORBIDDEN);
    // Bob's home page lists it under "Shared with me", with a Start button.
    let browser = app.signed_in("bob", "correct horse").await;
    let home = browser.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("Shared with me") && home.contains("alice&#39;s default server"), "{home}");
    assert!(home.contains("href=\"/hub/spawn/alice\""), "{home}");
    let stopped_page = |b: &reqwest::Client| b.get(app.at("/user/alice/")).header("Accept", "text/html").send();
    let page = stopped_page(&browser).await.unwrap().text().await.unwrap();
    assert!(page.contains("is not running") && page.contains("Start it"), "{page}");
    // With access alone, the same page offers no start, and the home page no Start button.
    let left = alice.patch_json("/hub/api/shares/alice/", &json!({"user": "bob", "scopes": ["servers"]})).await;
    assert_eq!(left.value()["scopes"], json!(["access:servers!server=alice/"]));
    let page = stopped_page(&browser).await.unwrap().text().await.unwrap();
    assert!(page.contains("is not running") && !page.contains("Start it"), "{page}");
    let home = browser.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("Shared with me") && !home.contains("href=\"/hub/spawn/alice\""), "{home}");
    refused_start(&bob).await;
}

/// Bob's start of alice's server is refused.
async fn refused_start(bob: &labhub_testkit::Api) {
    let refused = bob.start("alice", None, json!({"image": "test"})).await.expect_err("a refusal");
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_link_accepted_in_a_browser_leads_into_the_owners_server() {
    let scope = Arc::new(DockerScope::exclusive(test_server_binary()).await);
    let app = TestApp::builder().docker(scope).spawn().await;
    app.add_test_image("test").await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let alice = app.api_for("alice").await;
    start_ready(&alice, "alice").await;
    let made = alice.post_json("/hub/api/share-codes/alice/", &json!({"expires_in": 3600})).await.value();
    let link = made["full_accept_url"].as_str().expect("a full link").to_string();

    let chromium = Chromium::launch().await.unwrap_or_else(|e| panic!("{e}"));
    let step = Duration::from_secs(30);
    let drive = async {
        // Not signed in: the hub asks bob to sign in first, then brings him back to the link.
        chromium.goto(&link).await?;
        chromium.wait_for("the sign-in page", "location.pathname === '/hub/login'", step).await?;
        chromium.type_into("input[name=username]", "bob", step).await?;
        chromium.type_into("input[name=password]", "correct horse", step).await?;
        chromium.click("form[action='/hub/login'] button[type=submit]", step).await?;
        chromium.wait_for("the confirmation", "location.pathname === '/hub/accept-share'", step).await?;
        let says = chromium.eval("document.querySelector('main, body').textContent").await?;
        let says = says.as_str().unwrap_or_default().to_string();
        if !says.contains("alice shares a server with you") || !says.contains("act as alice") {
            return Err(labhub_testkit::browser::BrowserError(format!("the confirmation says: {says}")));
        }
        chromium.click("form[action='/hub/accept-share'] button[type=submit]", step).await?;
        chromium.wait_for("alice's server", "location.pathname.startsWith('/user/alice/')", step).await?;
        chromium.goto(&app.at("/user/alice/whoami")).await?;
        let expression =
            format!("document.body.textContent.includes({})", js_string("\"path\":\"/user/alice/whoami\""));
        chromium.wait_for("the server's answer to bob", &expression, step).await
    };
    let outcome = tokio::time::timeout(Duration::from_secs(180), drive).await;
    let failure = match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the browser took over 180 s".to_string()),
    };
    if let Some(why) = failure {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("share-link");
        let kept = chromium.save_failure(&dir, "share-link", &why).await;
        chromium.close().await;
        panic!("{why}; the page is kept in {kept:?}");
    }
    chromium.close().await;
    let listed = alice.get("/hub/api/share-codes/alice/").await.value();
    assert_eq!(listed["items"][0]["exchange_count"], 1, "{listed}");
    let bob = app.api_for("bob").await;
    assert_eq!(bob.get("/hub/api/users/bob/shared").await.value()["_pagination"]["total"], 1);
}

/// A visitor sees the servers shared with them and nothing else of the owner's: a share of a
/// named server that is stopped answers "not running" (not "someone else's"), and a share of
/// the default server does not tell them the owner's other servers' names or states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_sees_only_the_servers_shared_with_them() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    root.post("/hub/api/groups/lab").await;
    root.post_json("/hub/api/groups/lab/users", &json!({"users": ["alice", "bob"]})).await;
    let bob = app.api_for("bob").await;
    for server in ["notes", "secret"] {
        let (status, _) = alice.start("alice", Some(server), json!({"image": "test"})).await.unwrap();
        assert!(matches!(status, StatusCode::CREATED | StatusCode::ACCEPTED), "{status}");
        alice.wait_ready("alice", Some(server)).await;
        alice.stop("alice", Some(server)).await.unwrap();
        alice.wait_stopped("alice", Some(server)).await;
    }
    let shared = alice.post_json("/hub/api/shares/alice/notes", &json!({"user": "bob"})).await;
    assert_eq!(shared.status, StatusCode::OK, "{shared:?}");

    let ask = |path: &'static str| {
        let (app, bob) = (&app, &bob);
        async move {
            let r = script().get(app.at(path)).header("Authorization", bob.authorization()).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap()["message"].as_str().unwrap_or_default().to_string())
        }
    };
    let (status, message) = ask("/user/alice/notes/lab").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
    assert_eq!(message, "alice's server notes is not running");
    let (status, _) = ask("/user/alice/secret/lab").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "nothing shared there");

    // With the default server shared too, `secret` is just a path on it, not a server bob learns of.
    let shared = alice.post_json("/hub/api/shares/alice/", &json!({"user": "bob"})).await;
    assert_eq!(shared.status, StatusCode::OK, "{shared:?}");
    let (status, message) = ask("/user/alice/secret/lab").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
    assert_eq!(message, "alice's server is not running");
}
