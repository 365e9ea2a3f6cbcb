//! The hub loses its database while serving, answers 503, and recovers by itself.

use labhub_testkit::TestApp;
use labhub_testkit::app::script;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_survives_postgres_going_away_and_coming_back() {
    // A cluster of its own, so stopping it cannot disturb other tests.
    let root = std::env::temp_dir().join(format!(
        "labhub-test-pg-{}-outage-{}",
        std::process::id(),
        labhub_testkit::pg::free_port()
    ));
    let port = labhub_testkit::pg::free_port();
    let pg = labhub_db::embedded::EmbeddedPostgres::start_throwaway(&root, None, port).expect("a cluster");
    pg.ensure_database("outage").await.expect("a database");
    let url = pg.url("outage").unwrap();
    let app = TestApp::builder()
        .config(|c| {
            c.database.url = Some(labhub_core::Secret::new(url.clone()));
            c.database.acquire_timeout = std::time::Duration::from_millis(500);
        })
        .spawn_on_url(&url)
        .await;
    app.add_user("root", "correct horse", true).await;
    let admin = app.api_for("root").await;
    let browser = app.signed_in("root", "correct horse").await;
    assert_eq!(admin.get("/hub/api/users").await.status, StatusCode::OK);

    pg.stop_blocking().expect("stopping postgres");

    let r = admin.get("/hub/api/users").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.message().contains("database is unavailable"), "{r:?}");
    let r = browser.get(app.at("/hub/admin/users")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("Temporarily unavailable"));
    let r = script().get(app.at("/hub/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    pg.start_child().expect("starting postgres again");

    // A hang guard, not a deadline: the hub must come back by itself, however long Postgres takes.
    let give_up = std::time::Instant::now() + labhub_testkit::api::WAIT_LIMIT;
    loop {
        let r = admin.get("/hub/api/users").await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < give_up, "the hub did not recover without a restart: {r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(browser.get(app.at("/hub/admin/users")).send().await.unwrap().status(), 200);
    let _ = std::fs::remove_dir_all(&root);
}
