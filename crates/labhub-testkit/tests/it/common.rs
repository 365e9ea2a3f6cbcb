//! Helpers shared by the suite's modules.

use std::path::Path;
use std::sync::Arc;

use labhub::Config;
use labhub_testkit::api::ServerModel;
use labhub_testkit::docker::DockerScope;
use labhub_testkit::{Api, TestApp};
use reqwest::StatusCode;
use serde_json::json;

/// The test server binary, for the test image.
pub fn test_server_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_labhub-testserver"))
}

/// A hub whose servers run in a Docker scope of their own, with the test image in its catalogue
/// as `test`, an admin `root` and a member `alice` (password "correct horse"); returns the app
/// and API clients with the two users' tokens.
pub async fn docker_hub(adjust: impl FnOnce(&mut Config)) -> (TestApp, Api, Api) {
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let app = TestApp::builder().docker(scope).config(adjust).spawn().await;
    app.add_test_image("test").await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    let root = app.api_for("root").await;
    let alice = app.api_for("alice").await;
    (app, root, alice)
}

/// `n` members named `{prefix}00`, `{prefix}01`, …, with API clients of their own.
pub async fn members(app: &TestApp, prefix: &str, n: usize) -> (Vec<String>, Vec<Api>) {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i:02}")).collect();
    let mut clients = Vec::new();
    for name in &names {
        app.add_user(name, "correct horse", false).await;
        clients.push(app.api_for(name).await);
    }
    (names, clients)
}

/// Starts `user`'s default server on the test image and waits until it is ready.
pub async fn start_ready(api: &Api, user: &str) -> ServerModel {
    let (status, _) = api.start(user, None, json!({"image": "test"})).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(status, StatusCode::CREATED | StatusCode::ACCEPTED), "{status}");
    api.wait_ready(user, None).await
}

/// What lies under `path` in a container (read with the engine's archive API): each entry's
/// path relative to `path`'s parent, owner uid and gid, and permission bits.
pub async fn owned_entries(docker: &bollard::Docker, container: &str, path: &str) -> Vec<(String, u64, u64, u32)> {
    use futures::StreamExt;
    let options = bollard::query_parameters::DownloadFromContainerOptions { path: path.into() };
    let tarball: Vec<u8> =
        docker.download_from_container(container, Some(options)).map(|chunk| chunk.unwrap().to_vec()).concat().await;
    let mut entries = Vec::new();
    for entry in tar::Archive::new(&tarball[..]).entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let path = entry.path().unwrap().display().to_string();
        entries.push((path, h.uid().unwrap(), h.gid().unwrap(), h.mode().unwrap() & 0o777));
    }
    entries
}
