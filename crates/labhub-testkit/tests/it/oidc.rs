//! Signing in with identity providers: the whole browser flow against a real OpenID Connect
//! provider (`oidc-provider-mock`, a child process), every way it can go wrong, who gets in,
//! linked identities, and GitHub and GitLab against fakes of their APIs.

use std::time::Duration;

use labhub_auth::oidc::{ProviderConfig, SsoError, TokenProblem};
use labhub_core::UserName;
use labhub_service::Actor;
use labhub_service::SignupPolicy;
use labhub_service::accounts::NewAccount;
use labhub_testkit::TestApp;
use labhub_testkit::app::{browser, csrf_of};
use labhub_testkit::oidc::{MockOptions, MockProvider};
use reqwest::{Client, Response, StatusCode, Url};
use serde_json::{Value, json};

pub(crate) fn location(r: &Response) -> String {
    r.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

pub(crate) fn query(url: &str, key: &str) -> Option<String> {
    Url::parse(url).unwrap().query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// A provider's configuration from JSON, as `[[auth.providers]]` would give it.
pub(crate) fn provider(base: Value, extra: Value) -> ProviderConfig {
    let mut v = base;
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

/// "Lab SSO": the mock provider, creating accounts at first sign-in unless `extra` says otherwise.
fn lab_sso(mock: &MockProvider, extra: Value) -> ProviderConfig {
    provider(
        json!({
            "id": "lab", "kind": "oidc", "display_name": "Lab SSO", "issuer": mock.issuer(),
            "client_id": "labhub", "client_secret": "hub-secret", "auto_create": true
        }),
        extra,
    )
}

pub(crate) async fn hub_with(p: ProviderConfig) -> TestApp {
    TestApp::builder().config(move |c| c.auth.providers = vec![p]).spawn().await
}

/// Clicks the provider's button on the sign-in page; returns the provider's authorization URL
/// the hub sent the browser to.
pub(crate) async fn click_sign_in(app: &TestApp, c: &Client, id: &str) -> String {
    let href = format!("/hub/oauth_login/{id}");
    let login = c.get(app.at("/hub/login")).send().await.unwrap();
    // A browser signed in already is sent home from the sign-in page; the link works the same.
    if login.status() == StatusCode::OK {
        let page = login.text().await.unwrap();
        assert!(page.contains(&format!("href=\"{href}\"")), "a button for {id}: {page}");
    }
    let r = c.get(app.at(&href)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    location(&r)
}

/// At the provider's authorize page, signs in as `sub`; returns the hub callback URL it redirects to.
async fn consent(c: &Client, authorize: &str, sub: &str) -> String {
    let page = c.get(authorize).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("name=\"sub\""), "the provider's sign-in form");
    let r = c.post(authorize).form(&[("sub", sub)]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "{}", r.text().await.unwrap());
    location(&r)
}

/// The whole flow for `sub`, up to the hub's answer at the callback.
async fn sign_in(app: &TestApp, c: &Client, sub: &str) -> Response {
    let authorize = click_sign_in(app, c, "lab").await;
    let callback = consent(c, &authorize, sub).await;
    assert!(callback.starts_with(&app.at("/hub/oauth_callback?")), "{callback}");
    c.get(&callback).send().await.unwrap()
}

/// The status and text of an error page, which must offer a way back.
pub(crate) async fn error_page(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let html = r.text().await.unwrap();
    assert!(html.contains("Go back"), "an error page with a way back: {html}");
    (status, unescape(&html))
}

/// Page text with askama's HTML escapes undone, to look for phrases.
fn unescape(html: &str) -> String {
    html.replace("&#x27;", "'").replace("&#39;", "'").replace("&quot;", "\"").replace("&amp;", "&")
}

/// Asserts a refusal: its status, and a phrase of its message.
#[track_caller]
pub(crate) fn assert_refused((status, text): (StatusCode, String), want: StatusCode, phrase: &str) {
    assert_eq!(status, want, "{text}");
    assert!(text.contains(phrase), "'{phrase}' in {text}");
}

#[tokio::test]
async fn signing_in_through_a_real_provider_follows_every_hop() {
    let mock = MockProvider::start().await;
    mock.set_user(
        "sub-alice",
        json!({ "preferred_username": "Alice", "email": "alice@example.org", "email_verified": true }),
    )
    .await;
    let app = hub_with(lab_sso(&mock, json!({}))).await;
    let c = browser();

    // The sign-in page offers the provider and keeps `next` on the button.
    let page = c.get(app.at("/hub/login?next=/hub/token")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Sign in with Lab SSO"), "{page}");
    assert!(page.contains("href=\"/hub/oauth_login/lab?next=/hub/token\""), "{page}");

    // The hub sends the browser to the provider: code flow, PKCE S256, state, nonce.
    let r = c.get(app.at("/hub/oauth_login/lab?next=/hub/token")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let authorize = location(&r);
    assert!(authorize.starts_with(&format!("{}/oauth2/authorize?", mock.issuer())), "{authorize}");
    assert_eq!(query(&authorize, "response_type").as_deref(), Some("code"));
    assert_eq!(query(&authorize, "client_id").as_deref(), Some("labhub"));
    assert_eq!(query(&authorize, "redirect_uri"), Some(app.at("/hub/oauth_callback")));
    assert_eq!(query(&authorize, "code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(query(&authorize, "code_challenge").map(|c| c.len()), Some(43));
    assert!(query(&authorize, "nonce").is_some_and(|n| n.len() >= 32));
    assert!(query(&authorize, "scope").unwrap().split(' ').any(|s| s == "openid"));
    let state = query(&authorize, "state").unwrap();
    let binding = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("labhub-oauth-binding="))
        .expect("a binding cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/hub/oauth_callback", "Max-Age=600"] {
        assert!(binding.contains(attr), "{attr} in {binding}");
    }
    // Only hashes are stored while the browser is away; no verifier, no nonce.
    let stored: Vec<u8> =
        labhub_db::sqlx::query_scalar("select state_hash from oauth_states").fetch_one(&app.db).await.unwrap();
    assert_eq!(stored, labhub_auth::sha256(&state).to_vec());

    // At the provider: its form, then back to the hub's one callback.
    let callback = consent(&c, &authorize, "sub-alice").await;
    assert_eq!(query(&callback, "state").as_deref(), Some(state.as_str()));
    let r = c.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), "/hub/token");
    let cookies: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert!(cookies.iter().any(|c| c.starts_with("labhub-session=")), "{cookies:?}");

    let home = c.get(app.at("/hub/home")).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.text().await.unwrap().contains("alice"));
    assert_eq!(app.count("select count(*) from oauth_states").await, 0, "a state is used once");
    let (provider, subject, username): (String, String, String) =
        labhub_db::sqlx::query_as("select provider, subject, username from identities")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((provider.as_str(), subject.as_str(), username.as_str()), ("lab", "sub-alice", "Alice"));
    assert_eq!(
        app.count("select count(*) from users where name = 'alice' and password_hash is null and not admin").await,
        1
    );

    // The account page lists the identity.
    let account = c.get(app.at("/hub/account")).send().await.unwrap().text().await.unwrap();
    assert!(
        account.contains("Linked identities") && account.contains("Lab SSO") && account.contains("alice@example.org")
    );

    // Signing in again finds the same account through the identity.
    let again = sign_in(&app, &browser(), "sub-alice").await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.count("select count(*) from users").await, 1);
}

#[tokio::test]
async fn password_sign_in_can_be_turned_off_for_providers() {
    let mock = MockProvider::start().await;
    let lab = lab_sso(&mock, json!({}));
    let app = TestApp::builder()
        .config(move |c| {
            c.auth.providers = vec![lab];
            c.auth.password_login = Some(labhub_service::PasswordLogin::Off);
        })
        .spawn()
        .await;
    let page = browser().get(app.at("/hub/login")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Sign in with Lab SSO") && !page.contains("type=\"password\""), "{page}");
}

#[tokio::test]
async fn declining_at_the_provider_is_a_page_with_a_way_back() {
    let mock = MockProvider::start().await;
    let app = hub_with(lab_sso(&mock, json!({}))).await;
    let c = browser();
    let authorize = click_sign_in(&app, &c, "lab").await;
    let r = c.post(&authorize).form(&[("action", "deny")]).send().await.unwrap();
    let callback = location(&r);
    assert_eq!(query(&callback, "error").as_deref(), Some("access_denied"));
    let r = c.get(&callback).send().await.unwrap();
    assert_refused(error_page(r).await, StatusCode::FORBIDDEN, "You did not allow this hub to use your identity");
    assert_eq!(app.count("select count(*) from users").await, 0);
    assert_eq!(app.count("select count(*) from sessions").await, 0);
}

#[tokio::test]
async fn a_state_is_used_once_and_only_by_the_browser_that_started_it() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-alice", json!({ "preferred_username": "alice" })).await;
    let app = hub_with(lab_sso(&mock, json!({}))).await;

    // Replayed: the same callback twice.
    let c = browser();
    let authorize = click_sign_in(&app, &c, "lab").await;
    let callback = consent(&c, &authorize, "sub-alice").await;
    assert_eq!(c.get(&callback).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    let r = c.get(&callback).send().await.unwrap();
    assert_refused(error_page(r).await, StatusCode::UNAUTHORIZED, "This sign-in is unknown or was already used");

    // Wrong: a state the hub never issued.
    let forged = app.at(&format!("/hub/oauth_callback?code=x&state={}", "ab".repeat(32)));
    let r = c.get(&forged).send().await.unwrap();
    assert_refused(error_page(r).await, StatusCode::UNAUTHORIZED, "unknown or was already used");

    // No cookie: the callback reached a browser without the binding.
    let authorize = click_sign_in(&app, &c, "lab").await;
    let callback = consent(&c, &authorize, "sub-alice").await;
    let r = browser().get(&callback).send().await.unwrap();
    assert_refused(error_page(r).await, StatusCode::UNAUTHORIZED, "did not send back this hub's sign-in cookie");

    // Another browser's cookie: a sign-in link planted in someone else's browser.
    let victim = browser();
    click_sign_in(&app, &victim, "lab").await;
    let r = victim.get(&callback).send().await.unwrap();
    assert_refused(error_page(r).await, StatusCode::UNAUTHORIZED, "started in another browser");
    assert_eq!(app.count("select count(*) from sessions").await, 1, "only the first sign-in made a session");
}

#[tokio::test]
async fn a_sign_in_expires_after_ten_minutes() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-alice", json!({ "preferred_username": "alice" })).await;
    let lab = lab_sso(&mock, json!({}));
    let app = TestApp::builder().manual_clock().config(move |c| c.auth.providers = vec![lab]).spawn().await;
    let c = browser();
    let authorize = click_sign_in(&app, &c, "lab").await;
    let callback = consent(&c, &authorize, "sub-alice").await;
    app.clock.as_ref().unwrap().advance(time::Duration::minutes(11));
    let r = c.get(&callback).send().await.unwrap();
    assert_refused(error_page(r).await, StatusCode::UNAUTHORIZED, "took longer than 10 minutes");
    assert_eq!(app.count("select count(*) from users").await, 0);
}

