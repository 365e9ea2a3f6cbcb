//! The front door under abuse: bursts of password guesses, sign-up floods, sockets that never
//! finish a request, more connections than the hub will hold. No test here times anything:
//! where a timeout is the point, it is configured short and the test only waits for its
//! effect, with a generous guard so a missing timeout fails instead of hanging.

use std::sync::Arc;
use std::time::Duration;

use labhub_testkit::TestApp;
use labhub_testkit::app::{browser, csrf_of};
use reqwest::StatusCode;
use reqwest::cookie::Jar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{docker_hub, start_ready};
use crate::proxied::session_cookie;

/// Long enough for any configured timeout here to pass many times over.
const GUARD: Duration = Duration::from_secs(30);

/// The hub's origin, as its own pages send it with their forms.
fn hub_origin(app: &TestApp) -> String {
    app.config.public_url().origin().ascii_serialization()
}

/// A browser with the sign-in form open: the client and the form's CSRF token.
async fn at_the_form(app: &TestApp, client: reqwest::Client) -> (reqwest::Client, String) {
    let html = client.get(app.at("/hub/login")).send().await.unwrap().text().await.unwrap();
    let csrf = csrf_of(&html);
    (client, csrf)
}

/// Submits the sign-in form.
async fn submit(
    app: &TestApp,
    (client, csrf): &(reqwest::Client, String),
    name: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(app.at("/hub/login"))
        .header("Origin", hub_origin(app))
        .form(&[("_csrf", csrf.as_str()), ("username", name), ("password", password), ("next", "")])
        .send()
        .await
        .unwrap()
}

/// A fresh browser that keeps only the device cookie a sign-in as `name` left it.
async fn known_device(app: &TestApp, name: &str) -> reqwest::Client {
    let first = at_the_form(app, browser()).await;
    let r = submit(app, &first, name, "correct horse").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let device = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("labhub-device="))
        .expect("a device cookie after signing in")
        .to_string();
    assert!(device.contains("HttpOnly") && device.contains("Path=/hub/login"), "{device}");
    let jar = Arc::new(Jar::default());
    jar.add_cookie_str(&device, &app.at("/hub/login").parse().unwrap());
    reqwest::Client::builder().cookie_provider(jar).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test]
async fn a_burst_of_guesses_at_one_account_is_checked_only_within_its_budget_and_locks_out_no_member() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("root", "correct horse", true).await;
    let alices_laptop = known_device(&app, "alice").await;

    // 150 wrong passwords for alice from one address, all sent at once.
    let mut forms = Vec::new();
    for _ in 0..150 {
        forms.push(at_the_form(&app, browser()).await);
    }
    let guesses = forms.iter().map(|form| async { submit(&app, form, "alice", "wrong guess").await });
    let answers = futures::future::join_all(guesses).await;
    let checked = answers.iter().filter(|r| r.status() == StatusCode::UNAUTHORIZED).count();
    let throttled: Vec<_> = answers.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!(checked, 5, "only the budget for one account from one address is checked against its hash");
    assert_eq!(throttled.len(), 145);
    assert!(throttled.iter().all(|r| r.headers().contains_key("retry-after")));

    // Guessing stays throttled, whatever the password.
    for password in ["another guess", "correct horse"] {
        let r = submit(&app, &at_the_form(&app, browser()).await, "alice", password).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "a new browser trying alice");
        assert!(r.text().await.unwrap().contains("Too many failed sign-in attempts"));
    }
    // The admin behind the same address signs in from a browser new to them.
    let r = submit(&app, &at_the_form(&app, browser()).await, "root", "correct horse").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "another account from the same address");
    // And alice from the browser she signed in with before.
    let r = submit(&app, &at_the_form(&app, alices_laptop).await, "alice", "correct horse").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "alice's known device");
}

