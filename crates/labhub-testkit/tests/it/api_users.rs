//! `/hub/api/users…`: JupyterHub's shapes, and every bad input refused without a change.

use labhub_testkit::TestApp;
use labhub_testkit::app::script;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

struct Admin {
    app: TestApp,
    c: Client,
    auth: String,
}

async fn admin_app() -> Admin {
    let app = TestApp::spawn().await;
    app.add_user("root", "correct horse", true).await;
    let auth = format!("token {}", app.token("root").await);
    Admin { app, c: script(), auth }
}

impl Admin {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.c.request(method.parse().unwrap(), self.app.at(path)).header("Authorization", &self.auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }
}

#[tokio::test]
async fn create_get_patch_delete_a_user() {
    let a = admin_app().await;
    let (s, body) =
        a.send("POST", "/hub/api/users/Alice", Some(json!({"admin": false, "password": "a long password"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "alice", "names are normalised to lower case");
    for key in ["kind", "name", "admin", "roles", "groups", "server", "pending", "created", "last_activity", "servers"]
    {
        assert!(body.get(key).is_some(), "JupyterHub's user model has {key}: {body}");
    }
    // The same name in another case is the same user.
    let (s, body) = a.send("POST", "/hub/api/users/ALICE", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, body) = a.send("GET", "/hub/api/users/ALICE", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["name"], "alice");

    let (s, body) = a.send("PATCH", "/hub/api/users/alice", Some(json!({"admin": true, "name": "alice2"}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "alice2");
    assert_eq!(body["admin"], true);
    // The password set at creation works for the renamed user.
    let b = a.app.signed_in("alice2", "a long password").await;
    assert_eq!(b.get(a.app.at("/hub/home")).send().await.unwrap().status(), 200);

    let (s, _) = a.send("DELETE", "/hub/api/users/alice2", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = a.send("GET", "/hub/api/users/alice2", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], 404);
    // Deleting a user ends their sessions.
    assert_eq!(b.get(a.app.at("/hub/home")).send().await.unwrap().status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn hostile_names_are_refused_with_a_reason_and_nothing_is_created() {
    let a = admin_app().await;
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
        let (s, body) = a.send("POST", "/hub/api/users", Some(json!({"usernames": [n]}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{n:?}: {body}");
        let msg = body["message"].as_str().unwrap();
        assert!(msg.contains("user name"), "{n:?}: {msg}");
    }
    // One bad name refuses the whole batch.
    let (s, _) = a.send("POST", "/hub/api/users", Some(json!({"usernames": ["good", "b@d!"]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(a.app.count("select count(*) from users").await, 1);
}

#[tokio::test]
async fn bad_bodies_are_clear_400s_or_413s_and_change_nothing() {
    let a = admin_app().await;
    let c = &a.c;
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
        let r = c.post(a.app.at("/hub/api/users")).header("Authorization", &a.auth).body(body).send().await.unwrap();
        assert_eq!(r.status(), status, "{what}");
        let v: Value = r.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains(needle), "{what}: {v}");
    }
    assert_eq!(a.app.count("select count(*) from users").await, 1);
}

#[tokio::test]
async fn listing_pages_filters_and_sorts() {
    let a = admin_app().await;
    let names: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
    let (s, created) = a.send("POST", "/hub/api/users", Some(json!({"usernames": names}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(created.as_array().unwrap().len(), 7);
    // Existing names are skipped, as JupyterHub does.
    let (s, created) = a.send("POST", "/hub/api/users", Some(json!({"usernames": ["u0", "u7"]}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(created.as_array().unwrap().len(), 1);

    let (s, list) = a.send("GET", "/hub/api/users?name_filter=u&sort=-name&limit=3", None).await;
    assert_eq!(s, StatusCode::OK);
    let got: Vec<&str> = list.as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(got, ["u7", "u6", "u5"]);

    let r =
        a.c.get(a.app.at("/hub/api/users?name_filter=u&offset=6&limit=3"))
            .header("Authorization", &a.auth)
            .header("Accept", "application/jupyterhub-pagination+json")
            .send()
            .await
            .unwrap();
    let env: Value = r.json().await.unwrap();
    assert_eq!(env["_pagination"]["total"], 8);
    assert_eq!(env["_pagination"]["offset"], 6);
    assert_eq!(env["items"].as_array().unwrap().len(), 2);
    assert!(env["_pagination"]["next"].is_null());
    let r =
        a.c.get(a.app.at("/hub/api/users?limit=2"))
            .header("Authorization", &a.auth)
            .header("Accept", "application/jupyterhub-pagination+json")
            .send()
            .await
            .unwrap();
    let env: Value = r.json().await.unwrap();
    assert_eq!(env["_pagination"]["next"]["offset"], 2);
    assert!(env["_pagination"]["next"]["url"].as_str().unwrap().contains("offset=2"));

    for bad in ["limit=0", "limit=abc", "offset=-1", "state=sleepy", "sort=password"] {
        let (s, body) = a.send("GET", &format!("/hub/api/users?{bad}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (s, list) = a.send("GET", "/hub/api/users?state=inactive", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 9, "nobody has a server yet");
    let (_, list) = a.send("GET", "/hub/api/users?state=ready", None).await;
    assert!(list.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_last_admin_cannot_be_removed() {
    let a = admin_app().await;
    for (method, body) in [
        ("PATCH", Some(json!({"admin": false}))),
        ("PATCH", Some(json!({"account_state": "disabled"}))),
        ("DELETE", None),
    ] {
        let (s, v) = a.send(method, "/hub/api/users/root", body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{method}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("last active admin")
                || v["message"].as_str().unwrap().contains("your own"),
            "{v}"
        );
    }
    let (_, me) = a.send("GET", "/hub/api/user", None).await;
    assert_eq!(me["admin"], true);
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_and_tokens_at_once() {
    let a = admin_app().await;
    a.app.add_user("bob", "correct horse", false).await;
    let bob = a.app.signed_in("bob", "correct horse").await;
    let bob_token = format!("token {}", a.app.token("bob").await);
    assert_eq!(bob.get(a.app.at("/hub/home")).send().await.unwrap().status(), 200);
    assert_eq!(
        a.c.get(a.app.at("/hub/api/user")).header("Authorization", &bob_token).send().await.unwrap().status(),
        200
    );
    let (s, v) = a.send("PATCH", "/hub/api/users/bob", Some(json!({"account_state": "disabled"}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["account_state"], "disabled");
    assert_eq!(bob.get(a.app.at("/hub/home")).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    assert_eq!(
        a.c.get(a.app.at("/hub/api/user")).header("Authorization", &bob_token).send().await.unwrap().status(),
        401
    );
    // And cannot sign in again.
    let r = a.app.login(&labhub_testkit::app::browser(), "bob", "correct horse").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("disabled"));
}

#[tokio::test]
async fn admin_actions_are_audited_and_the_audit_log_is_append_only() {
    let a = admin_app().await;
    a.send("POST", "/hub/api/users/carol", None).await;
    a.send("PATCH", "/hub/api/users/carol", Some(json!({"admin": true}))).await;
    let rows: Vec<(String, String, String, Value)> =
        labhub_db::sqlx::query_as("select actor, action, target, detail from audit_log order by audit_id")
            .fetch_all(&a.app.db)
            .await
            .unwrap();
    assert!(rows.iter().any(|r| r.0 == "root" && r.1 == "user.create" && r.2 == "carol"), "{rows:?}");
    let set_admin = rows.iter().find(|r| r.1 == "user.set_admin").expect("a set_admin record");
    assert_eq!(set_admin.3, json!({"before": false, "after": true}));
    let err = labhub_db::sqlx::query("delete from audit_log").execute(&a.app.db).await.unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = labhub_db::sqlx::query("update audit_log set actor = 'x'").execute(&a.app.db).await.unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}