#[tokio::test]
async fn a_spent_code_is_refused_by_the_provider_and_explained() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-alice", json!({ "preferred_username": "alice" })).await;
    let app = hub_with(lab_sso(&mock, json!({}))).await;
    let c = browser();
    let authorize = click_sign_in(&app, &c, "lab").await;
    let first = consent(&c, &authorize, "sub-alice").await;
    assert_eq!(c.get(&first).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    // A new sign-in, answered with the first one's (spent) code.
    let authorize = click_sign_in(&app, &c, "lab").await;
    let state = query(&authorize, "state").unwrap();
    let spent = query(&first, "code").unwrap();
    let mut replay = Url::parse(&app.at("/hub/oauth_callback")).unwrap();
    replay.query_pairs_mut().append_pair("code", &spent).append_pair("state", &state);
    let r = c.get(replay.as_str()).send().await.unwrap();
    assert_refused(
        error_page(r).await,
        StatusCode::UNAUTHORIZED,
        "did not accept the sign-in code: it has expired or was already used",
    );
}

#[tokio::test]
async fn a_provider_that_is_down_is_a_clear_page() {
    // Down before the sign-in starts: nothing listens at the issuer.
    let port = labhub_testkit::pg::free_port();
    let down = provider(
        json!({ "id": "lab", "kind": "oidc", "display_name": "Lab SSO", "issuer": format!("http://127.0.0.1:{port}"),
                "client_id": "labhub", "client_secret": "s" }),
        json!({}),
    );
    let app = hub_with(down).await;
    let r = browser().get(app.at("/hub/oauth_login/lab")).send().await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_refused(error_page(r).await, StatusCode::SERVICE_UNAVAILABLE, "Lab SSO could not be reached");

    // Gone while the person was at the provider: the code exchange finds nobody.
    let mut mock = MockProvider::start().await;
    mock.set_user("sub-alice", json!({ "preferred_username": "alice" })).await;
    let app = hub_with(lab_sso(&mock, json!({}))).await;
    let c = browser();
    let authorize = click_sign_in(&app, &c, "lab").await;
    let callback = consent(&c, &authorize, "sub-alice").await;
    mock.stop();
    let r = c.get(&callback).send().await.unwrap();
    assert_refused(error_page(r).await, StatusCode::SERVICE_UNAVAILABLE, "Lab SSO could not be reached");
    assert_eq!(app.count("select count(*) from users").await, 0);
}

