//! Pages for people: who may see what, the admin's user management, sign-up, tokens, errors.

use labhub_testkit::TestApp;
use labhub_testkit::app::{browser, csrf_of};
use reqwest::StatusCode;

fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test]
async fn each_page_states_its_role() {
    let app = TestApp::spawn().await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    let anon = browser();
    let member = app.signed_in("alice", "correct horse").await;
    let admin = app.signed_in("root", "correct horse").await;
    // (path, anonymous, member, admin)
    let table = [
        ("/hub/login", 200, 303, 303),
        ("/hub/home", 303, 200, 200),
        ("/hub/account", 303, 200, 200),
        ("/hub/token", 303, 200, 200),
        ("/hub/admin/users", 303, 403, 200),
        ("/hub/admin/audit", 303, 403, 200),
    ];
    for (path, a, m, ad) in table {
        for (who, c, want) in [("anonymous", &anon, a), ("member", &member, m), ("admin", &admin, ad)] {
            let r = c.get(app.at(path)).send().await.unwrap();
            assert_eq!(r.status().as_u16(), want, "{who} {path}");
            if who == "anonymous" && want == 303 {
                assert_eq!(location(&r), format!("/hub/login?next={}", path.replace('/', "%2F")), "{path}");
            }
        }
    }
    let r = member.get(app.at("/hub/admin/users")).send().await.unwrap();
    let html = r.text().await.unwrap();
    assert!(html.contains("this needs an admin") && html.contains("request id"), "{html}");
}

#[tokio::test]
async fn login_returns_to_next_but_never_off_site() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    for (next, want) in [
        ("/hub/token", "/hub/token"),
        ("//evil.example/x", "/hub/home"),
        ("https://evil.example", "/hub/home"),
        ("/\t/evil.example", "/hub/home"),
        ("/%2f/evil.example", "/hub/home"),
    ] {
        let c = browser();
        let csrf = app.csrf(&c, "/hub/login").await;
        let r = c
            .post(app.at("/hub/login"))
            .header("Origin", app.url.as_str())
            .form(&[("_csrf", csrf.as_str()), ("username", "alice"), ("password", "correct horse"), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(location(&r), want, "next={next}");
    }
}

/// Browsers drop a tab from an address, so `/<tab>/evil.example` is `//evil.example` to them;
/// neither it nor its percent-encoded forms may leave the hub.
#[tokio::test]
async fn a_next_that_a_browser_would_read_as_another_site_is_refused() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let member = app.signed_in("alice", "correct horse").await;
    for next in ["/\t/evil.example", "/%09/evil.example", "/%2F/evil.example", "/%5Cevil.example", "/\\evil.example"] {
        let mut url = reqwest::Url::parse(&app.at("/hub/login")).unwrap();
        url.query_pairs_mut().append_pair("next", next);
        let r = member.get(url.as_str()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "next={next:?}");
        assert_eq!(location(&r), "/hub/home", "signed in, next={next:?}");
        let page = browser().get(url.as_str()).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("name=\"next\" value=\"\""), "the form does not carry next={next:?}: {page}");
    }
}

