//! Environments built from repositories, with the real engine, the real JupyterLab image as
//! their base, PyPI and the Debian mirror this machine reaches: a recipe of requirements,
//! Debian packages and a postBuild builds, starts and imports its package in a kernel; a
//! changed pin rebuilds only what follows it; failed builds say why and keep the last good
//! build in service; a repository's own Dockerfile builds on catalogue images only; leads
//! build for their group and members only when their group lets them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use labhub_service::quotas::QuotaPatch;
use labhub_testkit::api::ProgressEvent;
use labhub_testkit::docker::DockerScope;
use labhub_testkit::{Api, TestApp, images};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::test_server_binary;
use crate::groups::lab;
use crate::proxied::{ws_connect, ws_url};

/// Generous: a cold build fetches Debian packages and wheels on a shared two-core machine.
const BUILD_LIMIT: Duration = Duration::from_secs(900);
pub(crate) const SERVER_START: Duration = Duration::from_secs(240);
/// The machine's CA bundle: pip in the build's first stage reaches PyPI through it.
const HOST_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A git repository the test writes commits into.
pub(crate) struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    pub(crate) fn new(under: &Path) -> Self {
        let dir = tempfile::Builder::new().prefix("repo-").tempdir_in(under).unwrap();
        let repo = Self { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo
    }

    pub(crate) fn path(&self) -> String {
        self.dir.path().to_str().unwrap().to_string()
    }

    fn git(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.org"])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes the files (an empty body deletes one) and commits them; the commit's id.
    pub(crate) fn commit(&self, files: &[(&str, &str)]) -> String {
        for (name, body) in files {
            let path = self.dir.path().join(name);
            if body.is_empty() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, body).unwrap();
            if *name == "postBuild" || name.ends_with("/postBuild") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", "change"]);
        self.git(&["rev-parse", "HEAD"])
    }
}

/// A hub on the real engine with the JupyterLab image in its catalogue as `jupyterlab` (what
/// environments build on), an admin `root`, and builds that may use folders under `sources`.
pub(crate) async fn env_hub(sources: &Path) -> (TestApp, Api) {
    env_hub_with(sources, |_| {}).await
}

/// The same, with more configuration.
pub(crate) async fn env_hub_with(
    sources: &Path,
    more: impl FnOnce(&mut labhub::Config) + Send + 'static,
) -> (TestApp, Api) {
    let image = {
        let builder = DockerScope::new(test_server_binary()).await;
        images::jupyterlab_image(&builder.spawner).await.expect("the JupyterLab image exists or builds")
    };
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let sources = sources.to_path_buf();
    let app = TestApp::builder()
        .docker(scope)
        .config(move |c| {
            c.servers.start_timeout = SERVER_START;
            c.environments.pip_cert = Some(PathBuf::from(HOST_CA));
            c.environments.local_sources = vec![sources];
            more(c);
        })
        .spawn()
        .await;
    app.add_user("root", "correct horse", true).await;
    let root = app.api_for("root").await;
    root.add_image(json!({"name": "jupyterlab", "display_name": "JupyterLab", "reference": image.to_string(),
                          "kind": "jupyter", "cpu": 1, "memory": "1G"}))
        .await
        .expect("the catalogue takes the real image");
    (app, root)
}

/// Follows a build's log to its end: every event.
pub(crate) async fn follow(api: &Api, log_url: &str) -> Vec<ProgressEvent> {
    let read = async {
        let r = api.request(Method::GET, log_url).send().await.expect("the log request");
        assert_eq!(r.status(), StatusCode::OK, "{log_url}");
        let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert_eq!(kind, "text/event-stream");
        let mut text = String::new();
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("the log goes on")));
        }
        text
    };
    let text = tokio::time::timeout(BUILD_LIMIT, read).await.unwrap_or_else(|_| panic!("{log_url} never ended"));
    let events: Vec<ProgressEvent> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("an event ({e}): {d}")))
        .collect();
    assert!(events.last().is_some_and(|e| e.ready || e.failed), "the log ends with the outcome: {events:?}");
    events
}

