//! The built-in idle culler (its passes, and its loop running on its own, both by the hub's
//! manual clock) and the API fields the external `jupyterhub-idle-culler` relies on.

use std::sync::Arc;
use std::time::Duration;

use labhub_core::ManualClock;
use labhub_service::quotas::QuotaPatch;
use labhub_testkit::api::{Paginated, UserModel};
use labhub_testkit::docker::DockerScope;
use labhub_testkit::{Api, TestApp};
use reqwest::StatusCode;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::common::{docker_hub, start_ready, test_server_binary};
use crate::groups::{audited, lab};
use labhub_testkit::app::script;

/// A hub on a manual clock whose servers run in their own Docker scope, with the test image,
/// an admin and two members; returns the app, its clock and alice's and bob's API clients.
async fn manual_hub(adjust: impl FnOnce(&mut labhub::Config)) -> (TestApp, ManualClock, Api, Api) {
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let app = TestApp::builder().docker(scope).manual_clock().config(adjust).spawn().await;
    app.add_test_image("test").await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let alice = app.api_for("alice").await;
    let bob = app.api_for("bob").await;
    let clock = app.clock.clone().expect("a manual clock");
    (app, clock, alice, bob)
}

/// One proxied request to a user's server: the activity the culler counts.
async fn use_server(app: &TestApp, api: &Api, user: &str) {
    let r = script().get(app.at(&format!("/user/{user}/api/status"))).header("Authorization", api.authorization());
    assert_eq!(r.send().await.unwrap().status(), 200);
}

