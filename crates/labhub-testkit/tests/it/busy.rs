//! A computation left running is work: with the real JupyterLab, a kernel executing a long
//! cell keeps its server past the idle timeout, unless the group lets the culler stop busy
//! servers. Time is the hub's manual clock; only the image and the kernel are real.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::SinkExt;
use labhub_service::quotas::QuotaPatch;
use labhub_testkit::TestApp;
use labhub_testkit::app::script;
use labhub_testkit::docker::DockerScope;
use labhub_testkit::images;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::test_server_binary;
use crate::groups::lab;
use crate::proxied::{ws_connect, ws_url};

/// Generous: the machine has two cores and other tests run beside this one.
const SERVER_START: Duration = Duration::from_secs(180);
const KERNEL_BUSY: Duration = Duration::from_secs(90);

/// A Jupyter `execute_request` on the kernel WebSocket's JSON protocol.
fn execute(code: &str) -> Message {
    let header = json!({"msg_id": "labhub-test-1", "username": "alice", "session": "labhub-test",
                        "msg_type": "execute_request", "version": "5.3", "date": ""});
    let content = json!({"code": code, "silent": false, "store_history": false, "user_expressions": {},
                         "allow_stdin": false, "stop_on_error": true});
    let msg = json!({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                     "channel": "shell", "buffers": []});
    Message::Text(msg.to_string().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_kernel_is_not_culled_unless_its_group_lets_the_culler_stop_busy_servers() {
    let image = {
        let builder = DockerScope::new(test_server_binary()).await;
        images::jupyterlab_image(&builder.spawner).await.expect("the JupyterLab image exists or builds")
    };
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let app = TestApp::builder()
        .docker(scope)
        .manual_clock()
        .config(|c| c.servers.start_timeout = SERVER_START)
        .spawn()
        .await;
    let clock = app.clock.clone().expect("a manual clock");
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    let root = app.api_for("root").await;
    let alice_api = app.api_for("alice").await;
    let alice = alice_api.authorization().to_string();
    let c = script();
    root.add_image(json!({"name": "lab", "display_name": "JupyterLab (real)", "reference": image.to_string(),
                          "kind": "jupyter", "cpu": 1, "memory": "1G"}))
        .await
        .expect("the catalogue takes the real image");
    let idle = Duration::from_secs(30 * 60);
    lab(&app, "team", None, &["alice"], QuotaPatch { idle_timeout: Some(Some(idle)), ..QuotaPatch::default() }).await;
    alice_api.start("alice", None, json!({"image": "lab"})).await.expect("the start is accepted");
    alice_api.wait_ready("alice", None).await;

    // A kernel, and a long cell sent over its WebSocket through the hub's proxy.
    let r = c
        .post(app.at("/user/alice/api/kernels"))
        .header("Authorization", &alice)
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let kernel: Value = r.json().await.unwrap();
    let id = kernel["id"].as_str().expect("a kernel id");
    let url = ws_url(&app.url, &format!("/user/alice/api/kernels/{id}/channels"));
    let mut ws = ws_connect(&url, &[("Authorization", &alice)]).await.expect("the kernel's WebSocket");
    ws.send(execute("import time; time.sleep(600)")).await.unwrap();
    let deadline = Instant::now() + KERNEL_BUSY;
    loop {
        let kernels: Value = c
            .get(app.at("/user/alice/api/kernels"))
            .header("Authorization", &alice)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if kernels[0]["execution_state"] == "busy" {
            break;
        }
        assert!(Instant::now() < deadline, "the kernel never went busy: {kernels}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Nobody is looking any more: the laptop is closed.
    drop(ws);

    clock.advance(time::Duration::minutes(31));
    let culled = app.hub.culler().cull_once().await.unwrap();
    assert!(culled.is_empty(), "a busy kernel is work: {culled:?}");
    let v = alice_api.get("/hub/api/users/alice").await.value();
    assert_eq!(v["servers"][""]["ready"], true, "{v}");
    assert_eq!(v["servers"][""]["cull_reason"], "idle", "stopped once the kernel has been idle long enough");

    let a = root.patch_json("/hub/api/groups/team/quota", &json!({"cull_busy": true})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let q = a.value();
    assert_eq!(q["cull_busy"], true, "{q}");
    clock.advance(time::Duration::minutes(31));
    let culled: Vec<(String, String)> =
        app.hub.culler().cull_once().await.unwrap().into_iter().map(|c| (c.server, c.reason)).collect();
    assert_eq!(culled, [("alice".to_string(), "stopped after 30 minutes without activity".to_string())]);
}
