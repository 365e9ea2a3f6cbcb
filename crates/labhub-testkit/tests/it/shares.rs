//! Sharing, driven as JupyterHub 5's clients drive its API: user and group shares, scopes,
//! revocation, leaving, share codes (made, listed, accepted, revoked, expired), pagination,
//! errors in `{status, message}`, who may share what (owners with whom they see, leads with
//! their group only), and the audit trail. What a share lets through the proxy is in
//! `shared_servers`.

use labhub_testkit::{Api, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A hub with admin `root`, members `alice`, `bob`, `carol`, and group `lab` of alice and bob
/// (carol is in no group with alice); API clients of root, alice, bob and carol.
async fn lab(app: &TestApp) -> (Api, Api, Api, Api) {
    for (name, admin) in [("root", true), ("alice", false), ("bob", false), ("carol", false)] {
        app.add_user(name, "correct horse", admin).await;
    }
    let root = app.api_for("root").await;
    assert_eq!(root.post("/hub/api/groups/lab").await.status, StatusCode::CREATED);
    let added = root.post_json("/hub/api/groups/lab/users", &json!({"users": ["alice", "bob"]})).await;
    assert!(added.status.is_success(), "{added:?}");
    (root, app.api_for("alice").await, app.api_for("bob").await, app.api_for("carol").await)
}

#[track_caller]
fn refused(answer: &labhub_testkit::api::Answer, status: StatusCode, words: &str) {
    let e = answer.error();
    assert_eq!(e.status, status, "{answer:?}");
    assert!(e.message.contains(words), "{:?} does not say {words:?}", e.message);
}

#[tokio::test]
async fn owners_share_with_users_and_groups_and_revoke_as_jupyterhub_clients_expect() {
    let app = TestApp::spawn().await;
    let (root, alice, bob, carol) = lab(&app).await;

    // A user share of the default server (its name is empty): JupyterHub's model.
    let answer = alice.post_json("/hub/api/shares/alice/", &json!({"user": "bob"})).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let share = answer.value();
    assert_eq!(share["server"]["user"]["name"], "alice");
    assert_eq!(share["server"]["name"], "");
    assert_eq!(share["server"]["url"], "/user/alice/");
    assert_eq!(share["server"]["ready"], false);
    assert_eq!(share["scopes"], json!(["access:servers!server=alice/"]));
    assert_eq!(share["user"], json!({"name": "bob"}));
    assert_eq!(share["group"], Value::Null);
    assert_eq!(share["kind"], "user");
    assert!(share["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{share}");
    // Granting more adds to the share; the filter may be given, as JupyterHub writes it.
    let more =
        alice.post_json("/hub/api/shares/alice/", &json!({"user": "bob", "scopes": ["servers!server=alice/"]})).await;
    assert_eq!(more.value()["scopes"], json!(["access:servers!server=alice/", "servers!server=alice/"]));

    // Bad requests say what is wrong.
    let bad = [
        (json!({"user": "bob", "group": "lab"}), "not both"),
        (json!({}), "exactly one"),
        (json!({"user": "bob", "scopes": ["admin:users"]}), "cannot be shared"),
        (json!({"user": "bob", "scopes": ["access:servers!server=bob/"]}), "only !server=alice/"),
        (json!({"user": "bob", "expires_in": 60}), "not valid JSON"),
    ];
    for (body, words) in bad {
        refused(&alice.post_json("/hub/api/shares/alice/", &body).await, StatusCode::BAD_REQUEST, words);
    }
    // A member shares only with people in a group with them; an admin with anyone there is.
    refused(
        &alice.post_json("/hub/api/shares/alice/", &json!({"user": "carol"})).await,
        StatusCode::FORBIDDEN,
        "group",
    );
    refused(
        &alice.post_json("/hub/api/shares/alice/", &json!({"user": "nobody"})).await,
        StatusCode::FORBIDDEN,
        "group",
    );
    refused(
        &root.post_json("/hub/api/shares/alice/", &json!({"user": "nobody"})).await,
        StatusCode::BAD_REQUEST,
        "No such user",
    );
    // Nobody else shares alice's server (JupyterHub's refusal: they lack `shares` on it), and
    // only GET takes an owner without a server.
    let lacks = "requires any of [shares]";
    refused(&carol.post_json("/hub/api/shares/alice/", &json!({"user": "carol"})).await, StatusCode::FORBIDDEN, lacks);
    refused(&bob.post_json("/hub/api/shares/alice/", &json!({"group": "lab"})).await, StatusCode::FORBIDDEN, lacks);
    assert_eq!(
        alice.post_json("/hub/api/shares/alice", &json!({"user": "bob"})).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    refused(
        &alice.post_json("/hub/api/shares/alice/gpu", &json!({"user": "bob"})).await,
        StatusCode::NOT_FOUND,
        "alice/gpu",
    );

    // A group share; the owner's list pages like JupyterHub's.
    let group = alice.post_json("/hub/api/shares/alice/", &json!({"group": "lab"})).await.value();
    assert_eq!(
        (group["kind"].as_str(), &group["group"], &group["user"]),
        (Some("group"), &json!({"name": "lab"}), &Value::Null)
    );
    for (path, total) in [("/hub/api/shares/alice/", 2), ("/hub/api/shares/alice", 2)] {
        let page = alice.get(path).await.value();
        assert_eq!(page["_pagination"]["total"], total, "{page}");
        assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    }
    let first = alice.get_paginated("/hub/api/shares/alice/?limit=1").await.value();
    assert_eq!(first["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(first["items"][0]["kind"], "user", "oldest first");
    assert_eq!(first["_pagination"]["next"]["offset"], 1);
    let next = first["_pagination"]["next"]["url"].as_str().expect("a next page").to_string();
    assert!(next.starts_with(&app.url) && next.contains("offset=1") && next.contains("limit=1"), "{next}");
    let second = alice.get(next.trim_start_matches(&app.url)).await.value();
    assert_eq!((second["items"][0]["kind"].as_str(), &second["_pagination"]["next"]), (Some("group"), &Value::Null));
    refused(&alice.get("/hub/api/shares/alice/?limit=0").await, StatusCode::BAD_REQUEST, "limit");
    refused(&carol.get("/hub/api/shares/alice/").await, StatusCode::FORBIDDEN, "requires any of [read:shares]");

    // What is shared with bob: directly and through his group.
    let mine = bob.get("/hub/api/users/bob/shared").await.value();
    assert_eq!(mine["_pagination"]["total"], 2, "{mine}");
    let one = bob.get("/hub/api/users/bob/shared/alice/").await.value();
    assert_eq!((one["kind"].as_str(), one["server"]["user"]["name"].as_str()), (Some("user"), Some("alice")));
    refused(
        &carol.get("/hub/api/users/bob/shared").await,
        StatusCode::FORBIDDEN,
        "requires any of [read:users:shares]",
    );
    assert_eq!(carol.get("/hub/api/users/carol/shared").await.value()["items"], json!([]));
    assert_eq!(bob.get("/hub/api/groups/lab/shared").await.value()["_pagination"]["total"], 1);
    assert_eq!(bob.get("/hub/api/groups/lab/shared/alice/").await.value()["kind"], "group");
    // Refused by scope whether the group exists or not, so nothing is learnt of it.
    let lacks = "requires any of [read:groups:shares]";
    refused(&carol.get("/hub/api/groups/lab/shared").await, StatusCode::FORBIDDEN, lacks);
    refused(&carol.get("/hub/api/groups/no-such-lab/shared").await, StatusCode::FORBIDDEN, lacks);

    // PATCH revokes the listed scopes, and all when none: then the answer is `{}`.
    let left =
        alice.patch_json("/hub/api/shares/alice/", &json!({"user": "bob", "scopes": ["servers!server=alice/"]})).await;
    assert_eq!(left.value()["scopes"], json!(["access:servers!server=alice/"]));
    assert_eq!(alice.patch_json("/hub/api/shares/alice/", &json!({"user": "bob"})).await.value(), json!({}));
    assert_eq!(
        alice.patch_json("/hub/api/shares/alice/", &json!({"user": "bob"})).await.value(),
        json!({}),
        "twice is harmless"
    );
    refused(
        &bob.get("/hub/api/users/bob/shared/alice/").await,
        StatusCode::NOT_FOUND,
        "No such share for user bob on alice/",
    );

    // Bob leaves a share; the group's stays until alice revokes all.
    alice.post_json("/hub/api/shares/alice/", &json!({"user": "bob"})).await;
    assert_eq!(bob.delete("/hub/api/users/bob/shared/alice/").await.status, StatusCode::NO_CONTENT);
    assert_eq!(bob.get("/hub/api/users/bob/shared").await.value()["_pagination"]["total"], 1);
    assert_eq!(
        bob.delete("/hub/api/groups/lab/shared/alice/").await.status,
        StatusCode::FORBIDDEN,
        "members do not remove it"
    );
    assert_eq!(alice.delete("/hub/api/shares/alice/").await.status, StatusCode::NO_CONTENT);
    assert_eq!(alice.get("/hub/api/shares/alice").await.value()["items"], json!([]));

    // Every grant and revocation is in the audit log.
    assert_eq!(app.count("select count(*) from audit_log where action = 'share.grant'").await, 4);
    assert_eq!(app.count("select count(*) from audit_log where action in ('share.revoke', 'share.leave')").await, 4);
}

#[tokio::test]
async fn share_codes_are_made_listed_accepted_once_by_each_and_revoked() {
    let app = TestApp::builder().manual_clock().spawn().await;
    let (_, alice, _, carol) = lab(&app).await;

    let made = alice.post_json("/hub/api/share-codes/alice/", &json!({})).await;
    assert_eq!(made.status, StatusCode::OK, "{made:?}");
    let made = made.value();
    let code = made["code"].as_str().expect("the code, this once").to_string();
    let id = made["id"].as_str().expect("an id").to_string();
    assert!(id.starts_with("sc_"), "{id}");
    assert_eq!(made["accept_url"], format!("/hub/accept-share?code={code}"));
    assert_eq!(made["full_accept_url"], format!("{}/hub/accept-share?code={code}", app.url));
    assert_eq!((made["exchange_count"].as_i64(), &made["last_exchanged_at"]), (Some(0), &Value::Null));
    assert_eq!(made["scopes"], json!(["access:servers!server=alice/"]));
    let created = time::OffsetDateTime::parse(
        made["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        made["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires - created, time::Duration::days(1), "a day unless asked");
    for (expires_in, words) in [(59, "between 60"), (525_600 * 60 + 1, "a year")] {
        refused(
            &alice.post_json("/hub/api/share-codes/alice/", &json!({"expires_in": expires_in})).await,
            StatusCode::BAD_REQUEST,
            words,
        );
    }
    let lacks = "requires any of [shares]";
    refused(&carol.post_json("/hub/api/share-codes/alice/", &json!({})).await, StatusCode::FORBIDDEN, lacks);
    // Listed without the code; only the hash is stored.
    let listed = alice.get("/hub/api/share-codes/alice/").await.value();
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert!(listed["items"][0].get("code").is_none(), "{listed}");
    let stored: Vec<u8> =
        labhub_db::sqlx::query_scalar("select code_hash from share_codes").fetch_one(&app.db).await.unwrap();
    assert_eq!(stored, labhub_auth::sha256(&code).to_vec(), "only the code's hash is kept");

    // Carol (in no group with alice) accepts it in her browser: a page to confirm, then the server.
    let browser = app.signed_in("carol", "correct horse").await;
    let page = browser.get(app.at(&format!("/hub/accept-share?code={code}"))).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("alice shares a server with you") && html.contains("act as alice"), "{html}");
    let csrf = labhub_testkit::app::csrf_of(&html);
    let origin = app.config.public_url().origin().ascii_serialization();
    for _ in 0..2 {
        let accepted = browser
            .post(app.at("/hub/accept-share"))
            .header("Origin", &origin)
            .form(&[("_csrf", csrf.as_str()), ("code", code.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
        assert_eq!(accepted.headers()["location"], "/user/alice/");
    }
    let shared = carol.get("/hub/api/users/carol/shared").await.value();
    assert_eq!(shared["items"][0]["scopes"], json!(["access:servers!server=alice/"]), "{shared}");
    let listed = alice.get("/hub/api/share-codes/alice").await.value();
    assert_eq!(listed["items"][0]["exchange_count"], 2, "each exchange counts");
    assert!(listed["items"][0]["last_exchanged_at"].is_string());
    // Without the form's CSRF token, or without a session, nothing is accepted.
    let forged = browser
        .post(app.at("/hub/accept-share"))
        .header("Origin", &origin)
        .form(&[("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let stranger =
        labhub_testkit::app::browser().get(app.at(&format!("/hub/accept-share?code={code}"))).send().await.unwrap();
    assert_eq!(stranger.status(), StatusCode::SEE_OTHER);
    assert!(stranger.headers()["location"].to_str().unwrap().starts_with("/hub/login?next="));

    // Revoking by id, by code, or all; an unknown one is a 404.
    let by_code = alice.post_json("/hub/api/share-codes/alice/", &json!({"expires_in": 60})).await.value();
    let other = by_code["code"].as_str().unwrap();
    refused(
        &alice.send(Method::DELETE, "/hub/api/share-codes/alice/?id=sc_999999", None).await,
        StatusCode::NOT_FOUND,
        "sc_999999",
    );
    assert_eq!(alice.delete(&format!("/hub/api/share-codes/alice/?code={other}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(alice.delete(&format!("/hub/api/share-codes/alice/?id={id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(alice.get("/hub/api/share-codes/alice/").await.value()["items"], json!([]));
    let gone = browser.get(app.at(&format!("/hub/accept-share?code={code}"))).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND, "a revoked code");

    // A code past its expiry is refused, and no longer listed.
    let short = alice.post_json("/hub/api/share-codes/alice/", &json!({"expires_in": 60})).await.value();
    app.clock.as_ref().unwrap().advance(time::Duration::seconds(61));
    let late = browser
        .get(app.at(&format!("/hub/accept-share?code={}", short["code"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::NOT_FOUND);
    assert_eq!(alice.get("/hub/api/share-codes/alice/").await.value()["_pagination"]["total"], 0);
    assert_eq!(app.count("select count(*) from audit_log where action = 'share_code.exchange'").await, 2);
    assert_eq!(app.count("select count(*) from audit_log where action = 'share_code.revoke'").await, 2);
}

#[tokio::test]
async fn a_lead_shares_a_members_server_with_their_group_only() {
    let app = TestApp::spawn().await;
    let (root, alice, bob, _) = lab(&app).await;
    app.add_user("lena", "correct horse", false).await;
    root.post_json("/hub/api/groups/lab/users", &json!({"users": ["lena"]})).await;
    root.post_json("/hub/api/groups/lab/leads", &json!({"users": ["lena"]})).await;
    assert_eq!(root.post("/hub/api/groups/other").await.status, StatusCode::CREATED);
    root.post_json("/hub/api/groups/other/users", &json!({"users": ["alice", "lena"]})).await;
    let lena = app.api_for("lena").await;

    let shared = lena.post_json("/hub/api/shares/alice/", &json!({"group": "lab"})).await;
    assert_eq!(shared.status, StatusCode::OK, "{shared:?}");
    assert_eq!(bob.get("/hub/api/users/bob/shared").await.value()["_pagination"]["total"], 1);
    refused(
        &lena.post_json("/hub/api/shares/alice/", &json!({"user": "bob"})).await,
        StatusCode::FORBIDDEN,
        "group they lead",
    );
    refused(
        &lena.post_json("/hub/api/shares/alice/", &json!({"group": "other"})).await,
        StatusCode::FORBIDDEN,
        "lead no group named other",
    );
    refused(
        &lena.post_json("/hub/api/shares/alice/", &json!({"group": "lab", "scopes": ["servers"]})).await,
        StatusCode::FORBIDDEN,
        "permission",
    );
    refused(
        &lena.post_json("/hub/api/share-codes/alice/", &json!({})).await,
        StatusCode::FORBIDDEN,
        "owner or an admin",
    );
    // A lead manages members' servers, not a fellow lead's nor an admin's.
    app.add_user("leo", "correct horse", false).await;
    root.post_json("/hub/api/groups/lab/users", &json!({"users": ["leo", "root"]})).await;
    root.post_json("/hub/api/groups/lab/leads", &json!({"users": ["leo"]})).await;
    for (owner, words) in [("leo", "only share your own"), ("root", "an admin's")] {
        let r = lena.post_json(&format!("/hub/api/shares/{owner}/"), &json!({"group": "lab"})).await;
        refused(&r, StatusCode::FORBIDDEN, words);
    }
    // The lead takes it back; so could alice.
    assert_eq!(lena.delete("/hub/api/groups/lab/shared/alice/").await.status, StatusCode::NO_CONTENT);
    assert_eq!(alice.get("/hub/api/shares/alice/").await.value()["items"], json!([]));
    // The home page offers alice's group and co-members, plainly saying what sharing means.
    let browser = app.signed_in("alice", "correct horse").await;
    let home = browser.get(app.at("/hub/home")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("data-share"), "a Share button per server");
    let page = browser.get(app.at("/hub/share/alice")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("acts as you inside the server"), "{page}");
    assert!(page.contains("<option>bob</option>") && page.contains("<option>lab</option>"), "{page}");
    assert!(!page.contains("<option>carol</option>"), "carol is in no group with alice");
}

#[tokio::test]
async fn a_change_made_by_another_process_reaches_the_gate_through_postgres() {
    let app = TestApp::spawn().await;
    let (_, alice, _, _) = lab(&app).await;
    alice.post_json("/hub/api/shares/alice/", &json!({"group": "lab"})).await;
    let follower = tokio::spawn(app.hub.clone().follow_shares(std::future::pending()));
    let db = &app.db;
    let id = async |name: &str| {
        let q = labhub_db::sqlx::query_scalar::<_, i64>("select user_id from users where name = $1").bind(name);
        labhub_core::UserId::new(q.fetch_one(db).await.unwrap())
    };
    let (alice_id, bob_id) = (id("alice").await, id("bob").await);
    let bob = labhub_service::Principal {
        user_id: bob_id,
        name: labhub_core::UserName::parse("bob").unwrap(),
        admin: false,
        via: labhub_service::AuthVia::Token { token_id: labhub_core::TokenId::new(1) },
        scopes: Default::default(),
        full: true,
    };
    let alice = labhub_core::UserName::parse("alice").unwrap();
    let to = labhub_service::ServerRef { owner: alice_id, owner_name: &alice, server: None };
    assert!(app.hub.access().may_reach(&bob, to).is_some(), "bob is in lab");
    // As the CLI (another process) would: straight into Postgres, past this hub.
    labhub_db::sqlx::query("delete from group_members where user_id = $1").bind(bob_id).execute(&app.db).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while app.hub.access().may_reach(&bob, to).is_some() {
        assert!(std::time::Instant::now() < deadline, "the notification never reached the hub");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    follower.abort();
}
