//! Sharing from inside a server of JupyterHub's contract, as JupyterLab's share dialogs do it
//! (JupyterHub's `oauth_client_allowed_scopes = ["access:servers!server", "shares!server"]`):
//! the OAuth token of whoever may manage the server's shares carries `shares!server=…`, and
//! with it the server's shares and share codes are managed on the hub's internal address (and
//! on its public API); a visitor's token and the server's own token carry no such power.

use std::sync::Arc;

use labhub_testkit::TestApp;
use labhub_testkit::app::browser;
use labhub_testkit::docker::DockerScope;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::test_server_binary;
use crate::single_user::register_alices_server;

/// The OAuth access token `name` gets by signing in to alice's server (its client's secret is
/// `secret`), as `jupyterhub-singleuser` gets it for a browser.
async fn signs_in(app: &TestApp, name: &str, secret: &str) -> (String, Value) {
    let b = browser();
    app.login(&b, name, "correct horse").await;
    let query = "client_id=jupyterhub-user-alice&response_type=code&redirect_uri=/user/alice/oauth_callback";
    let answer = b.get(app.at(&format!("/hub/api/oauth2/authorize?{query}"))).send().await.unwrap();
    assert!(answer.status().is_redirection(), "{name} may sign in: {}", answer.status());
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    let code = location.split("code=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let issued: Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(app.at("/hub/api/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "jupyterhub-user-alice"),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scopes = issued["scope"].clone();
    (issued["access_token"].as_str().unwrap().to_string(), scopes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_sign_in_manages_the_servers_shares_from_inside_it_and_a_visitors_does_not() {
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let app = TestApp::builder().docker(scope.clone()).hub_api().spawn().await;
    for (name, admin) in [("root", true), ("alice", false), ("bob", false), ("carol", false)] {
        app.add_user(name, "correct horse", admin).await;
    }
    let root = app.api_for("root").await;
    assert_eq!(root.post("/hub/api/groups/lab").await.status, StatusCode::CREATED);
    let added = root.post_json("/hub/api/groups/lab/users", &json!({"users": ["alice", "bob", "carol"]})).await;
    assert!(added.status.is_success(), "{added:?}");
    let (_, secret) = register_alices_server(&app).await;
    let alice = app.api_for("alice").await;
    assert_eq!(alice.post_json("/hub/api/shares/alice/", &json!({"user": "bob"})).await.status, StatusCode::OK);

    let (owners, owners_scopes) = signs_in(&app, "alice", &secret).await;
    assert_eq!(owners_scopes, "access:servers!server=alice/ shares!server=alice/");
    let (visitors, visitors_scopes) = signs_in(&app, "bob", &secret).await;
    assert_eq!(visitors_scopes, "access:servers!server=alice/", "a share does not pass itself on");
    let (_, admins_scopes) = signs_in(&app, "root", &secret).await;
    assert_eq!(admins_scopes, "access:servers!server=alice/", "an admin's powers stay out of alice's server");

    let internal = app.internal_url.clone().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = |base: &str, method: Method, token: &str, path: &str, body: Option<Value>| {
        let mut req = client.request(method, format!("{base}{path}")).header("Authorization", format!("token {token}"));
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
    };
    let me: Value = call(&internal, Method::GET, &owners, "/hub/api/user", None).await.unwrap().json().await.unwrap();
    assert_eq!(me["scopes"], json!(["access:servers!server=alice/", "shares!server=alice/"]));

    // The owner's sign-in, from inside the server: shares with a colleague, lists, makes a
    // share link, and revokes.
    let granted =
        call(&internal, Method::POST, &owners, "/hub/api/shares/alice/", Some(json!({"user": "carol"}))).await.unwrap();
    assert_eq!(granted.status(), StatusCode::OK);
    let listed: Value =
        call(&internal, Method::GET, &owners, "/hub/api/shares/alice/", None).await.unwrap().json().await.unwrap();
    let names: Vec<&str> =
        listed["items"].as_array().unwrap().iter().filter_map(|s| s["user"]["name"].as_str()).collect();
    assert_eq!(names, ["bob", "carol"], "{listed}");
    let code = call(&internal, Method::POST, &owners, "/hub/api/share-codes/alice/", Some(json!({}))).await.unwrap();
    assert_eq!(code.status(), StatusCode::OK);
    let code: Value = code.json().await.unwrap();
    assert!(code["accept_url"].as_str().unwrap().starts_with("/hub/accept-share?code="), "{code}");
    let revoked = call(&internal, Method::PATCH, &owners, "/hub/api/shares/alice/", Some(json!({"user": "carol"})))
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let carol_sees = app.api_for("carol").await.get("/hub/api/users/carol/shared").await;
    assert_eq!(carol_sees.value()["items"], json!([]), "carol's share is gone");
    // It is recorded as the owner's doing.
    let recorded = "select count(*) from audit_log where action = 'share.grant' and actor = 'alice' and detail::text like '%carol%'";
    assert_eq!(app.count(recorded).await, 1);

    // Only this server's shares: not another's, not the owner's others, not the rest of the API.
    let other = call(&internal, Method::POST, &owners, "/hub/api/shares/bob/", Some(json!({"user": "alice"})));
    assert_eq!(other.await.unwrap().status(), StatusCode::FORBIDDEN);
    let named = call(&internal, Method::GET, &owners, "/hub/api/shares/alice/gpu", None).await.unwrap();
    assert_eq!(named.status(), StatusCode::FORBIDDEN);
    // A visitor's sign-in and the server's own token may manage nothing.
    for token in [&visitors, &secret] {
        let made = call(&internal, Method::POST, token, "/hub/api/share-codes/alice/", Some(json!({}))).await.unwrap();
        assert_eq!(made.status(), StatusCode::FORBIDDEN);
        let seen = call(&internal, Method::GET, token, "/hub/api/shares/alice/", None).await.unwrap();
        assert_eq!(seen.status(), StatusCode::FORBIDDEN);
        let body: Value = seen.json().await.unwrap();
        assert_eq!(body["status"], 403, "{body}");
    }
    // An ordinary API token is no credential on the internal address.
    let ordinary = app.token("alice").await;
    let answer = call(&internal, Method::GET, &ordinary, "/hub/api/shares/alice/", None).await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);

    // On the public API (where JupyterLab's JavaScript calls), the same token does the same,
    // and nothing else.
    let public = app.at("");
    let made = call(&public, Method::POST, &owners, "/hub/api/share-codes/alice/", Some(json!({}))).await.unwrap();
    assert_eq!(made.status(), StatusCode::OK);
    for path in ["/hub/api/users/alice", "/hub/api/users/alice/tokens", "/hub/api/users/alice/shared"] {
        let answer = call(&public, Method::GET, &owners, path, None).await.unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let start = call(&public, Method::POST, &owners, "/hub/api/users/alice/server", Some(json!({}))).await.unwrap();
    assert_eq!(start.status(), StatusCode::FORBIDDEN, "access is no right to start");
}
