//! Environments built from an uploaded archive of a repository's files (no git), with the
//! real engine and the real JupyterLab image: an upload of requirements.txt builds and its
//! package imports in a kernel; the same files again reuse the image; archives with links or
//! paths climbing out are refused naming the entry, and past `environments.max_upload` with a
//! 413, recording nothing; the page's form checks its CSRF token before reading the file; the
//! command line packs a folder itself.

use labhub_testkit::{Answer, Api, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::environments::{env_hub, env_hub_with, follow, labels, outcome, run_in_kernel};
use crate::environments_transfer::labhub_cli;
use crate::groups::lab;

/// A tar of files, each under `folder` when one is given.
fn tar_of(folder: Option<&str>, files: &[(&str, &str)]) -> Vec<u8> {
    let mut archive = tar::Builder::new(Vec::new());
    for (name, body) in files {
        let path = folder.map_or_else(|| name.to_string(), |f| format!("{f}/{name}"));
        let mut header = tar::Header::new_ustar();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        archive.append_data(&mut header, &path, body.as_bytes()).unwrap();
    }
    archive.into_inner().unwrap()
}

/// A tar with one entry named exactly `raw` (which `tar::Builder` would refuse to write).
fn crafted(raw: &str, kind: tar::EntryType, link_to: &str) -> Vec<u8> {
    let mut archive = tar::Builder::new(Vec::new());
    archive.append_data(&mut ustar(4), "requirements.txt", b"six\n".as_slice()).unwrap();
    let mut header = ustar(if kind == tar::EntryType::Symlink { 0 } else { 4 });
    header.set_entry_type(kind);
    header.as_old_mut().name[..raw.len()].copy_from_slice(raw.as_bytes());
    if kind == tar::EntryType::Symlink {
        header.set_link_name(link_to).unwrap();
    }
    header.set_cksum();
    archive.append(&header, b"evil".as_slice()).unwrap();
    archive.into_inner().unwrap()
}

fn ustar(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h
}

async fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    async_compression::tokio::bufread::GzipEncoder::new(tar).read_to_end(&mut out).await.unwrap();
    out
}

/// Sends an archive as the body of `path`.
async fn send(api: &Api, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
    api.answer(api.request(Method::POST, path).header("Content-Type", content_type).body(body)).await
}

async fn uploads_kept(app: &TestApp) -> i64 {
    labhub_db::sqlx::query_scalar("select count(*) from environment_uploads").fetch_one(&app.db).await.unwrap()
}

