//! A member's home as an archive (downloaded whether the server runs or not, restored only
//! into a stopped server's home, from the API and from the page), and what a group's shared
//! folder does with the test image: read-only for members when the lead says so, measured,
//! and kept as an orphan (or deleted) with its group.

use std::io::Read;

use async_compression::tokio::bufread::GzipDecoder;
use labhub_core::UserName;
use labhub_service::Actor;
use labhub_service::quotas::QuotaPatch;
use labhub_testkit::Api;
use labhub_testkit::app::csrf_of;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::common::{docker_hub, start_ready};
use crate::groups::lab;

async fn read_file(api: &Api, user: &str, path: &str) -> (StatusCode, String) {
    let a = api.get(&format!("/user/{user}/files/{path}")).await;
    (a.status, a.text())
}

async fn write_file(api: &Api, user: &str, path: &str, body: &str) -> StatusCode {
    api.answer(api.request(Method::PUT, &format!("/user/{user}/files/{path}")).body(body.to_string())).await.status
}

async fn put(api: &Api, body: Vec<u8>) -> labhub_testkit::api::Answer {
    api.answer(api.request(Method::PUT, "/hub/api/users/alice/home/archive").body(body)).await
}

async fn stop(api: &Api, user: &str) {
    api.stop(user, None).await.expect("the stop is accepted");
    api.wait_stopped(user, None).await;
}

/// The regular files of a tar, by path without the leading `./`.
fn files_of(tar: &[u8]) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("a tar entry");
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            out.push((path, text));
        }
    }
    out.sort();
    out
}

async fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzipDecoder::new(bytes).read_to_end(&mut out).await.expect("valid gzip");
    out
}

