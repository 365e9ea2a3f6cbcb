//! Homes belong to accounts by id: a deleted account's files never reach a later account of
//! the same name, what deleted accounts leave is an orphan for admins, homes made before ids
//! go to the account that made them, and a route answers only its owner's id.

use std::collections::HashMap;

use bollard::models::VolumeCreateRequest;
use labhub_core::Secret;
use labhub_core::spawner::Spawner;
use labhub_proxy::{Route, RouteKey};
use labhub_testkit::{Api, TestApp};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::docker_hub;

/// Starts `user`'s default server through the API and waits until it is ready.
async fn start(api: &Api, user: &str) {
    api.start(user, None, json!({ "image": "test" })).await.expect("the start is accepted");
    api.wait_ready(user, None).await;
}

async fn stop(api: &Api, user: &str) {
    api.stop(user, None).await.expect("the stop is accepted");
    api.wait_stopped(user, None).await;
}

/// A file of `user`'s home, read through the proxy as the test server serves it.
async fn read_file(api: &Api, user: &str, path: &str) -> (StatusCode, String) {
    let a = api.get(&format!("/user/{user}/files/{path}")).await;
    (a.status, a.text())
}

async fn write_file(api: &Api, user: &str, path: &str, body: &str) {
    let a = api
        .answer(api.request(reqwest::Method::PUT, &format!("/user/{user}/files/{path}")).body(body.to_string()))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
}

