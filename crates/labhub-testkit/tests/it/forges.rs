//! Signing in with GitHub and GitLab, against fakes of their APIs: users, organisations,
//! teams and groups, spent codes, verified addresses, and provider tokens kept nowhere.

use labhub_service::settings::AdminName;
use labhub_testkit::TestApp;
use labhub_testkit::app::browser;
use labhub_testkit::fake_forges::{FakeGitHub, FakeGitLab, ForgeUser};
use reqwest::{StatusCode, Url};
use serde_json::json;

use crate::oidc::{assert_refused, click_sign_in, error_page, hub_with, location, provider, query};

/// Every row of the tables a sign-in writes, as text.
async fn everything_stored(app: &TestApp) -> String {
    let mut all = String::new();
    for table in ["users", "identities", "sessions", "oauth_states", "audit_log", "api_tokens"] {
        let sql = format!("select coalesce(string_agg(row_to_json(t)::text, ' '), '') from {table} t");
        let rows: String =
            labhub_db::sqlx::query_scalar(labhub_db::AssertSqlSafe(sql)).fetch_one(&app.db).await.unwrap();
        all.push_str(&rows);
    }
    all
}

#[tokio::test]
async fn github_users_orgs_and_teams_through_its_api() {
    let mut octo = ForgeUser::new(4242, "Octo-Cat");
    octo.groups = vec!["Lab-Org".into(), "elsewhere".into()];
    octo.teams = vec![("Lab-Org".into(), "ML-Team".into())];
    let gh = FakeGitHub::start("gh-client", "gh-secret", octo).await;
    let config = provider(
        json!({ "id": "github", "kind": "github", "client_id": "gh-client", "client_secret": "gh-secret",
                "base_url": gh.base_url(), "api_url": gh.api_url(), "auto_create": true,
                "allowed_groups": ["lab-org:ml-team"], "admin_groups": ["lab-org"] }),
        json!({}),
    );
    let app = hub_with(config).await;
    let c = browser();
    let authorize = click_sign_in(&app, &c, "github").await;
    assert!(authorize.starts_with(&format!("{}login/oauth/authorize?", gh.base_url())), "{authorize}");
    assert_eq!(query(&authorize, "code_challenge_method").as_deref(), Some("S256"));
    let scopes = query(&authorize, "scope").unwrap();
    assert!(scopes.contains("read:user") && scopes.contains("read:org"), "{scopes}");
    let r = c.get(&authorize).send().await.unwrap();
    let callback = location(&r);
    assert!(callback.starts_with(&app.at("/hub/oauth_callback?")), "{callback}");
    let r = c.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), "/hub/home");
    assert_eq!(
        app.count("select count(*) from users where name = 'octo-cat' and admin").await,
        1,
        "org member → admin"
    );
    assert_eq!(app.count("select count(*) from identities where provider = 'github' and subject = '4242'").await, 1);

    // The access token was used for the API calls and is kept nowhere.
    let stored = everything_stored(&app).await;
    let issued = gh.issued_tokens();
    assert!(!issued.is_empty());
    assert!(issued.iter().all(|t| !stored.contains(t.as_str())), "a provider token was stored");

    // In the organization but not the team: let in as an admin, since admin_groups members always are.
    let mut outsider = ForgeUser::new(7, "outsider");
    outsider.groups = vec!["lab-org".into()];
    gh.set_user(outsider);
    let c = browser();
    let authorize = click_sign_in(&app, &c, "github").await;
    let callback = location(&c.get(&authorize).send().await.unwrap());
    let r = c.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "admin_groups members are allowed too");

    // In neither: refused.

    let mut stranger = ForgeUser::new(8, "stranger");
    stranger.groups = vec!["elsewhere".into()];
    gh.set_user(stranger);
    let c = browser();
    let authorize = click_sign_in(&app, &c, "github").await;
    let callback = location(&c.get(&authorize).send().await.unwrap());
    let r = c.get(&callback).send().await.unwrap();
    assert_refused(error_page(r).await, StatusCode::FORBIDDEN, "stranger may not sign in to this hub with GitHub");
}

