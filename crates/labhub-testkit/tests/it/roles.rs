//! Roles and scopes: tokens narrowed to a subset of their owner's scopes, the role matrix of
//! the API's one scope check (token scopes × endpoints), and role changes taking effect at
//! once, without a restart, whether this hub or another process makes them.

use labhub_core::{GroupName, RoleName, UserName};
use labhub_service::Actor;
use labhub_service::roles::Assignee;
use labhub_testkit::{Api, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("a list").iter().map(|s| s.as_str().expect("a string").to_string()).collect()
}

/// A token of `user` minted by `by` with these scopes.
async fn narrowed(app: &TestApp, by: &Api, user: &str, scopes: &[&str]) -> Api {
    let t = by.create_token(user, json!({ "scopes": scopes })).await.expect("a token within the owner's scopes");
    app.api(t.token.as_deref().expect("the token, once"))
}

#[tokio::test]
async fn tokens_carry_a_subset_of_their_owners_scopes_and_say_which() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let alice = app.api_for("alice").await;

    let r = alice.post_json("/hub/api/users/alice/tokens", &json!({"scopes": ["admin:users"]})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(r.message().contains("admin:users") && r.message().contains("not held by alice"), "{r:?}");
    let r = alice.post_json("/hub/api/users/alice/tokens", &json!({"scopes": ["read:users!user=bob"]})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "another user's account: {r:?}");
    let r = alice.post_json("/hub/api/users/alice/tokens", &json!({"scopes": ["read:userz"]})).await;
    assert_eq!((r.status, r.message()), (StatusCode::BAD_REQUEST, "unknown scope 'read:userz'".to_string()));

    let t = alice.create_token("alice", json!({"scopes": ["read:users!user=alice"], "note": "reader"})).await.unwrap();
    assert_eq!(t.scopes, ["read:users!user=alice"]);
    let reader = app.api(t.token.as_deref().unwrap());
    let me = reader.get("/hub/api/user").await.value();
    assert_eq!(me["name"], "alice");
    let scopes = strings(&me["scopes"]);
    assert!(scopes.contains(&"read:users!user=alice".into()) && scopes.contains(&"read:users:name!user=alice".into()));
    assert!(!scopes.iter().any(|s| s.starts_with("tokens") || s.starts_with("access:servers")), "{scopes:?}");
    // A token without scopes, and the session, hold everything `self` expands to.
    let full = strings(&alice.get("/hub/api/user").await.value()["scopes"]);
    for s in ["tokens!user=alice", "access:servers!user=alice", "servers!user=alice", "read:users!user=alice"] {
        assert!(full.contains(&s.to_string()), "{s} in {full:?}");
    }
    let listed = alice.get("/hub/api/users/alice/tokens").await.value();
    let scopes_of = |note: &str| {
        let t = listed["api_tokens"].as_array().unwrap().iter().find(|t| t["note"] == note).cloned().unwrap();
        strings(&t["scopes"])
    };
    assert_eq!(scopes_of("reader"), ["read:users!user=alice"]);
    assert_eq!(scopes_of("test"), ["inherit"], "tokens made without scopes keep meaning their owner's");

    // The narrowed token does only what it says.
    assert_eq!(reader.get("/hub/api/users/alice").await.status, StatusCode::OK);
    let r = reader.get("/hub/api/users/alice/tokens").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.message().contains("requires any of [read:tokens]"), "{r:?}");
    assert_eq!(reader.post_json("/hub/api/users/alice/tokens", &json!({})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reader.get("/hub/api/images").await.status,
        StatusCode::FORBIDDEN,
        "labhub's own endpoints need a full credential"
    );
    // A token that may mint tokens mints none beyond itself.
    let minter = narrowed(&app, &alice, "alice", &["tokens!user=alice"]).await;
    let r = minter.post_json("/hub/api/users/alice/tokens", &json!({"scopes": ["read:users!user=alice"]})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(r.message().contains("not held by the token asking"), "{r:?}");
    let t: Value = minter.post_json("/hub/api/users/alice/tokens", &json!({})).await.value();
    assert!(!strings(&t["scopes"]).contains(&"inherit".to_string()), "{t}");
}

#[tokio::test]
async fn the_role_matrix_token_scopes_by_endpoint() {
    let app = TestApp::spawn().await;
    app.add_user("root", "correct horse", true).await;
    for name in ["alice", "bob", "carol"] {
        app.add_user(name, "correct horse", false).await;
    }
    let lab = GroupName::parse("lab").unwrap();
    let groups = app.hub.groups();
    groups.create(Actor::System, &lab).await.unwrap();
    let members = [UserName::parse("bob").unwrap(), UserName::parse("carol").unwrap()];
    groups.add_members(Actor::System, &lab, &members).await.unwrap();
    groups.set_lead(Actor::System, &lab, &members[1], true).await.unwrap();

    let root = app.api_for("root").await;
    let alice = app.api_for("alice").await;
    let endpoints = [
        "/hub/api/users/bob",
        "/hub/api/users/alice",
        "/hub/api/users",
        "/hub/api/users/bob/tokens",
        "/hub/api/groups/lab",
        "/hub/api/info",
        "/hub/api/images",
    ];
    const OK: u16 = 200;
    const NO: u16 = 403;
    let rows: Vec<(&str, Api, [u16; 7])> = vec![
        ("root, full", app.api_for("root").await, [OK, OK, OK, OK, OK, OK, OK]),
        ("root, read:users", narrowed(&app, &root, "root", &["read:users"]).await, [OK, OK, NO, NO, NO, NO, NO]),
        ("root, list:users", narrowed(&app, &root, "root", &["list:users"]).await, [NO, NO, OK, NO, NO, NO, NO]),
        (
            "root, read:users!group=lab",
            narrowed(&app, &root, "root", &["read:users!group=lab"]).await,
            [OK, NO, NO, NO, NO, NO, NO],
        ),
        ("root, read:tokens", narrowed(&app, &root, "root", &["read:tokens"]).await, [NO, NO, NO, OK, NO, NO, NO]),
        ("root, read:hub", narrowed(&app, &root, "root", &["read:hub"]).await, [NO, NO, NO, NO, NO, OK, NO]),
        ("alice, full", app.api_for("alice").await, [NO, OK, NO, NO, NO, NO, OK]),
        (
            "alice, read:users!user=alice",
            narrowed(&app, &alice, "alice", &["read:users!user=alice"]).await,
            [NO, OK, NO, NO, NO, NO, NO],
        ),
        ("carol, lead of lab", app.api_for("carol").await, [OK, NO, OK, NO, OK, NO, OK]),
    ];
    let mut wrong = Vec::new();
    for (who, api, expected) in &rows {
        for (path, want) in endpoints.iter().zip(expected) {
            let r = api.get(path).await;
            if r.status.as_u16() != *want {
                wrong.push(format!("{who}: GET {path} answered {r:?}, expected {want}"));
            } else if *want == NO {
                // Refusals are JupyterHub's: JSON, saying what was needed.
                let message = r.message();
                assert!(message.contains("requires") || message.contains("needs"), "{who} {path}: {message}");
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A lead lists only their group's members.
    let carol = &rows.last().unwrap().1;
    let names: Vec<String> = carol.users("").await.into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["bob", "carol"]);
}

#[tokio::test]
async fn a_role_given_or_taken_takes_effect_at_once_without_a_restart() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let alice = app.api_for("alice").await;
    assert_eq!(alice.get("/hub/api/users/bob").await.status, StatusCode::FORBIDDEN);
    assert_eq!(alice.get("/hub/api/users/bob").await.status, StatusCode::FORBIDDEN, "and now it is cached");

    let roles = app.hub.roles();
    let reader = RoleName::parse("reader").unwrap();
    let scopes = ["read:users".to_string(), "list:users".to_string()];
    roles.put(Actor::System, &reader, "reads accounts", &scopes).await.unwrap();
    let to_alice = Assignee::User(UserName::parse("alice").unwrap());
    roles.assign(Actor::System, &reader, &to_alice, true).await.unwrap();
    assert_eq!(alice.get("/hub/api/users/bob").await.status, StatusCode::OK);
    assert!(strings(&alice.get("/hub/api/user").await.value()["scopes"]).contains(&"list:users".to_string()));
    roles.assign(Actor::System, &reader, &to_alice, false).await.unwrap();
    assert_eq!(alice.get("/hub/api/users/bob").await.status, StatusCode::FORBIDDEN);
    let r = roles.put(Actor::System, &reader, "", &["read:userz".to_string()]).await.unwrap_err();
    assert!(r.to_string().contains("unknown scope 'read:userz'"), "{r}");
    let r = roles.assign(Actor::System, &RoleName::parse("admin").unwrap(), &to_alice, true).await.unwrap_err();
    assert!(r.to_string().contains("admin flag"), "{r}");

    // As another process (the CLI, another hub) would: straight into Postgres, past this hub;
    // Postgres announces it and the hub works credentials out again.
    labhub_db::sqlx::query(
        "insert into user_roles (user_id, role_id)
         select u.user_id, r.role_id from users u, roles r where u.name = 'alice' and r.name = 'reader'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while alice.get("/hub/api/users/bob").await.status != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "the notification never reached the hub");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A role given to a group holds for its members, and is gone when they leave it.
    labhub_db::sqlx::query("delete from user_roles").execute(&app.db).await.unwrap();
    let lab = GroupName::parse("lab").unwrap();
    app.hub.groups().create(Actor::System, &lab).await.unwrap();
    app.hub.groups().add_members(Actor::System, &lab, &[UserName::parse("alice").unwrap()]).await.unwrap();
    roles.assign(Actor::System, &reader, &Assignee::Group(lab.clone()), true).await.unwrap();
    assert_eq!(alice.get("/hub/api/users/bob").await.status, StatusCode::OK);
    app.hub.groups().remove_members(Actor::System, &lab, &[UserName::parse("alice").unwrap()]).await.unwrap();
    assert_eq!(alice.get("/hub/api/users/bob").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn metrics_need_read_metrics_unless_public_and_carry_jupyterhubs_names() {
    let app = TestApp::builder().config(|c| c.http.metrics_public = false).spawn().await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    let anonymous = Api::anonymous(&app.url);
    assert_eq!(anonymous.get("/hub/metrics").await.status, StatusCode::UNAUTHORIZED);
    let r = app.api_for("alice").await.get("/hub/metrics").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.message().contains("read:metrics"), "{r:?}");
    let root = app.api_for("root").await;
    // A scraper's token holds read:metrics and nothing else.
    let scraper = narrowed(&app, &root, "root", &["read:metrics"]).await;
    assert_eq!(scraper.get("/hub/api/users").await.status, StatusCode::FORBIDDEN);
    let body = scraper.get("/hub/metrics").await;
    assert_eq!(body.status, StatusCode::OK, "{body:?}");
    let text = body.text();
    for name in [
        "jupyterhub_running_servers 0",
        "jupyterhub_active_users{period=\"24h\"}",
        "jupyterhub_active_users{period=\"30d\"}",
        "jupyterhub_request_duration_seconds_bucket{method=\"GET\",handler=\"/hub/api/users\",code=\"403\"",
        "labhub_http_requests_total",
    ] {
        assert!(text.contains(name), "{name} in the metrics");
    }
    assert!(!text.contains("handler=\"/user/{*rest}\""), "proxied requests are not the hub's own");
}

/// `labhub ARGS` against the test's database, as the operator runs it: (status, out, err).
fn labhub_cli(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_labhub-exe"))
        .args(args)
        .env_remove("LABHUB_CONFIG")
        .env("DATABASE_URL", labhub_testkit::pg::TestCluster::get().url(&app.db_name))
        .env("LABHUB_LOG", "warn")
        .output()
        .expect("running labhub");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn the_cli_defines_and_gives_roles_and_a_running_hub_follows() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let alice = app.api_for("alice").await;
    assert_eq!(alice.get("/hub/api/users/bob").await.status, StatusCode::FORBIDDEN);

    let (code, _, err) = labhub_cli(&app, &["role", "put", "reader", "--scope", "read:userz"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown scope 'read:userz'"), "{err}");
    let (code, out, err) =
        labhub_cli(&app, &["role", "put", "reader", "--scope", "read:users", "--scope", "list:users"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("read:users list:users"), "{out}");
    let (code, _, err) = labhub_cli(&app, &["role", "assign", "reader", "--user", "alice"]);
    assert_eq!(code, 0, "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while alice.get("/hub/api/users/bob").await.status != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "the running hub never heard of the new role");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, out, _) = labhub_cli(&app, &["role", "list"]);
    assert!(out.contains("admin (built in):") && out.contains("reader: read:users list:users"), "{out}");
    let (code, _, err) = labhub_cli(&app, &["role", "remove", "user"]);
    assert_eq!(code, 1);
    assert!(err.contains("built-in"), "{err}");
    let (code, _, err) = labhub_cli(&app, &["role", "remove", "reader"]);
    assert_eq!(code, 0, "{err}");
    while alice.get("/hub/api/users/bob").await.status != StatusCode::FORBIDDEN {
        assert!(std::time::Instant::now() < deadline, "the running hub never heard the role was removed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