#[tokio::test]
async fn a_slow_provider_times_out() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let slow = provider(
        json!({ "id": "lab", "kind": "oidc", "display_name": "Lab SSO", "issuer": format!("http://{addr}"),
                "client_id": "labhub", "client_secret": "s", "timeout": "1s" }),
        json!({}),
    );
    let app = hub_with(slow).await;
    // The provider never answers, so only the hub's timeout can end the sign-in (without one it
    // would hang, and the guard would say so); the page names the configured second.
    let r = tokio::time::timeout(Duration::from_secs(120), browser().get(app.at("/hub/oauth_login/lab")).send())
        .await
        .expect("the hub gave up on the silent provider instead of waiting for ever")
        .unwrap();
    assert_refused(error_page(r).await, StatusCode::SERVICE_UNAVAILABLE, "Lab SSO did not answer within 1 second.");
    held.abort();
}

#[tokio::test]
async fn id_tokens_with_a_bad_signature_another_audience_or_nonce_are_refused() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-alice", json!({ "preferred_username": "alice" })).await;
    let app = hub_with(lab_sso(&mock, json!({}))).await;
    let lab = app.hub.providers().get("lab").unwrap();
    let now = app.hub.now();

    let good = mock.id_token_for("labhub", "sub-alice", "nonce-1").await;
    lab.verify_id_token(&good, "nonce-1", now).await.expect("the provider's own token for this hub is valid");

    let problem = |r: Result<(), SsoError>| match r {
        Err(SsoError::InvalidToken { problem, .. }) => problem,
        other => panic!("expected an invalid token, got {other:?}"),
    };
    // Tampered: one character of the signature changed.
    let (signed, signature) = good.rsplit_once('.').unwrap();
    let mut sig: Vec<char> = signature.chars().collect();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{signed}.{}", sig.into_iter().collect::<String>());
    assert_eq!(problem(lab.verify_id_token(&tampered, "nonce-1", now).await), TokenProblem::Signature);
    // Issued to another application by the same provider.
    let theirs = mock.id_token_for("another-app", "sub-alice", "nonce-1").await;
    assert_eq!(problem(lab.verify_id_token(&theirs, "nonce-1", now).await), TokenProblem::Audience);
    // Issued for another sign-in.
    assert_eq!(problem(lab.verify_id_token(&good, "nonce-2", now).await), TokenProblem::Nonce);
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    let mock = MockProvider::start_with(MockOptions { token_max_age: Some(Duration::from_secs(60)) }).await;
    mock.set_user("sub-alice", json!({ "preferred_username": "alice" })).await;
    let lab = lab_sso(&mock, json!({}));
    let app = TestApp::builder().manual_clock().config(move |c| c.auth.providers = vec![lab]).spawn().await;
    let c = browser();
    let authorize = click_sign_in(&app, &c, "lab").await;
    let callback = consent(&c, &authorize, "sub-alice").await;
    // Within the sign-in window, past the token's minute and the minute of clock skew.
    app.clock.as_ref().unwrap().advance(time::Duration::minutes(3));
    let r = c.get(&callback).send().await.unwrap();
    assert_refused(
        error_page(r).await,
        StatusCode::UNAUTHORIZED,
        "the identity token from Lab SSO is not valid: it has expired",
    );
    assert_eq!(app.count("select count(*) from users").await, 0);
}

