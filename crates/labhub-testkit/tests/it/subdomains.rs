//! Origin isolation: with `proxy.user_subdomains`, each user's servers are served from a host of
//! their own, reached through a sign-in hand-off, and neither the hub's cookie nor the user
//! host's ever reaches a server.

use std::net::SocketAddr;
use std::sync::Arc;

use labhub_testkit::docker::DockerScope;
use labhub_testkit::{Api, TestApp};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::common::{start_ready, test_server_binary};

/// A browser that resolves the hub's and users' test hosts to the hub.
fn browser_for(addr: SocketAddr, hosts: &[&str]) -> Client {
    let mut b = Client::builder().cookie_store(true).no_proxy().redirect(reqwest::redirect::Policy::none());
    for h in hosts {
        b = b.resolve(h, addr);
    }
    b.build().unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_users_servers_live_on_their_own_host() {
    let scope = Arc::new(DockerScope::new(test_server_binary()).await);
    let app = TestApp::builder()
        .docker(scope)
        .public_url("http://lab.test:{port}/")
        .config(|c| c.proxy.user_subdomains = true)
        .spawn()
        .await;
    app.add_test_image("test").await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let addr: SocketAddr = app.config.bind;
    let port = addr.port();
    let hub = format!("http://lab.test:{port}");
    let alice_host = format!("http://alice.lab.test:{port}");
    let b = browser_for(addr, &["lab.test", "alice.lab.test", "bob.lab.test"]);

    // The API on the hub's host.
    start_ready(&Api::with_client(&hub, &b, &app.token("alice").await), "alice").await;

    // Sign in on the hub's host.
    let csrf =
        labhub_testkit::app::csrf_of(&b.get(format!("{hub}/hub/login")).send().await.unwrap().text().await.unwrap());
    let r = b
        .post(format!("{hub}/hub/login"))
        .form(&[("_csrf", csrf.as_str()), ("username", "alice"), ("password", "correct horse"), ("next", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // /user/… on the hub's host moves to the user's host…
    let r = b.get(format!("{hub}/user/alice/whoami?x=1")).header("Accept", "text/html").send().await.unwrap();
    assert_eq!(location(&r), format!("{alice_host}/user/alice/whoami?x=1"));
    // …which has no session yet, so it signs in through the hub…
    let r = b.get(format!("{alice_host}/user/alice/whoami?x=1")).header("Accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to_hub = location(&r);
    assert!(to_hub.starts_with(&format!("{hub}/hub/host-login?next=")), "{to_hub}");
    let r = b.get(&to_hub).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let callback = location(&r);
    assert!(callback.starts_with(&format!("{alice_host}/_labhub/host-callback?code=")), "{callback}");
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(location(&r), "/user/alice/whoami?x=1");
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.starts_with("labhub-user-session=") && !set_cookie.contains("Domain"), "{set_cookie}");
    // The one-time code works once.
    assert_eq!(b.get(&callback).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // …and the server answers there, without ever seeing a hub cookie.
    let who: Value = b.get(format!("{alice_host}/user/alice/whoami")).send().await.unwrap().json().await.unwrap();
    assert_eq!(who["path"], "/user/alice/whoami");
    let cookies = who["headers"]["cookie"].to_string();
    assert!(!cookies.contains("labhub-session") && !cookies.contains("labhub-user-session"), "{cookies}");
    assert_eq!(who["headers"]["x-forwarded-host"][0], format!("alice.lab.test:{port}"));

    // A server cannot plant cookies for the hub: a hub cookie's name or a `Domain` reaching
    // the hub's host is dropped on the way out; the server's own host-only cookie passes.
    let planted = "theme=dark; Path=/user/alice/|labhub-session=planted; Path=/|wide=1; Domain=lab.test; Path=/";
    let r = b.get(format!("{alice_host}/user/alice/set-cookies")).query(&[("cookies", planted)]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set: Vec<&str> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(set, ["theme=dark; Path=/user/alice/"]);

    // Writes need the user host's own origin; the hub's origin is another site now.
    let r =
        b.post(format!("{alice_host}/user/alice/upload")).header("Origin", hub.clone()).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = b
        .post(format!("{alice_host}/user/alice/upload"))
        .header("Origin", alice_host.clone())
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Another user's path on alice's host is nothing; bob's host does not know alice's session.
    let r = b.get(format!("{alice_host}/user/bob/whoami")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = b
        .get(format!("http://bob.lab.test:{port}/user/bob/whoami"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with(&format!("{hub}/hub/host-login")), "no session on bob's host");
    // Alice may not get a code for bob's server.
    let next = format!("http://bob.lab.test:{port}/user/bob/whoami");
    let r = b.get(format!("{hub}/hub/host-login")).query(&[("next", next.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Nor a code for a host that is not a user host of this hub.
    let r =
        b.get(format!("{hub}/hub/host-login")).query(&[("next", "http://evil.test/user/alice/")]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Signing out of the hub ends the user host's session at once.
    let csrf =
        labhub_testkit::app::csrf_of(&b.get(format!("{hub}/hub/home")).send().await.unwrap().text().await.unwrap());
    b.post(format!("{hub}/hub/logout")).form(&[("_csrf", csrf.as_str())]).send().await.unwrap();
    let r = b.get(format!("{alice_host}/user/alice/whoami")).header("Accept", "application/json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Over https, both session cookies carry the `__Host-` prefix, which browsers accept only
/// from the very host (Secure, `Path=/`, no `Domain`): a user's host cannot plant one for the
/// hub. (The hub is reached over plain http here, as behind a TLS-terminating proxy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_session_cookie_is_host_prefixed() {
    let app = TestApp::builder()
        .public_url("https://lab.test:{port}/")
        .config(|c| c.proxy.user_subdomains = true)
        .spawn()
        .await;
    app.add_user("alice", "correct horse", false).await;
    let addr: SocketAddr = app.config.bind;
    let origin = format!("https://lab.test:{}", addr.port());
    let hub = format!("http://lab.test:{}", addr.port());
    let b = Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("lab.test", addr)
        .build()
        .unwrap();
    let page = b.get(format!("{hub}/hub/login")).send().await.unwrap();
    let pre_login: String = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let csrf = labhub_testkit::app::csrf_of(&page.text().await.unwrap());
    let r = b
        .post(format!("{hub}/hub/login"))
        .header("Cookie", pre_login)
        .header("Origin", &origin)
        .form(&[("_csrf", csrf.as_str()), ("username", "alice"), ("password", "correct horse"), ("next", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.contains("labhub-session="))
        .expect("a session cookie");
    assert!(session.starts_with("__Host-labhub-session="), "{session}");
    assert!(session.contains("Secure") && session.contains("Path=/") && !session.contains("Domain"), "{session}");
}
