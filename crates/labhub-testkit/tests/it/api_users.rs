//! `/hub/api/users…`: JupyterHub's shapes, and every bad input refused without a change.

use labhub_testkit::api::{Paginated, UserModel};
use labhub_testkit::{Api, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A hub with an admin `root`, and an API client with root's token.
async fn admin_app() -> (TestApp, Api) {
    let app = TestApp::spawn().await;
    app.add_user("root", "correct horse", true).await;
    let root = app.api_for("root").await;
    (app, root)
}

#[tokio::test]
async fn create_get_patch_delete_a_user() {
    let (app, root) = admin_app().await;
    let r = root.post_json("/hub/api/users/Alice", &json!({"admin": false, "password": "a long password"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let body = r.value();
    assert_eq!(body["name"], "alice", "names are normalised to lower case");
    for key in ["kind", "name", "admin", "roles", "groups", "server", "pending", "created", "last_activity", "servers"]
    {
        assert!(body.get(key).is_some(), "JupyterHub's user model has {key}: {body}");
    }
    // The same name in another case is the same user.
    let r = root.post("/hub/api/users/ALICE").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert_eq!(root.user("ALICE").await.name, "alice");

    let r = root.patch_json("/hub/api/users/alice", &json!({"admin": true, "name": "alice2"})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let renamed: UserModel = r.json();
    assert_eq!(renamed.name, "alice2");
    assert!(renamed.admin);
    // The password set at creation works for the renamed user.
    let b = app.signed_in("alice2", "a long password").await;
    assert_eq!(b.get(app.at("/hub/home")).send().await.unwrap().status(), 200);

    assert_eq!(root.delete("/hub/api/users/alice2").await.status, StatusCode::NO_CONTENT);
    // In JupyterHub's error shape, whose `status` is the answer's.
    assert_eq!(root.get("/hub/api/users/alice2").await.error().status, StatusCode::NOT_FOUND);
    // Deleting a user ends their sessions.
    assert_eq!(b.get(app.at("/hub/home")).send().await.unwrap().status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn hostile_names_are_refused_with_a_reason_and_nothing_is_created() {
    let (app, root) = admin_app().await;
    let names = [
        "a".repeat(65),
        "\u{0430}lice".to_string(), // Cyrillic а
        "al ice".to_string(),
        "../etc".to_string(),
        "-alice".to_string(),
        "alice.".to_string(),
        "al/ice".to_string(),
        "ali\u{200b}ce".to_string(), // zero-width space
        "".to_string(),
    ];
    for n in &names {
        let r = root.post_json("/hub/api/users", &json!({"usernames": [n]})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{n:?}: {r:?}");
        let msg = r.message();
        assert!(msg.contains("user name"), "{n:?}: {msg}");
    }
    // One bad name refuses the whole batch.
    let r = root.post_json("/hub/api/users", &json!({"usernames": ["good", "b@d!"]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("select count(*) from users").await, 1);
}

#[tokio::test]
async fn bad_bodies_are_clear_400s_or_413s_and_change_nothing() {
    let (app, root) = admin_app().await;
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("malformed", b"{\"usernames\": [".to_vec(), StatusCode::BAD_REQUEST, "not valid JSON"),
        ("wrong type", br#"{"usernames": "alice"}"#.to_vec(), StatusCode::BAD_REQUEST, "not valid JSON"),
        ("unknown field", br#"{"usernames": ["x"], "evil": 1}"#.to_vec(), StatusCode::BAD_REQUEST, "unknown field"),
        ("empty list", br#"{"usernames": []}"#.to_vec(), StatusCode::BAD_REQUEST, "at least one"),
        (
            "oversized",
            format!("{{\"usernames\": [\"{}\"]}}", "a".repeat(2 << 20)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
    ];
    for (what, body, status, needle) in cases {
        // The bytes as they are: these bodies are not JSON a client would make.
        let r = root.answer(root.request(Method::POST, "/hub/api/users").body(body)).await;
        assert_eq!(r.status, status, "{what}");
        assert!(r.message().contains(needle), "{what}: {r:?}");
    }
    assert_eq!(app.count("select count(*) from users").await, 1);
}

#[tokio::test]
async fn listing_pages_filters_and_sorts() {
    let (_app, root) = admin_app().await;
    let names: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
    let r = root.post_json("/hub/api/users", &json!({"usernames": names})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json::<Vec<UserModel>>().len(), 7);
    // Existing names are skipped, as JupyterHub does.
    let r = root.post_json("/hub/api/users", &json!({"usernames": ["u0", "u7"]})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json::<Vec<UserModel>>().len(), 1);

    assert_eq!(root.user_names("name_filter=u&sort=-name&limit=3").await, ["u7", "u6", "u5"]);

    let page: Paginated<UserModel> = root.get_paginated("/hub/api/users?name_filter=u&offset=6&limit=3").await.json();
    assert_eq!(page.pagination.total, 8);
    assert_eq!(page.pagination.offset, 6);
    assert_eq!(page.items.len(), 2);
    assert!(page.pagination.next.is_none());
    let page: Paginated<UserModel> = root.get_paginated("/hub/api/users?limit=2").await.json();
    let next = page.pagination.next.expect("a next page");
    assert_eq!(next.offset, 2);
    assert!(next.url.contains("offset=2"), "{}", next.url);

    for bad in ["limit=0", "limit=abc", "offset=-1", "state=sleepy", "sort=password"] {
        let r = root.get(&format!("/hub/api/users?{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {r:?}");
    }
    assert_eq!(root.users("state=inactive").await.len(), 9, "nobody has a server yet");
    assert!(root.users("state=ready").await.is_empty());
}

#[tokio::test]
async fn the_last_admin_cannot_be_removed() {
    let (_app, root) = admin_app().await;
    for (method, body) in [
        (Method::PATCH, Some(json!({"admin": false}))),
        (Method::PATCH, Some(json!({"account_state": "disabled"}))),
        (Method::DELETE, None),
    ] {
        let r = root.send(method.clone(), "/hub/api/users/root", body.as_ref()).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{method}: {r:?}");
        let msg = r.message();
        assert!(msg.contains("last active admin") || msg.contains("your own"), "{msg}");
    }
    assert!(root.me().await.admin);
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_and_tokens_at_once() {
    let (app, root) = admin_app().await;
    app.add_user("bob", "correct horse", false).await;
    let bob = app.signed_in("bob", "correct horse").await;
    let bob_api = app.api_for("bob").await;
    assert_eq!(bob.get(app.at("/hub/home")).send().await.unwrap().status(), 200);
    assert_eq!(bob_api.get("/hub/api/user").await.status, StatusCode::OK);
    let r = root.patch_json("/hub/api/users/bob", &json!({"account_state": "disabled"})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json::<UserModel>().account_state, "disabled");
    assert_eq!(bob.get(app.at("/hub/home")).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    assert_eq!(bob_api.get("/hub/api/user").await.status, StatusCode::UNAUTHORIZED);
    // And cannot sign in again.
    let r = app.login(&labhub_testkit::app::browser(), "bob", "correct horse").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("disabled"));
}

#[tokio::test]
async fn admin_actions_are_audited_and_the_audit_log_is_append_only() {
    let (app, root) = admin_app().await;
    assert_eq!(root.post("/hub/api/users/carol").await.status, StatusCode::CREATED);
    assert_eq!(root.patch_json("/hub/api/users/carol", &json!({"admin": true})).await.status, StatusCode::OK);
    let rows: Vec<(String, String, String, Value)> =
        labhub_db::sqlx::query_as("select actor, action, target, detail from audit_log order by audit_id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(rows.iter().any(|r| r.0 == "root" && r.1 == "user.create" && r.2 == "carol"), "{rows:?}");
    let set_admin = rows.iter().find(|r| r.1 == "user.set_admin").expect("a set_admin record");
    assert_eq!(set_admin.3, json!({"before": false, "after": true}));
    let err = labhub_db::sqlx::query("delete from audit_log").execute(&app.db).await.unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = labhub_db::sqlx::query("update audit_log set actor = 'x'").execute(&app.db).await.unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}
