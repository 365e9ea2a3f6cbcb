//! Datasets from the command line and the admin page: a missing source is a clear error when
//! registering and a warning afterwards, never a failed start; folders that would give a
//! server the machine are refused.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use labhub_testkit::TestApp;
use labhub_testkit::app::csrf_of;
use labhub_testkit::pg::TestCluster;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::docker_hub;

fn labhub(args: &[&str], db: &str, hub_id: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_labhub-exe"))
        .args(args)
        .env_remove("LABHUB_CONFIG")
        .env("DATABASE_URL", db)
        .env("LABHUB_LOG", "warn")
        .env("LABHUB_DOCKER__HUB_ID", hub_id)
        .output()
        .expect("running labhub");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn readable_dir(file: &str, content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join(file), content).unwrap();
    dir
}

#[tokio::test]
async fn the_dataset_commands_check_sources_and_say_what_is_missing() {
    let app = TestApp::spawn().await;
    let db = TestCluster::get().url(&app.db_name);
    let hub_id = format!("lhtest{}xdata", std::process::id());
    let data = readable_dir("x.csv", "1");
    let path = data.path().to_str().unwrap();

    let (code, out, err) = labhub(&["dataset", "add", "census", "--path", path, "--description", "2021"], &db, &hub_id);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("every server read it at ~/datasets/census"), "{out}");
    let (code, _, err) = labhub(&["dataset", "add", "gone", "--path", &format!("{path}-nowhere")], &db, &hub_id);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot be used as a dataset"), "{err}");
    let (code, _, err) = labhub(&["dataset", "add", "machine", "--path", "/etc"], &db, &hub_id);
    assert_eq!(code, 1);
    assert!(err.contains("would give servers the machine"), "{err}");
    let (code, _, err) = labhub(&["dataset", "add", "census", "--path", path], &db, &hub_id);
    assert_eq!(code, 1);
    assert!(err.contains("already a dataset named census"), "{err}");
    let (code, _, err) = labhub(&["dataset", "add", "team-data", "--volume", "v1", "--group", "nobody"], &db, &hub_id);
    assert_eq!(code, 1, "{err}");

    let (_, out, _) = labhub(&["dataset", "list"], &db, &hub_id);
    assert!(out.contains("census") && out.contains(" ok"), "{out}");
    drop(data);
    let (_, out, _) = labhub(&["dataset", "list"], &db, &hub_id);
    assert!(out.contains("MISSING"), "the source is gone: {out}");
    let (code, out, err) = labhub(&["dataset", "remove", "census"], &db, &hub_id);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Removed census"), "{out}");
    let (_, out, _) = labhub(&["dataset", "list"], &db, &hub_id);
    assert!(!out.contains("census"), "{out}");
    // Each check of a folder creates a container that mounts it; the commands ended, and
    // left none of them on the engine.
    let left = Command::new("docker")
        .args(["ps", "--all", "--quiet", "--filter", &format!("label=io.labhub.hub={hub_id}")])
        .output()
        .expect("running docker");
    assert!(left.status.success(), "{}", String::from_utf8_lossy(&left.stderr));
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "", "containers left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_gone_missing_warns_admins_and_is_left_out_of_a_start_that_goes_on() {
    // No patience: a start is answered at once, so its whole progress can be read.
    let (app, root, alice) = docker_hub(|c| c.servers.slow_spawn_timeout = std::time::Duration::ZERO).await;
    let data = readable_dir("x.csv", "1");
    let path = data.path().to_str().unwrap().to_string();
    let admin = app.signed_in("root", "correct horse").await;

    // Through the admin page: a refusal keeps what was typed.
    let page = admin.get(app.at("/hub/admin/datasets")).send().await.unwrap().text().await.unwrap();
    let csrf = csrf_of(&page);
    let form = [("_csrf", csrf.as_str()), ("name", "Bad Name"), ("kind", "path"), ("source", path.as_str())];
    let r = admin.post(app.at("/hub/admin/datasets")).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = r.text().await.unwrap();
    assert!(text.contains("not a valid dataset name") || text.contains("dataset name"), "{text}");
    assert!(text.contains(&path), "the form keeps the folder typed");
    let form = [("_csrf", csrf.as_str()), ("name", "ref"), ("kind", "path"), ("source", path.as_str())];
    let r = admin.post(app.at("/hub/admin/datasets")).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = admin.get(app.at("/hub/admin/datasets")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Added ref"), "the page says so: {page}");

    // The folder disappears: admins are warned, starts go on without it.
    drop(data);
    let listed = root.get("/hub/api/datasets").await.value();
    assert_eq!(listed[0]["available"], false, "{listed}");
    let page = admin.get(app.at("/hub/admin/datasets")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("missing:"), "{page}");
    alice.start("alice", None, json!({ "image": "test" })).await.expect("the start is accepted");
    let events = alice.progress("alice", None).await;
    assert!(events.last().is_some_and(|e| e.ready), "the start goes on: {events:?}");
    assert!(events.iter().any(|e| e.message.contains("~/datasets/ref is not available")), "{events:?}");

    let a = root.post_json("/hub/api/datasets", &json!({ "name": "both", "path": "/srv", "volume": "v" })).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(alice.get("/hub/api/datasets").await.status, StatusCode::FORBIDDEN, "admins only");
    assert_eq!(root.delete("/hub/api/datasets/ref").await.status, StatusCode::NO_CONTENT);
    assert_eq!(root.delete("/hub/api/datasets/ref").await.status, StatusCode::NOT_FOUND);
}
