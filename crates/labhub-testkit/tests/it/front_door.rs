//! The front door under abuse: bursts of password guesses, sign-up floods.

use std::sync::Arc;

use labhub_testkit::TestApp;
use labhub_testkit::app::{browser, csrf_of};
use reqwest::StatusCode;
use reqwest::cookie::Jar;

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
            c.post(app.at("/hub/signup")).form(&form).send().await.unwrap()
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
