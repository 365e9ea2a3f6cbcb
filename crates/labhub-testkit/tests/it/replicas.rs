//! Several hubs on one Postgres. Real `labhub serve` processes behind a real nginx (Debian's)
//! for what crosses processes — a start followed, reached and stopped through another
//! replica, a replica killed with SIGKILL under a WebSocket —, and in-process hubs on one
//! database with manual clocks for what must be shown in lock-step: a revocation reaching
//! another replica only through `NOTIFY` (its clock never moves, so its cache never expires),
//! and the culler stopping an idle server once with three replicas.

use std::future::pending;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labhub_auth::HubKey;
use labhub_testkit::docker::DockerScope;
use labhub_testkit::pg::{TestCluster, free_port};
use labhub_testkit::{Api, TestApp};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{start_ready, test_server_binary};
use crate::groups::audited;
use crate::proxied::{HANG, echo, refused_status, session_cookie, ws_connect, ws_end, ws_url};
use crate::restart::{HubProcess, Site};
use labhub_testkit::app::script;

/// A real nginx on a loopback port in front of some hubs (round robin, or the first one with
/// the others as `backup`), with its configuration and logs in a folder of its own. It runs as
/// one process (`master_process off`), so killing it on drop leaves no worker behind holding
/// its port.
struct Nginx {
    child: tokio::process::Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(hubs: &[&HubProcess], failover: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let servers: String = hubs
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let backup = if failover && i > 0 { " backup" } else { "" };
                format!("    server {}{backup};\n", h.url.trim_start_matches("http://"))
            })
            .collect();
        let d = dir.path().display();
        let conf = format!(
            "master_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             upstream hubs {{\n{servers}    keepalive 32;\n  }}\n\
             map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://hubs;\n\
             proxy_http_version 1.1;\n      proxy_set_header Host $http_host;\n\
             proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n\
             proxy_buffering off;\n      proxy_read_timeout 1h;\n    }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = tokio::process::Command::new("/usr/sbin/nginx")
            .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c", &path.display().to_string()])
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting nginx (Debian's nginx-light)");
        let nginx = Self { child, url: format!("http://127.0.0.1:{port}"), dir };
        let give_up = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < give_up, "nginx did not listen: {}", nginx.error_log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nginx
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Polls `url` with `auth` until it answers `want`; a hang guard, never a timing assertion.
async fn until_status(url: &str, auth: &str, want: StatusCode, what: &str) {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let status = script().get(url).header("Authorization", auth).send().await.map(|r| r.status()).ok();
        if status == Some(want) {
            return;
        }
        assert!(Instant::now() < give_up, "{what}: {url} still answers {status:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket to `url` with `auth`, once the replica it goes through has routed the server
/// (it hears of the start through Postgres); a hang guard, never a timing assertion.
async fn ws_once_routed(url: &str, auth: &str) -> crate::proxied::Ws {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match ws_connect(url, &[("Authorization", auth)]).await {
            Ok(ws) => return ws,
            Err(e) => assert!(Instant::now() < give_up, "the replica never routed the server: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn test_image(site: &Site) -> serde_json::Value {
    json!({"name": "test", "display_name": "Test server", "reference": site.scope.test_image.to_string(),
           "kind": "jupyter", "cpu": 0.5, "memory": "256M"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_through_one_replica_is_followed_reached_and_stopped_through_another() {
    let site = Site::new().await;
    let auth = site.admin().await;
    // A answers a start at once (202), so B is asked for its progress while it is pending.
    let a = HubProcess::start_with(&site, "a", &[("LABHUB_SERVERS__SLOW_SPAWN_TIMEOUT", "0s")]).await;
    let b = HubProcess::start(&site, "b").await;
    let lb = Nginx::start(&[&a, &b], false).await;
    let (api_a, api_b) = (a.api(&auth), b.api(&auth));
    api_a.add_image(test_image(&site)).await.unwrap_or_else(|e| panic!("{e}"));

    let (status, _) = api_a.start("root", None, json!({"image": "test"})).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, StatusCode::ACCEPTED);
    // B never ran this start: what it streams is what A stored, to the end.
    let events = api_b.progress("root", None).await;
    assert_eq!(events.first().map(|e| e.message.as_str()), Some("Server requested"), "{events:?}\n{}", a.log_text());
    assert!(events.last().is_some_and(|e| e.ready), "{events:?}");
    let status_path = "/user/root/api/status";
    until_status(&b.at(status_path), &auth, StatusCode::OK, "B routes to A's start").await;
    // Through the load balancer, round robin over both, every request reaches the server.
    for _ in 0..6 {
        let r = script().get(lb.at(status_path)).header("Authorization", &auth).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", lb.error_log());
    }
    let container = site.container_of("root").await.expect("the server's container");

    let stopped = api_b.stop("root", None).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(stopped.as_u16(), 202 | 204), "{stopped}");
    api_a.wait_stopped("root", None).await;
    until_status(&a.at(status_path), &auth, StatusCode::SERVICE_UNAVAILABLE, "A drops the route B stopped").await;
    assert!(!site.is_running(&container).await, "B's stop removed A's container");

    // Both replicas asked to start the same server at once: one start wins, one container.
    let (x, y) = tokio::join!(
        api_a.start("root", None, json!({"image": "test"})),
        api_b.start("root", None, json!({"image": "test"}))
    );
    let (won, lost): (Vec<_>, Vec<_>) = [x, y].into_iter().partition(Result::is_ok);
    assert_eq!((won.len(), lost.len()), (1, 1), "one start wins: {won:?} {lost:?}");
    let refusal = lost.into_iter().next().and_then(Result::err).expect("the other start's refusal");
    assert!(refusal.to_string().contains("already"), "{refusal}");
    // The loser follows the winner's start, whichever replica that was.
    let events = api_b.progress("root", None).await;
    assert!(events.last().is_some_and(|e| e.ready), "{events:?}");
    api_b.wait_ready("root", None).await;
    until_status(&lb.at(status_path), &auth, StatusCode::OK, "the restarted server").await;
    let starts: i64 =
        labhub_db::sqlx::query_scalar("select count(*) from server_sessions").fetch_one(&site.db.pool).await.unwrap();
    assert_eq!(starts, 2, "the first start and one of the two racing ones");
    let listed = labhub_core::spawner::Spawner::list(&*site.scope.spawner).await.unwrap();
    assert_eq!(listed.len(), 1, "one container: {listed:?}");
    let registered: i64 =
        labhub_db::sqlx::query_scalar("select count(*) from hub_replicas").fetch_one(&site.db.pool).await.unwrap();
    assert_eq!(registered, 2, "both processes beat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_a_websocket_loses_no_server_and_the_client_reconnects_through_another() {
    let site = Site::new().await;
    let auth = site.admin().await;
    let mut a = HubProcess::start(&site, "a").await;
    let b = HubProcess::start(&site, "b").await;
    // Everything goes to A while it lives; nginx then fails over to B.
    let lb = Nginx::start(&[&a, &b], true).await;
    crate::restart::start_server(&site, &a, &auth).await;
    until_status(&b.at("/user/root/api/status"), &auth, StatusCode::OK, "B routes too").await;
    let container = site.container_of("root").await.expect("the server's container");
    let mut ws = ws_connect(&ws_url(&lb.url, "/user/root/ws/echo"), &[("Authorization", &auth)]).await.unwrap();
    assert_eq!(echo(&mut ws, "through A").await, "through A");

    a.kill().await;
    let end = ws_end(&mut ws, Duration::from_secs(10)).await;
    eprintln!("the tunnel through the killed replica ended: {end:?}");
    assert!(site.is_running(&container).await, "the server outlives the replica");
    let mut ws = ws_connect(&ws_url(&lb.url, "/user/root/ws/echo"), &[("Authorization", &auth)])
        .await
        .unwrap_or_else(|e| panic!("reconnecting through nginx: {e}\n{}", lb.error_log()));
    assert_eq!(echo(&mut ws, "through B").await, "through B");
    let model = b.api(&auth).user("root").await;
    assert!(model.is_ready(None), "{model:?}");
    assert_eq!(site.container_of("root").await.as_deref(), Some(container.as_str()), "the same container");
}

/// Hubs in this process on one database with one secret key, each on a manual clock.
async fn replicas(n: usize, scope: Option<Arc<DockerScope>>) -> Vec<TestApp> {
    let db = TestCluster::get().fresh_database().await;
    let url = TestCluster::get().url(&db.name);
    let key = HubKey::generate();
    let mut apps = Vec::new();
    for _ in 0..n {
        let mut b = TestApp::builder().manual_clock().key(key.clone());
        if let Some(s) = &scope {
            b = b.docker(s.clone());
        }
        apps.push(b.spawn_on_url(&url).await);
    }
    apps
}

/// `n` replicas on one database with the engine, and alice's server started and ready
/// through the first; her API client there.
async fn alices_server_on(n: usize) -> (Vec<TestApp>, Api) {
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let apps = replicas(n, Some(scope)).await;
    apps[0].add_test_image("test").await;
    apps[0].add_user("alice", "correct horse", false).await;
    let alice = apps[0].api_for("alice").await;
    start_ready(&alice, "alice").await;
    (apps, alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_replica_works_on_another_and_a_revocation_reaches_it_through_notify() {
    let apps = replicas(2, None).await;
    let (a, b) = (&apps[0], &apps[1]);
    tokio::spawn(b.hub.clone().follow_replicas(pending()));
    a.add_user("alice", "correct horse", false).await;
    a.add_user("root", "correct horse", true).await;
    a.hub.replicas().beat().await.unwrap();
    b.hub.replicas().beat().await.unwrap();
    // The admin page, on either, lists both processes alive and says which one answers.
    let admin = a.signed_in("root", "correct horse").await;
    let html = admin.get(b.at("/hub/admin/servers")).send().await.unwrap().text().await.unwrap();
    assert_eq!(html.matches("<span class=\"state running\">alive</span>").count(), 2, "{html}");
    assert_eq!(html.matches("(answering this page)").count(), 1, "{html}");

    let browser = a.signed_in("alice", "correct horse").await;
    let r = browser.get(b.at("/hub/api/user")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "A's session cookie on B");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["name"], "alice");

    let token = a.token("alice").await;
    let on_b = Api::new(&b.url, &token);
    assert_eq!(on_b.get("/hub/api/user").await.status, StatusCode::OK, "B now recognises the token");
    let id = a.api(&token).tokens("alice").await.into_iter().next().expect("the token").id;
    a.api(&token).revoke_token("alice", &id).await.unwrap_or_else(|e| panic!("{e}"));
    // B's clock never moves, so its recognised token never expires: only the announcement
    // of the revocation can make B ask Postgres again.
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let status = on_b.get("/hub/api/user").await.status;
        if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(Instant::now() < give_up, "B still accepts the revoked token ({status})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_culler_stops_an_idle_server_exactly_once_with_three_replicas() {
    let (apps, alice) = alices_server_on(3).await;
    let a = &apps[0];
    // Past the site's idle timeout (an hour) on every replica's clock.
    for app in &apps {
        app.clock.as_ref().expect("a manual clock").advance(time::Duration::hours(2));
    }
    let (c0, c1, c2) = (apps[0].hub.culler(), apps[1].hub.culler(), apps[2].hub.culler());
    let (x, y, z) = tokio::join!(c0.cull_once(), c1.cull_once(), c2.cull_once());
    let culled: usize = [x, y, z].into_iter().map(|r| r.expect("a culler pass").len()).sum();
    assert_eq!(culled, 1);
    // Passes after it find nothing to stop.
    for app in &apps {
        assert!(app.hub.culler().cull_once().await.unwrap().is_empty());
    }
    assert_eq!(audited(a, "server.cull").await.len(), 1);
    let closed: i64 =
        labhub_db::sqlx::query_scalar("select count(*) from server_sessions where stopped_at is not null")
            .fetch_one(&a.db)
            .await
            .unwrap();
    assert_eq!(closed, 1);
    alice.wait_stopped("alice", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_demoted_through_one_replica_loses_the_websocket_another_let_in() {
    let (apps, alice) = alices_server_on(2).await;
    let (a, b) = (&apps[0], &apps[1]);
    a.add_user("root", "correct horse", true).await;
    a.add_user("bob", "correct horse", true).await;
    // B follows A only through Postgres's announcements.
    tokio::spawn(b.hub.clone().follow_replicas(pending()));
    let bob = b.api_for("bob").await;
    let url = ws_url(&b.url, "/user/alice/ws/echo");
    let mut ws = ws_once_routed(&url, bob.authorization()).await;
    assert_eq!(echo(&mut ws, "as an admin, through B").await, "as an admin, through B");
    let mut own = ws_connect(&url, &[("Authorization", alice.authorization())]).await.expect("alice's own, through B");

    let demoted = a.api_for("root").await.patch_json("/hub/api/users/bob", &json!({"admin": false})).await;
    assert!(demoted.status.is_success(), "{demoted:?}");
    ws_end(&mut ws, HANG).await;
    assert_eq!(echo(&mut own, "still mine").await, "still mine", "the owner's WebSocket stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_or_session_ended_through_one_replica_closes_the_websockets_another_let_in_with_it() {
    let (apps, alice) = alices_server_on(2).await;
    let (a, b) = (&apps[0], &apps[1]);
    // B follows A only through Postgres's announcements; its clock never moves, so nothing
    // it recognised expires on its own.
    tokio::spawn(b.hub.clone().follow_replicas(pending()));
    let revoked = alice.create_token("alice", json!({"note": "to revoke"})).await.unwrap_or_else(|e| panic!("{e}"));
    let revoked_auth = format!("token {}", revoked.token.as_deref().expect("the new token"));
    let url = ws_url(&b.url, "/user/alice/ws/echo");
    let mut by_revoked = ws_once_routed(&url, &revoked_auth).await;
    let mut by_kept =
        ws_connect(&url, &[("Authorization", alice.authorization())]).await.expect("with her other token");
    let cookie = session_cookie(a, "alice").await;
    let headers = [("Cookie", cookie.as_str()), ("Origin", b.url.as_str())];
    let mut by_session = ws_connect(&url, &headers).await.expect("with A's session cookie, through B");
    for ws in [&mut by_revoked, &mut by_kept, &mut by_session] {
        assert_eq!(echo(ws, "open").await, "open");
    }

    let token_id = labhub_core::TokenId::new(revoked.id.trim_start_matches('a').parse().expect("a<number>"));
    let via = labhub_service::AuthVia::Token { token_id };
    assert!(b.hub.tunnels().still_valid(via).await.unwrap(), "what an upgrade in the window asks");
    alice.revoke_token("alice", &revoked.id).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!b.hub.tunnels().still_valid(via).await.unwrap());
    ws_end(&mut by_revoked, HANG).await;
    assert_eq!(echo(&mut by_session, "still signed in").await, "still signed in");
    let refused = ws_connect(&url, &[("Authorization", revoked_auth.as_str())]).await.expect_err("a revoked token");
    assert!([401, 403].contains(&refused_status(&refused)), "{refused}");

    // Signing out on A ends the browser's WebSocket through B; her other token's stays.
    let value = cookie.split_once('=').expect("name=value").1;
    a.hub.sessions().end(value).await.unwrap();
    ws_end(&mut by_session, HANG).await;
    assert_eq!(echo(&mut by_kept, "still mine").await, "still mine", "a WebSocket of a credential still valid stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_left_by_a_replica_silent_for_15_seconds_is_failed_and_its_followers_see_why() {
    let apps = replicas(1, None).await;
    let b = &apps[0];
    b.add_user("alice", "correct horse", false).await;
    b.add_user("root", "correct horse", true).await;
    b.hub.replicas().beat().await.unwrap();
    // Another replica registered, began alice's start, said "Server requested", and fell
    // silent (it was killed): its heartbeat is 16 s old by B's clock.
    let gone = uuid::Uuid::new_v4();
    let heard = b.hub.now() - time::Duration::seconds(16);
    labhub_db::sqlx::query(
        "insert into hub_replicas (replica_id, host, version, started_at, last_heartbeat)
         values ($1, 'elsewhere (pid 1)', '0.1.0', $2, $2)",
    )
    .bind(gone)
    .bind(heard)
    .execute(&b.db)
    .await
    .unwrap();
    let spawn_id = uuid::Uuid::new_v4();
    let server_id: i64 = labhub_db::sqlx::query_scalar(
        "insert into servers (user_id, name, created_at, state, spawn_id, replica_id)
         select user_id, '', now(), 'pending', $1, $2 from users where name = 'alice' returning server_id",
    )
    .bind(spawn_id)
    .bind(gone)
    .fetch_one(&b.db)
    .await
    .unwrap();
    labhub_db::sqlx::query(
        "insert into spawn_events (server_id, spawn_id, seq, event, at)
         values ($1, $2, 0, '{\"progress\": 0, \"message\": \"Server requested\"}', now())",
    )
    .bind(server_id)
    .bind(spawn_id)
    .execute(&b.db)
    .await
    .unwrap();

    let admin = b.signed_in("root", "correct horse").await;
    let html = admin.get(b.at("/hub/admin/servers")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("elsewhere (pid 1)"), "{html}");
    assert_eq!(html.matches("<span class=\"state stopped\">silent</span>").count(), 1, "{html}");

    assert_eq!(b.hub.replicas().fail_orphaned_starts().await.unwrap(), 1);
    let alice = b.api_for("alice").await;
    let events = alice.progress("alice", None).await;
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["Server requested", "Spawn failed: the hub process starting it stopped answering."]);
    assert!(events[1].failed);
    let (state, reason): (String, Option<String>) =
        labhub_db::sqlx::query_as("select state::text, stop_reason from servers where server_id = $1")
            .bind(server_id)
            .fetch_one(&b.db)
            .await
            .unwrap();
    assert_eq!((state.as_str(), reason.as_deref()), ("stopped", Some("the hub process starting it stopped answering")));
    // Alice may start again at once.
    assert_eq!(b.hub.replicas().fail_orphaned_starts().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_through_one_replica_ends_a_start_running_on_another() {
    // A ran an earlier start of the server (and remembers it).
    let (apps, on_a) = alices_server_on(2).await;
    let b = &apps[1];
    on_a.stop("alice", None).await.unwrap_or_else(|e| panic!("{e}"));
    on_a.wait_stopped("alice", None).await;

    // B runs the next start; A is asked to stop it while it is pending.
    let alice = labhub_core::UserName::parse("alice").unwrap();
    let request = labhub_service::model::StartRequest { image: Some("test".into()), ..Default::default() };
    let started = b.hub.servers().start(labhub_service::Actor::System, &alice, None, request).await.unwrap();
    let labhub_service::model::StartOutcome::Started(ticket) = started else { panic!("a new start: {started:?}") };
    assert_eq!(on_a.stop("alice", None).await.unwrap_or_else(|e| panic!("{e}")), StatusCode::ACCEPTED);
    let last = b.hub.servers().wait_for_start(&ticket, Duration::from_secs(60)).await.expect("the start's end");
    assert!(last.failed, "{last:?}");
    assert_eq!(last.message, "The server was stopped while it was starting.");
    on_a.wait_stopped("alice", None).await;
    // A's progress of the server is B's start, not the one A remembers.
    let events = on_a.progress("alice", None).await;
    let end = events.last().expect("events");
    assert!(end.failed && end.message == last.message, "{events:?}");
}
