//! Browser sessions: cookies, expiry, logout, throttling, CSRF.

use labhub_testkit::TestApp;
use labhub_testkit::app::{browser, csrf_of};
use reqwest::StatusCode;

fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test]
async fn login_sets_a_strict_session_cookie_and_stores_only_its_hash() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let c = browser();
    let r = app.login(&c, "Alice", "correct horse").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/hub/home");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("labhub-session="))
        .expect("a session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "http public URL: {cookie}");
    assert!(!cookie.contains("Domain"), "host-only: {cookie}");
    let token = cookie.trim_start_matches("labhub-session=").split(';').next().unwrap().to_string();
    let stored: Vec<Vec<u8>> =
        labhub_db::sqlx::query_scalar("select token_hash from sessions").fetch_all(&app.db).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token.as_bytes(), "the token itself is never stored");
    assert_eq!(stored[0], labhub_auth::sha256(&token).to_vec());
    let home = c.get(app.at("/hub/home")).send().await.unwrap();
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains("Hello, alice"));
}

#[tokio::test]
async fn https_public_url_makes_cookies_secure() {
    let app = TestApp::builder().public_url("https://lab.example.org/").spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let r = app.login(&browser(), "alice", "correct horse").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("labhub-session="))
        .expect("a session cookie");
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let a = app.login(&browser(), "alice", "wrong password").await;
    let b = app.login(&browser(), "nobody", "wrong password").await;
    let c = app.login(&browser(), "../etc/passwd", "x").await;
    for r in [a, b, c] {
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let html = r.text().await.unwrap();
        assert!(html.contains("Invalid user name or password."), "{html}");
    }
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_account_and_per_address() {
    let app = TestApp::builder()
        .config(|c| {
            c.auth.max_failed_logins_per_account_and_address = 3;
            c.auth.max_failed_accounts_per_address = 2;
        })
        .spawn()
        .await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    for _ in 0..3 {
        assert_eq!(app.login(&browser(), "alice", "nope").await.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused while the account is throttled, with a wait time.
    let r = app.login(&browser(), "ALICE", "correct horse").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("Too many failed sign-in attempts"));
    // An unknown name is throttled the same way, so throttling reveals nothing.
    for _ in 0..3 {
        app.login(&browser(), "ghost", "nope").await;
    }
    // The address has now failed at two accounts: a browser that never signed in to bob is
    // refused bob from here too (one password tried on many accounts).
    let r = app.login(&browser(), "bob", "correct horse").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn logout_ends_the_session_for_good() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let c = app.signed_in("alice", "correct horse").await;
    let csrf = app.csrf(&c, "/hub/home").await;
    let r = c.post(app.at("/hub/logout")).form(&[("_csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.count("select count(*) from sessions").await, 0);
    let r = c.get(app.at("/hub/home")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/hub/login?next=%2Fhub%2Fhome"), "{}", location(&r));
}

#[tokio::test]
async fn logging_out_everywhere_ends_every_browser() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let one = app.signed_in("alice", "correct horse").await;
    let two = app.signed_in("alice", "correct horse").await;
    let csrf = app.csrf(&one, "/hub/account").await;
    let r = one.post(app.at("/hub/account/logout-everywhere")).form(&[("_csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    for c in [one, two] {
        assert_eq!(c.get(app.at("/hub/home")).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    }
}

#[tokio::test]
async fn idle_and_absolute_expiry() {
    let app = TestApp::builder()
        .manual_clock()
        .config(|c| {
            c.session.idle_timeout = std::time::Duration::from_secs(3600);
            c.session.absolute_timeout = std::time::Duration::from_secs(3 * 3600);
        })
        .spawn()
        .await;
    let clock = app.clock.clone().unwrap();
    app.add_user("alice", "correct horse", false).await;
    let c = app.signed_in("alice", "correct horse").await;
    // Used every 50 minutes, the session stays alive...
    for _ in 0..3 {
        clock.advance(time::Duration::minutes(50));
        assert_eq!(c.get(app.at("/hub/home")).send().await.unwrap().status(), 200);
    }
    // ...until its absolute limit.
    clock.advance(time::Duration::minutes(50));
    assert_eq!(c.get(app.at("/hub/home")).send().await.unwrap().status(), StatusCode::SEE_OTHER);

    let c = app.signed_in("alice", "correct horse").await;
    clock.advance(time::Duration::minutes(61));
    assert_eq!(c.get(app.at("/hub/home")).send().await.unwrap().status(), StatusCode::SEE_OTHER, "idle too long");
}

#[tokio::test]
async fn forged_sessions_are_anonymous() {
    let app = TestApp::spawn().await;
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for cookie in ["labhub-session=abc", &format!("labhub-session={}", "f".repeat(64))] {
        let r = c.get(app.at("/hub/home")).header("Cookie", cookie).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let r = c.get(app.at("/hub/api/user")).header("Cookie", cookie).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn forms_without_a_genuine_csrf_token_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let c = app.signed_in("alice", "correct horse").await;
    let other = app.signed_in("alice", "correct horse").await;
    let others_token = app.csrf(&other, "/hub/token").await;
    for (what, fields) in [
        ("missing", vec![("note", "x")]),
        ("forged", vec![("_csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), ("note", "x")]),
        ("another browser's", vec![("_csrf", others_token.as_str()), ("note", "x")]),
    ] {
        let r = c.post(app.at("/hub/token")).form(&fields).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
        let html = r.text().await.unwrap();
        assert!(html.contains("This form has expired"), "{what}: {html}");
        assert!(html.contains("Go back"), "an error page with a way back");
    }
    assert_eq!(app.count("select count(*) from api_tokens").await, 0);
    // The login form is protected too, before any session exists.
    let anon = browser();
    let r = anon
        .post(app.at("/hub/login"))
        .header("Origin", app.url.as_str())
        .form(&[("username", "alice"), ("password", "correct horse")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count("select count(*) from sessions").await, 2);
    // A genuine token works.
    let token = csrf_of(&c.get(app.at("/hub/token")).send().await.unwrap().text().await.unwrap());
    let r = c
        .post(app.at("/hub/token"))
        .form(&[("_csrf", token.as_str()), ("note", "ci"), ("expires_in", "86400")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.count("select count(*) from api_tokens").await, 1);
}

/// Changing one's password signs out every other browser of the account at once (someone who
/// knew the old password may be signed in there), and keeps the browser that changed it.
#[tokio::test]
async fn changing_ones_password_ends_ones_other_sessions() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let here = app.signed_in("alice", "correct horse").await;
    let elsewhere = app.signed_in("alice", "correct horse").await;
    assert_eq!(elsewhere.get(app.at("/hub/home")).send().await.unwrap().status(), StatusCode::OK, "remembered");

    let csrf = app.csrf(&here, "/hub/account").await;
    let r = here
        .post(app.at("/hub/account/password"))
        .form(&[
            ("_csrf", csrf.as_str()),
            ("current", "correct horse"),
            ("new", "battery staple"),
            ("confirm", "battery staple"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = elsewhere.get(app.at("/hub/home")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the other browser is signed out");
    assert!(location(&r).starts_with("/hub/login"));
    assert_eq!(here.get(app.at("/hub/home")).send().await.unwrap().status(), StatusCode::OK, "this one stays");
    assert_eq!(app.count("select count(*) from sessions").await, 1);
}