#[tokio::test]
async fn a_spent_github_code_is_explained() {
    let gh = FakeGitHub::start("gh-client", "gh-secret", ForgeUser::new(1, "octo")).await;
    let config = provider(
        json!({ "id": "github", "kind": "github", "client_id": "gh-client", "client_secret": "gh-secret",
                "base_url": gh.base_url(), "api_url": gh.api_url(), "auto_create": true, "allowed_users": ["octo"] }),
        json!({}),
    );
    let app = hub_with(config).await;
    let c = browser();
    let authorize = click_sign_in(&app, &c, "github").await;
    let first = location(&c.get(&authorize).send().await.unwrap());
    assert_eq!(c.get(&first).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    let authorize = click_sign_in(&app, &c, "github").await;
    let mut replay = Url::parse(&app.at("/hub/oauth_callback")).unwrap();
    replay
        .query_pairs_mut()
        .append_pair("code", &query(&first, "code").unwrap())
        .append_pair("state", &query(&authorize, "state").unwrap());
    let r = c.get(replay.as_str()).send().await.unwrap();
    assert_refused(
        error_page(r).await,
        StatusCode::UNAUTHORIZED,
        "GitHub did not accept the sign-in code: it has expired or was already used",
    );
}

#[tokio::test]
async fn gitlab_users_and_groups_through_its_api() {
    let mut person = ForgeUser::new(77, "gl-user");
    person.groups = vec!["lab/ml".into(), "lab".into()];
    let gl = FakeGitLab::start("gl-client", "gl-secret", person.clone()).await;
    let config = provider(
        json!({ "id": "gitlab", "kind": "gitlab", "client_id": "gl-client", "client_secret": "gl-secret",
                "base_url": gl.base_url(), "auto_create": true, "allowed_groups": ["Lab/ML"],
                "require_verified_email": true }),
        json!({}),
    );
    let app = hub_with(config).await;
    let c = browser();
    let authorize = click_sign_in(&app, &c, "gitlab").await;
    assert!(authorize.starts_with(&format!("{}oauth/authorize?", gl.base_url())), "{authorize}");
    assert!(query(&authorize, "scope").unwrap().contains("read_api"));
    let callback = location(&c.get(&authorize).send().await.unwrap());
    let r = c.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    let (subject, email): (String, Option<String>) =
        labhub_db::sqlx::query_as("select subject, email from identities where provider = 'gitlab'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((subject.as_str(), email.as_deref()), ("77", Some("gl-user@example.org")));
    let stored = everything_stored(&app).await;
    assert!(gl.issued_tokens().iter().all(|t| !stored.contains(t.as_str())), "a provider token was stored");

    // An unconfirmed address is refused when verification is required.
    let mut unconfirmed = ForgeUser::new(78, "gl-new");
    unconfirmed.groups = vec!["lab/ml".into()];
    unconfirmed.email_verified = false;
    gl.set_user(unconfirmed);
    let c = browser();
    let authorize = click_sign_in(&app, &c, "gitlab").await;
    let callback = location(&c.get(&authorize).send().await.unwrap());
    let r = c.get(&callback).send().await.unwrap();
    assert_refused(error_page(r).await, StatusCode::FORBIDDEN, "your email address at GitLab is not verified");

    // A group outside the allowed ones is refused.
    let mut other = ForgeUser::new(79, "gl-other");
    other.groups = vec!["lab".into()];
    gl.set_user(other);
    let c = browser();
    let authorize = click_sign_in(&app, &c, "gitlab").await;
    let callback = location(&c.get(&authorize).send().await.unwrap());
    let r = c.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count("select count(*) from users").await, 1);
}

/// A GitHub sign-in as `who` through a fresh browser; returns the hub's answer at the callback.
async fn github_sign_in(app: &TestApp, gh: &FakeGitHub, who: ForgeUser) -> reqwest::Response {
    gh.set_user(who);
    let c = browser();
    let authorize = click_sign_in(app, &c, "github").await;
    let callback = location(&c.get(&authorize).send().await.unwrap());
    c.get(&callback).send().await.unwrap()
}

/// A hub signing in with the fake GitHub (only `carol` allowed, accounts made at first sign-in)
/// and with `admin_users` as given.
async fn github_hub(gh: &FakeGitHub, admin_users: &[&str]) -> TestApp {
    let github = provider(
        json!({ "id": "github", "kind": "github", "client_id": "gh-client", "client_secret": "gh-secret",
                "base_url": gh.base_url(), "api_url": gh.api_url(), "auto_create": true,
                "allowed_users": ["carol"] }),
        json!({}),
    );
    let admins: Vec<AdminName> = admin_users.iter().map(|a| AdminName::parse(a).unwrap()).collect();
    TestApp::builder()
        .config(move |c| {
            c.auth.providers = vec![github];
            c.auth.admin_users = admins;
        })
        .spawn()
        .await
}

/// Anyone can hold any login at GitHub, so a bare name in `admin_users` is a local account's:
/// a GitHub user of that name is neither let past the provider's allow-list nor made an admin.
/// `github:bob` names the account bob signed into through GitHub.
#[tokio::test]
async fn a_bare_admin_name_is_a_local_accounts_and_a_provider_entry_that_providers() {
    let gh = FakeGitHub::start("gh-client", "gh-secret", ForgeUser::new(1, "carol")).await;
    let app = github_hub(&gh, &["alice", "github:bob"]).await;

    let r = github_sign_in(&app, &gh, ForgeUser::new(66, "alice")).await;
    assert_refused(error_page(r).await, StatusCode::FORBIDDEN, "alice may not sign in to this hub with GitHub");
    assert_eq!(app.count("select count(*) from users").await, 0, "no account for the stranger");

    let r = github_sign_in(&app, &gh, ForgeUser::new(2, "bob")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "github:bob passes the allow-list");
    assert_eq!(app.count("select count(*) from users where name = 'bob' and admin").await, 1);

    // The local alice, signing in with her password, is the admin the bare name means.
    app.add_user("alice", "correct horse", false).await;
    let c = app.signed_in("alice", "correct horse").await;
    assert_eq!(c.get(app.at("/hub/admin/users")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.count("select count(*) from users where name = 'alice' and admin").await, 1);
}

/// An account an admin made without a password is linked at the first sign-in only by the
/// provider the admin named for it; made without one, no provider can claim it by its name.
#[tokio::test]
async fn an_admin_made_account_is_claimed_only_through_the_provider_named_for_it() {
    let gh = FakeGitHub::start("gh-client", "gh-secret", ForgeUser::new(1, "carol")).await;
    let app = github_hub(&gh, &[]).await;
    app.add_user("root", "correct horse", true).await;
    let root = app.api_for("root").await;

    let a = root.post_json("/hub/api/users/carol", &json!({})).await;
    let (status, body) = (a.status, a.value());
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["provider"], json!(null));
    let r = github_sign_in(&app, &gh, ForgeUser::new(3, "carol")).await;
    assert_refused(error_page(r).await, StatusCode::CONFLICT, "An account named carol already exists");
    assert_eq!(app.count("select count(*) from identities").await, 0);

    // Named for GitHub (here afterwards), the account is GitHub's carol's.
    let a = root.patch_json("/hub/api/users/carol", &json!({ "provider": "github" })).await;
    let (status, body) = (a.status, a.value());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["provider"], "github");
    let r = github_sign_in(&app, &gh, ForgeUser::new(3, "carol")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(app.count("select count(*) from identities where subject = '3'").await, 1);

    // Clear errors for what cannot be.
    let a = root.post_json("/hub/api/users/dana", &json!({ "provider": "gitlab" })).await;
    let (status, body) = (a.status, a.value());
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "there is no identity provider called 'gitlab' on this hub");
    let a =
        root.post_json("/hub/api/users/dana", &json!({ "provider": "github", "password": "a long password" })).await;
    let (status, body) = (a.status, a.value());
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("give a password or a provider, not both"), "{body}");
    let a = root.patch_json("/hub/api/users/carol", &json!({ "provider": 7 })).await;
    let (status, body) = (a.status, a.value());
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let a = root.post_json("/hub/api/users", &json!({ "usernames": ["erin"], "provider": "github" })).await;
    let (status, body) = (a.status, a.value());
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body[0]["provider"], "github");
    let a = root.patch_json("/hub/api/users/erin", &json!({ "provider": null })).await;
    assert_eq!(a.value()["provider"], json!(null), "null names no provider");
}

/// At start, a bare name in `admin_users` makes only a local account (one with a password) an
/// admin, and the first-admin account is never one a provider's user signs into.
#[tokio::test]
async fn at_start_a_bare_admin_name_does_not_promote_a_providers_account() {
    let gh = FakeGitHub::start("gh-client", "gh-secret", ForgeUser::new(1, "carol")).await;
    let app = github_hub(&gh, &["carol"]).await;
    let r = github_sign_in(&app, &gh, ForgeUser::new(1, "carol")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "GitHub's carol is allowed, and gets an account");

    let e = app.hub.accounts().bootstrap_admins().await.unwrap_err().to_string();
    assert!(
        e.contains("the account carol, which would become the first one, signs in through an identity provider"),
        "{e}"
    );
    app.add_user("root", "correct horse", true).await;
    assert!(app.hub.accounts().bootstrap_admins().await.unwrap().is_none(), "an admin exists");
    assert_eq!(app.count("select count(*) from users where admin").await, 1, "only root");
    assert_eq!(app.count("select count(*) from users where name = 'carol' and password_hash is null").await, 1);
}
