//! Helpers shared by the suite's modules.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labhub::Config;
use labhub_testkit::TestApp;
use labhub_testkit::app::script;
use labhub_testkit::docker::DockerScope;
use serde_json::Value;

/// The test server binary, for the test image.
pub fn test_server_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_labhub-testserver"))
}

/// A hub whose servers run in a Docker scope of their own, with the test image in its catalogue
/// as `test`, an admin `root` and a member `alice` (password "correct horse"); returns the app
/// and the two users' API tokens.
pub async fn docker_hub(adjust: impl FnOnce(&mut Config)) -> (TestApp, String, String) {
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let app = TestApp::builder().docker(scope).config(adjust).spawn().await;
    app.add_test_image("test").await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    let root = format!("token {}", app.token("root").await);
    let alice = format!("token {}", app.token("alice").await);
    (app, root, alice)
}

/// `n` members named `{prefix}00`, `{prefix}01`, …, with their API tokens as `token …` headers.
pub async fn members_with_tokens(app: &TestApp, prefix: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i:02}")).collect();
    let mut tokens = Vec::new();
    for name in &names {
        app.add_user(name, "correct horse", false).await;
        tokens.push(format!("token {}", app.token(name).await));
    }
    (names, tokens)
}

/// Polls the user model until `check` holds (or fails after `within`).
pub async fn wait_for_user(
    app: &TestApp,
    auth: &str,
    user: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v: Value = script()
            .get(app.at(&format!("/hub/api/users/{user}")))
            .header("Authorization", auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting; last model: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `user`'s default server through the API and waits until it is ready.
pub async fn start_ready(app: &TestApp, auth: &str, user: &str) {
    let r = script()
        .post(app.at(&format!("/hub/api/users/{user}/server")))
        .header("Authorization", auth)
        .json(&serde_json::json!({"image": "test"}))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 201 | 202), "{} {}", r.status(), r.text().await.unwrap());
    wait_for_user(app, auth, user, Duration::from_secs(60), |v| v["servers"][""]["ready"] == true).await;
}
