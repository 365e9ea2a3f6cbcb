//! The lab's data with the real JupyterLab: a group's shared folder reaches its members and
//! nobody else (and leaves with a member at their next start), a dataset is readable and not
//! writable, and reaches only the groups it is granted to.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use labhub_service::quotas::QuotaPatch;
use labhub_testkit::docker::DockerScope;
use labhub_testkit::{Api, TestApp, images};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::test_server_binary;
use crate::groups::lab;

/// Generous: the machine has two cores and other tests run beside this one.
const SERVER_START: Duration = Duration::from_secs(240);

/// A file through the Jupyter contents API of `user`'s server: its status and text.
async fn read(api: &Api, user: &str, path: &str) -> (StatusCode, String) {
    let a = api.get(&format!("/user/{user}/api/contents/{path}?content=1&type=file&format=text")).await;
    let text =
        if a.status.is_success() { a.value()["content"].as_str().unwrap_or_default().to_string() } else { a.text() };
    (a.status, text)
}

/// Writes a text file through the Jupyter contents API; the answer's status and body.
async fn write(api: &Api, user: &str, path: &str, content: &str) -> (StatusCode, String) {
    let body = json!({ "type": "file", "format": "text", "content": content });
    let a = api.answer(api.request(Method::PUT, &format!("/user/{user}/api/contents/{path}")).json(&body)).await;
    (a.status, a.text())
}

async fn start(api: &Api, user: &str) {
    api.start(user, None, json!({ "image": "lab" })).await.unwrap_or_else(|e| panic!("{user}'s start: {e}"));
    api.wait_ready(user, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_folder_and_a_dataset_reach_exactly_whom_they_are_for() {
    let image = {
        let builder = DockerScope::new(test_server_binary()).await;
        images::jupyterlab_image(&builder.spawner).await.expect("the JupyterLab image exists or builds")
    };
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let app = TestApp::builder().docker(scope).config(|c| c.servers.start_timeout = SERVER_START).spawn().await;
    app.add_user("root", "correct horse", true).await;
    for member in ["alice", "bob", "carol"] {
        app.add_user(member, "correct horse", false).await;
    }
    let root = app.api_for("root").await;
    let (alice, bob, carol) = (app.api_for("alice").await, app.api_for("bob").await, app.api_for("carol").await);
    root.add_image(json!({"name": "lab", "display_name": "JupyterLab (real)", "reference": image.to_string(),
                          "kind": "jupyter", "cpu": 1, "memory": "1G"}))
        .await
        .expect("the catalogue takes the real image");
    lab(&app, "team", Some("alice"), &["alice", "bob"], QuotaPatch::default()).await;
    let a = root.patch_json("/hub/api/groups/team", &json!({ "shared_folder": true })).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.value()["shared_folder"], true);

    // Reference data on the machine, granted to the team only.
    let data = tempfile::tempdir().unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.path().join("census.csv"), "region,people\nnorth,42\n").unwrap();
    let path = data.path().to_str().unwrap().to_string();
    let missing =
        root.post_json("/hub/api/datasets", &json!({ "name": "gone", "path": format!("{path}-nowhere") })).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{missing:?}");
    assert!(missing.message().contains("cannot be used as a dataset"), "{}", missing.message());
    let a = root.post_json("/hub/api/datasets", &json!({ "name": "census", "path": path, "groups": ["team"] })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");

    for (api, user) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
        start(api, user).await;
    }
    let (status, body) = write(&alice, "alice", "shared/team/result.txt", "the answer is 42").await;
    assert!(status.is_success(), "alice writes into the team's folder: {status} {body}");
    assert_eq!(read(&bob, "bob", "shared/team/result.txt").await, (StatusCode::OK, "the answer is 42".into()));
    assert_eq!(read(&carol, "carol", "shared/team/result.txt").await.0, StatusCode::NOT_FOUND, "not a member");

    assert_eq!(
        read(&bob, "bob", "datasets/census/census.csv").await,
        (StatusCode::OK, "region,people\nnorth,42\n".into())
    );
    let (status, body) = write(&bob, "bob", "datasets/census/census.csv", "overwritten").await;
    assert!(!status.is_success(), "a dataset is read-only: {status} {body}");
    let (status, _) = write(&bob, "bob", "datasets/census/new.csv", "x").await;
    assert!(!status.is_success(), "nothing new lands in a dataset either");
    assert_eq!(std::fs::read_to_string(data.path().join("census.csv")).unwrap(), "region,people\nnorth,42\n");
    assert!(!data.path().join("new.csv").exists());
    assert_eq!(read(&carol, "carol", "datasets/census/census.csv").await.0, StatusCode::NOT_FOUND, "for the team only");

    // Admins see the dataset and its state.
    let list = root.get("/hub/api/datasets").await.value();
    assert_eq!(list[0]["name"], "census", "{list}");
    assert_eq!(list[0]["available"], true, "{list}");

    // Bob leaves the team: his server keeps what it was started with until its next start.
    let a = root.delete_json("/hub/api/groups/team/users", &json!({ "users": ["bob"] })).await;
    assert!(a.status.is_success(), "{a:?}");
    bob.stop("bob", None).await.unwrap();
    bob.wait_stopped("bob", None).await;
    start(&bob, "bob").await;
    assert_eq!(read(&bob, "bob", "shared/team/result.txt").await.0, StatusCode::NOT_FOUND, "gone at the next start");
    assert_eq!(read(&bob, "bob", "datasets/census/census.csv").await.0, StatusCode::NOT_FOUND);
    let listing: Value = bob.get("/user/bob/api/contents/").await.value();
    let names: Vec<&str> = listing["content"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(!names.contains(&"result.txt"), "{names:?}");
    // Alice's files in the team's folder are untouched by Bob's leaving.
    assert_eq!(read(&alice, "alice", "shared/team/result.txt").await.0, StatusCode::OK);
    for (api, user) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
        api.stop(user, None).await.unwrap();
    }
}