async fn culled(app: &TestApp) -> Vec<(String, String)> {
    let culled = app.hub.culler().cull_once().await.unwrap().into_iter().map(|c| (c.server, c.reason)).collect();
    // The pass let its lock go as it ended: the next pass, right after, is not skipped.
    let next = labhub_db::replicas::try_lock(&app.db, labhub_db::replicas::Job::Culler).await.unwrap();
    assert!(next.is_some(), "the culler's lock is still held after its pass");
    next.unwrap().release().await.unwrap();
    culled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_culler_stops_idle_and_expired_servers_by_the_hubs_clock() {
    let (app, clock, alice, bob) = manual_hub(|_| {}).await;
    lab(
        &app,
        "lab",
        None,
        &["alice"],
        QuotaPatch {
            idle_timeout: Some(Some(Duration::from_secs(30 * 60))),
            max_lifetime: Some(Some(Duration::from_secs(2 * 3600))),
            ..QuotaPatch::default()
        },
    )
    .await;
    // alice runs under lab (30 minutes idle, 2 hours at most); bob under the site default (1 hour idle).
    start_ready(&alice, "alice").await;
    start_ready(&bob, "bob").await;
    let minutes = |m: i64| time::Duration::minutes(m);
    assert!(culled(&app).await.is_empty());

    clock.advance(minutes(20));
    use_server(&app, &alice, "alice").await;
    assert!(culled(&app).await.is_empty(), "nobody idle long enough");
    clock.advance(minutes(25));
    assert!(culled(&app).await.is_empty(), "alice was active 25 minutes ago, bob 45");
    use_server(&app, &alice, "alice").await;
    clock.advance(minutes(20));
    assert_eq!(culled(&app).await, [("bob".to_string(), "stopped after 1 hour without activity".to_string())]);

    // Active, but past the group's lifetime.
    for _ in 0..3 {
        use_server(&app, &alice, "alice").await;
        clock.advance(minutes(20));
        let now = culled(&app).await;
        if !now.is_empty() {
            assert_eq!(
                now,
                [("alice".to_string(), "stopped after running for 2 hours, the longest a server may run".to_string())]
            );
            break;
        }
    }
    assert_eq!(app.count("select count(*) from servers where state <> 'stopped'").await, 0);
    let listed = labhub_core::spawner::Spawner::list(app.docker.as_ref().unwrap().spawner.as_ref()).await.unwrap();
    assert!(listed.is_empty(), "the containers are gone: {listed:?}");
    assert_eq!(app.hub.routes().len(), 0);

    // The owner sees why; the audit log says who (the hub) and what.
    let b = app.signed_in("bob", "correct horse").await;
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("stopped after 1 hour without activity"), "{home}");
    let culls = audited(&app, "server.cull").await;
    assert_eq!(culls.len(), 2);
    assert!(culls.iter().all(|c| c.0 == "system"));
    assert_eq!(culls[0].1, "bob");
    assert_eq!(culls[0].2["before"], "running");
    assert_eq!(culls[0].2["after"], "stopped");
    assert_eq!(culls[0].2["reason"], "stopped after 1 hour without activity");
    assert_eq!(culls[0].2["idle_seconds"], 65 * 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_culler_on_its_own_stops_an_idle_server_and_spares_a_used_one() {
    // The loop passes every second of real time; idleness is by the hub's clock, which only
    // the test moves.
    let (app, clock, alice, bob) = manual_hub(|c| c.culler.interval = Duration::from_secs(1)).await;
    start_ready(&alice, "alice").await;
    start_ready(&bob, "bob").await;
    let culler = tokio::spawn(app.hub.clone().run_culler(std::future::pending()));
    // Both under the site default's hour: alice used 30 minutes ago, bob idle for 70.
    clock.advance(time::Duration::minutes(40));
    use_server(&app, &alice, "alice").await;
    // A pass that wrote the proxy's activity out just before this use, and reads the clock after
    // the jump below, would judge alice's server by its older activity; with the use in the
    // database, that pass's last check sees it and leaves the server running.
    app.hub.servers().flush_activity().await.unwrap();
    clock.advance(time::Duration::minutes(30));
    // Left alone, bob's goes; the pass that stopped it judged alice's by the same clock.
    bob.wait_stopped("bob", None).await;
    assert!(alice.user("alice").await.is_ready(None), "an active server is not culled");
    use_server(&app, &alice, "alice").await;
    let reason: Option<String> = labhub_db::sqlx::query_scalar(
        "select s.stop_reason from servers s join users u using (user_id) where u.name = 'bob'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(reason.as_deref(), Some("stopped after 1 hour without activity"));
    let r = script().get(app.at("/user/bob/api/status")).header("Authorization", bob.authorization()).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    culler.abort();
}

fn parse_time(s: &str, what: &str) -> OffsetDateTime {
    assert!(s.ends_with('Z'), "{what} is UTC with a Z: {s}");
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{what} {s}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_idle_culler_finds_every_field_it_reads() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    let bob = app.api_for("bob").await;
    start_ready(&alice, "alice").await;
    let (status, _) = alice.start("alice", Some("gpu"), json!({"image": "test"})).await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    start_ready(&bob, "bob").await;

    // It compares the version with 1.3.0 to decide whether the state filter exists.
    let info = root.get("/hub/api/info").await.value();
    let version: Vec<u32> = info["version"].as_str().unwrap().split('.').map(|p| p.parse().unwrap()).collect();
    assert!(version >= vec![1, 3, 0], "{info}");

    // It walks the pages of ready users by following `next.url`. The typed models make every
    // field it reads required: `admin` a boolean, `pending` present even when null, and so on.
    let mut url = "/hub/api/users?state=ready&limit=1".to_string();
    let mut users: Vec<UserModel> = Vec::new();
    loop {
        let page: Paginated<UserModel> = root.get_paginated(&url).await.json();
        users.extend(page.items);
        match page.pagination.next {
            Some(next) => url = next.url,
            None => break,
        }
    }
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"], "only users with a ready server, one page each");
    let now = OffsetDateTime::now_utc();
    for u in &users {
        let created = parse_time(&u.created, "created");
        if let Some(active) = &u.last_activity {
            parse_time(active, "the user's last_activity");
        }
        assert!(created <= now);
        for (name, s) in &u.servers {
            assert_eq!(&s.name, name);
            assert!(s.ready);
            assert_eq!(s.pending, None, "pending is null: {s:?}");
            assert!(s.url.starts_with(&format!("/user/{}/", u.name)));
            let started = parse_time(s.started.as_deref().expect("started"), "started");
            let active = parse_time(s.last_activity.as_deref().expect("last_activity"), "the server's last_activity");
            assert!(started <= active && active <= now + time::Duration::seconds(5), "{s:?}");
        }
    }
    assert_eq!(users[0].servers.len(), 2, "alice's default and named servers");

    // How it stops them: a named server with {"remove": true}, a default one plainly.
    assert_eq!(root.remove("alice", "gpu").await, Ok(StatusCode::NO_CONTENT));
    assert_eq!(root.stop("bob", None).await, Ok(StatusCode::NO_CONTENT));
    assert_eq!(root.users("state=ready").await.len(), 1);
    assert_eq!(app.count("select count(*) from servers where name = 'gpu'").await, 0, "removed");
}

/// alice's user model, as the external idle culler reads it.
async fn model(api: &Api) -> serde_json::Value {
    let a = api.get("/hub/api/users/alice").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    a.value()
}

/// A time the model holds, as an instant.
fn time_of(v: &serde_json::Value, what: &str) -> OffsetDateTime {
    parse_time(v.as_str().unwrap_or_else(|| panic!("{what} is a time: {v}")), what)
}

/// `a - b`, which the test expects to be `expected` up to the database's and the proxy's rounding.
fn assert_apart(a: OffsetDateTime, b: OffsetDateTime, expected: time::Duration, what: &str) {
    let off = (a - b - expected).abs();
    assert!(off < time::Duration::milliseconds(5), "{what}: {a} - {b} is {}, not {expected}", a - b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_proxied_activity_at_once_without_waiting_for_a_flush() {
    let (app, clock, alice, _) = manual_hub(|_| {}).await;
    start_ready(&alice, "alice").await;
    let started = time_of(&model(&alice).await["servers"][""]["started"], "started");

    clock.advance(time::Duration::minutes(7));
    use_server(&app, &alice, "alice").await;
    // No flush ran (the test hub runs no maintenance): the proxy's stamp is what the API shows.
    let v = model(&alice).await;
    let s = &v["servers"][""];
    let seven = time::Duration::minutes(7);
    assert_apart(time_of(&s["last_activity"], "the server's last_activity"), started, seven, "server");
    assert_apart(time_of(&v["last_activity"], "the user's last_activity"), started, seven, "user");
    // The site default's hour of idleness counts from that use.
    assert_apart(time_of(&s["cull_at"], "cull_at"), started, seven + time::Duration::hours(1), "cull_at");
    let root = app.api_for("root").await;
    let listed = root.get("/hub/api/users?state=ready").await.value();
    let s = &listed[0]["servers"][""];
    assert_apart(time_of(&s["last_activity"], "the listed last_activity"), started, seven, "listed");
    assert_eq!(
        app.count("select count(*) from servers where last_activity > started_at").await,
        0,
        "the database has not been told yet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_see_when_a_server_will_be_culled_and_can_keep_it_running() {
    let (app, clock, alice, _) = manual_hub(|_| {}).await;
    lab(
        &app,
        "lab",
        None,
        &["alice"],
        QuotaPatch {
            idle_timeout: Some(Some(Duration::from_secs(30 * 60))),
            max_lifetime: Some(Some(Duration::from_secs(8 * 3600))),
            ..QuotaPatch::default()
        },
    )
    .await;
    start_ready(&alice, "alice").await;
    let s = model(&alice).await["servers"][""].clone();
    let started = time_of(&s["started"], "started");
    assert_apart(time_of(&s["cull_at"], "cull_at"), started, time::Duration::minutes(30), "cull_at");
    assert_eq!(s["cull_reason"], "idle");

    let b = app.signed_in("alice", "correct horse").await;
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("stops at") && home.contains("after 30 minutes without activity"), "{home}");
    assert!(home.contains("Keep it running"), "{home}");

    clock.advance(time::Duration::minutes(20));
    let r = b
        .post(app.at("/hub/home/keep"))
        .form(&[("_csrf", labhub_testkit::app::csrf_of(&home).as_str()), ("server", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let s = model(&alice).await["servers"][""].clone();
    assert_apart(time_of(&s["cull_at"], "cull_at"), started, time::Duration::minutes(50), "kept");
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("counts as used now"), "the button says what it did: {home}");

    clock.advance(time::Duration::minutes(25));
    assert!(culled(&app).await.is_empty(), "kept running 25 minutes ago");
    clock.advance(time::Duration::minutes(6));
    assert_eq!(culled(&app).await, [("alice".to_string(), "stopped after 30 minutes without activity".to_string())]);
    let s = model(&alice).await;
    assert!(s["servers"].as_object().unwrap().is_empty() || s["servers"][""]["cull_at"].is_null(), "{s}");
}