#[tokio::test]
async fn an_unverified_email_is_refused_when_it_is_the_name() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-eve", json!({ "email": "eve@example.org", "email_verified": false })).await;
    mock.set_user("sub-bob", json!({ "email": "bob@example.org", "email_verified": true })).await;
    let app = hub_with(lab_sso(&mock, json!({ "username_claim": "email" }))).await;
    let r = sign_in(&app, &browser(), "sub-eve").await;
    assert_refused(error_page(r).await, StatusCode::FORBIDDEN, "your email address at Lab SSO is not verified");
    assert_eq!(app.count("select count(*) from users").await, 0);
    assert_eq!(sign_in(&app, &browser(), "sub-bob").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.count("select count(*) from users where name = 'bob@example.org'").await, 1);
}

#[tokio::test]
async fn a_claimed_name_must_pass_the_account_name_rule() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-x", json!({ "preferred_username": "not a valid name!" })).await;
    let app = hub_with(lab_sso(&mock, json!({}))).await;
    let r = sign_in(&app, &browser(), "sub-x").await;
    assert_refused(error_page(r).await, StatusCode::FORBIDDEN, "which is not a valid account name on this hub");
    assert_eq!(app.count("select count(*) from users").await + app.count("select count(*) from identities").await, 0);
}

#[tokio::test]
async fn allowed_users_and_groups_decide_who_gets_in() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-alice", json!({ "preferred_username": "alice", "groups": ["students"] })).await;
    mock.set_user("sub-bob", json!({ "preferred_username": "bob", "groups": ["staff"] })).await;
    mock.set_user("sub-carol", json!({ "preferred_username": "carol" })).await;
    let app = hub_with(lab_sso(&mock, json!({ "allowed_users": ["carol"], "allowed_groups": ["staff"] }))).await;

    let r = sign_in(&app, &browser(), "sub-alice").await;
    assert_refused(error_page(r).await, StatusCode::FORBIDDEN, "alice may not sign in to this hub with Lab SSO");
    assert_eq!(app.count("select count(*) from users").await, 0, "nothing is created for a refusal");

    assert_eq!(sign_in(&app, &browser(), "sub-bob").await.status(), StatusCode::SEE_OTHER, "by group");
    assert_eq!(sign_in(&app, &browser(), "sub-carol").await.status(), StatusCode::SEE_OTHER, "by name");
    assert_eq!(app.count("select count(*) from users").await, 2);
}

