//! Saving a running server's environment (snapshots), on the real engine with the test image:
//! a file the member wrote outside the home is in a server started from the snapshot, while
//! the home is the member's own volume (not a copy in the image); the image carries provenance
//! and none of the server's secrets; the count quota refuses a second snapshot; another member
//! can neither see, start nor take one. The home page saves one with a form that says the home
//! folder is not included.

use labhub_service::Actor;
use labhub_testkit::Api;
use labhub_testkit::api::ServerModel;
use reqwest::{Method, StatusCode};
use serde_json::json;

use labhub_testkit::http::csrf_of;

use crate::common::{docker_hub, start_ready};

async fn read_file(api: &Api, user: &str, path: &str) -> (StatusCode, String) {
    let a = api.get(&format!("/user/{user}/files/{path}")).await;
    (a.status, a.text())
}

async fn write_file(api: &Api, user: &str, path: &str, body: &str) {
    let status =
        api.answer(api.request(Method::PUT, &format!("/user/{user}/files/{path}")).body(body.to_string())).await.status;
    assert!(status.is_success(), "writing {path}: {status}");
}

async fn start_on(api: &Api, user: &str, image: &str) -> ServerModel {
    let (status, body) = api.start(user, None, json!({"image": image})).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(status, StatusCode::CREATED | StatusCode::ACCEPTED), "{status} {body:?}");
    api.wait_ready(user, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_server_starts_again_with_its_files_outside_the_home_and_the_members_own_home() {
    let (app, _root, alice) = docker_hub(|c| c.environments.snapshots_per_member = 1).await;
    // The test server serving the whole filesystem, so a member writes outside the home.
    let mut fields = app.hub.catalogue().get("test").await.unwrap().fields;
    fields.command = Some(
        ["jupyter", "lab", "--ServerApp.ip=0.0.0.0", "--ServerApp.port=8888", "--ServerApp.base_url=/user/alice/"]
            .into_iter()
            .map(String::from)
            .chain(["--ServerApp.root_dir=/".to_string()])
            .collect(),
    );
    app.hub.catalogue().add(Actor::System, "test-root", fields).await.unwrap();
    app.add_user("bob", "correct horse", false).await;
    let bob = app.api_for("bob").await;

    start_on(&alice, "alice", "test-root").await;
    write_file(&alice, "alice", "tmp/saved.txt", "outside the home").await;
    write_file(&alice, "alice", "home/jovyan/notes.txt", "before the snapshot").await;

    // Another member may not take it.
    let refused = bob.post_json("/hub/api/users/alice/server/snapshot", &json!({"name": "bobs"})).await;
    assert!(matches!(refused.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND), "{}", refused.text());

    let saved = alice.post_json("/hub/api/users/alice/server/snapshot", &json!({"name": "mine"})).await;
    assert_eq!(saved.status, StatusCode::CREATED, "{}", saved.text());
    let env = saved.value();
    assert_eq!(env["status"], "ready", "{env}");
    assert_eq!(env["holder"], json!({"kind": "personal", "name": "alice"}), "{env}");
    assert_eq!(env["snapshot"], true, "{env}");
    let source = env["source"].as_str().unwrap();
    assert!(source.starts_with("snapshot of alice (session "), "{source}");
    let image_id = env["image_id"].as_str().unwrap().to_string();
    assert!(image_id.starts_with("sha256:"), "{env}");

    // Provenance on the image, and not the server's secrets.
    let docker = app.docker.as_ref().unwrap().docker();
    let inspected = docker.inspect_image(&image_id).await.unwrap();
    let config = inspected.config.unwrap();
    let labels = config.labels.unwrap_or_default();
    assert_eq!(labels.get("io.labhub.environment.source").map(String::as_str), Some(source), "{labels:?}");
    assert_eq!(labels.get("io.labhub.environment.built-by").map(String::as_str), Some("alice"), "{labels:?}");
    assert!(labels.get("io.labhub.environment.base-image").is_some_and(|b| b.starts_with("sha256:")), "{labels:?}");
    let secrets: Vec<&String> =
        config.env.iter().flatten().filter(|kv| kv.contains("TOKEN") && !kv.ends_with('=')).collect();
    assert!(secrets.is_empty(), "the server's secrets stay out of the image: {secrets:?}");

    // The count quota.
    let again = alice.post_json("/hub/api/users/alice/server/snapshot", &json!({"name": "mine-2"})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert!(again.message().contains("limit per member of 1"), "{}", again.message());
    assert_eq!(alice.get("/hub/api/environments/mine-2").await.status, StatusCode::NOT_FOUND);

    // Listed with her environments, invisible to bob, who cannot start it either.
    let listed = alice.get("/hub/api/environments").await.value();
    assert!(listed.as_array().unwrap().iter().any(|e| e["name"] == "mine"), "{listed}");
    assert_eq!(bob.get("/hub/api/environments/mine").await.status, StatusCode::NOT_FOUND);
    let listed = bob.get("/hub/api/environments").await.value();
    assert!(!listed.as_array().unwrap().iter().any(|e| e["name"] == "mine"), "{listed}");
    let started = bob.start("bob", None, json!({"image": "mine"})).await;
    assert!(
        matches!(&started, Err(e) if matches!(e.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND)),
        "{started:?}"
    );

    // The home changes after the snapshot; a server started from it sees the home as it is now.
    write_file(&alice, "alice", "home/jovyan/notes.txt", "after the snapshot").await;
    alice.stop("alice", None).await.unwrap();
    alice.wait_stopped("alice", None).await;
    let restarted = start_on(&alice, "alice", "mine").await;
    assert_eq!(restarted.image_digest.as_deref(), Some(image_id.as_str()));
    assert_eq!(read_file(&alice, "alice", "tmp/saved.txt").await, (StatusCode::OK, "outside the home".into()));
    assert_eq!(
        read_file(&alice, "alice", "home/jovyan/notes.txt").await,
        (StatusCode::OK, "after the snapshot".into())
    );

    // Deleting it: not bob's to delete; alice's server on it keeps running, and her count
    // frees a place for the next one, which she deletes from its page.
    assert_eq!(bob.delete("/hub/api/environments/mine").await.status, StatusCode::NOT_FOUND);
    assert_eq!(alice.delete("/hub/api/environments/mine").await.status, StatusCode::NO_CONTENT);
    assert_eq!(alice.get("/hub/api/environments/mine").await.status, StatusCode::NOT_FOUND);
    assert!(alice.user("alice").await.is_ready(None), "the server on it runs on");
    assert_eq!(crate::groups::audited(&app, "environment.delete").await[0].1, "mine");
    alice.stop("alice", None).await.unwrap();
    alice.wait_stopped("alice", None).await;
    start_on(&alice, "alice", "test-root").await;
    let again = alice.post_json("/hub/api/users/alice/server/snapshot", &json!({"name": "mine-2"})).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    let browser = app.signed_in("alice", "correct horse").await;
    let page = browser.get(app.at("/hub/environments/mine-2")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("action=\"/hub/environments/mine-2/delete\""), "{page}");
    let r = browser
        .post(app.at("/hub/environments/mine-2/delete"))
        .form(&[("_csrf", csrf_of(&page).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(alice.get("/hub/api/environments/mine-2").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_page_saves_a_running_server_and_says_the_home_is_not_included() {
    let (app, _root, alice) = docker_hub(|_| {}).await;
    let b = app.signed_in("alice", "correct horse").await;
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(!home.contains("Save environment"), "only running servers are saved");
    start_ready(&alice, "alice").await;
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("Save environment") && home.contains("The home folder is not included."), "{home}");
    let csrf = csrf_of(&home);
    let save = |name: &'static str| {
        b.post(app.at("/hub/home/save")).form(&[("_csrf", csrf.as_str()), ("server", ""), ("name", name)]).send()
    };
    let r = save("from-page").await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/hub/environments/from-page");
    let page = b.get(app.at("/hub/environments/from-page")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("snapshot of alice (session "), "{page}");
    assert!(page.contains("the home folder is not included") && !page.contains("Build again"), "{page}");
    // The same name again: back home, saying why.
    let r = save("from-page").await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/hub/home");
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("there is already a catalogue image named"), "{home}");
    // Without the form's token nothing is saved.
    let r = b.post(app.at("/hub/home/save")).form(&[("server", ""), ("name", "forged")]).send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(alice.get("/hub/api/environments/forged").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_past_the_size_limit_is_refused_and_leaves_nothing() {
    let (app, _root, alice) = docker_hub(|c| c.environments.snapshot_max_size = "1K".into()).await;
    let mut fields = app.hub.catalogue().get("test").await.unwrap().fields;
    fields.command = Some(
        ["jupyter", "lab", "--ServerApp.ip=0.0.0.0", "--ServerApp.port=8888", "--ServerApp.base_url=/user/alice/"]
            .into_iter()
            .map(String::from)
            .chain(["--ServerApp.root_dir=/".to_string()])
            .collect(),
    );
    app.hub.catalogue().add(Actor::System, "test-root", fields).await.unwrap();
    start_on(&alice, "alice", "test-root").await;
    write_file(&alice, "alice", "tmp/big.txt", &"x".repeat(64 * 1024)).await;
    let refused = alice.post_json("/hub/api/users/alice/server/snapshot", &json!({"name": "big"})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    assert!(refused.message().contains("more than the 1 KiB a saved environment may hold"), "{}", refused.message());
    assert_eq!(alice.get("/hub/api/environments/big").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.count("select count(*) from images where name = 'big'").await, 0);
    assert_eq!(app.count("select count(*) from environments where snapshot").await, 0);
}