#[tokio::test]
async fn admin_adds_searches_pages_and_acts_on_users() {
    let app = TestApp::spawn().await;
    app.add_user("root", "correct horse", true).await;
    let admin = app.signed_in("root", "correct horse").await;
    let csrf = app.csrf(&admin, "/hub/admin/users").await;
    let r = admin
        .post(app.at("/hub/admin/users"))
        .form(&[("_csrf", csrf.as_str()), ("username", "Dana"), ("password", "a long password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = admin.get(app.at("/hub/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Added dana."), "flash message shown once");
    let again = admin.get(app.at("/hub/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(!again.contains("Added dana."), "flash is one-shot");
    // A bad name is shown back on the form with the reason and nothing is created.
    let r = admin
        .post(app.at("/hub/admin/users"))
        .form(&[("_csrf", csrf.as_str()), ("username", "bad name"), ("password", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("a user name may only use"));
    // Many users: search and pages.
    for i in 0..60 {
        app.add_user(&format!("student{i:02}"), "correct horse", false).await;
    }
    let p1 = admin.get(app.at("/hub/admin/users?q=student")).send().await.unwrap().text().await.unwrap();
    assert!(p1.contains("60 users") && p1.contains("Page 1 of 2"), "{p1}");
    let p2 = admin.get(app.at("/hub/admin/users?q=student&page=2")).send().await.unwrap().text().await.unwrap();
    assert!(p2.contains("student59") && !p2.contains("student00"));
    // Make admin, disable, approve-less enable, delete (which asks for the name, and keeps
    // the files unless told otherwise).
    for (action, check) in [
        ("admin", "is now an admin"),
        ("disable", "Disabled dana"),
        ("enable", "Enabled dana"),
        ("delete", "Deleted dana; their files are kept"),
    ] {
        if action == "delete" {
            let r = admin
                .post(app.at("/hub/admin/users/dana/delete"))
                .form(&[("_csrf", csrf.as_str()), ("confirm", "dan")])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "a name typed wrong deletes nothing");
            assert!(r.text().await.unwrap().contains("does not match"));
        }
        let r = admin
            .post(app.at(&format!("/hub/admin/users/dana/{action}")))
            .form(&[("_csrf", csrf.as_str()), ("confirm", "dana")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{action}");
        let page = admin.get(app.at("/hub/admin/users")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains(check), "{action}: {check}");
    }
    // Removing the last admin is refused with the reason, as a message on the page.
    let r = admin.post(app.at("/hub/admin/users/root/unadmin")).form(&[("_csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = admin.get(app.at("/hub/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("last active admin"), "{page}");
    // The audit page lists what happened.
    let audit = admin.get(app.at("/hub/admin/audit?action=user.")).send().await.unwrap().text().await.unwrap();
    for a in ["user.create", "user.set_admin", "user.disable", "user.delete"] {
        assert!(audit.contains(a), "{a} in audit page");
    }
}

#[tokio::test]
async fn signup_with_approval() {
    let app = TestApp::builder().config(|c| c.auth.signup = labhub_service::SignupPolicy::Approval).spawn().await;
    app.add_user("root", "correct horse", true).await;
    let c = browser();
    let csrf = app.csrf(&c, "/hub/signup").await;
    let r = c
        .post(app.at("/hub/signup"))
        .header("Origin", app.url.as_str())
        .form(&[("_csrf", csrf.as_str()), ("username", "Newbie"), ("password", "a long password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = app.login(&browser(), "newbie", "a long password").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("waiting for an admin"));
    // A short password or a taken name is shown back on the form.
    let r = c
        .post(app.at("/hub/signup"))
        .header("Origin", app.url.as_str())
        .form(&[("_csrf", csrf.as_str()), ("username", "other"), ("password", "short")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("at least 8 characters"));
    let r = c
        .post(app.at("/hub/signup"))
        .header("Origin", app.url.as_str())
        .form(&[("_csrf", csrf.as_str()), ("username", "NEWBIE"), ("password", "a long password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let admin = app.signed_in("root", "correct horse").await;
    let page = admin.get(app.at("/hub/admin/users?state=pending")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("newbie") && page.contains("Approve"));
    let acsrf = csrf_of(&page);
    admin.post(app.at("/hub/admin/users/newbie/approve")).form(&[("_csrf", acsrf.as_str())]).send().await.unwrap();
    assert_eq!(app.login(&browser(), "newbie", "a long password").await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn signup_is_closed_by_default() {
    let app = TestApp::spawn().await;
    let r = browser().get(app.at("/hub/signup")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("Sign-up is closed"));
}

#[tokio::test]
async fn token_page_creates_shows_once_and_revokes() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let c = app.signed_in("alice", "correct horse").await;
    let csrf = app.csrf(&c, "/hub/token").await;
    let r = c
        .post(app.at("/hub/token"))
        .form(&[("_csrf", csrf.as_str()), ("note", "my laptop"), ("expires_in", "604800")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let html = r.text().await.unwrap();
    let marker = "id=\"new-token\" readonly value=\"";
    let start = html.find(marker).expect("the new token is shown") + marker.len();
    let token = &html[start..start + 64];
    let api = labhub_testkit::app::script();
    let me = api.get(app.at("/hub/api/user")).header("Authorization", format!("token {token}")).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let listing = c.get(app.at("/hub/token")).send().await.unwrap().text().await.unwrap();
    assert!(listing.contains("my laptop") && listing.contains("in 7 days"));
    assert!(!listing.contains(token), "a token is shown only once");
    let id: i64 = labhub_db::sqlx::query_scalar("select token_id from api_tokens").fetch_one(&app.db).await.unwrap();
    let r = c.post(app.at(&format!("/hub/token/{id}/revoke"))).form(&[("_csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let me = api.get(app.at("/hub/api/user")).header("Authorization", format!("token {token}")).send().await.unwrap();
    assert_eq!(me.status(), 401);
}

#[tokio::test]
async fn change_password_checks_the_current_one() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let c = app.signed_in("alice", "correct horse").await;
    let csrf = app.csrf(&c, "/hub/account").await;
    let r = c
        .post(app.at("/hub/account/password"))
        .form(&[
            ("_csrf", csrf.as_str()),
            ("current", "wrong"),
            ("new", "battery staple"),
            ("confirm", "battery staple"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("current password is not right"));
    let r = c
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
    assert_eq!(app.login(&browser(), "alice", "battery staple").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.login(&browser(), "alice", "correct horse").await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_addresses_give_a_page_or_json() {
    let app = TestApp::spawn().await;
    let c = browser();
    let r = c.get(app.at("/hub/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("Home"));
    let r = c.get(app.at("/hub/api/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], 404);
    // Security headers on the hub's pages.
    let r = c.get(app.at("/hub/login")).send().await.unwrap();
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().contains_key("x-request-id"));
}