#[tokio::test]
async fn a_name_taken_by_another_account_is_refused_and_audited() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-mallory", json!({ "preferred_username": "Alice" })).await;
    let app = hub_with(lab_sso(&mock, json!({}))).await;
    app.add_user("alice", "correct horse", false).await;
    let r = sign_in(&app, &browser(), "sub-mallory").await;
    assert_refused(
        error_page(r).await,
        StatusCode::CONFLICT,
        "An account named alice already exists on this hub and is not linked to your Lab SSO identity",
    );
    assert_eq!(app.count("select count(*) from identities").await, 0);
    assert_eq!(app.count("select count(*) from sessions").await, 0);
    assert_eq!(
        app.count("select count(*) from audit_log where action = 'identity.refused' and target = 'alice' and detail->>'subject' = 'sub-mallory'").await,
        1
    );
}

#[tokio::test]
async fn admin_groups_grant_and_revoke_admin_at_each_sign_in() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-alice", json!({ "preferred_username": "alice", "groups": ["hub-admins"] })).await;
    let app = hub_with(lab_sso(&mock, json!({ "admin_groups": ["hub-admins"] }))).await;
    let c = browser();
    assert_eq!(sign_in(&app, &c, "sub-alice").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.count("select count(*) from users where name = 'alice' and admin").await, 1);
    assert_eq!(c.get(app.at("/hub/admin/users")).send().await.unwrap().status(), StatusCode::OK);

    mock.set_user("sub-alice", json!({ "preferred_username": "alice", "groups": [] })).await;
    assert_eq!(sign_in(&app, &browser(), "sub-alice").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.count("select count(*) from users where name = 'alice' and admin").await, 0);
    assert_eq!(
        c.get(app.at("/hub/admin/users")).send().await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "at once, in every session"
    );
    assert_eq!(
        app.count(
            "select count(*) from audit_log where action = 'user.set_admin' and detail->>'reason' = 'admin_groups'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn without_auto_create_only_accounts_an_admin_made_get_in() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-carol", json!({ "preferred_username": "carol" })).await;
    mock.set_user("sub-impostor", json!({ "preferred_username": "carol" })).await;
    let app = hub_with(lab_sso(&mock, json!({ "auto_create": false }))).await;

    let r = sign_in(&app, &browser(), "sub-carol").await;
    assert_refused(error_page(r).await, StatusCode::FORBIDDEN, "There is no account carol on this hub");

    let carol = UserName::parse("carol").unwrap();
    let made_for_lab = NewAccount { name: carol, password: None, admin: false, provider: Some("lab".into()) };
    app.hub.accounts().create(Actor::System, made_for_lab).await.unwrap();
    assert_eq!(sign_in(&app, &browser(), "sub-carol").await.status(), StatusCode::SEE_OTHER, "linked at first sign-in");
    assert_eq!(app.count("select count(*) from identities where subject = 'sub-carol'").await, 1);

    // Once linked, the account is that identity's: another identity claiming the name is refused.
    let r = sign_in(&app, &browser(), "sub-impostor").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(app.count("select count(*) from identities").await, 1);
}