#[tokio::test]
async fn a_known_device_has_a_budget_of_its_own() {
    let app = TestApp::builder().config(|c| c.auth.max_failed_logins_per_device = 2).spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let laptop = known_device(&app, "alice").await;
    for _ in 0..5 {
        let r = submit(&app, &at_the_form(&app, browser()).await, "alice", "wrong guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        submit(&app, &at_the_form(&app, browser()).await, "alice", "x").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Alice's laptop is not held up by those guesses, but its own typos count.
    for _ in 0..2 {
        let r = submit(&app, &at_the_form(&app, laptop.clone()).await, "alice", "typo").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Past its own budget it is one more browser, and those are held up.
    let r = submit(&app, &at_the_form(&app, laptop).await, "alice", "correct horse").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn sign_ups_are_throttled_per_address() {
    let app = TestApp::builder()
        .config(|c| {
            c.auth.signup = labhub_service::SignupPolicy::Open;
            c.auth.max_signups_per_address = 2;
        })
        .spawn()
        .await;
    let sign_up = |name: &'static str| {
        let app = &app;
        async move {
            let c = browser();
            let html = c.get(app.at("/hub/signup")).send().await.unwrap().text().await.unwrap();
            let csrf = csrf_of(&html);
            let form = [("_csrf", csrf.as_str()), ("username", name), ("password", "a long password")];
            c.post(app.at("/hub/signup")).header("Origin", hub_origin(app)).form(&form).send().await.unwrap()
        }
    };
    assert_eq!(sign_up("one").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(sign_up("two").await.status(), StatusCode::SEE_OTHER);
    let r = sign_up("three").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("Too many sign-ups from your address"));
    assert_eq!(app.count("select count(*) from users where name = 'three'").await, 0);
}

/// Reads until the hub closes the connection; what it sent meanwhile. Fails (instead of
/// hanging) if the hub keeps it open past the guard.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(GUARD, read).await.expect("the hub kept the connection open");
    got
}

fn host_of(app: &TestApp) -> String {
    app.url.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn connections_that_never_finish_a_request_head_are_closed() {
    let app = TestApp::builder().config(|c| c.http.request_head_timeout = Duration::from_millis(300)).spawn().await;
    let host = host_of(&app);
    let mut silent = TcpStream::connect(&host).await.unwrap();
    let mut slow = TcpStream::connect(&host).await.unwrap();
    slow.write_all(format!("GET /hub/health HTTP/1.1\r\nHost: {host}\r\nX-Slow: ").as_bytes()).await.unwrap();
    assert_eq!(until_closed(&mut silent).await, b"", "a connection that sent nothing");
    assert_eq!(until_closed(&mut slow).await, b"", "a head that never ended");
    // The hub is none the worse.
    assert_eq!(reqwest::get(app.at("/hub/health")).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed() {
    let app = TestApp::builder().config(|c| c.http.keep_alive_timeout = Duration::from_millis(300)).spawn().await;
    let host = host_of(&app);
    let mut s = TcpStream::connect(&host).await.unwrap();
    s.write_all(format!("GET /hub/health HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let got = until_closed(&mut s).await;
    assert!(got.starts_with(b"HTTP/1.1 200 "), "answered, then closed: {}", String::from_utf8_lossy(&got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_of_the_fast_lane_are_closed() {
    let (app, _, alice) = docker_hub(|c| c.http.keep_alive_timeout = Duration::from_millis(500)).await;
    start_ready(&alice, "alice").await;
    let cookie = session_cookie(&app, "alice").await;
    let host = host_of(&app);
    let mut s = TcpStream::connect(&host).await.unwrap();
    let request = format!("GET /user/alice/whoami HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let got = until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 ") && text.contains("remote_addr"), "answered by the server: {text}");
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_get_503_and_are_closed_at_once() {
    let app = TestApp::builder().config(|c| c.http.max_connections = Some(2)).spawn().await;
    let host = host_of(&app);
    let health = format!("GET /hub/health HTTP/1.1\r\nHost: {host}\r\n\r\n");
    // Accepted in order: these two fill the cap.
    let mut first = TcpStream::connect(&host).await.unwrap();
    let second = TcpStream::connect(&host).await.unwrap();
    // The third is answered and closed without sending anything (what it would have sent
    // could turn the close into a reset that loses the answer).
    let mut third = TcpStream::connect(&host).await.unwrap();
    let got = until_closed(&mut third).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503 ") && text.contains("retry-after: 1"), "{text}");
    // Those within the cap are served as ever.
    first.write_all(health.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(GUARD, first.read(&mut buf)).await.expect("an answer").unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&buf[..n]));
    // Once one closes, there is room again.
    drop(second);
    let served = async {
        loop {
            let mut s = TcpStream::connect(&host).await.unwrap();
            let _ = s.write_all(health.as_bytes()).await;
            let n = s.read(&mut buf).await.unwrap_or(0);
            if buf[..n].starts_with(b"HTTP/1.1 200 ") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(GUARD, served).await.expect("room again after a connection closed");
}