/// A tar of text files, each owned by the servers' user.
pub(crate) fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut archive = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_uid(1000);
        header.set_gid(100);
        archive.append_data(&mut header, name, content.as_bytes()).unwrap();
    }
    archive.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_archive_is_read_running_or_stopped_and_restored_only_into_a_stopped_server() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    let bob = app.api_for("bob").await;
    start_ready(&alice, "alice").await;
    assert_eq!(write_file(&alice, "alice", "thesis/chapter1.md", "# It begins").await, StatusCode::OK);

    // While the server runs, as a tar and as a tar.gz.
    let a = alice.get("/hub/api/users/alice/home/archive").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/x-tar"));
    assert!(a.header("content-disposition").unwrap().contains("alice-home-"), "{:?}", a.headers);
    assert!(files_of(&a.body).contains(&("thesis/chapter1.md".into(), "# It begins".into())));
    let gz = alice.get("/hub/api/users/alice/home/archive?format=tar.gz").await;
    assert_eq!(gz.header("content-type"), Some("application/gzip"));
    assert!(files_of(&gunzip(&gz.body).await).contains(&("thesis/chapter1.md".into(), "# It begins".into())));
    assert_eq!(alice.get("/hub/api/users/alice/home/archive?format=zip").await.status, StatusCode::BAD_REQUEST);

    // Nobody else's, except an admin's.
    assert_eq!(bob.get("/hub/api/users/alice/home/archive").await.status, StatusCode::FORBIDDEN);
    assert_eq!(root.get("/hub/api/users/alice/home/archive").await.status, StatusCode::OK);

    // Restoring under a running server is refused and writes nothing.
    let upload = tar_of(&[("thesis/chapter1.md", "# Overwritten")]);
    let refused = put(&alice, upload.clone()).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert!(refused.message().contains("stop it before restoring"), "{refused:?}");
    assert_eq!(read_file(&alice, "alice", "thesis/chapter1.md").await.1, "# It begins");

    // Stopped: the archive still reads, and a tar.gz restores (over the file, beside the rest).
    stop(&alice, "alice").await;
    let stopped = alice.get("/hub/api/users/alice/home/archive").await;
    assert!(files_of(&stopped.body).contains(&("thesis/chapter1.md".into(), "# It begins".into())));
    assert_eq!(put(&bob, upload.clone()).await.status, StatusCode::FORBIDDEN, "not bob's home");
    let restore = tar_of(&[("thesis/chapter1.md", "# Restored"), ("data/new.csv", "a,b")]);
    let gz_restore = {
        use async_compression::tokio::bufread::GzipEncoder;
        let mut out = Vec::new();
        GzipEncoder::new(restore.as_slice()).read_to_end(&mut out).await.unwrap();
        out
    };
    let done = put(&alice, gz_restore).await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}");
    assert!(done.value()["restored_bytes"].as_u64().unwrap() >= restore.len() as u64 - 1024, "{done:?}");
    let garbage = put(&alice, b"this is not an archive at all".repeat(40)).await;
    assert!(!garbage.status.is_success(), "{garbage:?}");
    start_ready(&alice, "alice").await;
    assert_eq!(read_file(&alice, "alice", "thesis/chapter1.md").await, (StatusCode::OK, "# Restored".into()));
    assert_eq!(read_file(&alice, "alice", "data/new.csv").await, (StatusCode::OK, "a,b".into()));
    // The restored files are the member's own: the server may change them.
    assert_eq!(write_file(&alice, "alice", "thesis/chapter1.md", "# Edited").await, StatusCode::OK);

    // From the page, after confirming, with the file as a multipart upload.
    stop(&alice, "alice").await;
    let browser = app.signed_in("alice", "correct horse").await;
    let page = browser.get(app.at("/hub/account/files/restore")).send().await.unwrap().text().await.unwrap();
    let csrf = csrf_of(&page);
    let form = |confirm: bool| {
        let mut f = reqwest::multipart::Form::new().text("_csrf", csrf.clone());
        if confirm {
            f = f.text("confirm", "yes");
        }
        let file = reqwest::multipart::Part::bytes(tar_of(&[("from-page.txt", "uploaded")])).file_name("home.tar");
        f.part("archive", file)
    };
    let unconfirmed = browser.post(app.at("/hub/account/files/restore")).multipart(form(false)).send().await.unwrap();
    assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
    assert!(unconfirmed.text().await.unwrap().contains("Tick the box"));
    let r = browser.post(app.at("/hub/account/files/restore")).multipart(form(true)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = browser.get(app.at("/hub/account")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Restored"), "the account page says so: {page}");
    let names = files_of(&alice.get("/hub/api/users/alice/home/archive").await.body);
    assert!(names.contains(&("from-page.txt".into(), "uploaded".into())), "{names:?}");

    let audited: Vec<String> =
        labhub_db::sqlx::query_scalar("select action from audit_log where action like 'home.%' order by audit_id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(audited.iter().filter(|a| *a == "home.restore").count() >= 2, "{audited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_folder_can_be_read_only_for_members_and_outlives_its_group_only_as_an_orphan() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    for name in ["bob", "carol"] {
        app.add_user(name, "correct horse", false).await;
    }
    let (bob, carol) = (app.api_for("bob").await, app.api_for("carol").await);
    lab(&app, "team", Some("alice"), &["alice", "bob"], QuotaPatch::default()).await;
    // The lead turns the folder on, read-only for members.
    let a = alice.patch_json("/hub/api/groups/team", &json!({ "shared_folder": true, "shared_read_only": true })).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let renamed = alice.patch_json("/hub/api/groups/team", &json!({ "name": "crew" })).await;
    assert_eq!(renamed.status, StatusCode::FORBIDDEN, "only admins rename: {renamed:?}");

    start_ready(&alice, "alice").await;
    start_ready(&bob, "bob").await;
    assert_eq!(
        write_file(&alice, "alice", "shared/team/plan.txt", "the plan").await,
        StatusCode::OK,
        "the lead writes"
    );
    assert_eq!(read_file(&bob, "bob", "shared/team/plan.txt").await, (StatusCode::OK, "the plan".into()));
    assert!(!write_file(&bob, "bob", "shared/team/mine.txt", "x").await.is_success(), "members only read");

    // Measured against the group, and shown to its leads.
    app.hub.quotas().measure_storage().await.unwrap();
    let usage = alice.get("/hub/api/groups/team/usage").await.value();
    assert!(usage["shared_folder"]["bytes"].as_u64().unwrap() >= 8, "{usage}");

    // Deleting the group keeps the folder as an orphan, which an admin can hand to someone.
    stop(&alice, "alice").await;
    stop(&bob, "bob").await;
    let group_id = app.hub.groups().get(Actor::System, &"team".parse().unwrap()).await.unwrap().group.id;
    assert_eq!(root.delete("/hub/api/groups/team").await.status, StatusCode::NO_CONTENT);
    let orphans = app.hub.homes().orphans(Actor::System).await.unwrap();
    let orphan = orphans.iter().find(|o| o.former_group == Some(group_id)).expect("the folder is an orphan");
    assert!(orphan.former_owner().contains("shared folder of group"), "{}", orphan.former_owner());
    let admin = app.signed_in("root", "correct horse").await;
    let page = admin.get(app.at("/hub/admin/storage")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("shared folder of group"), "{page}");
    let root_principal = app.hub.tokens().principal(root.token()).await.unwrap().unwrap();
    let carol_name = UserName::parse("carol").unwrap();
    let folder = app.hub.homes().give_orphan(Actor::User(&root_principal), &orphan.volume, &carol_name).await.unwrap();
    assert!(folder.starts_with(&format!("restored-group-{group_id}-")), "{folder}");
    start_ready(&carol, "carol").await;
    assert_eq!(read_file(&carol, "carol", &format!("{folder}/plan.txt")).await, (StatusCode::OK, "the plan".into()));
    assert_eq!(read_file(&carol, "carol", "shared/team/plan.txt").await.0, StatusCode::NOT_FOUND);
    stop(&carol, "carol").await;

    // A group deleted with its folder leaves nothing.
    lab(&app, "lab2", None, &["bob"], QuotaPatch::default()).await;
    assert_eq!(root.patch_json("/hub/api/groups/lab2", &json!({ "shared_folder": true })).await.status, StatusCode::OK);
    start_ready(&bob, "bob").await;
    assert_eq!(write_file(&bob, "bob", "shared/lab2/x.txt", "x").await, StatusCode::OK);
    stop(&bob, "bob").await;
    let bad = root.delete_json("/hub/api/groups/lab2", &json!({ "storage": "shred" })).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        root.delete_json("/hub/api/groups/lab2", &json!({ "storage": "delete" })).await.status,
        StatusCode::NO_CONTENT
    );
    let left = app.hub.homes().orphans(Actor::System).await.unwrap();
    assert_eq!(left.iter().filter(|o| o.former_group.is_some()).count(), 1, "only team's folder is left: {left:?}");
}