#[tokio::test]
async fn with_approval_a_first_sign_in_waits_for_an_admin() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-newbie", json!({ "preferred_username": "newbie" })).await;
    let lab = lab_sso(&mock, json!({}));
    let app = TestApp::builder()
        .config(move |c| {
            c.auth.providers = vec![lab];
            c.auth.signup = SignupPolicy::Approval;
        })
        .spawn()
        .await;
    let r = sign_in(&app, &browser(), "sub-newbie").await;
    assert_refused(
        error_page(r).await,
        StatusCode::FORBIDDEN,
        "Your account newbie is waiting for an admin's approval",
    );
    assert_eq!(app.count("select count(*) from users where name = 'newbie' and state = 'pending'").await, 1);
    assert_eq!(app.count("select count(*) from identities").await, 1, "linked, so approval lets this identity in");
    assert_eq!(app.count("select count(*) from sessions").await, 0);

    let newbie = UserName::parse("newbie").unwrap();
    app.hub.accounts().set_state(Actor::System, &newbie, labhub_core::AccountState::Active).await.unwrap();
    assert_eq!(sign_in(&app, &browser(), "sub-newbie").await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn admins_see_and_unlink_identities() {
    let mock = MockProvider::start().await;
    mock.set_user("sub-alice", json!({ "preferred_username": "alice", "email": "alice@example.org" })).await;
    let app = hub_with(lab_sso(&mock, json!({}))).await;
    assert_eq!(sign_in(&app, &browser(), "sub-alice").await.status(), StatusCode::SEE_OTHER);
    app.add_user("root", "correct horse", true).await;
    let admin = app.signed_in("root", "correct horse").await;

    let users = admin.get(app.at("/hub/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(users.contains("href=\"/hub/admin/users/alice/identities\""));
    let page = admin.get(app.at("/hub/admin/users/alice/identities")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Lab SSO") && page.contains("sub-alice") && page.contains("alice@example.org"), "{page}");
    let id: i64 = labhub_db::sqlx::query_scalar("select identity_id from identities").fetch_one(&app.db).await.unwrap();
    let unlink = app.at(&format!("/hub/admin/users/alice/identities/{id}/unlink"));
    // Without a CSRF token nothing happens.
    assert_eq!(admin.post(&unlink).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count("select count(*) from identities").await, 1);
    let r = admin.post(&unlink).form(&[("_csrf", csrf_of(&page).as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = unescape(&admin.get(app.at(&location(&r))).send().await.unwrap().text().await.unwrap());
    assert!(
        page.contains("Unlinked alice's Lab SSO identity") && page.contains("No identities are linked to alice"),
        "{page}"
    );
    assert_eq!(app.count("select count(*) from identities").await, 0);
    assert_eq!(
        app.count("select count(*) from audit_log where action = 'identity.unlink' and actor = 'root' and detail->>'subject' = 'sub-alice'").await,
        1
    );
    // Members cannot.
    let member = browser();
    assert_eq!(
        sign_in(&app, &member, "sub-alice").await.status(),
        StatusCode::SEE_OTHER,
        "relinked: no password, no identity"
    );
    let r = member.get(app.at("/hub/admin/users/alice/identities")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_unknown_provider_is_not_found() {
    let app = TestApp::spawn().await;
    let r = browser().get(app.at("/hub/oauth_login/nobody")).send().await.unwrap();
    assert_refused(error_page(r).await, StatusCode::NOT_FOUND, "there is no identity provider called 'nobody'");
}
