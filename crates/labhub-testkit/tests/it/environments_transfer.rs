//! Moving an environment to another hub: `labhub env export` then `labhub env import` into
//! a second hub (its own database, data folder and hub id) that starts it; an export whose
//! manifest names another image is refused, and a crafted image archive can neither move a
//! tag of this machine's nor plant a new one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use labhub_testkit::TestApp;
use labhub_testkit::docker::DockerScope;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::test_server_binary;
use crate::environments::{Repo, SERVER_START, create, env_hub, outcome};

/// The `labhub` command against a test hub's database, with a data folder of its own.
pub(crate) fn labhub_cli(app: &TestApp, data: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_labhub-exe"))
        .args(args)
        .env_remove("LABHUB_CONFIG")
        .env("LABHUB_LOG", "warn")
        .env("DATABASE_URL", labhub_testkit::pg::TestCluster::get().url(&app.db_name))
        .env("LABHUB_DATA_DIR", data)
        .env("LABHUB_DOCKER__HUB_ID", app.config.docker.hub_id.as_str())
        .env("LABHUB_DOCKER__NETWORK", app.config.docker.network.as_str())
        .output()
        .expect("running labhub")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_environment_is_imported_into_another_hub_and_starts_there() {
    let sources = tempfile::tempdir().unwrap();
    let (app, root) = env_hub(sources.path()).await;
    let image = root.get("/hub/api/images/jupyterlab").await.value()["reference"].as_str().unwrap().to_string();
    let repo = Repo::new(sources.path());
    let commit = repo
        .commit(&[("Dockerfile", &format!("FROM {image}\nUSER root\nRUN echo paper > /opt/paper.txt\nUSER 1000\n"))]);
    let (_, events) = create(&root, json!({"name": "paper", "source": repo.path()})).await;
    assert!(outcome(&events).ready, "{events:#?}");
    let built = root.get("/hub/api/environments/paper").await.value();
    let image_id = built["image_id"].as_str().unwrap().to_string();

    let data_a = tempfile::tempdir().unwrap();
    let out = labhub_cli(&app, data_a.path(), &["env", "export", "paper"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let export = sources.path().join("paper.labhub.tar");
    std::fs::write(&export, &out.stdout).unwrap();
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    let mut entries = archive.entries().unwrap();
    let mut first = entries.next().unwrap().unwrap();
    assert_eq!(first.path().unwrap().to_str(), Some("labhub-environment.json"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut first, &mut text).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest["image_id"], image_id.as_str(), "{manifest}");
    assert_eq!(manifest["commit"], commit.as_str(), "{manifest}");
    assert_eq!(manifest["source"], repo.path().as_str(), "{manifest}");
    drop(first);
    assert_eq!(entries.next().unwrap().unwrap().path().unwrap().to_str(), Some("image.tar"));

    // Another lab: its own database, data folder and hub id, and an engine without the image.
    let docker = app.docker.as_ref().unwrap().docker().clone();
    let force = bollard::query_parameters::RemoveImageOptions { force: true, ..Default::default() };
    docker.remove_image(&image_id, Some(force.clone()), None).await.expect("the image goes");
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let other = TestApp::builder().docker(scope).config(|c| c.servers.start_timeout = SERVER_START).spawn().await;
    other.add_user("admin", "correct horse", true).await;
    let admin = other.api_for("admin").await;
    let data_b = tempfile::tempdir().unwrap();
    let out = labhub_cli(&other, data_b.path(), &["env", "import", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env = admin.get("/hub/api/environments/paper").await.value();
    assert_eq!(env["image_id"], image_id.as_str(), "{env}");
    assert_eq!(env["commit"], commit.as_str(), "{env}");
    assert_eq!(env["source"], repo.path().as_str(), "{env}");
    assert_eq!(env["status"], "ready", "{env}");
    admin.start("admin", None, json!({"image": "paper"})).await.expect("the start is accepted");
    let server = admin.wait_ready("admin", None).await;
    assert_eq!(server.image_digest.as_deref(), Some(image_id.as_str()), "{server:?}");
    admin.stop("admin", None).await.unwrap();

    // An export whose manifest names another image is refused.
    let mut tampered = manifest.clone();
    tampered["image_id"] = json!(format!("sha256:{}", "0".repeat(64)));
    let mut bad = tar::Builder::new(Vec::new());
    let body = serde_json::to_vec(&tampered).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    bad.append_data(&mut h, "labhub-environment.json", body.as_slice()).unwrap();
    let mut original = tar::Archive::new(std::fs::File::open(&export).unwrap());
    let mut image_entry = original.entries().unwrap().nth(1).unwrap().unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(image_entry.size());
    h.set_mode(0o644);
    bad.append_data(&mut h, "image.tar", &mut image_entry).unwrap();
    let tampered_file = sources.path().join("tampered.labhub.tar");
    std::fs::write(&tampered_file, bad.into_inner().unwrap()).unwrap();
    let out = labhub_cli(&other, data_b.path(), &["env", "import", tampered_file.to_str().unwrap(), "--name", "other"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused, nothing loaded") && err.contains("not the one its manifest records"), "{err}");
    assert_eq!(admin.get("/hub/api/environments/other").await.status, StatusCode::NOT_FOUND);

    // A crafted archive whose image would take a tag this machine has (the catalogue's
    // JupyterLab image) is refused before anything is loaded: the tag stays where it was.
    let jupyterlab_id = docker.inspect_image(&image).await.unwrap().id.unwrap();
    let crafted = retagged(&export, &[&image], &sources.path().join("retag.labhub.tar"));
    let out = labhub_cli(&other, data_b.path(), &["env", "import", crafted.to_str().unwrap(), "--name", "retag"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused, nothing loaded") && err.contains(&image), "{err}");
    assert_eq!(docker.inspect_image(&image).await.unwrap().id.unwrap(), jupyterlab_id, "the tag did not move");
    // One naming a new tag loads without it: an import tags nothing.
    docker.remove_image(&image_id, Some(force), None).await.expect("the image goes");
    let crafted = retagged(&export, &["labhub-crafted/planted:1"], &sources.path().join("plant.labhub.tar"));
    let out = labhub_cli(&other, data_b.path(), &["env", "import", crafted.to_str().unwrap(), "--name", "planted"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(docker.inspect_image(&image_id).await.is_ok(), "loaded");
    assert!(docker.inspect_image("labhub-crafted/planted:1").await.is_err(), "but not tagged");
}

/// A copy of the export `from` whose image archive's `manifest.json` gives the image `tags`.
fn retagged(from: &Path, tags: &[&str], to: &Path) -> PathBuf {
    let mut outer = tar::Archive::new(std::fs::File::open(from).unwrap());
    let mut out = tar::Builder::new(Vec::new());
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        if path == "image.tar" {
            let mut inner = tar::Archive::new(data.as_slice());
            let mut rewritten = tar::Builder::new(Vec::new());
            for e in inner.entries().unwrap() {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                if name == "manifest.json" {
                    let mut m: Value = serde_json::from_slice(&body).unwrap();
                    m[0]["RepoTags"] = json!(tags);
                    body = serde_json::to_vec(&m).unwrap();
                }
                let mut h = e.header().clone();
                h.set_size(body.len() as u64);
                rewritten.append_data(&mut h, &name, body.as_slice()).unwrap();
            }
            data = rewritten.into_inner().unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        out.append_data(&mut h, &path, data.as_slice()).unwrap();
    }
    std::fs::write(to, out.into_inner().unwrap()).unwrap();
    to.to_path_buf()
}
