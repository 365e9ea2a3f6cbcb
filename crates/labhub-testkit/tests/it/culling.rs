//! The built-in idle culler (on a manual clock, and for real with a short timeout) and the API
//! fields the external `jupyterhub-idle-culler` relies on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use labhub_core::ManualClock;
use labhub_service::quotas::QuotaPatch;
use labhub_testkit::TestApp;
use labhub_testkit::docker::DockerScope;
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::common::{docker_hub, start_ready, test_server_binary, wait_for_user};
use crate::groups::{audited, lab};
use labhub_testkit::app::script;

/// A hub on a manual clock whose servers run in their own Docker scope, with the test image,
/// an admin and two members; returns the app, its clock and alice's and bob's tokens.
async fn manual_hub() -> (TestApp, ManualClock, String, String) {
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let app = TestApp::builder().docker(scope).manual_clock().spawn().await;
    app.add_test_image("test").await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let alice = format!("token {}", app.token("alice").await);
    let bob = format!("token {}", app.token("bob").await);
    let clock = app.clock.clone().expect("a manual clock");
    (app, clock, alice, bob)
}

/// One proxied request to a user's server: the activity the culler counts.
async fn use_server(app: &TestApp, auth: &str, user: &str) {
    let r = script().get(app.at(&format!("/user/{user}/api/status"))).header("Authorization", auth).send().await;
    assert_eq!(r.unwrap().status(), 200);
}

