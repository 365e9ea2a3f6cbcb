//! Servers of JupyterHub's contract in Swarm mode: the real `jupyterhub-singleuser` as a
//! one-task service, placed on the hub's node, reaching the hub's single-user API at that
//! node's `docker_gwbridge` gateway (the one exception to the rule that keeps tasks off the
//! host), reporting activity and signing a browser in through the hub's OAuth provider.

use std::sync::Arc;

use labhub_spawner::SwarmSpawner;
use labhub_testkit::TestApp;
use labhub_testkit::swarm::SwarmScope;
use serde_json::json;

use crate::common::test_server_binary;
use crate::single_user::{add_hub_entry, alice_reports_activity_and_signs_in};
use crate::swarm::services_of;

/// Takes the firewall's exception for the test hub's single-user API out however the test
/// ends (`docker_gwbridge` outlives it).
struct ApiRule(Arc<SwarmSpawner>);

impl Drop for ApiRule {
    fn drop(&mut self) {
        let swarm = self.0.clone();
        let removed = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move { swarm.remove_hub_api_rule().await })
        });
        if let Err(e) = removed {
            eprintln!("removing the single-user API's firewall exception: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterhub_singleuser_runs_as_a_service_on_the_hubs_node_and_signs_in_through_the_hub() {
    let s = SwarmScope::with(test_server_binary(), |_| {}).await;
    let image = labhub_testkit::images::jupyterhub_image(&s.docker.spawner).await.unwrap_or_else(|e| panic!("{e}"));
    let app = TestApp::builder().docker(s.docker.clone()).swarm(s.spawner.clone()).hub_api().spawn().await;
    let _rule = ApiRule(s.spawner.clone());
    let internal = app.internal_url.clone().expect("the single-user API is bound in Swarm mode");
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    let admin = app.api_for("root").await;
    add_hub_entry(&admin, &image).await;

    admin.start("alice", None, json!({"image": "hub"})).await.unwrap_or_else(|e| panic!("{e}"));
    admin.wait_ready("alice", None).await;
    // A service on the hub's node, told the internal address on that node's gateway.
    let service = services_of(&s).await.remove(0);
    let task = service.spec.unwrap().task_template.unwrap();
    let manager = s.engine().info().await.unwrap().swarm.unwrap().node_id.unwrap();
    assert_eq!(task.placement.unwrap().constraints.unwrap(), [format!("node.id=={manager}")]);
    let env = task.container_spec.unwrap().env.unwrap();
    assert!(env.contains(&format!("JUPYTERHUB_API_URL={internal}/hub/api")), "{env:?}");

    // Its activity report crosses from the task to the hub, and a browser opens it through
    // the OAuth round trip (the code exchanged by the task over the internal address).
    let (_, _, page) = alice_reports_activity_and_signs_in(&app).await;
    assert!(page.contains(r#""hubUser": "alice""#), "{page}");

    admin.stop("alice", None).await.unwrap();
    admin.wait_stopped("alice", None).await;
    assert!(services_of(&s).await.is_empty());
}
