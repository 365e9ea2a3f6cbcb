//! Users' servers through the whole hub and the real engine: starting and stopping (API and
//! pages), progress, storage, failures, concurrency, the catalogue, and servers that die.

use std::time::Duration;

use labhub_testkit::app::{csrf_of, script};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{docker_hub, members, start_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_use_and_stop_a_server_through_the_api() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    let (status, model) = alice.start("alice", None, json!({"image": "test"})).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "the test image answers well within the hub's patience");
    assert!(model.ready);
    assert_eq!(model.url, "/user/alice/");
    assert!(model.image_digest.as_deref().unwrap().starts_with("sha256:"));

    let user = alice.user("alice").await;
    assert_eq!(user.server.as_deref(), Some("/user/alice/"));
    let s = &user.servers[""];
    assert!(s.ready);
    assert_eq!(s.pending, None);
    assert_eq!(s.progress_url, "/hub/api/users/alice/server/progress");
    assert!(s.started.is_some() && s.last_activity.is_some());

    // Through the proxy, with the hub token; the server sees its own secret, not ours.
    let c = script();
    let status =
        c.get(app.at("/user/alice/api/status")).header("Authorization", alice.authorization()).send().await.unwrap();
    assert_eq!(status.status(), 200);
    assert_eq!(status.json::<Value>().await.unwrap()["kind"], "labhub-testserver");

    // Starting again is refused as JupyterHub does, and changes nothing.
    let refused = alice.start("alice", None, None).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.message.contains("already running"), "{refused}");

    // The state filter sees it.
    assert_eq!(root.user_names("state=ready").await, ["alice"]);

    assert_eq!(alice.stop("alice", None).await, Ok(StatusCode::NO_CONTENT));
    assert!(alice.user("alice").await.servers.is_empty());
    let r =
        c.get(app.at("/user/alice/api/status")).header("Authorization", alice.authorization()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "alice's server is not running");
    assert_eq!(app.hub.routes().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_arrives_as_server_sent_events_in_jupyterhubs_shape() {
    let (_app, _, alice) = docker_hub(|c| c.servers.slow_spawn_timeout = Duration::ZERO).await;
    let (status, model) = alice.start("alice", None, json!({"image": "test"})).await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "no patience: answered at once");
    assert_eq!(model.pending.as_deref(), Some("spawn"));
    // A 200 `text/event-stream`, read until the hub ends it.
    let events = alice.progress("alice", None).await;
    assert!(events.len() >= 3, "{events:?}");
    let progress: Vec<u8> = events.iter().map(|e| e.progress).collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "never backwards: {progress:?}");
    let last = events.last().unwrap();
    assert!(last.ready);
    assert_eq!(last.url.as_deref(), Some("/user/alice/"));
    assert!(events.iter().all(|e| !e.message.is_empty()));
    // Asked again once ready: one final event at once.
    let again = alice.progress("alice", None).await;
    assert!(again.len() == 1 && again[0].ready, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_files_survive_stop_and_start() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    let c = script();
    let auth = alice.authorization();
    start_ready(&alice, "alice").await;
    let r = c.put(app.at("/user/alice/files/notes.txt")).header("Authorization", auth).body("my results").send().await;
    assert_eq!(r.unwrap().status(), 200);
    alice.stop("alice", None).await.unwrap();
    start_ready(&alice, "alice").await;
    let r = c.get(app.at("/user/alice/files/notes.txt")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "my results");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spawn_pages_choose_an_environment_and_follow_the_start() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    let b = app.signed_in("alice", "correct horse").await;
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("Default server") && home.contains("Start"), "{home}");
    let form = b.get(app.at("/hub/spawn")).send().await.unwrap().text().await.unwrap();
    assert!(form.contains("Test server test") && form.contains("value=\"test\""), "{form}");
    let csrf = csrf_of(&form);
    // A double click: two posts, one server.
    let (r1, r2) = tokio::join!(
        b.post(app.at("/hub/spawn/alice")).form(&[("_csrf", csrf.as_str()), ("image", "test")]).send(),
        b.post(app.at("/hub/spawn/alice")).form(&[("_csrf", csrf.as_str()), ("image", "test")]).send(),
    );
    for r in [r1.unwrap(), r2.unwrap()] {
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let to = r.headers()["location"].to_str().unwrap().to_string();
        assert!(to == "/hub/spawn-pending/alice" || to == "/user/alice/", "{to}");
    }
    let n: i64 = labhub_db::sqlx::query_scalar("select count(*) from servers").fetch_one(&app.db).await.unwrap();
    assert_eq!(n, 1);
    let pending = b.get(app.at("/hub/spawn-pending/alice")).send().await.unwrap();
    if pending.status() == StatusCode::OK {
        let html = pending.text().await.unwrap();
        assert!(html.contains("data-progress-url=\"/hub/api/users/alice/server/progress\""));
        assert!(html.contains("progressbar"));
    }
    alice.wait_ready("alice", None).await;
    // Once ready, the pending page moves on to the server.
    let r = b.get(app.at("/hub/spawn-pending/alice")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/user/alice/");
    // The home page shows the exact image it runs.
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    let digest: String =
        labhub_db::sqlx::query_scalar("select image_digest from servers").fetch_one(&app.db).await.unwrap();
    assert!(home.contains(&digest.trim_start_matches("sha256:")[..12]), "the digest is shown");
    assert!(home.contains("running") && home.contains("Open"));
    // Stop from the home page.
    let csrf = csrf_of(&home);
    let r = b.post(app.at("/hub/home/stop")).form(&[("_csrf", csrf.as_str()), ("server", "")]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("stopped by you"), "{home}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_disabled_image_is_a_clear_error_and_leaves_nothing() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    let ghost = json!({"name": "ghost", "display_name": "Ghost", "reference": "127.0.0.1:9/labhub-missing:1",
                       "kind": "jupyter", "cpu": 1, "memory": "512M"});
    root.add_image(ghost).await.unwrap();
    let failed = alice.start("alice", None, json!({"image": "ghost"})).await.unwrap_err();
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.message.contains("127.0.0.1:9/labhub-missing:1"), "{failed}");
    let scope = app.docker.as_ref().unwrap();
    let listed = labhub_core::spawner::Spawner::list(scope.spawner.as_ref()).await.unwrap();
    assert!(listed.is_empty(), "nothing left behind: {listed:?}");
    assert!(alice.user("alice").await.servers.is_empty());

    let disabled = json!({"display_name": "Ghost", "reference": "127.0.0.1:9/labhub-missing:1", "kind": "jupyter",
                          "cpu": 1, "memory": "512M", "enabled": false});
    assert_eq!(root.put_json("/hub/api/images/ghost", &disabled).await.status, StatusCode::OK);
    let refused = alice.start("alice", None, json!({"image": "ghost"})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.message.contains("disabled"), "{refused}");
    let refused = alice.start("alice", None, json!({"image": "nope"})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    // Members see only enabled images; bad catalogue input is refused with the reason.
    assert_eq!(alice.images().await.len(), 1);
    let bad = json!({"name": "Bad Name", "display_name": "x", "reference": "UPPER/case", "kind": "jupyter",
                     "cpu": 1, "memory": "1G"});
    assert_eq!(root.add_image(bad).await.unwrap_err().status, StatusCode::BAD_REQUEST);
    assert_eq!(alice.add_image(json!({})).await.unwrap_err().status, StatusCode::FORBIDDEN);
    // A Swarm placement Swarm could never match is refused by name; a good one is kept as
    // Swarm reads it (the engine mode, one node, has nothing to choose: it starts as before).
    let mut placed = json!({"name": "placed", "display_name": "Placed", "reference": "127.0.0.1:9/labhub-missing:1",
                            "kind": "jupyter", "cpu": 1, "memory": "512M", "placement": ["node.gpu==true"]});
    let refused = root.add_image(placed.clone()).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.message.contains("\"node.gpu==true\"") && refused.message.contains("node.labels.KEY"), "{refused}");
    placed["placement"] = json!(["node.labels.gpu == true"]);
    root.add_image(placed).await.unwrap();
    assert_eq!(root.get("/hub/api/images/placed").await.value()["placement"], json!(["node.labels.gpu==true"]));
    // The admin form: one constraint per line; a bad one is the form again with the reason.
    let b = app.signed_in("root", "correct horse").await;
    let form = b.get(app.at("/hub/admin/images/placed")).send().await.unwrap().text().await.unwrap();
    assert!(form.contains(">node.labels.gpu==true</textarea>"), "{form}");
    let csrf = csrf_of(&form);
    let fields = |placement: &'static str| {
        [
            ("_csrf", csrf.clone()),
            ("display_name", "Placed".into()),
            ("reference", "127.0.0.1:9/labhub-missing:1".into()),
            ("kind", "jupyter".into()),
            ("cpu", "1".into()),
            ("memory", "512M".into()),
            ("enabled", "on".into()),
            ("contract", "labhub".into()),
            ("placement", placement.into()),
        ]
    };
    let r = b
        .post(app.at("/hub/admin/images/placed"))
        .form(&fields("node.labels.gpu==true\r\nnode.role == worker\r\n"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success() || r.status() == StatusCode::SEE_OTHER, "{}", r.status());
    assert_eq!(
        root.get("/hub/api/images/placed").await.value()["placement"],
        json!(["node.labels.gpu==true", "node.role==worker"])
    );
    let r = b.post(app.at("/hub/admin/images/placed")).form(&fields("gpu")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("must be ATTRIBUTE==VALUE"));
    assert_eq!(root.get("/hub/api/images/placed").await.value()["placement"].as_array().unwrap().len(), 2, "kept");
}