async fn culled(app: &TestApp) -> Vec<(String, String)> {
    app.hub.culler().cull_once().await.unwrap().into_iter().map(|c| (c.server, c.reason)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_culler_stops_idle_and_expired_servers_by_the_hubs_clock() {
    let (app, clock, alice, bob) = manual_hub().await;
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
    start_ready(&app, &alice, "alice").await;
    start_ready(&app, &bob, "bob").await;
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
async fn a_real_short_idle_timeout_stops_an_unused_server_and_spares_a_used_one() {
    let (app, _, alice) = docker_hub(|c| {
        c.quota.idle_timeout = Some(Duration::from_secs(3));
        c.culler.interval = Duration::from_secs(1);
    })
    .await;
    let culler = tokio::spawn(app.hub.clone().run_culler(std::future::pending()));
    start_ready(&app, &alice, "alice").await;
    // Used every half second for twice the timeout: it stays.
    let busy_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < busy_until {
        use_server(&app, &alice, "alice").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let v = script().get(app.at("/hub/api/users/alice")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(v.json::<Value>().await.unwrap()["servers"][""]["ready"], true, "an active server is not culled");
    // Left alone, it goes.
    wait_for_user(&app, &alice, "alice", Duration::from_secs(20), |v| {
        v["servers"].as_object().is_some_and(|s| s.is_empty())
    })
    .await;
    let reason: Option<String> =
        labhub_db::sqlx::query_scalar("select stop_reason from servers").fetch_one(&app.db).await.unwrap();
    assert_eq!(reason.as_deref(), Some("stopped after 3 seconds without activity"));
    let r = script().get(app.at("/user/alice/api/status")).header("Authorization", &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    culler.abort();
}

fn parse_time(v: &Value, what: &str) -> OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("{what} is a string: {v}"));
    assert!(s.ends_with('Z'), "{what} is UTC with a Z: {s}");
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{what} {s}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_idle_culler_finds_every_field_it_reads() {
    let (app, root, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    let bob = format!("token {}", app.token("bob").await);
    start_ready(&app, &alice, "alice").await;
    let r = script()
        .post(app.at("/hub/api/users/alice/servers/gpu"))
        .header("Authorization", &alice)
        .json(&json!({"image": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    start_ready(&app, &bob, "bob").await;
    let c = script();

    // It compares the version with 1.3.0 to decide whether the state filter exists.
    let info: Value =
        c.get(app.at("/hub/api/info")).header("Authorization", &root).send().await.unwrap().json().await.unwrap();
    let version: Vec<u32> = info["version"].as_str().unwrap().split('.').map(|p| p.parse().unwrap()).collect();
    assert!(version >= vec![1, 3, 0], "{info}");

    // It walks the pages of ready users by following `next.url`.
    let mut url = app.at("/hub/api/users?state=ready&limit=1");
    let mut users = Vec::new();
    loop {
        let page: Value = c
            .get(&url)
            .header("Authorization", &root)
            .header("Accept", "application/jupyterhub-pagination+json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        users.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["_pagination"]["next"]["url"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    let names: Vec<&str> = users.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"], "only users with a ready server, one page each");
    let now = OffsetDateTime::now_utc();
    for u in &users {
        assert!(u["admin"].is_boolean());
        let created = parse_time(&u["created"], "created");
        if !u["last_activity"].is_null() {
            parse_time(&u["last_activity"], "the user's last_activity");
        }
        assert!(created <= now);
        for (name, s) in u["servers"].as_object().unwrap() {
            assert_eq!(s["name"], name.as_str());
            assert_eq!(s["ready"], true);
            assert!(s.get("pending").is_some_and(Value::is_null), "pending is present and null: {s}");
            assert!(s["url"].as_str().unwrap().starts_with(&format!("/user/{}/", u["name"].as_str().unwrap())));
            let started = parse_time(&s["started"], "started");
            let active = parse_time(&s["last_activity"], "the server's last_activity");
            assert!(started <= active && active <= now + time::Duration::seconds(5), "{s}");
        }
    }
    assert_eq!(users[0]["servers"].as_object().unwrap().len(), 2, "alice's default and named servers");

    // How it stops them: a named server with {"remove": true}, a default one plainly.
    let r = c
        .delete(app.at("/hub/api/users/alice/servers/gpu"))
        .header("Authorization", &root)
        .json(&json!({"remove": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c.delete(app.at("/hub/api/users/bob/server")).header("Authorization", &root).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let ready: Value = c
        .get(app.at("/hub/api/users?state=ready"))
        .header("Authorization", &root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready.as_array().unwrap().len(), 1);
    assert_eq!(app.count("select count(*) from servers where name = 'gpu'").await, 0, "removed");
}

/// alice's user model, as the external idle culler reads it.
async fn model(app: &TestApp, auth: &str) -> Value {
    let r = script().get(app.at("/hub/api/users/alice")).header("Authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// `a - b`, which the test expects to be `expected` up to the database's and the proxy's rounding.
fn assert_apart(a: OffsetDateTime, b: OffsetDateTime, expected: time::Duration, what: &str) {
    let off = (a - b - expected).abs();
    assert!(off < time::Duration::milliseconds(5), "{what}: {a} - {b} is {}, not {expected}", a - b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_proxied_activity_at_once_without_waiting_for_a_flush() {
    let (app, clock, alice, _) = manual_hub().await;
    start_ready(&app, &alice, "alice").await;
    let started = parse_time(&model(&app, &alice).await["servers"][""]["started"], "started");

    clock.advance(time::Duration::minutes(7));
    use_server(&app, &alice, "alice").await;
    // No flush ran (the test hub runs no maintenance): the proxy's stamp is what the API shows.
    let v = model(&app, &alice).await;
    let s = &v["servers"][""];
    let seven = time::Duration::minutes(7);
    assert_apart(parse_time(&s["last_activity"], "the server's last_activity"), started, seven, "server");
    assert_apart(parse_time(&v["last_activity"], "the user's last_activity"), started, seven, "user");
    // The site default's hour of idleness counts from that use.
    assert_apart(parse_time(&s["cull_at"], "cull_at"), started, seven + time::Duration::hours(1), "cull_at");
    let root = format!("token {}", app.token("root").await);
    let listed: Value = script()
        .get(app.at("/hub/api/users?state=ready"))
        .header("Authorization", &root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &listed[0]["servers"][""];
    assert_apart(parse_time(&s["last_activity"], "the listed last_activity"), started, seven, "listed");
    assert_eq!(
        app.count("select count(*) from servers where last_activity > started_at").await,
        0,
        "the database has not been told yet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_see_when_a_server_will_be_culled_and_can_keep_it_running() {
    let (app, clock, alice, _) = manual_hub().await;
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
    start_ready(&app, &alice, "alice").await;
    let s = model(&app, &alice).await["servers"][""].clone();
    let started = parse_time(&s["started"], "started");
    assert_apart(parse_time(&s["cull_at"], "cull_at"), started, time::Duration::minutes(30), "cull_at");
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
    let s = model(&app, &alice).await["servers"][""].clone();
    assert_apart(parse_time(&s["cull_at"], "cull_at"), started, time::Duration::minutes(50), "kept");
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("counts as used now"), "the button says what it did: {home}");

    clock.advance(time::Duration::minutes(25));
    assert!(culled(&app).await.is_empty(), "kept running 25 minutes ago");
    clock.advance(time::Duration::minutes(6));
    assert_eq!(culled(&app).await, [("alice".to_string(), "stopped after 30 minutes without activity".to_string())]);
    let s = model(&app, &alice).await;
    assert!(s["servers"].as_object().unwrap().is_empty() || s["servers"][""]["cull_at"].is_null(), "{s}");
}
