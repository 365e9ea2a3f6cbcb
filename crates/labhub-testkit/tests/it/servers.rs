//! Users' servers through the whole hub and the real engine: starting and stopping (API and
//! pages), progress, storage, failures, concurrency, the catalogue, and servers that die.

use std::time::Duration;

use futures::StreamExt;
use labhub_testkit::app::csrf_of;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{docker_hub, members_with_tokens, start_ready, wait_for_user};
use labhub_testkit::app::script;

async fn json(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_use_and_stop_a_server_through_the_api() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    let c = script();
    let r = c
        .post(app.at("/hub/api/users/alice/server"))
        .header("Authorization", &alice)
        .json(&json!({"image": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "the test image answers well within the hub's patience");
    let model = json(r).await;
    assert_eq!(model["ready"], true);
    assert_eq!(model["url"], "/user/alice/");
    assert!(model["image_digest"].as_str().unwrap().starts_with("sha256:"));

    let user = json(c.get(app.at("/hub/api/users/alice")).header("Authorization", &alice).send().await.unwrap()).await;
    assert_eq!(user["server"], "/user/alice/");
    let s = &user["servers"][""];
    assert_eq!(s["ready"], true);
    assert_eq!(s["pending"], Value::Null);
    assert_eq!(s["progress_url"], "/hub/api/users/alice/server/progress");
    assert!(s["started"].is_string() && s["last_activity"].is_string());

    // Through the proxy, with the hub token; the server sees its own secret, not ours.
    let status = c.get(app.at("/user/alice/api/status")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(status.status(), 200);
    assert_eq!(json(status).await["kind"], "labhub-testserver");

    // Starting again is refused as JupyterHub does, and changes nothing.
    let r = c.post(app.at("/hub/api/users/alice/server")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(json(r).await["message"].as_str().unwrap().contains("already running"));

    // The state filter sees it.
    let ready: Vec<Value> =
        json(c.get(app.at("/hub/api/users?state=ready")).header("Authorization", &root).send().await.unwrap())
            .await
            .as_array()
            .unwrap()
            .clone();
    assert_eq!(ready.iter().map(|u| u["name"].as_str().unwrap()).collect::<Vec<_>>(), ["alice"]);

    let r = c.delete(app.at("/hub/api/users/alice/server")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let user = json(c.get(app.at("/hub/api/users/alice")).header("Authorization", &alice).send().await.unwrap()).await;
    assert!(user["servers"].as_object().unwrap().is_empty());
    let r = c.get(app.at("/user/alice/api/status")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(r).await["message"], "alice's server is not running");
    assert_eq!(app.hub.routes().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_arrives_as_server_sent_events_in_jupyterhubs_shape() {
    let (app, _, alice) = docker_hub(|c| c.servers.slow_spawn_timeout = Duration::ZERO).await;
    let c = script();
    let r = c
        .post(app.at("/hub/api/users/alice/server"))
        .header("Authorization", &alice)
        .json(&json!({"image": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "no patience: answered at once");
    assert_eq!(json(r).await["pending"], "spawn");
    let r = c.get(app.at("/hub/api/users/alice/server/progress")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = r.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let events: Vec<Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(events.len() >= 3, "{events:?}");
    let progress: Vec<u64> = events.iter().map(|e| e["progress"].as_u64().unwrap()).collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "never backwards: {progress:?}");
    let last = events.last().unwrap();
    assert_eq!(last["ready"], true);
    assert_eq!(last["url"], "/user/alice/");
    assert!(events.iter().all(|e| e["message"].is_string()));
    // Asked again once ready: one final event at once.
    let again = c
        .get(app.at("/hub/api/users/alice/server/progress"))
        .header("Authorization", &alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.contains("\"ready\":true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_files_survive_stop_and_start() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    let c = script();
    start_ready(&app, &alice, "alice").await;
    let r = c
        .put(app.at("/user/alice/files/notes.txt"))
        .header("Authorization", &alice)
        .body("my results")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.delete(app.at("/hub/api/users/alice/server")).header("Authorization", &alice).send().await.unwrap();
    start_ready(&app, &alice, "alice").await;
    let r = c.get(app.at("/user/alice/files/notes.txt")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "my results");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spawn_pages_choose_an_environment_and_follow_the_start() {
    let (app, _, _) = docker_hub(|_| {}).await;
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
    let alice = format!("token {}", app.token("alice").await);
    wait_for_user(&app, &alice, "alice", Duration::from_secs(60), |v| v["servers"][""]["ready"] == true).await;
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
    let c = script();
    let r = c
        .post(app.at("/hub/api/images"))
        .header("Authorization", &root)
        .json(&json!({"name": "ghost", "display_name": "Ghost", "reference": "127.0.0.1:9/labhub-missing:1",
                      "kind": "jupyter", "cpu": 1, "memory": "512M"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .post(app.at("/hub/api/users/alice/server"))
        .header("Authorization", &alice)
        .json(&json!({"image": "ghost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let msg = json(r).await["message"].as_str().unwrap().to_string();
    assert!(msg.contains("127.0.0.1:9/labhub-missing:1"), "{msg}");
    let scope = app.docker.as_ref().unwrap();
    let listed = labhub_core::spawner::Spawner::list(scope.spawner.as_ref()).await.unwrap();
    assert!(listed.is_empty(), "nothing left behind: {listed:?}");
    let user = json(c.get(app.at("/hub/api/users/alice")).header("Authorization", &alice).send().await.unwrap()).await;
    assert!(user["servers"].as_object().unwrap().is_empty());

    c.put(app.at("/hub/api/images/ghost"))
        .header("Authorization", &root)
        .json(&json!({"display_name": "Ghost", "reference": "127.0.0.1:9/labhub-missing:1", "kind": "jupyter",
                      "cpu": 1, "memory": "512M", "enabled": false}))
        .send()
        .await
        .unwrap();
    let r = c
        .post(app.at("/hub/api/users/alice/server"))
        .header("Authorization", &alice)
        .json(&json!({"image": "ghost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(json(r).await["message"].as_str().unwrap().contains("disabled"));
    let r = c
        .post(app.at("/hub/api/users/alice/server"))
        .header("Authorization", &alice)
        .json(&json!({"image": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Members see only enabled images; bad catalogue input is refused with the reason.
    let list = json(c.get(app.at("/hub/api/images")).header("Authorization", &alice).send().await.unwrap()).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let r = c
        .post(app.at("/hub/api/images"))
        .header("Authorization", &root)
        .json(&json!({"name": "Bad Name", "display_name": "x", "reference": "UPPER/case", "kind": "jupyter", "cpu": 1, "memory": "1G"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c.post(app.at("/hub/api/images")).header("Authorization", &alice).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_times_out_is_cleaned_up() {
    let (app, root, alice) = docker_hub(|c| c.servers.start_timeout = Duration::from_secs(3)).await;
    let c = script();
    let reference = app.docker.as_ref().unwrap().test_image.to_string();
    // It listens on 8888; the hub waits for 9999.
    let r = c
        .post(app.at("/hub/api/images"))
        .header("Authorization", &root)
        .json(&json!({"name": "deaf", "display_name": "Deaf", "reference": reference, "kind": "custom", "port": 9999,
                      "command": ["jupyter", "lab", "--ServerApp.ip=0.0.0.0", "--ServerApp.base_url={base_url}"],
                      "cpu": 0.5, "memory": "256M"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let r = c
        .post(app.at("/hub/api/users/alice/server"))
        .header("Authorization", &alice)
        .json(&json!({"image": "deaf"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let msg = json(r).await["message"].as_str().unwrap().to_string();
    assert!(msg.contains("did not answer within 3 s"), "{msg}");
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
    start_ready(&app, &alice, "alice").await;
    let state: Value =
        labhub_db::sqlx::query_scalar("select spawner_state from servers").fetch_one(&app.db).await.unwrap();
    let id = state["container_id"].as_str().unwrap().to_string();
    let scope = app.docker.as_ref().unwrap();
    scope.docker().kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>).await.unwrap();
    wait_for_user(&app, &alice, "alice", Duration::from_secs(20), |v| {
        v["servers"].as_object().is_some_and(|s| s.is_empty())
    })
    .await;
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
    let (names, tokens) = members_with_tokens(&app, "user", 20).await;
    let c = script();
    let starts = names.iter().zip(&tokens).map(|(n, t)| {
        c.post(app.at(&format!("/hub/api/users/{n}/server")))
            .header("Authorization", t)
            .json(&json!({"image": "test"}))
            .send()
    });
    for r in futures::future::join_all(starts).await {
        let r = r.unwrap();
        assert!(matches!(r.status().as_u16(), 201 | 202), "{}", r.status());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ready: Vec<Value> =
            json(c.get(app.at("/hub/api/users?state=ready")).header("Authorization", &root).send().await.unwrap())
                .await
                .as_array()
                .unwrap()
                .clone();
        if ready.len() == 20 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {} ready", ready.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Each reachable through the proxy, each its own.
    for (n, t) in names.iter().zip(&tokens) {
        let who =
            json(c.get(app.at(&format!("/user/{n}/whoami"))).header("Authorization", t).send().await.unwrap()).await;
        assert_eq!(who["path"], format!("/user/{n}/whoami"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_spawn_limit_starts_are_429_with_retry_after() {
    let (app, root, _) = docker_hub(|c| {
        c.servers.concurrent_spawn_limit = 1;
        c.servers.start_timeout = Duration::from_secs(4);
        c.servers.slow_spawn_timeout = Duration::ZERO;
    })
    .await;
    let c = script();
    let reference = app.docker.as_ref().unwrap().test_image.to_string();
    c.post(app.at("/hub/api/images"))
        .header("Authorization", &root)
        .json(&json!({"name": "deaf", "display_name": "Deaf", "reference": reference, "kind": "custom", "port": 9999,
                      "command": ["jupyter", "lab", "--ServerApp.ip=0.0.0.0"], "cpu": 0.5, "memory": "256M"}))
        .send()
        .await
        .unwrap();
    app.add_user("bob", "correct horse", false).await;
    let bob = format!("token {}", app.token("bob").await);
    let alice = format!("token {}", app.token("alice").await);
    let r = c
        .post(app.at("/hub/api/users/alice/server"))
        .header("Authorization", &alice)
        .json(&json!({"image": "deaf"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .post(app.at("/hub/api/users/bob/server"))
        .header("Authorization", &bob)
        .json(&json!({"image": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let n: i64 = labhub_db::sqlx::query_scalar("select count(*) from servers where state <> 'stopped'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 1, "the refused start left nothing pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_servers_run_side_by_side_up_to_the_limit() {
    let (app, _, alice) = docker_hub(|c| c.servers.named_server_limit = 1).await;
    let c = script();
    start_ready(&app, &alice, "alice").await;
    let r = c
        .post(app.at("/hub/api/users/alice/servers/gpu"))
        .header("Authorization", &alice)
        .json(&json!({"image": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let who = json(c.get(app.at("/user/alice/gpu/whoami")).header("Authorization", &alice).send().await.unwrap()).await;
    assert_eq!(who["path"], "/user/alice/gpu/whoami", "the named server answers under its own prefix");
    let who = json(c.get(app.at("/user/alice/whoami")).header("Authorization", &alice).send().await.unwrap()).await;
    assert_eq!(who["path"], "/user/alice/whoami");
    let r = c.post(app.at("/hub/api/users/alice/servers/second")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(json(r).await["message"].as_str().unwrap().contains("at most 1 named"));
    let r = c.post(app.at("/hub/api/users/alice/servers/lab")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "reserved names shadow the default server's paths");
    let r = c
        .delete(app.at("/hub/api/users/alice/servers/gpu"))
        .header("Authorization", &alice)
        .json(&json!({"remove": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
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
    let r = c
        .post(app.at("/hub/api/users/alice/server"))
        .header("Authorization", &root)
        .json(&json!({"image": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    c.put(app.at("/user/alice/files/data.csv")).header("Authorization", &alice).body("1,2,3").send().await.unwrap();
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
    let r = c.delete(app.at("/hub/api/users/alice/server")).header("Authorization", &root).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The wrong confirmation removes nothing.
    let r = admin
        .post(app.at("/hub/admin/users/alice/storage"))
        .form(&[("_csrf", csrf.as_str()), ("confirm", "alic")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    start_ready(&app, &alice, "alice").await;
    let kept = c
        .get(app.at("/user/alice/files/data.csv"))
        .header("Authorization", &alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(kept, "1,2,3");
    c.delete(app.at("/hub/api/users/alice/server")).header("Authorization", &alice).send().await.unwrap();
    let r = admin
        .post(app.at("/hub/admin/users/alice/storage"))
        .form(&[("_csrf", csrf.as_str()), ("confirm", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    start_ready(&app, &alice, "alice").await;
    let gone = c.get(app.at("/user/alice/files/data.csv")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let audit: i64 = labhub_db::sqlx::query_scalar(
        "select count(*) from audit_log where action in ('server.start', 'server.stop', 'storage.remove')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(audit, 3);
}
