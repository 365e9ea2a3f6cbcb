//! API authentication: tokens in every accepted form, and every way a token can be wrong.

use labhub_testkit::app::script;
use labhub_testkit::{Api, TestApp};
use reqwest::StatusCode;
use serde_json::Value;

async fn json(r: reqwest::Response) -> Value {
    r.json().await.expect("a JSON body")
}

#[tokio::test]
async fn api_root_health_and_metrics_need_no_auth() {
    let app = TestApp::spawn().await;
    let c = script();
    let r = c.get(app.at("/hub/api")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["version"], "5.3.0");
    let r = c.get(app.at("/hub/api/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(app.at("/hub/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["database"], "ok");
    let metrics = c.get(app.at("/hub/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("labhub_http_requests_total"), "{metrics}");
    assert!(metrics.contains("labhub_http_request_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("labhub_active_sessions"), "{metrics}");
}

#[tokio::test]
async fn proxied_requests_get_a_request_id_and_are_counted_under_the_proxy_route() {
    let app = TestApp::spawn().await;
    let c = script();
    let r = c.get(app.at("/user/nobody-here/api/status")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let id = r.headers().get("x-request-id").expect("an X-Request-Id").to_str().unwrap().to_string();
    assert_eq!(id.len(), 16, "{id}");
    assert_eq!(json(r).await["status"], 401);
    let metrics = c.get(app.at("/hub/metrics")).send().await.unwrap().text().await.unwrap();
    let counted = metrics.lines().any(|l| {
        l.starts_with("labhub_http_requests_total")
            && l.contains(r#"route="/user/{*rest}""#)
            && l.contains(r#"status="401""#)
            && l.contains(r#"method="GET""#)
    });
    assert!(counted, "{metrics}");
    assert!(metrics.contains(r#"labhub_http_request_duration_seconds_count{route="/user/{*rest}"}"#), "{metrics}");
    // `/user/` alone names no server: the hub's own 404, not the proxy.
    let r = c.get(app.at("/user/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn tokens_work_as_header_bearer_and_query() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let t = app.token("alice").await;
    let c = script();
    for req in [
        c.get(app.at("/hub/api/user")).header("Authorization", format!("token {t}")),
        c.get(app.at("/hub/api/user")).header("Authorization", format!("Bearer {t}")),
        c.get(app.at(&format!("/hub/api/user?token={t}"))),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = json(r).await;
        assert_eq!(body["name"], "alice");
        assert_eq!(body["kind"], "user");
        assert_eq!(body["admin"], false);
    }
}

#[tokio::test]
async fn missing_invalid_and_malformed_tokens_are_401_json() {
    let app = TestApp::spawn().await;
    let c = script();
    let cases = [
        (None, "sign in"),
        (Some("token nonsense".to_string()), "not valid"),
        (Some(format!("token {}", "0".repeat(64))), "not valid"),
        (Some("Basic dXNlcjpwYXNz".to_string()), "Authorization: token"),
    ];
    for (header, needle) in cases {
        let mut req = c.get(app.at("/hub/api/user"));
        if let Some(h) = &header {
            req = req.header("Authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let body = json(r).await;
        assert_eq!(body["status"], 401);
        assert!(body["message"].as_str().unwrap().contains(needle), "{header:?}: {body}");
    }
}

#[tokio::test]
async fn revoked_token_stops_working_at_once_even_when_cached() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let alice = app.api_for("alice").await;
    // Warm the cache.
    assert_eq!(alice.get("/hub/api/user").await.status, StatusCode::OK);
    let id = alice.tokens("alice").await[0].id.clone();
    assert!(id.starts_with('a'), "JupyterHub-style id: {id}");
    assert_eq!(alice.revoke_token("alice", &id).await, Ok(StatusCode::NO_CONTENT));
    assert_eq!(alice.get("/hub/api/user").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_token_is_refused() {
    let app = TestApp::builder().manual_clock().spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let owner = app.api_for("alice").await;
    let short = owner.create_token("alice", serde_json::json!({"note": "short", "expires_in": 60})).await.unwrap();
    assert!(short.expires_at.is_some());
    let short = app.api(short.token.as_deref().expect("the new token itself"));
    assert_eq!(short.get("/hub/api/user").await.status, StatusCode::OK);
    app.clock.as_ref().unwrap().advance(time::Duration::seconds(61));
    assert_eq!(short.get("/hub/api/user").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_users_token_cannot_use_admin_endpoints_or_other_users() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let alice = app.api_for("alice").await;
    for (method, path) in [
        ("GET", "/hub/api/users"),
        ("POST", "/hub/api/users/carol"),
        ("DELETE", "/hub/api/users/bob"),
        ("PATCH", "/hub/api/users/alice"),
        ("GET", "/hub/api/users/bob"),
        ("GET", "/hub/api/users/bob/tokens"),
        ("POST", "/hub/api/users/bob/tokens"),
        ("GET", "/hub/api/info"),
    ] {
        let r = alice.answer(alice.request(method.parse().unwrap(), path).body("{}")).await;
        // In JupyterHub's error shape, whose `status` is the answer's.
        assert_eq!(r.error().status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    // Nothing changed.
    let n: i64 = app.count("select count(*) from users").await;
    assert_eq!(n, 2);
    let n: i64 = app.count("select count(*) from api_tokens").await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn cookie_authenticated_api_writes_need_the_hubs_origin() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let b = app.signed_in("alice", "correct horse").await;
    // Reading with the cookie is fine.
    assert_eq!(b.get(app.at("/hub/api/user")).send().await.unwrap().status(), 200);
    // Writing from another origin, or with no origin at all, is refused and changes nothing.
    for origin in [Some("http://evil.example"), None] {
        let mut req = b.post(app.at("/hub/api/users/alice/tokens")).json(&serde_json::json!({}));
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{origin:?}");
    }
    assert_eq!(app.count("select count(*) from api_tokens").await, 0);
    let r = b
        .post(app.at("/hub/api/users/alice/tokens"))
        .header("Origin", app.url.clone())
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // The test client as that browser (its cookie, the hub's own Origin) reads and writes too.
    let page = Api::session(&app.url, &b);
    assert_eq!(page.me().await.name, "alice");
    page.create_token("alice", serde_json::json!({"note": "from the page"})).await.unwrap();
    assert_eq!(app.count("select count(*) from api_tokens").await, 2);
}

#[tokio::test]
async fn token_scopes_beyond_the_owner_are_refused_clearly() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "correct horse", false).await;
    let alice = app.api_for("alice").await;
    // Every user's `read:users`, where alice may read only her own account.
    let refused = alice.create_token("alice", serde_json::json!({"scopes": ["read:users"]})).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.message.contains("read:users") && refused.message.contains("not held by alice"), "{refused}");
}
