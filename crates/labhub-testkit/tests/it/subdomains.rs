//! Origin isolation: with `proxy.user_subdomains`, each user's servers are served from a host of
//! their own, reached through a sign-in hand-off, and neither the hub's cookie nor the user
//! host's ever reaches a server.

use std::net::SocketAddr;
use std::sync::Arc;

use labhub_testkit::docker::DockerScope;
use labhub_testkit::{Api, TestApp};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

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
        .header("Origin", hub.as_str())
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

    // A browser opening alice's server with `?token=` lands there without it, and stays in.
    let fresh = browser_for(addr, &["lab.test", "alice.lab.test"]);
    let token = app.token("alice").await;
    let r = fresh
        .get(format!("{alice_host}/user/alice/whoami?token={token}"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), "/user/alice/whoami");
    let r = fresh.get(format!("{alice_host}/user/alice/whoami")).header("Accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the kept token lets the browser in on alice's host");
    assert!(!r.text().await.unwrap().contains(&token));

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
    // Once bob shares his server with her, she may: the code leads her onto bob's host and in.
    app.add_user("root", "correct horse", true).await;
    let api = |token: String| Api::with_client(&hub, &browser_for(addr, &["lab.test"]), &token);
    let root = api(app.token("root").await);
    root.post("/hub/api/groups/lab").await;
    root.post_json("/hub/api/groups/lab/users", &json!({"users": ["alice", "bob"]})).await;
    let bob = api(app.token("bob").await);
    start_ready(&bob, "bob").await;
    let shared = bob.post_json("/hub/api/shares/bob/", &json!({"user": "alice"})).await;
    assert_eq!(shared.status, StatusCode::OK, "{shared:?}");
    let r = b.get(format!("{hub}/hub/host-login")).query(&[("next", next.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "a visitor signs in on the owner's host");
    let r = b.get(location(&r)).send().await.unwrap();
    assert_eq!(location(&r), "/user/bob/whoami");
    let r = b.get(&next).header("Accept", "application/json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "and reaches the server shared with her");
    // No code for a host that is not a user host of this hub.
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

/// The `name=value` part of every `Set-Cookie`, and the whole of each.
fn set_cookies(r: &reqwest::Response) -> (Vec<String>, Vec<String>) {
    let whole: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    (whole.iter().map(|c| c.split(';').next().unwrap().to_string()).collect(), whole)
}

/// A user's host is a sibling of the hub's, so its pages can set cookies for the hub's host
/// (`Domain=`), under any name but a `__Host-` one, including a percent-encoded spelling of
/// one. None of those may pass for the hub's own cookies, and a sign-in may only be posted
/// from the hub's own pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sibling_host_cannot_plant_the_hubs_cookies_or_post_its_sign_in() {
    let app = TestApp::builder()
        .public_url("https://lab.test:{port}/")
        .config(|c| c.proxy.user_subdomains = true)
        .spawn()
        .await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("mallory", "correct horse", false).await;
    let addr: SocketAddr = app.config.bind;
    let origin = format!("https://lab.test:{}", addr.port());
    let sibling = format!("https://mallory.lab.test:{}", addr.port());
    let hub = format!("http://lab.test:{}", addr.port());
    let c = browser_for(addr, &["lab.test"]);

    // Every cookie the hub sets carries the prefix (and so `Secure`, `Path=/`, no `Domain`).
    let page = c.get(format!("{hub}/hub/login")).send().await.unwrap();
    let (pre_login, whole) = set_cookies(&page);
    assert!(pre_login[0].starts_with("__Host-labhub-login-csrf="), "{whole:?}");
    assert!(whole[0].contains("Secure") && whole[0].contains("Path=/;") && !whole[0].contains("Domain"), "{whole:?}");
    let csrf = labhub_testkit::app::csrf_of(&page.text().await.unwrap());
    let sign_in = |cookie: String, origin: Option<&str>, user: &'static str| {
        let mut r = c.post(format!("{hub}/hub/login")).header("Cookie", cookie).form(&[
            ("_csrf", csrf.as_str()),
            ("username", user),
            ("password", "correct horse"),
            ("next", ""),
        ]);
        if let Some(o) = origin {
            r = r.header("Origin", o.to_string());
        }
        r.send()
    };

    // A sign-in posted from elsewhere, or from nowhere said, is refused: the pre-login cookie
    // and its token alone could have been planted.
    for from in [Some(sibling.as_str()), Some("null"), None] {
        let r = sign_in(pre_login.join("; "), from, "mallory").await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "Origin {from:?}");
        assert!(set_cookies(&r).0.iter().all(|c| !c.contains("labhub-session")), "no session for Origin {from:?}");
    }
    let r = c
        .post(format!("{hub}/hub/login"))
        .header("Cookie", pre_login.join("; "))
        .header("Referer", format!("{origin}/hub/login"))
        .form(&[("_csrf", csrf.as_str()), ("username", "mallory"), ("password", "correct horse"), ("next", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the hub's own page, said by Referer");
    let mallorys = set_cookies(&r).0.into_iter().find(|c| c.starts_with("__Host-labhub-session=")).unwrap();
    let mallorys_token = mallorys.split_once('=').unwrap().1.to_string();

    // The pre-login cookie and token mallory got for herself, planted under names a sibling
    // can set, do not sign a victim's browser in to her account.
    let value = pre_login[0].split_once('=').unwrap().1;
    for planted in [format!("__Host%2Dlabhub-login-csrf={value}"), format!("labhub-login-csrf={value}")] {
        let r = sign_in(planted.clone(), Some(&origin), "mallory").await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{planted}");
    }

    // Her session, planted under such names, is no session on the hub's host.
    for planted in
        [format!("__Host%2Dlabhub-session={mallorys_token}"), format!("__host-labhub-session={mallorys_token}")]
    {
        let r = c.get(format!("{hub}/hub/home")).header("Cookie", planted.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{planted}");
        assert!(location(&r).starts_with("/hub/login"), "{planted}");
    }
    let r = c.get(format!("{hub}/hub/home")).header("Cookie", mallorys.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the genuine cookie works");

    // Nor does a planted message show on the hub's pages.
    for planted in ["__Host%2Dlabhub-flash=Planted%20news", "labhub-flash=Planted%20news"] {
        let page = c.get(format!("{hub}/hub/login")).header("Cookie", planted).send().await.unwrap();
        assert!(!page.text().await.unwrap().contains("Planted news"), "{planted}");
    }
}

/// A session handed to a user's host works there only, and the hub's session only on the hub's
/// host: an admin's code for alice's host, caught by alice's pages (a service worker there can
/// read the hand-off's URL) and redeemed elsewhere, must not become an admin session of the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_works_only_on_the_host_it_was_made_for() {
    let app = TestApp::builder()
        .public_url("http://lab.test:{port}/")
        .config(|c| c.proxy.user_subdomains = true)
        .spawn()
        .await;
    app.add_user("root", "correct horse", true).await;
    app.add_user("alice", "correct horse", false).await;
    app.add_user("bob", "correct horse", false).await;
    let addr: SocketAddr = app.config.bind;
    let port = addr.port();
    let hub = format!("http://lab.test:{port}");
    let alice_host = format!("http://alice.lab.test:{port}");
    let bob_host = format!("http://bob.lab.test:{port}");
    let b = browser_for(addr, &["lab.test", "alice.lab.test", "bob.lab.test"]);

    // The admin signs in on the hub and opens alice's server on alice's host.
    let csrf =
        labhub_testkit::app::csrf_of(&b.get(format!("{hub}/hub/login")).send().await.unwrap().text().await.unwrap());
    let r = b
        .post(format!("{hub}/hub/login"))
        .header("Origin", hub.as_str())
        .form(&[("_csrf", csrf.as_str()), ("username", "root"), ("password", "correct horse"), ("next", "")])
        .send()
        .await
        .unwrap();
    let parent = set_cookies(&r).0.into_iter().find(|c| c.starts_with("labhub-session=")).unwrap();
    let parent = parent.split_once('=').unwrap().1.to_string();
    let next = format!("{alice_host}/user/alice/lab");
    let r = b.get(format!("{hub}/hub/host-login")).query(&[("next", next.as_str())]).send().await.unwrap();
    let r = b.get(location(&r)).send().await.unwrap();
    let child = set_cookies(&r).0.into_iter().find(|c| c.starts_with("labhub-user-session=")).unwrap();
    let child = child.split_once('=').unwrap().1.to_string();

    let s = browser_for(addr, &["lab.test", "alice.lab.test", "bob.lab.test"]);
    let get =
        |url: String, cookie: String| s.get(url).header("Cookie", cookie).header("Accept", "application/json").send();
    let on_hub = |token: &str| format!("labhub-session={token}");
    let on_user_host = |token: &str| format!("labhub-user-session={token}");

    // alice's host's session, shown to the hub's host as the hub's cookie, is nobody there…
    let r = get(format!("{hub}/hub/home"), on_hub(&child)).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "a page");
    assert!(location(&r).starts_with("/hub/login"));
    let r = get(format!("{hub}/hub/api/user"), on_hub(&child)).await.unwrap();
    assert_ne!(r.status(), StatusCode::OK, "the API");
    // …while on alice's host it is the admin (alice's server is not running: the hub says so).
    let r = get(format!("{alice_host}/user/alice/whoami"), on_user_host(&child)).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{}", r.text().await.unwrap());
    // Nor is it anyone on bob's host, or on the hub's host once remembered.
    let r = get(format!("{bob_host}/user/bob/whoami"), on_user_host(&child)).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = get(format!("{hub}/hub/home"), on_hub(&child)).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // The other way round: the hub's session is no session of a user's host.
    let r = get(format!("{alice_host}/user/alice/whoami"), on_user_host(&parent)).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = get(format!("{hub}/hub/api/user"), on_hub(&parent)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "where it belongs, it works");
}