/// A catalogue entry of the test image that listens on 8888 while the hub waits for 9999:
/// it never answers, so its start can only end by the hub's start timeout.
fn deaf_image(app: &labhub_testkit::TestApp) -> Value {
    let reference = app.docker.as_ref().unwrap().test_image.to_string();
    json!({"name": "deaf", "display_name": "Deaf", "reference": reference, "kind": "custom", "port": 9999,
           "command": ["jupyter", "lab", "--ServerApp.ip=0.0.0.0", "--ServerApp.base_url={base_url}"],
           "cpu": 0.5, "memory": "256M"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_times_out_is_cleaned_up() {
    let (app, root, alice) = docker_hub(|c| c.servers.start_timeout = Duration::from_secs(3)).await;
    root.add_image(deaf_image(&app)).await.unwrap();
    let failed = alice.start("alice", None, json!({"image": "deaf"})).await.unwrap_err();
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.message.contains("did not answer within 3 s"), "{failed}");
    let scope = app.docker.as_ref().unwrap();
    assert!(labhub_core::spawner::Spawner::list(scope.spawner.as_ref()).await.unwrap().is_empty());
    let reason: Option<String> =
        labhub_db::sqlx::query_scalar("select stop_reason from servers").fetch_one(&app.db).await.unwrap();
    assert!(reason.unwrap().contains("did not answer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_behind_the_hubs_back_is_marked_stopped_with_its_reason() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    let watcher = tokio::spawn(app.hub.clone().watch_exits(std::future::pending()));
    start_ready(&alice, "alice").await;
    let state: Value =
        labhub_db::sqlx::query_scalar("select spawner_state from servers").fetch_one(&app.db).await.unwrap();
    let id = state["container_id"].as_str().unwrap().to_string();
    let scope = app.docker.as_ref().unwrap();
    scope.docker().kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>).await.unwrap();
    alice.wait_stopped("alice", None).await;
    let reason: Option<String> =
        labhub_db::sqlx::query_scalar("select stop_reason from servers").fetch_one(&app.db).await.unwrap();
    assert!(reason.as_deref().unwrap_or_default().contains("137"), "{reason:?}");
    assert_eq!(app.hub.routes().len(), 0);
    let b = app.signed_in("alice", "correct horse").await;
    let page = b.get(app.at("/user/alice/lab")).header("Accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
    let html = page.text().await.unwrap();
    assert!(html.contains("is not running") && html.contains("137") && html.contains("Start it"), "{html}");
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_users_start_at_once_and_all_succeed() {
    let (app, root, _) = docker_hub(|c| c.servers.slow_spawn_timeout = Duration::ZERO).await;
    let (names, users) = members(&app, "user", 20).await;
    let starts = names.iter().zip(&users).map(|(n, u)| u.start(n, None, json!({"image": "test"})));
    for started in futures::future::join_all(starts).await {
        let (status, _) = started.unwrap();
        assert!(matches!(status, StatusCode::CREATED | StatusCode::ACCEPTED), "{status}");
    }
    for (n, u) in names.iter().zip(&users) {
        u.wait_ready(n, None).await;
    }
    assert_eq!(root.users("state=ready").await.len(), 20);
    // Each reachable through the proxy, each its own.
    let c = script();
    for (n, u) in names.iter().zip(&users) {
        let r = c.get(app.at(&format!("/user/{n}/whoami"))).header("Authorization", u.authorization()).send().await;
        let who: Value = r.unwrap().json().await.unwrap();
        assert_eq!(who["path"], format!("/user/{n}/whoami"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_spawn_limit_starts_are_429_with_retry_after() {
    let (app, root, alice) = docker_hub(|c| {
        c.servers.concurrent_spawn_limit = 1;
        c.servers.start_timeout = Duration::from_secs(4);
        c.servers.slow_spawn_timeout = Duration::ZERO;
    })
    .await;
    root.add_image(deaf_image(&app)).await.unwrap();
    app.add_user("bob", "correct horse", false).await;
    let bob = app.api_for("bob").await;
    let (status, _) = alice.start("alice", None, json!({"image": "deaf"})).await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED);
    // The raw answer: the refusal's header matters here.
    let r = bob.post_json("/hub/api/users/bob/server", &json!({"image": "test"})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key("retry-after"));
    let n: i64 = labhub_db::sqlx::query_scalar("select count(*) from servers where state <> 'stopped'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 1, "the refused start left nothing pending");
    // The deaf start ends by its timeout, which removes its container, before the hub goes: a
    // start abandoned with the test's runtime would leave it running on the engine.
    alice.wait_stopped("alice", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_servers_run_side_by_side_up_to_the_limit() {
    let (app, _, alice) = docker_hub(|c| c.servers.named_server_limit = 1).await;
    let c = script();
    let auth = alice.authorization();
    start_ready(&alice, "alice").await;
    let (status, _) = alice.start("alice", Some("gpu"), json!({"image": "test"})).await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let who: Value = c
        .get(app.at("/user/alice/gpu/whoami"))
        .header("Authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["path"], "/user/alice/gpu/whoami", "the named server answers under its own prefix");
    let who: Value =
        c.get(app.at("/user/alice/whoami")).header("Authorization", auth).send().await.unwrap().json().await.unwrap();
    assert_eq!(who["path"], "/user/alice/whoami");
    let refused = alice.start("alice", Some("second"), None).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.message.contains("at most 1 named"), "{refused}");
    let refused = alice.start("alice", Some("lab"), None).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "reserved names shadow the default server's paths");
    assert_eq!(alice.remove("alice", "gpu").await, Ok(StatusCode::NO_CONTENT));
    let n: i64 = labhub_db::sqlx::query_scalar("select count(*) from servers where name = 'gpu'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 0, "removed, so a new named server fits the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_start_and_stop_anyones_server_and_remove_storage_only_when_confirmed() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    let c = script();
    let auth = alice.authorization();
    let (status, _) = root.start("alice", None, json!({"image": "test"})).await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    c.put(app.at("/user/alice/files/data.csv")).header("Authorization", auth).body("1,2,3").send().await.unwrap();
    let admin = app.signed_in("root", "correct horse").await;
    let page = admin.get(app.at("/hub/admin/servers")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("alice") && page.contains("running"));
    let logs = admin.get(app.at("/hub/admin/servers/alice/logs?server=")).send().await.unwrap().text().await.unwrap();
    assert!(logs.contains("listening on"), "{logs}");
    // Storage cannot go while a server uses it.
    let csrf = app.csrf(&admin, "/hub/admin/users/alice/storage").await;
    let r = admin
        .post(app.at("/hub/admin/users/alice/storage"))
        .form(&[("_csrf", csrf.as_str()), ("confirm", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("stop it before"));
    assert_eq!(root.stop("alice", None).await, Ok(StatusCode::NO_CONTENT));
    // The wrong confirmation removes nothing.
    let r = admin
        .post(app.at("/hub/admin/users/alice/storage"))
        .form(&[("_csrf", csrf.as_str()), ("confirm", "alic")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    start_ready(&alice, "alice").await;
    let kept = c.get(app.at("/user/alice/files/data.csv")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(kept.text().await.unwrap(), "1,2,3");
    alice.stop("alice", None).await.unwrap();
    let r = admin
        .post(app.at("/hub/admin/users/alice/storage"))
        .form(&[("_csrf", csrf.as_str()), ("confirm", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    start_ready(&alice, "alice").await;
    let gone = c.get(app.at("/user/alice/files/data.csv")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let audit: i64 = labhub_db::sqlx::query_scalar(
        "select count(*) from audit_log where action in ('server.start', 'server.stop', 'storage.remove')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(audit, 3);
}