async fn new_member(app: &TestApp, root: &Api, name: &str) -> Api {
    let a = root.post_json(&format!("/hub/api/users/{name}"), &json!({})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    app.api_for(name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_accounts_home_never_reaches_the_next_account_of_its_name() {
    let (app, root, _) = docker_hub(|_| {}).await;
    let zoe = new_member(&app, &root, "zoe").await;
    start(&zoe, "zoe").await;
    write_file(&zoe, "zoe", "secret.txt", "zoe's thesis notes").await;
    stop(&zoe, "zoe").await;
    assert_eq!(root.delete("/hub/api/users/zoe").await.status, StatusCode::NO_CONTENT);

    // The next student with that login starts with an empty home.
    let zoe2 = new_member(&app, &root, "zoe").await;
    start(&zoe2, "zoe").await;
    assert_eq!(read_file(&zoe2, "zoe", "secret.txt").await.0, StatusCode::NOT_FOUND);
    stop(&zoe2, "zoe").await;

    // The first zoe's files are an orphan only admins see, with their size.
    let admin = app.signed_in("root", "correct horse").await;
    let page = admin.get(app.at("/hub/admin/storage")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("zoe (account") && page.contains("deleted"), "{page}");
    let orphans = app.hub.homes().orphans(labhub_service::Actor::System).await.unwrap();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    let orphan = &orphans[0];
    assert_eq!(orphan.former_name.as_ref().map(|n| n.as_str()), Some("zoe"));

    // An admin may hand them to an account on purpose: into a folder of their own.
    let root_principal = app.hub.tokens().principal(root.token()).await.unwrap().unwrap();
    let actor = labhub_service::Actor::User(&root_principal);
    let zoe_name = labhub_core::UserName::parse("zoe").unwrap();
    let folder = app.hub.homes().give_orphan(actor, &orphan.volume, &zoe_name).await.unwrap();
    assert!(folder.starts_with("restored-zoe-"), "{folder}");
    start(&zoe2, "zoe").await;
    let (status, text) = read_file(&zoe2, "zoe", &format!("{folder}/secret.txt")).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "zoe's thesis notes"));
    assert_eq!(read_file(&zoe2, "zoe", "secret.txt").await.0, StatusCode::NOT_FOUND, "nothing else moved");

    // Removing the orphan, and deleting an account with its files, leave no home behind.
    app.hub.homes().remove_orphan(actor, &orphan.volume).await.unwrap();
    stop(&zoe2, "zoe").await;
    let gone = root.delete_json("/hub/api/users/zoe", &json!({ "storage": "delete" })).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert!(app.hub.homes().orphans(actor).await.unwrap().is_empty());
    let spawner = &app.docker.as_ref().unwrap().spawner;
    assert!(spawner.volumes().await.unwrap().is_empty(), "no home of either zoe is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_is_refused_while_a_server_runs_and_a_route_answers_only_its_owners_id() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    start(&alice, "alice").await;
    let refused = root.patch_json("/hub/api/users/alice", &json!({ "name": "amy" })).await.error();
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.message.contains("stop it before renaming"), "{refused:?}");

    // A route under alice's name that is not alice's account (as a rename racing a start
    // could leave): neither path lets alice in, by cookie or by token.
    let route = app.hub.routes().get("alice", None).expect("alice's route");
    let stranger = labhub_core::UserId::new(route.route().owner.get() + 1000);
    let key = RouteKey::new(labhub_core::UserName::parse("alice").unwrap(), None);
    let copy = Route::new(key, stranger, route.route().endpoint, Secret::new("t".into()), route.route().kind);
    app.hub.routes().remove(route.key());
    app.hub.routes().insert(copy).unwrap();
    assert_eq!(read_file(&alice, "alice", "x").await.0, StatusCode::FORBIDDEN, "by token");
    let browser = app.signed_in("alice", "correct horse").await;
    let r = browser.get(app.at("/user/alice/files/x")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "by cookie (the fast lane declines, the general path refuses)");

    app.hub.routes().remove(&RouteKey::new(labhub_core::UserName::parse("alice").unwrap(), None));
    // The route alice's stop would remove is gone already: the stop still ends her server.
    stop(&alice, "alice").await;
    let renamed = root.patch_json("/hub/api/users/alice", &json!({ "name": "amy" })).await;
    assert_eq!(renamed.status, StatusCode::OK, "{renamed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homes_made_before_ids_go_to_the_account_that_made_them_and_no_other() {
    let scope =
        std::sync::Arc::new(labhub_testkit::docker::DockerScope::new(crate::common::test_server_binary()).await);
    let app = TestApp::builder().docker(scope.clone()).manual_clock().spawn().await;
    app.add_test_image("test").await;
    app.add_user("root", "correct horse", true).await;
    let root = app.api_for("root").await;
    // "old" had an account before its home was made; "later"'s home predates the account
    // now called "later", so it was someone else's.
    let old = new_member(&app, &root, "old").await;
    let legacy = |name: &str| {
        let labels = HashMap::from([
            (labhub_spawner::LABEL_HUB.to_string(), scope.config.hub_id.to_string()),
            (labhub_spawner::LABEL_USER.to_string(), name.to_string()),
            (labhub_spawner::LABEL_SERVER.to_string(), String::new()),
        ]);
        VolumeCreateRequest {
            name: Some(format!("{}-home_{name}", scope.config.hub_id)),
            labels: Some(labels),
            ..Default::default()
        }
    };
    for name in ["old", "later"] {
        scope.spawner.docker().create_volume(legacy(name)).await.unwrap();
    }
    // The account called "later" now is made an hour after both homes.
    app.clock.as_ref().unwrap().advance(time::Duration::hours(1));
    let later = new_member(&app, &root, "later").await;
    for name in ["old", "later"] {
        seed_file(&scope, &format!("{}-home_{name}", scope.config.hub_id), "mine.txt", name).await;
    }

    let report = app.hub.homes().adopt_legacy().await.unwrap();
    let vol = |name: &str| format!("{}-home_{name}", scope.config.hub_id);
    assert_eq!(report.adopted, vec![vol("old")]);
    assert!(report.unclaimed.contains(&vol("later")), "{report:?}");
    assert_eq!(app.hub.homes().adopt_legacy().await.unwrap().adopted, Vec::<String>::new(), "once only");

    start(&old, "old").await;
    assert_eq!(read_file(&old, "old", "mine.txt").await, (StatusCode::OK, "old".to_string()), "old's own home");
    start(&later, "later").await;
    assert_eq!(read_file(&later, "later", "mine.txt").await.0, StatusCode::NOT_FOUND, "not the earlier later's");
    let orphans = app.hub.homes().orphans(labhub_service::Actor::System).await.unwrap();
    assert!(orphans.iter().any(|o| o.volume == vol("later")), "{orphans:?}");
    assert!(!orphans.iter().any(|o| o.volume == vol("old")), "{orphans:?}");
}

/// Puts a file into a volume without running anything: a container that never starts mounts
/// it, and the engine writes the file.
async fn seed_file(scope: &labhub_testkit::docker::DockerScope, volume: &str, name: &str, content: &str) {
    use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
    use bollard::query_parameters::{RemoveContainerOptions, UploadToContainerOptions};
    let docker = scope.spawner.docker();
    let body = ContainerCreateBody {
        image: Some(scope.test_image.to_string()),
        // Never run: a command only because the engine wants one.
        cmd: Some(vec!["seed".into()]),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some("/seed".into()),
                source: Some(volume.into()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker.create_container(None::<bollard::query_parameters::CreateContainerOptions>, body).await.unwrap().id;
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_uid(1000);
    header.set_gid(100);
    archive.append_data(&mut header, name, content.as_bytes()).unwrap();
    let bytes = archive.into_inner().unwrap();
    let options = UploadToContainerOptions { path: "/seed".into(), ..Default::default() };
    docker.upload_to_container(&id, Some(options), bollard::body_full(bytes.into())).await.unwrap();
    docker.remove_container(&id, Some(RemoveContainerOptions { force: true, ..Default::default() })).await.unwrap();
}
