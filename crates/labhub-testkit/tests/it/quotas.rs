//! Quotas against the real engine: each limit's refusal and its message, a start at the very
//! edge of a budget, twenty simultaneous starts against a budget that fits five, storage past
//! its limit, the sizes really given to the containers, the start form, leads stopping
//! servers, and the usage view.

use std::time::Duration;

use labhub_core::ImageAllowance;
use labhub_service::quotas::QuotaPatch;
use labhub_testkit::app::csrf_of;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{docker_hub, members, start_ready};
use crate::groups::{audited, lab};
use labhub_testkit::app::script;

async fn active(app: &labhub_testkit::TestApp) -> i64 {
    app.count("select count(*) from servers where state <> 'stopped'").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_refuses_with_the_limit_the_usage_and_whom_to_ask() {
    let (app, _, alice) = docker_hub(|c| c.servers.slow_spawn_timeout = Duration::ZERO).await;
    app.add_test_image("other").await;
    app.add_user("bob", "correct horse", false).await;
    app.add_user("dave", "correct horse", false).await;
    let dave = app.api_for("dave").await;
    lab(
        &app,
        "lab",
        Some("bob"),
        &["alice", "dave"],
        QuotaPatch {
            max_cpu_millis: Some(1000),
            max_memory_bytes: Some(512 << 20),
            max_gpus: Some(0),
            max_servers_per_member: Some(1),
            budget_cpu_millis: Some(Some(1000)),
            budget_memory_bytes: Some(Some(640 << 20)),
            ..QuotaPatch::default()
        },
    )
    .await;
    let cases = [
        (
            json!({"image": "test", "cpu": 2}),
            StatusCode::FORBIDDEN,
            "2 CPU is more than the limit of 1 CPU per server in group lab",
        ),
        (
            json!({"image": "test", "memory": "1G"}),
            StatusCode::FORBIDDEN,
            "1 GiB of memory is more than the limit of 512 MiB per server in group lab",
        ),
        (
            json!({"image": "test", "gpus": 1}),
            StatusCode::FORBIDDEN,
            "1 GPU is more than the limit of 0 GPUs per server in group lab",
        ),
    ];
    for (body, status, expected) in cases {
        let refused = alice.start("alice", None, body.clone()).await.unwrap_err();
        assert_eq!(refused.status, status, "{body}: {refused}");
        let m = refused.message;
        assert!(m.contains(expected) && m.contains("Ask bob (lead of lab)"), "{m}");
    }
    app.hub
        .quotas()
        .set_group_images(
            labhub_service::Actor::System,
            &labhub_core::GroupName::parse("lab").unwrap(),
            ImageAllowance::Only(vec!["other".into()]),
        )
        .await
        .unwrap();
    let refused = alice.start("alice", None, json!({"image": "test"})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.message.contains("The image 'test' is not one that group lab may use (allowed: other)"),
        "{refused}"
    );
    assert_eq!(active(&app).await, 0, "no refusal leaves a server behind");

    // Concurrent servers per member: the first fits, the second does not.
    let (got, _) = alice.start("alice", None, json!({"image": "other", "cpu": 0.5, "memory": "256M"})).await.unwrap();
    assert!(matches!(got.as_u16(), 201 | 202), "{got}");
    let refused = alice.start("alice", Some("second"), json!({"image": "other", "cpu": 0.25})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let m = refused.message;
    assert!(m.contains("alice already runs 1 server under group lab, its limit per member of 1"), "{m}");
    assert!(m.contains("Stop a server first, or ask bob (lead of lab)"), "{m}");

    // The group's budget: alice holds 0.5 of 1 CPU and 256 of 640 MiB.
    let refused = dave.start("dave", None, json!({"image": "other", "cpu": 1})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let m = refused.message;
    assert!(
        m.contains(
            "The CPU budget of group lab is 1 CPU and its running servers reserve 0.5 CPU, so 1 CPU more does not fit"
        ),
        "{m}"
    );
    let refused = dave.start("dave", None, json!({"image": "other", "cpu": 0.25, "memory": "512M"})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let m = refused.message;
    assert!(
        m.contains(
            "The memory budget of group lab is 640 MiB and its running servers reserve 256 MiB, so 512 MiB more"
        ),
        "{m}"
    );
    assert_eq!(active(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_in_no_group_get_the_site_default_and_are_told_to_ask_an_admin() {
    let (app, _, alice) = docker_hub(|c| {
        c.quota.max_cpu = 500;
        c.quota.budget_cpu = Some(500);
    })
    .await;
    let refused = alice.start("alice", None, json!({"image": "test", "cpu": 1})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let m = refused.message;
    assert!(m.contains("the limit of 0.5 CPU per server in the site default for users in no group"), "{m}");
    assert!(m.contains("Ask an admin"), "{m}");
    start_ready(&alice, "alice").await;
    app.add_user("bob", "correct horse", false).await;
    let bob = app.api_for("bob").await;
    let refused = bob.start("bob", None, json!({"image": "test"})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::CONFLICT, "ungrouped users share the site default's budget");
    let m = refused.message;
    assert!(m.contains("The CPU budget of the site default for users in no group is 0.5 CPU"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_right_at_the_edge_of_the_budget_succeeds() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    let bob = app.api_for("bob").await;
    lab(
        &app,
        "lab",
        None,
        &["alice", "bob"],
        QuotaPatch {
            budget_cpu_millis: Some(Some(1000)),
            budget_memory_bytes: Some(Some(512 << 20)),
            ..QuotaPatch::default()
        },
    )
    .await;
    // The test image asks for 0.5 CPU and 256 MiB: two fill the budget exactly.
    start_ready(&alice, "alice").await;
    start_ready(&bob, "bob").await;
    let refused = alice.start("alice", Some("more"), json!({"image": "test", "cpu": 0.25})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused}");
    let sums: (i64, i64) = labhub_db::sqlx::query_as(
        "select sum(cpu_millis)::bigint, sum(memory_bytes)::bigint from servers where state <> 'stopped'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(sums, (1000, 512 << 20));
    // Stopping one frees its share at once.
    bob.stop("bob", None).await.unwrap();
    let (got, _) = alice.start("alice", Some("more"), json!({"image": "test", "cpu": 0.25})).await.unwrap();
    assert!(matches!(got.as_u16(), 201 | 202));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_simultaneous_starts_never_exceed_the_budget() {
    let (app, _, _) = docker_hub(|c| c.servers.slow_spawn_timeout = Duration::ZERO).await;
    let (names, racers) = members(&app, "racer", 20).await;
    let in_lab: Vec<&str> = names.iter().map(String::as_str).collect();
    // Five servers of 0.5 CPU fit exactly.
    lab(&app, "lab", None, &in_lab, QuotaPatch { budget_cpu_millis: Some(Some(2500)), ..QuotaPatch::default() }).await;
    let starts = names.iter().zip(&racers).map(|(n, r)| r.start(n, None, json!({"image": "test"})));
    let mut started = 0;
    let mut refused = 0;
    for r in futures::future::join_all(starts).await {
        match r {
            Ok((status, _)) => {
                assert!(matches!(status.as_u16(), 201 | 202), "{status}");
                started += 1;
            }
            Err(e) if e.status == StatusCode::CONFLICT => {
                assert!(e.message.contains("The CPU budget of group lab is 2.5 CPU"), "{e}");
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((started, refused), (5, 15), "exactly the budget's worth started");
    let reserved: i64 = labhub_db::sqlx::query_scalar(
        "select coalesce(sum(cpu_millis), 0)::bigint from servers where state <> 'stopped'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(reserved, 2500);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let running = app.count("select count(*) from servers where state = 'running'").await;
        if running == 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {running} of 5 became ready");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let listed = labhub_core::spawner::Spawner::list(app.docker.as_ref().unwrap().spawner.as_ref()).await.unwrap();
    assert_eq!(listed.len(), 5, "and the engine runs exactly that many");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_past_the_limit_refuses_starts_saying_how_much_to_free() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    lab(
        &app,
        "lab",
        Some("bob"),
        &["alice"],
        QuotaPatch { storage_bytes: Some(Some(64 << 10)), ..QuotaPatch::default() },
    )
    .await;
    start_ready(&alice, "alice").await;
    let r = script()
        .put(app.at("/user/alice/files/results.bin"))
        .header("Authorization", alice.authorization())
        .body(vec![7u8; 200 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    alice.stop("alice", None).await.unwrap();
    assert!(app.hub.quotas().measure_storage().await.unwrap() >= 1);
    let bytes: i64 = labhub_db::sqlx::query_scalar("select bytes from storage_usage").fetch_one(&app.db).await.unwrap();
    assert!(bytes >= 200 << 10, "the real volume was measured: {bytes}");
    let refused = alice.start("alice", None, json!({"image": "test"})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let m = refused.message;
    assert!(m.contains("more than your limit of 64 KiB: free at least"), "{m}");
    assert!(m.contains("ask bob (lead of lab) to raise the limit"), "{m}");
    // A named server never measured shares the same home volume: refused as well.
    let refused = alice.start("alice", Some("fresh"), json!({"image": "test"})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused}");
    assert!(refused.message.contains("more than your limit of 64 KiB"), "{refused}");
    assert_eq!(active(&app).await, 0);
    let b = app.signed_in("alice", "correct horse").await;
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("more than your limit of 64 KiB") && home.contains("servers cannot start"), "{home}");

    // Near (not past) the limit, a warning only; the start goes ahead.
    let limit = (bytes as u64) * 100 / 95;
    let raise = QuotaPatch { storage_bytes: Some(Some(limit)), ..QuotaPatch::default() };
    let g = labhub_core::GroupName::parse("lab").unwrap();
    app.hub.quotas().set_group_ceiling(labhub_service::Actor::System, &g, &raise).await.unwrap();
    app.hub.quotas().set_group_quota(labhub_service::Actor::System, &g, &raise).await.unwrap();
    let home = b.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("Delete files you no longer need"), "{home}");
    start_ready(&alice, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chosen_size_is_what_the_container_gets() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    let (got, _) = alice.start("alice", None, json!({"image": "test", "cpu": "0.25", "memory": "384M"})).await.unwrap();
    assert_eq!(got, StatusCode::CREATED);
    let state: Value =
        labhub_db::sqlx::query_scalar("select spawner_state from servers").fetch_one(&app.db).await.unwrap();
    let id = state["container_id"].as_str().unwrap();
    let inspected = app
        .docker
        .as_ref()
        .unwrap()
        .docker()
        .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .unwrap();
    let hc = inspected.host_config.unwrap();
    assert_eq!(hc.nano_cpus, Some(250_000_000));
    assert_eq!(hc.memory, Some(384 << 20));
    let home = app.signed_in("alice", "correct horse").await.get(app.at("/hub/home")).send().await.unwrap();
    assert!(home.text().await.unwrap().contains("0.25 CPU, 384 MiB"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_form_asks_which_group_and_offers_only_what_it_allows() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    app.add_test_image("other").await;
    lab(
        &app,
        "small",
        None,
        &["alice"],
        QuotaPatch {
            max_cpu_millis: Some(500),
            max_memory_bytes: Some(512 << 20),
            images: Some(ImageAllowance::Only(vec!["other".into()])),
            ..QuotaPatch::default()
        },
    )
    .await;
    lab(&app, "big", None, &["alice"], QuotaPatch { max_cpu_millis: Some(2000), ..QuotaPatch::default() }).await;
    let b = app.signed_in("alice", "correct horse").await;
    let form = b.get(app.at("/hub/spawn")).send().await.unwrap().text().await.unwrap();
    assert!(form.contains("Which one is this server for?"), "{form}");
    assert!(form.contains("value=\"small\"") && form.contains("value=\"big\""), "{form}");
    assert!(!form.contains("name=\"image\""), "the group comes first");
    let form = b.get(app.at("/hub/spawn/alice?group=small")).send().await.unwrap().text().await.unwrap();
    assert!(form.contains("value=\"other\"") && !form.contains("value=\"test\""), "only the group's images: {form}");
    assert!(form.contains("0.5 CPU</option>") && !form.contains("1 CPU</option>"), "sizes up to the limit: {form}");
    assert!(form.contains("512 MiB</option>") && !form.contains("1 GiB</option>"), "{form}");
    assert!(!form.contains("name=\"gpus\""), "no GPUs to offer");
    let csrf = csrf_of(&form);
    let r = b
        .post(app.at("/hub/spawn/alice"))
        .form(&[("_csrf", csrf.as_str()), ("group", "small"), ("image", "other"), ("cpu", "0.5"), ("memory", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    alice.wait_ready("alice", None).await;
    let charged: String = labhub_db::sqlx::query_scalar(
        "select g.name from servers s join groups g on g.group_id = s.group_id where s.name = ''",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(charged, "small", "charged to the group it was started under");
    // Asking for more than the chosen group allows shows the form again with the reason.
    let csrf = app.csrf(&b, "/hub/spawn/alice/gpu?group=small").await;
    let r = b
        .post(app.at("/hub/spawn/alice/gpu"))
        .form(&[("_csrf", csrf.as_str()), ("group", "small"), ("image", "other"), ("cpu", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let html = r.text().await.unwrap();
    assert!(html.contains("1 CPU is more than the limit of 0.5 CPU per server in group small"), "{html}");
    assert!(html.contains("name=\"image\""), "the form again, to choose differently");
    // Through the API without a group, the most generous group that admits the request.
    let (got, _) = alice.start("alice", Some("gpu"), json!({"image": "test", "cpu": 1})).await.unwrap();
    assert!(matches!(got.as_u16(), 201 | 202), "{got}");
    let charged: String = labhub_db::sqlx::query_scalar(
        "select g.name from servers s join groups g on g.group_id = s.group_id where s.name = 'gpu'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(charged, "big");
    let refused = alice.start("alice", Some("third"), json!({"group": "nope"})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_stops_a_members_server_and_sees_the_groups_usage() {
    let (app, _, alice) = docker_hub(|_| {}).await;
    app.add_user("bob", "correct horse", false).await;
    app.add_user("carol", "correct horse", false).await;
    lab(
        &app,
        "lab",
        Some("bob"),
        &["alice"],
        QuotaPatch { budget_cpu_millis: Some(Some(2000)), ..QuotaPatch::default() },
    )
    .await;
    lab(&app, "other", Some("carol"), &[], QuotaPatch::default()).await;
    start_ready(&alice, "alice").await;
    app.hub.usage().sample().await.unwrap();
    // An old sample is dropped: the table stays bounded.
    labhub_db::sqlx::query(
        "insert into group_usage_samples (group_id, at, cpu_millis, memory_bytes, cpu_reserved, memory_reserved)
         select group_id, now() - interval '9 days', 1, 1, 1, 1 from groups where name = 'lab'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    app.hub.usage().sample().await.unwrap();
    assert_eq!(app.count("select count(*) from group_usage_samples where at < now() - interval '8 days'").await, 0);
    let bob = app.api_for("bob").await;
    let carol = app.api_for("carol").await;
    let u = bob.get("/hub/api/groups/lab/usage").await.value();
    assert_eq!(u["total"]["servers"], 1);
    assert_eq!(u["total"]["cpu_reserved_millis"], 500);
    assert_eq!(u["budget"]["cpu_millis"], 2000);
    assert_eq!(u["members"][1]["name"], "alice");
    assert_eq!(u["members"][1]["servers"][0]["cpu_millis"], 500);
    assert!(u["members"][1]["servers"][0]["memory_used_bytes"].as_u64().unwrap() > 0, "live use from docker stats");
    assert!(!u["samples"].as_array().unwrap().is_empty());
    let page = app.signed_in("bob", "correct horse").await;
    let html = page.get(app.at("/hub/groups/lab")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<polyline class=\"cpu\"") && html.contains("class=\"budget\""), "{html}");
    assert!(html.contains("0.5 of 2 CPU reserved"), "{html}");

    let refused = carol.stop("alice", None).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "a lead of another group has no power here");
    // A token the lead narrowed to reading holds none of the lead's power to stop.
    let t = bob.create_token("bob", json!({ "scopes": ["read:users!user=bob"] })).await.unwrap();
    let reader = app.api(t.token.as_deref().unwrap());
    let refused = reader.stop("alice", None).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(bob.stop("alice", None).await, Ok(StatusCode::NO_CONTENT));
    let home = app.signed_in("alice", "correct horse").await.get(app.at("/hub/home")).send().await.unwrap();
    assert!(home.text().await.unwrap().contains("stopped by bob"));
    let stops = audited(&app, "server.stop").await;
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].0, "bob");
    assert_eq!(stops[0].1, "alice");
    assert_eq!(stops[0].2["after"], "stopped");
}
