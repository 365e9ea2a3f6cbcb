//! Backups with the real engine and Postgres: the daily run by the hub's (manual) clock, a
//! failed and a missed run told to admins, the retention rule, verify, restoring into the
//! owner's stopped home or into another account, a backup while the member keeps writing,
//! and an orphan archived from the admin page.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_compression::tokio::bufread::GzipDecoder;
use labhub::Config;
use labhub_core::{BackupId, UserName};
use labhub_service::Actor;
use labhub_service::backups::Target;
use labhub_testkit::app::csrf_of;
use labhub_testkit::docker::DockerScope;
use labhub_testkit::{Api, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::common::{start_ready, test_server_binary};
use crate::home_archives::tar_of;

/// A hub on the manual clock with servers in a Docker scope, backups into a fresh folder, an
/// admin `root` and a member `alice`; `adjust` changes the configuration further.
async fn backup_hub(adjust: impl FnOnce(&mut Config)) -> (TestApp, tempfile::TempDir, Api, Api) {
    let dir = tempfile::tempdir().unwrap();
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let backups = dir.path().join("backups");
    let app = TestApp::builder()
        .docker(scope)
        .manual_clock()
        .config(|c| {
            c.backups.dir = Some(backups);
            adjust(c);
        })
        .spawn()
        .await;
    app.add_test_image("test").await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    let root = app.api_for("root").await;
    let alice = app.api_for("alice").await;
    (app, dir, root, alice)
}

fn backup_dir(app: &TestApp) -> PathBuf {
    app.config.backups.dir.clone().unwrap()
}

async fn write_file(api: &Api, user: &str, path: &str, body: &str) -> StatusCode {
    api.answer(api.request(Method::PUT, &format!("/user/{user}/files/{path}")).body(body.to_string())).await.status
}

async fn read_file(api: &Api, user: &str, path: &str) -> (StatusCode, String) {
    let a = api.get(&format!("/user/{user}/files/{path}")).await;
    (a.status, a.text())
}

async fn stop(api: &Api, user: &str) {
    api.stop(user, None).await.expect("the stop is accepted");
    api.wait_stopped(user, None).await;
}

/// Gives `user` a home holding `files` without starting a server (an admin's restore).
async fn seed_home(root: &Api, user: &str, files: &[(&str, &str)]) {
    let put = root.request(Method::PUT, &format!("/hub/api/users/{user}/home/archive")).body(tar_of(files));
    let a = root.answer(put).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
}

/// The regular files of a gzipped tar archive on disk, by path without `./`.
async fn files_in(archive: &Path) -> Vec<(String, Vec<u8>)> {
    let gz = tokio::fs::read(archive).await.unwrap();
    let mut tar = Vec::new();
    GzipDecoder::new(gz.as_slice()).read_to_end(&mut tar).await.expect("valid gzip");
    let mut out = Vec::new();
    for entry in tar::Archive::new(tar.as_slice()).entries().expect("a tar") {
        let mut entry = entry.expect("a tar entry");
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
            let mut body = Vec::new();
            entry.read_to_end(&mut body).unwrap();
            out.push((path, body));
        }
    }
    out.sort();
    out
}

fn text_of(files: &[(String, Vec<u8>)], path: &str) -> Option<String> {
    files.iter().find(|(p, _)| p == path).map(|(_, b)| String::from_utf8_lossy(b).into_owned())
}