/// Creates an environment and follows its first build; the answer and the log.
pub(crate) async fn create(api: &Api, body: Value) -> (Value, Vec<ProgressEvent>) {
    let a = api.post_json("/hub/api/environments", &body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let v = a.value();
    let events = follow(api, v["log_url"].as_str().unwrap()).await;
    (v, events)
}

/// Builds an environment again and follows the build; the log.
async fn rebuild(api: &Api, name: &str) -> Vec<ProgressEvent> {
    let a = api.post_json(&format!("/hub/api/environments/{name}/builds"), &json!({})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{a:?}");
    follow(api, a.value()["log_url"].as_str().unwrap()).await
}

pub(crate) fn outcome(events: &[ProgressEvent]) -> &ProgressEvent {
    events.last().unwrap()
}

/// Runs code in a new kernel of `user`'s server (through the hub) and returns what it printed.
pub(crate) async fn run_in_kernel(app: &TestApp, api: &Api, user: &str, code: &str) -> String {
    let auth = api.authorization().to_string();
    let a = api
        .answer(api.request(Method::POST, &format!("/user/{user}/api/kernels")).json(&json!({"name": "python3"})))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let id = a.value()["id"].as_str().unwrap().to_string();
    let url = ws_url(&app.url, &format!("/user/{user}/api/kernels/{id}/channels"));
    let mut ws = ws_connect(&url, &[("Authorization", &auth)]).await.expect("the kernel's WebSocket");
    let header = json!({"msg_id": "env-1", "username": user, "session": "env-test", "msg_type": "execute_request",
                        "version": "5.3", "date": ""});
    let content = json!({"code": code, "silent": false, "store_history": false, "user_expressions": {},
                         "allow_stdin": false, "stop_on_error": true});
    let msg = json!({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                     "channel": "shell", "buffers": []});
    ws.send(Message::Text(msg.to_string().into())).await.unwrap();
    let mut out = String::new();
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap_or_default();
            if v["parent_header"]["msg_id"] != "env-1" {
                continue;
            }
            match v["msg_type"].as_str() {
                Some("stream") => out.push_str(v["content"]["text"].as_str().unwrap_or_default()),
                Some("error") => out.push_str(&format!("ERROR {}", v["content"]["evalue"])),
                Some("status") if v["content"]["execution_state"] == "idle" => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read).await.expect("the kernel answers");
    out
}

/// The labels of a local image.
pub(crate) async fn labels(app: &TestApp, image: &str) -> Value {
    let inspect = app.docker.as_ref().unwrap().docker().inspect_image(image).await.expect("the image is there");
    json!(inspect.config.and_then(|c| c.labels).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_builds_from_a_repository_starts_and_keeps_its_last_good_build_through_failures() {
    let sources = tempfile::tempdir().unwrap();
    let (app, root) = env_hub(sources.path()).await;
    let repo = Repo::new(sources.path());
    let first = repo.commit(&[
        ("requirements.txt", "tabulate==0.9.0\n"),
        ("apt.txt", "# a Debian package\njq\n"),
        ("postBuild", "#!/bin/sh\nset -e\necho \"built at $(pwd)\" > /srv/repo/postbuild.txt\n"),
        ("README.md", "An analysis.\n"),
    ]);

    let (created, events) = create(&root, json!({"name": "analysis", "source": repo.path(), "ref": "main"})).await;
    assert_eq!(created["status"], "building", "{created}");
    assert!(outcome(&events).ready, "the build succeeds: {events:#?}");
    assert!(events.iter().any(|e| e.message.contains("jq")), "the log shows the build's steps");
    let percents: Vec<u8> = events.iter().map(|e| e.progress).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]) && percents.contains(&100), "{percents:?}");

    let env = root.get("/hub/api/environments/analysis").await.value();
    assert_eq!(env["status"], "ready", "{env}");
    assert_eq!(env["commit"], first.as_str(), "{env}");
    assert_eq!(env["builds"].as_array().unwrap().len(), 1);
    let first_image = env["image_id"].as_str().unwrap().to_string();
    assert!(first_image.starts_with("sha256:"), "{env}");
    let build = &env["builds"][0];
    assert_eq!(build["built_by"], "root");
    assert_eq!(build["ref"], "main");
    assert!(build["recipe_hash"].as_str().unwrap().starts_with("sha256:"), "{build}");
    assert!(build["base_image_id"].as_str().unwrap().starts_with("sha256:"), "{build}");
    // Provenance travels with the image.
    let l = labels(&app, &first_image).await;
    assert_eq!(l["io.labhub.environment.commit"], first.as_str(), "{l}");
    assert_eq!(l["io.labhub.environment.source"], repo.path().as_str(), "{l}");
    assert_eq!(l["io.labhub.environment.recipe-hash"], build["recipe_hash"], "{l}");
    assert_eq!(l["io.labhub.environment.built-by"], "root", "{l}");
    // No certificate of this machine's is in the image: pip saw it in the wheel stage only.
    let history = app.docker.as_ref().unwrap().docker().image_history(&first_image).await.unwrap();
    assert!(history.iter().all(|h| !h.created_by.contains("pip-ca.pem")), "{history:#?}");

    // A server starts on it like on any catalogue image, with the package, the Debian package
    // and what postBuild made.
    root.start("root", None, json!({"image": "analysis"})).await.expect("the start is accepted");
    let server = root.wait_ready("root", None).await;
    assert_eq!(server.image_digest.as_deref(), Some(first_image.as_str()), "{server:?}");
    let out = run_in_kernel(
        &app,
        &root,
        "root",
        "import tabulate, shutil\nprint(tabulate.__version__, shutil.which('jq'), open('/srv/repo/postbuild.txt').read().strip())",
    )
    .await;
    assert_eq!(out.trim(), "0.9.0 /usr/bin/jq built at /srv/repo", "{out}");
    root.stop("root", None).await.unwrap();
    root.wait_stopped("root", None).await;

    // A changed pin rebuilds only what follows requirements.txt: the Debian layer is reused.
    let second = repo.commit(&[("requirements.txt", "tabulate==0.8.10\n")]);
    let events = rebuild(&root, "analysis").await;
    assert!(outcome(&events).ready, "{events:#?}");
    let apt_step = events.iter().position(|e| e.message.starts_with("Step") && e.message.contains("apt-get")).unwrap();
    assert!(
        events[apt_step + 1].message.contains("Using cache"),
        "the apt layer comes from the cache: {:#?}",
        &events[apt_step..apt_step + 3]
    );
    let env = root.get("/hub/api/environments/analysis").await.value();
    let second_image = env["image_id"].as_str().unwrap().to_string();
    assert_ne!(second_image, first_image, "a new pin is a new image");
    assert_eq!(env["commit"], second.as_str());
    assert_eq!(env["builds"].as_array().unwrap().len(), 2);

    // A failing postBuild says so and keeps the last good build in service.
    repo.commit(&[("postBuild", "#!/bin/sh\necho 'cannot download the data' >&2\nexit 3\n")]);
    let events = rebuild(&root, "analysis").await;
    let end = outcome(&events);
    assert!(end.failed, "{events:#?}");
    assert!(end.message.contains("postBuild") && end.message.contains("cannot download the data"), "{}", end.message);
    let env = root.get("/hub/api/environments/analysis").await.value();
    assert_eq!(env["status"], "failed", "{env}");
    assert_eq!(env["image_id"], second_image.as_str(), "the last good build still serves: {env}");
    assert_eq!(env["builds"][0]["error"].as_str().unwrap(), end.message, "{env}");

    // So does a requirement that does not exist.
    repo.commit(&[("postBuild", ""), ("requirements.txt", "labhub-no-such-package-anywhere==1.0\n")]);
    let events = rebuild(&root, "analysis").await;
    let end = outcome(&events);
    assert!(end.failed, "{events:#?}");
    assert!(end.message.contains("labhub-no-such-package-anywhere"), "{}", end.message);
    let env = root.get("/hub/api/environments/analysis").await.value();
    assert_eq!(env["image_id"], second_image.as_str(), "{env}");
    root.start("root", None, json!({"image": "analysis"})).await.expect("the start is accepted");
    let server = root.wait_ready("root", None).await;
    assert_eq!(server.image_digest.as_deref(), Some(second_image.as_str()), "{server:?}");
    root.stop("root", None).await.unwrap();
    root.wait_stopped("root", None).await;

    // Both starts are in the history, newest first, with the exact images they ran.
    let history = root.get("/hub/api/users/root/sessions").await.value();
    let ran: Vec<&str> = history.as_array().unwrap().iter().map(|s| s["image_id"].as_str().unwrap()).collect();
    assert_eq!(ran, [second_image.as_str(), first_image.as_str()], "{history}");
    let first_session = &history[1];
    assert_eq!(first_session["image"], "analysis");
    assert_eq!(first_session["environment"], "analysis");
    assert_eq!(first_session["build"], env["builds"].as_array().unwrap().last().unwrap()["id"]);
    assert_eq!(first_session["server"], "");
    assert!(first_session["stopped"].is_string() && first_session["stop_reason"].is_string(), "{first_session}");
    assert_eq!(first_session["resources"]["cpu_millis"], 1000, "{first_session}");
    // Relaunching the first session runs its image again, though the environment moved on.
    let id = first_session["id"].as_i64().unwrap();
    let a = root.post(&format!("/hub/api/users/root/sessions/{id}/relaunch")).await;
    assert!(matches!(a.status, StatusCode::CREATED | StatusCode::ACCEPTED), "{a:?}");
    let server = root.wait_ready("root", None).await;
    assert_eq!(server.image_digest.as_deref(), Some(first_image.as_str()), "{server:?}");
    let running = app
        .docker
        .as_ref()
        .unwrap()
        .docker()
        .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
        .await
        .unwrap();
    let ours = running.iter().find(|c| {
        c.labels.as_ref().is_some_and(|l| {
            l.get("io.labhub.user").map(String::as_str) == Some("root")
                && l.get("io.labhub.hub").map(String::as_str) == Some(app.config.docker.hub_id.as_str())
        })
    });
    assert_eq!(
        ours.and_then(|c| c.image_id.as_deref()),
        Some(first_image.as_str()),
        "the container runs the old image"
    );
    root.stop("root", None).await.unwrap();
    root.wait_stopped("root", None).await;
    let page = root.get_paginated("/hub/api/users/root/sessions?limit=1").await.value();
    assert_eq!(page["_pagination"]["total"], 3, "{page}");
    assert_eq!(page["items"][0]["image_id"], first_image.as_str(), "{page}");
    // Nobody else reads them.
    app.add_user("eve", "correct horse", false).await;
    let eve = app.api_for("eve").await;
    assert_eq!(eve.get("/hub/api/users/root/sessions").await.status, StatusCode::FORBIDDEN);
    assert_eq!(eve.post(&format!("/hub/api/users/root/sessions/{id}/relaunch")).await.status, StatusCode::FORBIDDEN);

    // Images sessions ran are kept from the image collector.
    let report = root.post("/hub/api/environments/collect").await.value();
    assert_eq!(report["removed"], json!([]), "{report}");
    for image in [&first_image, &second_image] {
        assert!(app.docker.as_ref().unwrap().docker().inspect_image(image).await.is_ok(), "{image} kept");
    }

    // A finished build's log is kept: it replays to the same end.
    let log = format!("/hub/api/environments/analysis/builds/{}/log", env["builds"][0]["id"]);
    let replayed = follow(&root, &log).await;
    assert_eq!(outcome(&replayed).message, end.message);

    // An admin pins the first build; starts run it whatever is newer.
    let first_build = env["builds"].as_array().unwrap().last().unwrap()["id"].clone();
    let a = root.put_json("/hub/api/environments/analysis/pin", &json!({"build": first_build})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.value()["image_id"], first_image.as_str(), "{a:?}");
    let image = root.get("/hub/api/images/analysis").await.value();
    assert!(image["reference"].as_str().unwrap().ends_with(&format!(":b{first_build}")), "{image}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repositorys_own_dockerfile_builds_from_a_catalogue_image_and_nothing_else() {
    let sources = tempfile::tempdir().unwrap();
    let (app, root) = env_hub(sources.path()).await;
    let image = root.get("/hub/api/images/jupyterlab").await.value()["reference"].as_str().unwrap().to_string();
    let repo = Repo::new(sources.path());
    repo.commit(&[("binder/Dockerfile", &format!("FROM {image}\nUSER root\nRUN echo ok > /opt/own.txt\nUSER 1000\n"))]);
    let (_, events) = create(&root, json!({"name": "own", "source": repo.path()})).await;
    assert!(outcome(&events).ready, "{events:#?}");
    assert!(events.iter().any(|e| e.message.contains("repository's Dockerfile")), "{events:#?}");

    // Built again unchanged (the same commit, recipe, base and builder): the first build's
    // image is reused without the engine, and the log and the record say so.
    let events = rebuild(&root, "own").await;
    assert!(outcome(&events).ready, "{events:#?}");
    assert!(events.iter().any(|e| e.message.contains("Unchanged since build")), "{events:#?}");
    assert!(!events.iter().any(|e| e.message.starts_with("Step ")), "the engine built nothing: {events:#?}");
    let env = root.get("/hub/api/environments/own").await.value();
    assert_eq!(env["builds"][0]["image_id"], env["builds"][1]["image_id"], "{env}");
    assert_eq!(env["builds"][0]["reused_from"], env["builds"][1]["id"], "{env}");
    let image = root.get("/hub/api/images/own").await.value();
    assert!(image["reference"].as_str().unwrap().ends_with(&format!(":b{}", env["builds"][0]["id"])), "{image}");

    // A new commit is built: a new image (its labels say which commit); the first one is now
    // neither served nor run by any session, so the image collector removes it and says so.
    repo.commit(&[("README.md", "Our own image.\n")]);
    let events = rebuild(&root, "own").await;
    assert!(outcome(&events).ready, "{events:#?}");
    assert!(events.iter().any(|e| e.message.starts_with("Step ")), "{events:#?}");
    let env = root.get("/hub/api/environments/own").await.value();
    assert_eq!(env["builds"][0]["reused_from"], Value::Null, "{env}");
    let (newer, older) =
        (env["builds"][0]["image_id"].as_str().unwrap(), env["builds"][1]["image_id"].as_str().unwrap());
    assert_ne!(newer, older);
    let report = root.post("/hub/api/environments/collect").await.value();
    assert_eq!(report["removed"][0]["id"], older, "{report}");
    assert!(report["freed_bytes"].as_u64().unwrap() > 0, "{report}");
    let docker = app.docker.as_ref().unwrap().docker();
    assert!(docker.inspect_image(older).await.is_err(), "removed");
    assert!(docker.inspect_image(newer).await.is_ok(), "the serving build stays");

    let other = Repo::new(sources.path());
    other.commit(&[("Dockerfile", "FROM debian:bookworm\nRUN true\n")]);
    let (_, events) = create(&root, json!({"name": "foreign", "source": other.path()})).await;
    let end = outcome(&events);
    assert!(end.failed, "{events:#?}");
    assert!(
        end.message.contains("Dockerfile line 1: FROM debian:bookworm is not a catalogue image"),
        "{}",
        end.message
    );
    let env = root.get("/hub/api/environments/foreign").await.value();
    assert_eq!(env["status"], "failed");
    assert_eq!(env["image_id"], Value::Null, "{env}");
    // A catalogue entry without a good build cannot be started.
    let refused = root.start("root", None, json!({"image": "foreign"})).await.unwrap_err();
    assert_eq!(refused.status, 400, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_build_for_their_group_and_members_only_when_their_group_lets_them() {
    let sources = tempfile::tempdir().unwrap();
    let (app, root) = env_hub(sources.path()).await;
    for user in ["lead", "alice", "bob"] {
        app.add_user(user, "correct horse", false).await;
    }
    lab(&app, "team", Some("lead"), &["lead", "alice"], QuotaPatch::default()).await;
    lab(&app, "other", None, &["bob"], QuotaPatch::default()).await;
    let (lead, alice, bob) = (app.api_for("lead").await, app.api_for("alice").await, app.api_for("bob").await);
    let image = root.get("/hub/api/images/jupyterlab").await.value()["reference"].as_str().unwrap().to_string();
    let repo = Repo::new(sources.path());
    repo.commit(&[("Dockerfile", &format!("FROM {image}\nLABEL purpose=test\n"))]);

    let (made, events) = create(&lead, json!({"name": "team-env", "source": repo.path(), "group": "team"})).await;
    assert!(outcome(&events).ready, "{events:#?}");
    assert_eq!(made["holder"], json!({"kind": "group", "name": "team"}));
    let a =
        lead.post_json("/hub/api/environments", &json!({"name": "x", "source": repo.path(), "group": "other"})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "not their group: {a:?}");
    assert!(a.message().contains("leads and admins"), "{}", a.message());
    // A group's environment is its members' to see and start, and nobody else's.
    assert_eq!(alice.get("/hub/api/environments/team-env").await.status, StatusCode::OK);
    assert_eq!(bob.get("/hub/api/environments/team-env").await.status, StatusCode::NOT_FOUND);
    let refused = bob.start("bob", None, json!({"image": "team-env"})).await.unwrap_err();
    assert_eq!(refused.status, 403, "{refused:?}");
    // Members rebuild nothing of their group's.
    let a = alice.post_json("/hub/api/environments/team-env/builds", &json!({})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");

    // A member builds for themselves only once their group lets them.
    let mine = json!({"name": "alice-env", "source": repo.path()});
    let a = alice.post_json("/hub/api/environments", &mine).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    assert!(a.message().contains("ask a lead"), "{}", a.message());
    let a = lead.patch_json("/hub/api/groups/team", &json!({"members_build_environments": true})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let (made, events) = create(&alice, mine).await;
    assert!(outcome(&events).ready, "{events:#?}");
    assert_eq!(made["holder"], json!({"kind": "personal", "name": "alice"}));
    assert_eq!(lead.get("/hub/api/environments/alice-env").await.status, StatusCode::NOT_FOUND, "personal");
    let names: Vec<String> = alice
        .get("/hub/api/environments")
        .await
        .value()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["alice-env", "team-env"]);
    // A member's build reads only the folders the hub allows them.
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = Repo::new(elsewhere.path());
    outside.commit(&[("requirements.txt", "six\n")]);
    let (_, events) = create(&alice, json!({"name": "outside", "source": outside.path()})).await;
    let end = outcome(&events);
    assert!(end.failed && end.message.contains("is not a folder you may build from"), "{}", end.message);
    // Only admins name a base or pin.
    let a = alice
        .post_json("/hub/api/environments", &json!({"name": "y", "source": repo.path(), "base": "jupyterlab"}))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    let a = lead.put_json("/hub/api/environments/team-env/pin", &json!({"build": null})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");

    // The group model says whether members build; a lead turns it off on the group page, and
    // the member then neither builds a new environment nor rebuilds their own.
    assert_eq!(lead.get("/hub/api/groups/team").await.value()["members_build_environments"], true);
    let c = app.signed_in("lead", "correct horse").await;
    let html = c.get(app.at("/hub/groups/team")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("name=\"members_build\" value=\"on\" checked"), "{html}");
    // The page lists the group's environments, with the way to their builds' logs.
    let listed = &html[html.find("data-group-environments").expect("the group's environments")..];
    let listed = &listed[..listed.find("</ul>").unwrap()];
    assert!(listed.contains("href=\"/hub/environments/team-env\""), "{listed}");
    assert!(!listed.contains("alice-env"), "a personal environment is not the group's: {listed}");
    let csrf = app.csrf(&c, "/hub/groups/team").await;
    let origin = app.config.public_url().origin().ascii_serialization();
    let r = c
        .post(app.at("/hub/groups/team/environments"))
        .header("Origin", &origin)
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(lead.get("/hub/api/groups/team").await.value()["members_build_environments"], false);
    let a = alice.post_json("/hub/api/environments/alice-env/builds", &json!({})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    let a = alice.post_json("/hub/api/environments", &json!({"name": "again", "source": repo.path()})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");

    // A group's build time limit (a quota field, within the site's) stops a longer build.
    let a = root.patch_json("/hub/api/groups/team/quota", &json!({"build_timeout_seconds": 2})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.value()["build_timeout_seconds"], 2, "{a:?}");
    repo.commit(&[("Dockerfile", &format!("FROM {image}\nRUN sleep 60\n"))]);
    let a = lead.post_json("/hub/api/environments/team-env/builds", &json!({})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{a:?}");
    let events = follow(&lead, a.value()["log_url"].as_str().unwrap()).await;
    let end = outcome(&events);
    assert!(end.failed && end.message.contains("longer than its limit of 2 s"), "{}", end.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_build_an_environment_follow_its_log_and_relaunch_a_session_from_history() {
    let sources = tempfile::tempdir().unwrap();
    let (app, root) = env_hub(sources.path()).await;
    let image = root.get("/hub/api/images/jupyterlab").await.value()["reference"].as_str().unwrap().to_string();
    let repo = Repo::new(sources.path());
    repo.commit(&[("Dockerfile", &format!("FROM {image}\nLABEL purpose=pages\n"))]);
    let c = app.signed_in("root", "correct horse").await;
    let origin = app.config.public_url().origin().ascii_serialization();
    let csrf = app.csrf(&c, "/hub/environments").await;
    let form = |name: &'static str| {
        vec![("_csrf", csrf.clone()), ("name", name.to_string()), ("source", repo.path()), ("ref", String::new())]
    };

    // A name it cannot take: the form again, as typed, with the reason.
    let r = c.post(app.at("/hub/environments")).header("Origin", &origin).form(&form("Bad Name")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(html.contains("name must be 1-63 characters"), "{html}");
    assert!(html.contains("value=\"Bad Name\""), "the form keeps what was typed");

    let r = c.post(app.at("/hub/environments")).header("Origin", &origin).form(&form("paged")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with("/hub/environments/paged/builds/"), "{to}");
    let html = c.get(app.at(&to)).send().await.unwrap().text().await.unwrap();
    let marker = "data-progress-url=\"";
    let start = html.find(marker).expect("the page follows the build's log") + marker.len();
    let log_url = &html[start..start + html[start..].find('"').unwrap()];
    assert!(html.contains("id=\"spawn-bar\""), "a progress bar");
    assert!(outcome(&follow(&root, log_url).await).ready);
    let html = c.get(app.at("/hub/environments/paged")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("serving") && html.contains("Build again"), "{html}");

    // A session shows in History, and its Relaunch starts it again on the same image.
    root.start("root", None, json!({"image": "paged"})).await.expect("the start is accepted");
    let first = root.wait_ready("root", None).await;
    root.stop("root", None).await.unwrap();
    root.wait_stopped("root", None).await;
    let image_id = first.image_digest.clone().unwrap();
    let html = c.get(app.at("/hub/history")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("paged") && html.contains(&image_id[7..19]), "{html}");
    let session = root.get("/hub/api/users/root/sessions").await.value()[0].clone();
    // Built here, the image has no repository digest: the field says so rather than guessing.
    assert!(session.as_object().unwrap().contains_key("repo_digest"), "{session}");
    assert_eq!(session["repo_digest"], Value::Null, "{session}");
    let id = session["id"].as_i64().unwrap();
    // The home page's History section lists it with its own Relaunch.
    let home = c.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    let section = &home[home.find("data-history").expect("a History section")..];
    assert!(section.contains(&image_id[7..19]), "{section}");
    assert!(section.contains(&format!("action=\"/hub/history/root/{id}/relaunch\"")), "{section}");
    let r = c
        .post(app.at(&format!("/hub/history/root/{id}/relaunch")))
        .header("Origin", &origin)
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/hub/spawn-pending/root");
    let again = root.wait_ready("root", None).await;
    assert_eq!(again.image_digest.as_deref(), Some(image_id.as_str()));
    root.stop("root", None).await.unwrap();
}