/// A Dockerfile recipe on the catalogue's JupyterLab image: the engine builds it in moments.
async fn dockerfile(root: &Api, label: &str) -> String {
    let image = root.get("/hub/api/images/jupyterlab").await.value()["reference"].as_str().unwrap().to_string();
    format!("FROM {image}\nLABEL purpose={label}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_folder_builds_and_starts_with_its_package_and_the_same_files_again_reuse_the_image() {
    let sources = tempfile::tempdir().unwrap();
    let (app, root) = env_hub(sources.path()).await;
    let files = [("requirements.txt", "tabulate==0.9.0\n"), ("README.md", "An analysis without git.\n")];
    // As `tar czf analysis.tar.gz analysis` makes it: the files in one folder.
    let archive = gzip(&tar_of(Some("analysis"), &files)).await;
    let a = send(&root, "/hub/api/environments?name=uploaded", "application/gzip", archive).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let created = a.value();
    assert_eq!(created["source"], "upload", "{created}");
    assert_eq!(created["uploaded"], true, "{created}");
    let events = follow(&root, created["log_url"].as_str().unwrap()).await;
    assert!(outcome(&events).ready, "the build succeeds: {events:#?}");

    let env = root.get("/hub/api/environments/uploaded").await.value();
    assert_eq!(env["status"], "ready", "{env}");
    let sha = env["commit"].as_str().unwrap().to_string();
    assert!(sha.starts_with("sha256:") && sha.len() == 71, "{env}");
    assert_eq!(env["ref"], sha.as_str(), "a rebuild reads the same upload: {env}");
    let image_id = env["image_id"].as_str().unwrap().to_string();
    let l = labels(&app, &image_id).await;
    assert_eq!(l["io.labhub.environment.source"], "upload", "{l}");
    assert_eq!(l["io.labhub.environment.commit"], sha.as_str(), "{l}");

    // A server on it imports the package.
    root.start("root", None, json!({"image": "uploaded"})).await.expect("the start is accepted");
    let server = root.wait_ready("root", None).await;
    assert_eq!(server.image_digest.as_deref(), Some(image_id.as_str()), "{server:?}");
    let out = run_in_kernel(&app, &root, "root", "import tabulate\nprint(tabulate.__version__)").await;
    assert_eq!(out.trim(), "0.9.0", "{out}");
    root.stop("root", None).await.unwrap();
    root.wait_stopped("root", None).await;

    // The same files again, packed otherwise (a plain tar, no folder): the same sha, and the
    // image is reused without the engine building anything.
    let again = tar_of(None, &files);
    let a = send(&root, "/hub/api/environments/uploaded/builds", "application/x-tar", again).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{a:?}");
    let events = follow(&root, a.value()["log_url"].as_str().unwrap()).await;
    assert!(outcome(&events).ready, "{events:#?}");
    assert!(events.iter().any(|e| e.message.contains("Unchanged since build")), "{events:#?}");
    assert!(!events.iter().any(|e| e.message.starts_with("Step ")), "the engine built nothing: {events:#?}");
    // So does a rebuild without files: from the upload kept in Postgres.
    let a = root.post_json("/hub/api/environments/uploaded/builds", &json!({})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{a:?}");
    let events = follow(&root, a.value()["log_url"].as_str().unwrap()).await;
    assert!(events.iter().any(|e| e.message.contains("Unchanged since build")), "{events:#?}");
    let env = root.get("/hub/api/environments/uploaded").await.value();
    let builds = env["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 3, "{env}");
    assert!(builds.iter().all(|b| b["image_id"] == image_id.as_str() && b["commit"] == sha.as_str()), "{env}");
    assert_eq!(builds[1]["reused_from"], builds[2]["id"], "{env}");
    assert_eq!(builds[0]["reused_from"], builds[1]["id"], "{env}");
    assert_eq!(uploads_kept(&app).await, 1, "the same files are kept once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_oversized_uploads_are_refused_recording_nothing_and_uploads_follow_the_rules_of_who_builds() {
    let sources = tempfile::tempdir().unwrap();
    let (app, root) = env_hub_with(sources.path(), |c| c.environments.max_upload = "64KiB".into()).await;
    let post = |api: &Api, body: Vec<u8>| {
        let api = api.clone();
        async move { send(&api, "/hub/api/environments?name=bad", "application/x-tar", body).await }
    };

    let a = post(&root, crafted("../evil.txt", tar::EntryType::Regular, "")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    assert!(a.message().contains("'../evil.txt'") && a.message().contains("climbs out"), "{}", a.message());
    let a = post(&root, gzip(&crafted("data/passwords", tar::EntryType::Symlink, "/etc/shadow")).await).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    assert!(a.message().contains("'data/passwords' is a symbolic link"), "{}", a.message());
    let a = post(&root, crafted("/etc/cron.d/x", tar::EntryType::Regular, "")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    assert!(a.message().contains("'/etc/cron.d/x' has an absolute path"), "{}", a.message());
    let a = post(&root, b"just some text, not an archive".repeat(40)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    // Past the limit (as sent): 413, saying which setting (not the 1 MiB of JSON bodies: an
    // archive's body is the upload's own to limit).
    let a = post(&root, vec![b'x'; 2 << 20]).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{a:?}");
    assert!(a.message().contains("environments.max_upload"), "{}", a.message());
    let a = send(&root, "/hub/api/environments", "application/gzip", gzip(&tar_of(None, &[("a", "b")])).await).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "an upload names its environment: {a:?}");
    // Nothing of any of them was recorded.
    assert_eq!(root.get("/hub/api/environments").await.value(), json!([]));
    assert_eq!(root.get("/hub/api/images/bad").await.status, StatusCode::NOT_FOUND);
    assert_eq!(uploads_kept(&app).await, 0);

    // Who may: as for git sources.
    for user in ["lead", "alice"] {
        app.add_user(user, "correct horse", false).await;
    }
    lab(&app, "team", Some("lead"), &["lead", "alice"], Default::default()).await;
    lab(&app, "other", None, &[], Default::default()).await;
    let (lead, alice) = (app.api_for("lead").await, app.api_for("alice").await);
    let recipe = tar_of(None, &[("Dockerfile", &dockerfile(&root, "uploaded").await)]);
    let a = send(&alice, "/hub/api/environments?name=mine", "application/x-tar", recipe.clone()).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    assert!(a.message().contains("ask a lead"), "{}", a.message());
    let a = send(&lead, "/hub/api/environments?name=theirs&group=other", "application/x-tar", recipe.clone()).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "not their group: {a:?}");
    assert_eq!(uploads_kept(&app).await, 0);
    let a = send(&lead, "/hub/api/environments?name=team-upload&group=team", "application/x-tar", recipe.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(a.value()["holder"], json!({"kind": "group", "name": "team"}));
    assert!(outcome(&follow(&lead, a.value()["log_url"].as_str().unwrap()).await).ready);
    // A member's upload is their personal environment once their group lets them build.
    let a = lead.patch_json("/hub/api/groups/team", &json!({"members_build_environments": true})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let own = tar_of(None, &[("Dockerfile", &dockerfile(&root, "mine").await)]);
    let a = send(&alice, "/hub/api/environments?name=mine", "application/x-tar", own).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(a.value()["holder"], json!({"kind": "personal", "name": "alice"}));
    assert!(outcome(&follow(&alice, a.value()["log_url"].as_str().unwrap()).await).ready);
    assert_eq!(lead.get("/hub/api/environments/mine").await.status, StatusCode::NOT_FOUND, "personal");
    // Members upload nothing into their group's environment, nor build their own from the
    // group's files by naming its upload.
    let a = send(&alice, "/hub/api/environments/team-upload/builds", "application/x-tar", recipe).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    let group_files = alice.get("/hub/api/environments/team-upload").await.value()["ref"].clone();
    let a = alice.post_json("/hub/api/environments/mine/builds", &json!({"ref": group_files})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{a:?}");

    // Once an environment is removed, the image collector drops its upload (past an hour's
    // grace, which the test moves behind it); the others' stay.
    let kept = uploads_kept(&app).await;
    assert_eq!(alice.delete("/hub/api/environments/mine").await.status, StatusCode::NO_CONTENT);
    labhub_db::sqlx::query("update environment_uploads set uploaded_at = uploaded_at - interval '2 hours'")
        .execute(&app.db)
        .await
        .unwrap();
    let report = root.post("/hub/api/environments/collect").await.value();
    assert_eq!(report["uploads_removed"], 1, "{report}");
    assert_eq!(uploads_kept(&app).await, kept - 1);
    assert_eq!(lead.get("/hub/api/environments/team-upload").await.value()["status"], "ready");

    // The command line packs a folder itself (its .git left out); a link in it is refused.
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("Dockerfile"), dockerfile(&root, "cli").await).unwrap();
    std::fs::create_dir_all(folder.path().join(".git/objects")).unwrap();
    std::fs::write(folder.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = folder.path().to_str().unwrap();
    let out = labhub_cli(&app, data.path(), &["env", "build", dir, "--name", "from-cli", "--upload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env = root.get("/hub/api/environments/from-cli").await.value();
    assert_eq!((&env["source"], &env["status"]), (&json!("upload"), &json!("ready")), "{env}");
    std::os::unix::fs::symlink("/etc/passwd", folder.path().join("passwd")).unwrap();
    let out = labhub_cli(&app, data.path(), &["env", "build", dir, "--name", "from-cli", "--upload"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("an upload holds no links"), "{out:?}");
    assert_eq!(root.get("/hub/api/environments/from-cli").await.value()["builds"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_form_checks_its_csrf_token_before_the_file_and_builds_from_it() {
    let sources = tempfile::tempdir().unwrap();
    let (app, root) = env_hub_with(sources.path(), |c| c.environments.max_upload = "64KiB".into()).await;
    let c = app.signed_in("root", "correct horse").await;
    let origin = app.config.public_url().origin().ascii_serialization();
    let html = c.get(app.at("/hub/environments")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("action=\"/hub/environments/upload\" enctype=\"multipart/form-data\""), "{html}");
    let csrf = app.csrf(&c, "/hub/environments").await;
    let post = |path: &str, form: reqwest::multipart::Form| {
        c.post(app.at(path)).header("Origin", &origin).multipart(form).send()
    };
    let file = |tar: Vec<u8>| reqwest::multipart::Part::bytes(tar).file_name("env.tar");
    let form = |csrf: Option<&str>, name: &str, tar: Vec<u8>| {
        let f = reqwest::multipart::Form::new();
        let f = match csrf {
            Some(t) => f.text("_csrf", t.to_string()),
            None => f,
        };
        f.text("name", name.to_string()).text("group", "").part("archive", file(tar))
    };
    let recipe = |label: &str| {
        let root = root.clone();
        let label = label.to_string();
        async move { tar_of(None, &[("Dockerfile", &dockerfile(&root, &label).await)]) }
    };

    // Without the token, or with it after the file, refused before the file is read: an
    // archive past the limit is a 403, not a 413.
    let big = vec![b'x'; 200_000];
    let r = post("/hub/environments/upload", form(None, "paged", big.clone())).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let late = reqwest::multipart::Form::new()
        .text("name", "paged")
        .part("archive", file(big.clone()))
        .text("_csrf", csrf.clone());
    assert_eq!(post("/hub/environments/upload", late).await.unwrap().status(), StatusCode::FORBIDDEN);
    // With it: a bad archive shows the form again as typed, naming the entry.
    let r =
        post("/hub/environments/upload", form(Some(&csrf), "paged", crafted("../up.txt", tar::EntryType::Regular, "")))
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(html.contains("../up.txt") && html.contains("climbs out"), "{html}");
    assert!(html.contains("value=\"paged\""), "the form keeps what was typed");
    let r = post("/hub/environments/upload", form(Some(&csrf), "paged", big)).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(root.get("/hub/api/environments").await.value(), json!([]), "nothing recorded");

    // A good one builds and the page follows its log.
    let r = post("/hub/environments/upload", form(Some(&csrf), "paged", recipe("first").await)).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with("/hub/environments/paged/builds/"), "{to}");
    let build = to.rsplit('/').next().unwrap();
    let events = follow(&root, &format!("/hub/api/environments/paged/builds/{build}/log")).await;
    assert!(outcome(&events).ready, "{events:#?}");
    let first: Value = root.get("/hub/api/environments/paged").await.value();
    assert_eq!(first["source"], "upload", "{first}");

    // The environment's page takes new files (its own token first too).
    let html = c.get(app.at("/hub/environments/paged")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("uploaded files") && html.contains("action=\"/hub/environments/paged/upload\""), "{html}");
    let again = reqwest::multipart::Form::new().part("archive", file(recipe("second").await));
    assert_eq!(post("/hub/environments/paged/upload", again).await.unwrap().status(), StatusCode::FORBIDDEN);
    let again =
        reqwest::multipart::Form::new().text("_csrf", csrf.clone()).part("archive", file(recipe("second").await));
    let r = post("/hub/environments/paged/upload", again).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let build = r.headers()["location"].to_str().unwrap().rsplit('/').next().unwrap().to_string();
    let events = follow(&root, &format!("/hub/api/environments/paged/builds/{build}/log")).await;
    assert!(outcome(&events).ready, "{events:#?}");
    let second = root.get("/hub/api/environments/paged").await.value();
    assert_ne!(second["commit"], first["commit"], "new files, a new sha: {second}");
    assert_ne!(second["image_id"], first["image_id"], "{second}");
    assert_eq!(second["ref"], second["commit"], "{second}");
}