/// Waits (up to a minute) until `sql` counts at least one row.
async fn eventually(app: &TestApp, sql: &'static str) {
    for _ in 0..600 {
        if app.count(sql).await > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never true: {sql}");
}

async fn audit_has(app: &TestApp, action: &str) -> bool {
    let n: i64 = labhub_db::sqlx::query_scalar("select count(*) from audit_log where action = $1")
        .bind(action)
        .fetch_one(&app.db)
        .await
        .unwrap();
    n > 0
}

/// Posts an admin page's form (its CSRF token, the hub's Origin) with `browser`, signed in.
async fn post_form(app: &TestApp, browser: &reqwest::Client, page: &str, action: &str) -> StatusCode {
    let r = browser
        .post(app.at(action))
        .header("Origin", app.url.as_str())
        .form(&[("_csrf", csrf_of(page))])
        .send()
        .await
        .unwrap();
    r.status()
}

async fn admin_page(app: &TestApp, path: &str) -> String {
    let admin = app.signed_in("root", "correct horse").await;
    admin.get(app.at(path)).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_backup_runs_at_its_time_and_a_failed_or_missed_one_is_told_to_admins() {
    // The daily time is half an hour from the hub's (manual) clock.
    let start = time::OffsetDateTime::now_utc();
    let at = (start + time::Duration::minutes(30)).time();
    let at = time::Time::from_hms(at.hour(), at.minute(), 0).unwrap();
    let (app, _dir, root, _alice) = backup_hub(|c| {
        c.backups.time = at;
        c.servers.activity_flush_interval = Duration::from_millis(100);
    })
    .await;
    seed_home(&root, "alice", &[("thesis.md", "# Chapter one")]).await;
    let clock = app.clock.clone().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.hub.clone().run_maintenance(async move {
        let _ = stop_rx.await;
    }));

    // Before its time, the loop ticks and nothing runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count("select count(*) from backup_runs").await, 0);

    // At its time, one scheduled run archives alice's home with a manifest beside it.
    clock.advance(time::Duration::minutes(31));
    eventually(&app, "select count(*) from backup_runs where scheduled and ok").await;
    let made = app.hub.backups().list(Actor::System, Some(&UserName::parse("alice").unwrap())).await.unwrap();
    assert_eq!(made.len(), 1, "{made:?}");
    let archive = backup_dir(&app).join(&made[0].file);
    assert_eq!(text_of(&files_in(&archive).await, "thesis.md").as_deref(), Some("# Chapter one"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(archive.with_extension("").with_extension("json")).unwrap()).unwrap();
    assert_eq!(manifest["owner_name"], "alice");
    assert_eq!(manifest["sha256"], made[0].sha256.as_str());
    assert_eq!(manifest["bytes"], made[0].bytes);
    assert!(manifest["owner_id"].as_i64().is_some() && manifest["labhub_version"].is_string(), "{manifest}");
    assert!(audit_has(&app, "backup.create").await);
    // Further ticks of the same day run nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count("select count(*) from backup_runs").await, 1);
    assert!(!admin_page(&app, "/hub/admin/backups").await.contains("did not succeed"));

    // The next day the backup directory cannot be written: the run fails, and admins see it.
    let dir = backup_dir(&app);
    let aside = dir.with_extension("aside");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::write(&dir, "not a folder").unwrap();
    clock.advance(time::Duration::days(1));
    eventually(&app, "select count(*) from backup_runs where scheduled and ok = false").await;
    let page = admin_page(&app, "/hub/admin/backups").await;
    assert!(page.contains("did not succeed"), "a banner on admins' pages: {page}");
    assert!(page.contains("failed"), "the last run's result: {page}");
    assert!(audit_has(&app, "backup.run_failed").await);
    let metrics = reqwest::get(app.at("/hub/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("labhub_backup_runs_total{result=\"failed\"}"), "{metrics}");
    let member_page = app.signed_in("alice", "correct horse").await;
    let home = member_page.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(!home.contains("did not succeed"), "members see no banner");

    // The hub then misses a day (it was not running at that time): recorded, then made up.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&aside, &dir).unwrap();
    stop_tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    clock.advance(time::Duration::days(2) + time::Duration::hours(3));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.hub.clone().run_maintenance(async move {
        let _ = stop_rx.await;
    }));
    eventually(&app, "select count(*) from backup_runs where ok = false and detail like 'missed%'").await;
    eventually(
        &app,
        "select count(*) from backup_runs r where scheduled and ok and started_at >
           (select max(started_at) from backup_runs where detail like 'missed%')",
    )
    .await;
    assert!(audit_has(&app, "backup.missed").await);
    let metrics = reqwest::get(app.at("/hub/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("labhub_backup_runs_total{result=\"missed\"}"), "{metrics}");
    assert!(!admin_page(&app, "/hub/admin/backups").await.contains("did not succeed"), "made up: no banner");
    let _ = stop_tx.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_exactly_the_expired_archives() {
    let (app, _dir, root, _alice) = backup_hub(|c| {
        c.backups.keep_daily = 2;
        c.backups.keep_weekly = 2;
        c.backups.keep_monthly = 0;
    })
    .await;
    app.add_user("bob", "correct horse", false).await;
    seed_home(&root, "alice", &[("a.txt", "a")]).await;
    seed_home(&root, "bob", &[("b.txt", "b")]).await;
    let clock = app.clock.clone().unwrap();
    // To the next Monday, 09:00.
    let now = app.hub.now();
    let days = 7 - i64::from(now.weekday().number_days_from_monday());
    let monday = (now + time::Duration::days(days)).replace_time(time::macros::time!(09:00));
    clock.advance(monday - now);
    let backups = app.hub.backups();
    let (alice, bob) = (UserName::parse("alice").unwrap(), UserName::parse("bob").unwrap());
    let mut made = Vec::new();
    let back_up = async |who: &UserName| {
        let report = backups.create(Actor::System, &Target::User(who.clone())).await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        report.made[0].clone()
    };
    // Week 1: Monday. Week 2: Monday twice, Tuesday, Wednesday twice.
    made.push(back_up(&alice).await);
    let bobs = back_up(&bob).await;
    for step in [
        time::Duration::days(7),
        time::Duration::hours(1),
        time::Duration::hours(23),
        time::Duration::hours(24),
        time::Duration::hours(1),
    ] {
        clock.advance(step);
        made.push(back_up(&alice).await);
    }
    // Kept: the newest of the last two days (Wednesday's second, Tuesday's) and of the last
    // two weeks (that one again, week 1's Monday). Bob's only archive is his newest.
    let kept: Vec<BackupId> = [&made[0], &made[3], &made[5]].iter().map(|b| b.id).collect();
    let listed: Vec<BackupId> = backups.list(Actor::System, Some(&alice)).await.unwrap().iter().map(|b| b.id).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, kept, "alice's archives");
    assert_eq!(backups.list(Actor::System, Some(&bob)).await.unwrap().len(), 1);
    let dir = backup_dir(&app);
    for b in &made {
        let on_disk = dir.join(&b.file).exists();
        let manifest = dir.join(format!("{}.json", b.file.trim_end_matches(".tar.gz"))).exists();
        assert_eq!(on_disk, kept.contains(&b.id), "{}", b.file);
        assert_eq!(manifest, kept.contains(&b.id), "the manifest of {}", b.file);
    }
    assert!(dir.join(&bobs.file).exists());
    assert!(audit_has(&app, "backup.expire").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_corrupted_archive_and_restore_refuses_it() {
    let (app, _dir, root, alice) = backup_hub(|_| {}).await;
    seed_home(&root, "alice", &[("data.csv", &"1,2,3\n".repeat(5000))]).await;
    let made = root.post_json("/hub/api/backups", &json!({ "user": "alice" })).await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    let id = made.value()["made"][0]["id"].as_i64().unwrap();
    let file = made.value()["made"][0]["file"].as_str().unwrap().to_string();
    let verify = format!("/hub/api/backups/{id}/verify");
    assert_eq!(alice.post(&verify).await.status, StatusCode::FORBIDDEN, "admins only");
    let good = root.post(&verify).await;
    assert_eq!(good.value()["ok"], true, "{good:?}");

    // One byte changed in the middle of the archive.
    let path = backup_dir(&app).join(&file);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let bad = root.post(&verify).await;
    assert_eq!(bad.status, StatusCode::OK);
    assert_eq!(bad.value()["ok"], false, "{bad:?}");
    assert!(bad.value()["detail"].as_str().unwrap().contains("has changed"), "{bad:?}");
    let refused = root.post_json(&format!("/hub/api/backups/{id}/restore"), &json!({ "user": "alice" })).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert!(refused.message().contains("has changed"), "{refused:?}");
    assert!(audit_has(&app, "backup.verify").await);

    // From the admin page too.
    let admin = app.signed_in("root", "correct horse").await;
    let page = admin.get(app.at("/hub/admin/backups")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("/hub/admin/backups/{id}/verify")), "{page}");
    let posted = post_form(&app, &admin, &page, &format!("/hub/admin/backups/{id}/verify")).await;
    assert_eq!(posted, StatusCode::SEE_OTHER);
    let page = admin.get(app.at("/hub/admin/backups")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("is damaged"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_a_running_server_is_refused_and_into_a_stopped_one_brings_the_files_back() {
    let (_app, _dir, root, alice) = backup_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    assert_eq!(write_file(&alice, "alice", "thesis.md", "# Draft one").await, StatusCode::OK);
    let made = root.post_json("/hub/api/backups", &json!({ "user": "alice" })).await;
    let id = made.value()["made"][0]["id"].as_i64().unwrap();
    assert_eq!(write_file(&alice, "alice", "thesis.md", "# Lost by mistake").await, StatusCode::OK);

    let restore = format!("/hub/api/backups/{id}/restore");
    let refused = root.post_json(&restore, &json!({ "user": "alice" })).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert!(refused.message().contains("stop it before restoring"), "{refused:?}");
    assert_eq!(read_file(&alice, "alice", "thesis.md").await.1, "# Lost by mistake", "nothing was written");
    let wrong = root.post_json(&restore, &json!({ "user": "root" })).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "not root's archive: {wrong:?}");

    stop(&alice, "alice").await;
    let done = root.post_json(&restore, &json!({ "user": "alice" })).await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}");
    assert_eq!(done.value()["place"], "~");
    start_ready(&alice, "alice").await;
    assert_eq!(read_file(&alice, "alice", "thesis.md").await, (StatusCode::OK, "# Draft one".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_another_account_gives_it_the_files_and_nobody_else() {
    let (app, _dir, root, alice) = backup_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    app.add_user("carol", "correct horse", false).await;
    let (bob, carol) = (app.api_for("bob").await, app.api_for("carol").await);
    start_ready(&alice, "alice").await;
    assert_eq!(write_file(&alice, "alice", "results/table.csv", "x,y\n1,2").await, StatusCode::OK);
    let made = root.post_json("/hub/api/backups", &json!({ "user": "alice" })).await;
    let id = made.value()["made"][0]["id"].as_i64().unwrap();

    // While alice's server runs: it is not her home that changes.
    let given = root.post_json(&format!("/hub/api/backups/{id}/restore"), &json!({ "into": "bob" })).await;
    assert_eq!(given.status, StatusCode::OK, "{given:?}");
    assert_eq!(given.value()["place"], format!("~/restored/backup-{id}"));
    assert!(audit_has(&app, "backup.restore").await);
    start_ready(&bob, "bob").await;
    let place = format!("restored/backup-{id}/results/table.csv");
    assert_eq!(read_file(&bob, "bob", &place).await, (StatusCode::OK, "x,y\n1,2".into()));
    assert_eq!(write_file(&bob, "bob", &format!("restored/backup-{id}/mine.txt"), "bob's").await, StatusCode::OK);
    start_ready(&carol, "carol").await;
    assert_eq!(read_file(&carol, "carol", &place).await.0, StatusCode::NOT_FOUND, "not carol's");
    assert_eq!(read_file(&alice, "alice", &place).await.0, StatusCode::NOT_FOUND, "not in alice's running home");
    stop(&alice, "alice").await;
    start_ready(&alice, "alice").await;
    assert_eq!(read_file(&alice, "alice", &place).await.0, StatusCode::NOT_FOUND, "nor after her restart");
    assert_eq!(read_file(&alice, "alice", "results/table.csv").await.0, StatusCode::OK);

    // What was restored for bob counts against his storage limit like his home does.
    assert_eq!(
        write_file(&bob, "bob", &format!("restored/backup-{id}/big.bin"), &"x".repeat(256 << 10)).await,
        StatusCode::OK
    );
    stop(&bob, "bob").await;
    let limit = labhub_service::quotas::QuotaPatch { storage_bytes: Some(Some(128 << 10)), ..Default::default() };
    crate::groups::lab(&app, "lab", None, &["bob"], limit).await;
    let refused = bob.start("bob", None, json!({"image": "test"})).await.expect_err("past the limit");
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused}");
    assert!(refused.message.contains("more than your limit of 128 KiB"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_while_the_member_keeps_writing_is_the_files_as_they_were_at_one_instant() {
    let (app, _dir, root, alice) = backup_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    // The member's program writes log/N.txt whole, then records N in zz-counter.txt, on and
    // on. The engine reads files in name order, the counter after the logs: a read that let
    // the writer go on would find the counter ahead of the newest log it read.
    let chunk = |n: u64| format!("{n:08}\n").repeat(8 * 1024);
    let written = Arc::new(AtomicU64::new(0));
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop_writing, alice) = (written.clone(), stop_writing.clone(), app.api_for("alice").await);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop_writing.load(Ordering::Relaxed) {
                n += 1;
                assert_eq!(write_file(&alice, "alice", &format!("log/{n:06}.txt"), &chunk(n)).await, StatusCode::OK);
                assert_eq!(write_file(&alice, "alice", "zz-counter.txt", &n.to_string()).await, StatusCode::OK);
                written.store(n, Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) < 150 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Read at once: the second archive of the day makes the first expire.
    let mut archives = Vec::new();
    for _ in 0..2 {
        let made = root.post_json("/hub/api/backups", &json!({ "user": "alice" })).await;
        assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
        let file = made.value()["made"][0]["file"].as_str().unwrap().to_string();
        archives.push((files_in(&backup_dir(&app).join(&file)).await, file));
    }
    let before = written.load(Ordering::Relaxed);
    while written.load(Ordering::Relaxed) < before + 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_writing.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // Each archive is one instant of the writer's work: the counter it shows, every log up to
    // it whole, and at most the one log written after it (the writer was paused between the
    // two); nothing the writer did later.
    for (files, file) in archives {
        let counter: u64 = text_of(&files, "zz-counter.txt").expect("the counter").trim().parse().unwrap();
        assert!(counter >= 150, "{counter}");
        let logs: Vec<(u64, &Vec<u8>)> = files
            .iter()
            .filter_map(|(p, b)| Some((p.strip_prefix("log/")?.strip_suffix(".txt")?.parse().ok()?, b)))
            .collect();
        let newest = logs.iter().map(|(n, _)| *n).max().unwrap();
        assert!(newest == counter || newest == counter + 1, "{file}: counter {counter}, newest log {newest}");
        assert_eq!(logs.len() as u64, newest, "{file}: every log up to the newest");
        for (n, body) in logs {
            assert_eq!(body.as_slice(), chunk(n).as_bytes(), "{file}: log {n} is whole");
        }
    }
    // The member's server runs on, unharmed.
    assert_eq!(read_file(&alice, "alice", "zz-counter.txt").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_is_archived_to_the_backup_directory_from_the_admin_page() {
    let (app, _dir, root, _alice) = backup_hub(|_| {}).await;
    app.add_user("zoe", "correct horse", false).await;
    seed_home(&root, "zoe", &[("paper/draft.tex", "\\section{Results}")]).await;
    assert_eq!(root.delete("/hub/api/users/zoe").await.status, StatusCode::NO_CONTENT);
    let orphans = app.hub.homes().orphans(Actor::System).await.unwrap();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    let volume = orphans[0].volume.clone();

    let admin = app.signed_in("root", "correct horse").await;
    let page = admin.get(app.at("/hub/admin/storage")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("/hub/admin/storage/{volume}/archive")), "{page}");
    let posted = post_form(&app, &admin, &page, &format!("/hub/admin/storage/{volume}/archive")).await;
    assert_eq!(posted, StatusCode::SEE_OTHER);
    let page = admin.get(app.at("/hub/admin/storage")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("Archived {volume}")), "{page}");

    let archived = app.hub.backups().list(Actor::System, None).await.unwrap();
    assert_eq!(archived.len(), 1, "{archived:?}");
    let b = &archived[0];
    assert_eq!(b.kind.as_str(), "orphan");
    assert_eq!(b.owner_id, orphans[0].former_id.map(|id| id.get()), "{b:?}");
    assert!(b.owner_name.contains("deleted"), "{b:?}");
    assert!(b.file.starts_with("orphan/"), "{b:?}");
    let files = files_in(&backup_dir(&app).join(&b.file)).await;
    assert_eq!(text_of(&files, "paper/draft.tex").as_deref(), Some("\\section{Results}"));
    assert!(audit_has(&app, "backup.create").await);
    // The orphan stays until an admin deletes it, and the backups page lists the archive.
    assert_eq!(app.hub.homes().orphans(Actor::System).await.unwrap().len(), 1);
    let page = admin.get(app.at("/hub/admin/backups")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("orphan") && page.contains(&b.id.to_string()), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_commands_create_list_verify_and_restore() {
    let (app, dir, root, _alice) = backup_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    seed_home(&root, "alice", &[("notes.txt", "from the command line")]).await;
    let url = labhub_testkit::pg::TestCluster::get().url(&app.db_name);
    let data = dir.path().join("data");
    let backups = backup_dir(&app);
    let docker = app.config.docker.clone();
    let labhub = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_labhub-exe"))
            .args(args)
            .env_remove("LABHUB_CONFIG")
            .env("LABHUB_LOG", "warn")
            .env("DATABASE_URL", &url)
            .env("LABHUB_DATA_DIR", &data)
            .env("LABHUB_DOCKER__HUB_ID", docker.hub_id.as_str())
            .env("LABHUB_DOCKER__NETWORK", docker.network.as_str())
            .env("LABHUB_BACKUPS__DIR", &backups)
            .output()
            .expect("running labhub");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = labhub(&["backup", "create", "--user", "alice"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 archive"), "{out}");
    let (code, out, err) = labhub(&["backup", "list", "--user", "alice"]);
    assert_eq!(code, 0, "{err}");
    let id = out.lines().nth(1).and_then(|l| l.split_whitespace().next()).expect("one archive").to_string();
    assert!(out.contains("alice") && out.contains("home"), "{out}");
    let (code, out, err) = labhub(&["backup", "verify", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("intact"), "{out}");
    let (code, _, err) = labhub(&["backup", "restore", &id, "--user", "bob"]);
    assert_ne!(code, 0);
    assert!(err.contains("not of bob's home") && err.trim().lines().count() == 1, "{err}");
    let (code, out, err) = labhub(&["backup", "restore", &id, "--user", "alice", "--into", "bob"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("~/restored/backup-{id} of bob")), "{out}");
    let (code, _, err) = labhub(&["backup", "create", "--user", "nobody"]);
    assert_ne!(code, 0);
    assert!(err.contains("no user named nobody"), "{err}");
    let (code, _, err) = labhub(&["backup", "create"]);
    assert_ne!(code, 0);
    assert!(err.contains("say what to back up"), "{err}");
    let bob = app.api_for("bob").await;
    start_ready(&bob, "bob").await;
    let file = format!("restored/backup-{id}/notes.txt");
    assert_eq!(read_file(&bob, "bob", &file).await, (StatusCode::OK, "from the command line".into()));
}

/// Whether the engine has `user`'s default server paused.
async fn is_paused(app: &TestApp) -> bool {
    let state: serde_json::Value = labhub_db::sqlx::query_scalar("select spawner_state from servers where name = ''")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let id = state["container_id"].as_str().expect("a container id");
    let options = None::<bollard::query_parameters::InspectContainerOptions>;
    let inspected = app.docker.as_ref().unwrap().docker().inspect_container(id, options).await.unwrap();
    inspected.state.and_then(|s| s.paused).unwrap_or(false)
}

/// A server frozen by a backup read whose process died stays frozen while another process
/// holds the run lock (a replica booting, or ticking, mid-run must not thaw a read in
/// progress), and is resumed by the next process that takes the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_left_paused_by_a_dead_backup_is_resumed_only_when_no_run_holds_the_lock() {
    let (app, _dir, _root, alice) = backup_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    // Another replica's run is reading: it holds the lock and has the server paused.
    let other = labhub_db::backups::try_lock_runs(&app.db).await.unwrap().expect("the run lock is free");
    let state: serde_json::Value = labhub_db::sqlx::query_scalar("select spawner_state from servers where name = ''")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let id = state["container_id"].as_str().unwrap().to_string();
    app.docker.as_ref().unwrap().docker().pause_container(&id).await.unwrap();

    // This process boots (reconciles) and ticks during that run: the server stays frozen.
    app.hub.servers().reconcile().await.unwrap();
    assert_eq!(app.hub.backups().resume_left_paused().await.unwrap(), 0);
    assert!(is_paused(&app).await, "a read in progress elsewhere is not thawed");

    // That replica dies: its connection, and the lock with it, goes.
    drop(other);
    let mut resumed = 0;
    for _ in 0..200 {
        resumed = app.hub.backups().resume_left_paused().await.unwrap();
        if resumed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(resumed, 1);
    assert!(!is_paused(&app).await);
    assert_eq!(write_file(&alice, "alice", "after.txt", "thawed").await, StatusCode::OK, "the server answers again");
}

/// A restore into a home marks it in Postgres, so a start through any replica is refused until
/// it is done, and the mark goes with a replica that dies mid-restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_running_on_another_replica_holds_off_starts_here() {
    let (app, _dir, _root, alice) = backup_hub(|_| {}).await;
    let user = app.hub.accounts().get(Actor::System, &UserName::parse("alice").unwrap()).await.unwrap().id;
    // Another replica restores into alice's home.
    let other = labhub_db::homes::mark_restoring(&app.db, user).await.unwrap().expect("no restore yet");
    let refused = alice.start("alice", None, json!({"image": "test"})).await.expect_err("a start during the restore");
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.message.contains("being restored"), "{}", refused.message);
    assert!(labhub_db::homes::mark_restoring(&app.db, user).await.unwrap().is_none(), "one restore at a time");
    // That replica dies mid-restore: the mark goes with its connection, and starts work again.
    drop(other);
    let mut started = None;
    for _ in 0..200 {
        match alice.start("alice", None, json!({"image": "test"})).await {
            Ok((status, _)) => {
                started = Some(status);
                break;
            }
            Err(e) if e.status == StatusCode::CONFLICT => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(matches!(started, Some(StatusCode::CREATED | StatusCode::ACCEPTED)), "{started:?}");
    alice.wait_ready("alice", None).await;
}
