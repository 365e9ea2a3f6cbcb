//! Signing in with a directory: a real slapd per test (started by the harness on a free
//! loopback port, with its own configuration and this file's LDIF), the hub's real sign-in
//! form, and what a person or an admin would notice — the page, the account, its groups, its
//! admin rights, the metrics.

use labhub_auth::ldap::LdapConfig;
use labhub_service::PasswordLogin;
use labhub_testkit::TestApp;
use labhub_testkit::app::browser;
use labhub_testkit::slapd::{BASE, Slapd, SlapdOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PEOPLE: &str = "ou=people,dc=lab,dc=test";
const GROUPS: &str = "ou=groups,dc=lab,dc=test";
const READER: &str = "cn=reader,dc=lab,dc=test";
const READER_PASSWORD: &str = "reader secret";

/// The lab's directory: a service account, four people, three groups.
fn directory_ldif() -> String {
    format!(
        "dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

dn: {GROUPS}
objectClass: organizationalUnit
ou: groups

dn: {READER}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: reader
userPassword: {READER_PASSWORD}

dn: uid=alice,{PEOPLE}
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: A
userPassword: alice-pw

dn: uid=bob,{PEOPLE}
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: B
userPassword: bob-pw

dn: uid=carol,{PEOPLE}
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: C
userPassword: carol-pw

dn: cn=lab-members,{GROUPS}
objectClass: groupOfNames
cn: lab-members
member: uid=alice,{PEOPLE}
member: uid=bob,{PEOPLE}

dn: cn=lab-admins,{GROUPS}
objectClass: groupOfNames
cn: lab-admins
member: uid=alice,{PEOPLE}

dn: cn=physics,{GROUPS}
objectClass: groupOfNames
cn: physics
member: uid=alice,{PEOPLE}
member: uid=carol,{PEOPLE}

"
    )
}

/// `[auth.ldap]` with the settings given over defaults for this slapd (plaintext: loopback).
fn ldap(slapd: &Slapd, settings: Value) -> LdapConfig {
    let mut c = json!({ "url": slapd.url(), "tls": "none" });
    c.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
    serde_json::from_value(c).expect("an [auth.ldap] table")
}

/// People bind as `uid={username},ou=people,…` (after a template that fits no one).
fn by_template() -> Value {
    json!({ "bind_dn_template": [format!("uid={{username}},ou=nobody,{BASE}"), format!("uid={{username}},{PEOPLE}")] })
}

/// The service account searches for people, then they bind.
fn by_search() -> Value {
    json!({
        "bind_dn": READER,
        "bind_password": READER_PASSWORD,
        "search_base": PEOPLE,
        "search_filter": "(&(objectClass=inetOrgPerson)(uid={username}))",
    })
}

fn with(mut a: Value, b: Value) -> Value {
    a.as_object_mut().unwrap().extend(b.as_object().unwrap().clone());
    a
}

async fn hub(slapd: &Slapd, settings: Value, mode: PasswordLogin) -> TestApp {
    let config = ldap(slapd, settings);
    TestApp::builder()
        .config(|c| {
            c.auth.ldap = Some(config);
            c.auth.password_login = Some(mode);
            c.auth.max_failed_accounts_per_address = 100;
            c.auth.max_failed_logins_per_account_and_address = 100;
            c.auth.max_failed_logins_per_account = 100;
        })
        .spawn()
        .await
}

/// Signs in through the form; the status and the page.
async fn sign_in(app: &TestApp, name: &str, password: &str) -> (StatusCode, String) {
    let r = app.login(&browser(), name, password).await;
    (r.status(), r.text().await.unwrap())
}

async fn is_admin(app: &TestApp, name: &str) -> Option<bool> {
    labhub_db::sqlx::query_scalar("select admin from users where name = $1")
        .bind(name)
        .fetch_optional(&app.db)
        .await
        .unwrap()
}

async fn groups_of(app: &TestApp, name: &str) -> Vec<String> {
    labhub_db::sqlx::query_scalar(
        "select g.name from group_members m join groups g using (group_id) join users u using (user_id)
         where u.name = $1 order by g.name",
    )
    .bind(name)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

const BAD: &str = "Invalid user name or password.";

#[tokio::test]
async fn a_person_signs_in_with_a_bind_template_and_their_first_sign_in_makes_their_account() {
    let slapd = Slapd::start(&directory_ldif()).await;
    let app = hub(&slapd, by_template(), PasswordLogin::Directory).await;
    let form = browser().get(app.at("/hub/login")).send().await.unwrap().text().await.unwrap();
    assert!(form.contains("Use your LDAP user name and password."), "{form}");
    assert_eq!(is_admin(&app, "alice").await, None);
    let (status, page) = sign_in(&app, "Alice", "alice-pw").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert_eq!(is_admin(&app, "alice").await, Some(false), "the account was made, not an admin");
    let linked = app.count("select count(*) from identities where provider = 'ldap'").await;
    assert_eq!(linked, 1, "the account is linked to the directory's entry");
    // Signing in again finds the same account.
    assert_eq!(sign_in(&app, "alice", "alice-pw").await.0, StatusCode::SEE_OTHER);
    assert_eq!(app.count("select count(*) from users").await, 1);
}

#[tokio::test]
async fn search_then_bind_signs_in_and_refuses_wrong_and_empty_passwords_without_saying_why() {
    let slapd = Slapd::start(&directory_ldif()).await;
    let app = hub(&slapd, by_search(), PasswordLogin::Directory).await;
    assert_eq!(sign_in(&app, "bob", "bob-pw").await.0, StatusCode::SEE_OTHER);
    for (name, password) in [("bob", "wrong"), ("nobody", "bob-pw"), ("bob", ""), ("carol", "")] {
        let (status, page) = sign_in(&app, name, password).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}/{password:?}: {page}");
        assert!(page.contains(BAD), "{page}");
    }
    // This slapd lets a DN with an empty password bind anonymously: only refusing empty
    // passwords before the bind kept carol out.
    assert_eq!(is_admin(&app, "carol").await, None);
}

#[tokio::test]
async fn an_empty_password_never_binds_through_a_template_either() {
    let slapd = Slapd::start(&directory_ldif()).await;
    let app = hub(&slapd, by_template(), PasswordLogin::Directory).await;
    let (status, page) = sign_in(&app, "alice", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");
    assert_eq!(is_admin(&app, "alice").await, None);
}

#[tokio::test]
async fn wrong_directory_passwords_are_throttled_like_local_ones() {
    let slapd = Slapd::start(&directory_ldif()).await;
    let config = ldap(&slapd, by_template());
    let app = TestApp::builder()
        .config(|c| {
            c.auth.ldap = Some(config);
            c.auth.max_failed_logins_per_account_and_address = 3;
        })
        .spawn()
        .await;
    for _ in 0..3 {
        assert_eq!(sign_in(&app, "alice", "guess").await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, page) = sign_in(&app, "alice", "alice-pw").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert!(page.contains("Too many failed sign-in attempts"), "{page}");
}

#[tokio::test]
async fn starttls_and_ldaps_use_the_ca_file_and_an_unknown_ca_is_refused() {
    let slapd = Slapd::start_with(SlapdOptions { tls: true }, &directory_ldif()).await;
    let ca = slapd.ca_file.clone().unwrap();
    let starttls = with(by_template(), json!({ "tls": "starttls", "ca_file": ca }));
    let app = hub(&slapd, starttls, PasswordLogin::Directory).await;
    let (status, page) = sign_in(&app, "alice", "alice-pw").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");

    let ldaps = with(by_template(), json!({ "url": slapd.ldaps_url(), "tls": "ldaps", "ca_file": ca }));
    let app = hub(&slapd, ldaps, PasswordLogin::Directory).await;
    assert_eq!(sign_in(&app, "bob", "bob-pw").await.0, StatusCode::SEE_OTHER);

    // Without the test's CA the certificate is not trusted: no password is sent.
    let untrusted = with(by_template(), json!({ "tls": "starttls" }));
    let app = hub(&slapd, untrusted, PasswordLogin::Directory).await;
    let (status, page) = sign_in(&app, "alice", "alice-pw").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");
    assert!(page.contains("The directory (LDAP) cannot be reached right now"), "{page}");
}

#[tokio::test]
async fn a_person_outside_allowed_groups_is_refused_and_gets_no_account() {
    let slapd = Slapd::start(&directory_ldif()).await;
    let settings = with(by_search(), json!({ "allowed_groups": ["Lab-Members"], "group_search_base": GROUPS }));
    let app = hub(&slapd, settings, PasswordLogin::Directory).await;
    let (status, page) = sign_in(&app, "carol", "carol-pw").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("carol may not sign in to this hub with LDAP"), "{page}");
    assert_eq!(is_admin(&app, "carol").await, None);
    assert_eq!(sign_in(&app, "bob", "bob-pw").await.0, StatusCode::SEE_OTHER, "a member is let in");
}

#[tokio::test]
async fn with_approval_a_first_directory_sign_in_waits_for_an_admin() {
    let slapd = Slapd::start(&directory_ldif()).await;
    let config = ldap(&slapd, by_template());
    let app = TestApp::builder()
        .config(|c| {
            c.auth.ldap = Some(config);
            c.auth.signup = labhub_service::SignupPolicy::Approval;
        })
        .spawn()
        .await;
    let (status, page) = sign_in(&app, "alice", "alice-pw").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("is waiting for an admin&#39;s approval"), "{page}");
    assert_eq!(app.count("select count(*) from users where state = 'pending'").await, 1);
    let alice = labhub_core::UserName::parse("alice").unwrap();
    let active = labhub_core::AccountState::Active;
    app.hub.accounts().set_state(labhub_service::Actor::System, &alice, active).await.unwrap();
    assert_eq!(sign_in(&app, "alice", "alice-pw").await.0, StatusCode::SEE_OTHER, "approved, she is in");
}

#[tokio::test]
async fn without_auto_create_only_an_account_an_admin_made_for_the_directory_signs_in() {
    let slapd = Slapd::start(&directory_ldif()).await;
    let app = hub(&slapd, with(by_template(), json!({ "auto_create": false })), PasswordLogin::Directory).await;
    let (status, page) = sign_in(&app, "carol", "carol-pw").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("There is no account carol on this hub"), "{page}");
    let carol = labhub_core::UserName::parse("carol").unwrap();
    let new = labhub_service::accounts::NewAccount {
        name: carol,
        password: None,
        admin: false,
        provider: Some("ldap".into()),
    };
    app.hub.accounts().create(labhub_service::Actor::System, new).await.unwrap();
    assert_eq!(sign_in(&app, "carol", "carol-pw").await.0, StatusCode::SEE_OTHER);
    assert_eq!(app.count("select count(*) from identities where provider = 'ldap'").await, 1);
}

#[tokio::test]
async fn an_admin_makes_an_account_for_the_directory_on_the_users_page() {
    let slapd = Slapd::start(&directory_ldif()).await;
    let settings = with(by_template(), json!({ "auto_create": false, "display_name": "Campus directory" }));
    let app = hub(&slapd, settings, PasswordLogin::LocalAndDirectory).await;
    app.add_user("root", "correct horse", true).await;
    let admin = app.signed_in("root", "correct horse").await;
    let page = admin.get(app.at("/hub/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(r#"<option value="ldap">Campus directory</option>"#), "{page}");
    let csrf = labhub_testkit::http::csrf_of(&page);
    let origin = app.config.public_url().origin().ascii_serialization();
    let form = [("_csrf", csrf.as_str()), ("username", "carol"), ("password", ""), ("provider", "ldap")];
    let made = admin.post(app.at("/hub/admin/users")).header("Origin", origin).form(&form).send().await.unwrap();
    assert_eq!(made.status(), StatusCode::SEE_OTHER, "{}", made.text().await.unwrap());
    assert_eq!(sign_in(&app, "carol", "carol-pw").await.0, StatusCode::SEE_OTHER, "claimed at her first sign-in");
    let (status, page) = sign_in(&app, "bob", "bob-pw").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "nobody made an account for bob: {page}");
}

#[tokio::test]
async fn admin_rights_follow_admin_groups_from_one_sign_in_to_the_next() {
    let slapd = Slapd::start(&directory_ldif()).await;
    // Groups from memberOf (no group search); admin_groups by DN, written loosely.
    let admins = format!("CN=Lab-Admins, OU=Groups, {BASE}");
    let app = hub(&slapd, with(by_template(), json!({ "admin_groups": [admins] })), PasswordLogin::Directory).await;
    assert_eq!(sign_in(&app, "bob", "bob-pw").await.0, StatusCode::SEE_OTHER);
    assert_eq!(is_admin(&app, "bob").await, Some(false));
    let group = format!("cn=lab-admins,{GROUPS}");
    let bob = format!("uid=bob,{PEOPLE}");
    slapd.modify(&format!("dn: {group}\nchangetype: modify\nadd: member\nmember: {bob}\n")).await;
    assert_eq!(sign_in(&app, "bob", "bob-pw").await.0, StatusCode::SEE_OTHER);
    assert_eq!(is_admin(&app, "bob").await, Some(true), "granted by joining the group");
    slapd.modify(&format!("dn: {group}\nchangetype: modify\ndelete: member\nmember: {bob}\n")).await;
    assert_eq!(sign_in(&app, "bob", "bob-pw").await.0, StatusCode::SEE_OTHER);
    assert_eq!(is_admin(&app, "bob").await, Some(false), "revoked by leaving it");
    let audited = app.count("select count(*) from audit_log where action = 'user.set_admin'").await;
    assert_eq!(audited, 2);
}

#[tokio::test]
async fn directory_groups_become_labhub_groups_and_follow_the_directory_without_touching_others() {
    let slapd = Slapd::start(&directory_ldif()).await;
    let settings = with(by_search(), json!({ "sync_groups": true, "group_search_base": GROUPS }));
    let app = hub(&slapd, settings, PasswordLogin::Directory).await;
    assert_eq!(sign_in(&app, "alice", "alice-pw").await.0, StatusCode::SEE_OTHER);
    assert_eq!(groups_of(&app, "alice").await, ["lab-admins", "lab-members", "physics"]);
    // An admin puts alice in a group of the hub's own: the directory never takes her out of it.
    let chem = labhub_core::GroupName::parse("chem").unwrap();
    let alice = labhub_core::UserName::parse("alice").unwrap();
    let actor = labhub_service::Actor::System;
    app.hub.groups().create(actor, &chem).await.unwrap();
    app.hub.groups().add_members(actor, &chem, std::slice::from_ref(&alice)).await.unwrap();
    let physics = format!("cn=physics,{GROUPS}");
    let member = format!("uid=alice,{PEOPLE}");
    slapd.modify(&format!("dn: {physics}\nchangetype: modify\ndelete: member\nmember: {member}\n")).await;
    assert_eq!(sign_in(&app, "alice", "alice-pw").await.0, StatusCode::SEE_OTHER);
    assert_eq!(groups_of(&app, "alice").await, ["chem", "lab-admins", "lab-members"]);
    assert_eq!(groups_of(&app, "carol").await, Vec::<String>::new(), "carol has not signed in");
    assert_eq!(sign_in(&app, "carol", "carol-pw").await.0, StatusCode::SEE_OTHER);
    assert_eq!(groups_of(&app, "carol").await, ["physics"]);
}

#[tokio::test]
async fn with_the_directory_down_the_page_says_so_and_a_local_admin_still_signs_in() {
    let mut slapd = Slapd::start(&directory_ldif()).await;
    let app = hub(&slapd, by_template(), PasswordLogin::LocalAndDirectory).await;
    app.add_user("root", "correct horse", true).await;
    assert_eq!(sign_in(&app, "alice", "alice-pw").await.0, StatusCode::SEE_OTHER);
    slapd.stop();
    let (status, page) = sign_in(&app, "alice", "alice-pw").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");
    assert!(page.contains("The directory (LDAP) cannot be reached right now"), "{page}");
    assert!(page.contains("Accounts local to this hub can still sign in."), "{page}");
    assert_eq!(sign_in(&app, "root", "correct horse").await.0, StatusCode::SEE_OTHER, "break-glass admin");
    let metrics = browser().get(app.at("/hub/metrics")).send().await.unwrap().text().await.unwrap();
    let counted = metrics.lines().any(|l| l.starts_with("labhub_ldap_errors_total{kind=\"unreachable\"}"));
    assert!(counted, "{metrics}");
}

#[tokio::test]
async fn hostile_user_names_are_escaped_or_refused_and_never_match_another_entry() {
    // Entries an unescaped name would reach: alice's namesake under ou=staff (a DN comma away)
    // and a person whose login really holds a comma.
    let extra = format!(
        "dn: ou=staff,{PEOPLE}
objectClass: organizationalUnit
ou: staff

dn: uid=alice,ou=staff,{PEOPLE}
objectClass: account
objectClass: simpleSecurityObject
uid: alice
userPassword: staff-pw

dn: uid=x\\,y,{PEOPLE}
objectClass: inetOrgPerson
uid: x,y
cn: XY
sn: Y
userPassword: comma-pw

"
    );
    let slapd = Slapd::start(&format!("{}{extra}", directory_ldif())).await;
    let searching = hub(&slapd, by_search(), PasswordLogin::Directory).await;
    for name in ["*", "alic*", "alice)(uid=*", ")(uid=*", "\\", "alice\\", "alice\0", "*)(objectClass=*"] {
        let (status, page) = sign_in(&searching, name, "alice-pw").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name:?}: {page}");
        assert!(page.contains(BAD), "{page}");
    }
    let binding = hub(&slapd, by_template(), PasswordLogin::Directory).await;
    for (name, password) in [("alice,ou=staff", "staff-pw"), ("*", "alice-pw"), ("alice\0", "alice-pw")] {
        let (status, page) = sign_in(&binding, name, password).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name:?}: {page}");
    }
    // Escaped, a comma finds exactly its own entry; the login then fails the account name rule.
    let (status, page) = sign_in(&binding, "x,y", "comma-pw").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("LDAP calls you &#39;x,y&#39;, which is not a valid account name"), "{page}");
    for app in [&searching, &binding] {
        assert_eq!(app.count("select count(*) from users").await, 0, "no one got an account");
    }
}

#[tokio::test]
async fn a_dead_url_is_skipped_for_the_next_and_a_silent_directory_times_out_with_a_clear_page() {
    let slapd = Slapd::start(&directory_ldif()).await;
    let dead = format!("ldap://127.0.0.1:{}", labhub_testkit::pg::free_port());
    let failover = with(by_template(), json!({ "url": [dead, slapd.url()] }));
    let app = hub(&slapd, failover, PasswordLogin::Directory).await;
    assert_eq!(sign_in(&app, "alice", "alice-pw").await.0, StatusCode::SEE_OTHER, "the second URL answered");

    // A directory that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let slow = with(by_template(), json!({ "url": format!("ldap://127.0.0.1:{port}"), "timeout": "1s" }));
    let app = hub(&slapd, slow, PasswordLogin::LocalAndDirectory).await;
    let (status, page) = sign_in(&app, "alice", "alice-pw").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");
    assert!(page.contains("The directory (LDAP) cannot be reached right now"), "{page}");
    let metrics = browser().get(app.at("/hub/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("labhub_ldap_errors_total{kind=\"timeout\"}")), "{metrics}");
    held.abort();
}

mod cli {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;

    const EXE: &str = env!("CARGO_BIN_EXE_labhub-exe");

    /// `labhub ldap test …` (or any command) with `[auth.ldap]` given as environment variables.
    fn labhub(args: &[&str], ldap: &[(&str, &str)], stdin: Option<&str>) -> (i32, String, String) {
        let mut c = Command::new(EXE);
        c.args(args).env_remove("LABHUB_CONFIG").env_remove("DATABASE_URL").env("LABHUB_LOG", "warn");
        for (key, value) in ldap {
            c.env(format!("LABHUB_AUTH__LDAP__{}", key.to_uppercase()), value);
        }
        let mut child = c
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running labhub");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }

    async fn run(
        args: &'static [&'static str],
        ldap: Vec<(&'static str, String)>,
        stdin: Option<&'static str>,
    ) -> (i32, String, String) {
        tokio::task::spawn_blocking(move || {
            let ldap: Vec<(&str, &str)> = ldap.iter().map(|(k, v)| (*k, v.as_str())).collect();
            labhub(args, &ldap, stdin)
        })
        .await
        .unwrap()
    }

    fn searching(slapd: &Slapd) -> Vec<(&'static str, String)> {
        vec![
            ("url", slapd.url()),
            ("tls", "none".into()),
            ("bind_dn", READER.into()),
            ("bind_password", READER_PASSWORD.into()),
            ("search_base", PEOPLE.into()),
            ("group_search_base", GROUPS.into()),
            ("allowed_groups", "[lab-members]".into()),
            ("admin_groups", "[lab-admins]".into()),
        ]
    }

    #[tokio::test]
    async fn ldap_test_goes_step_by_step_and_names_the_step_that_failed() {
        let slapd = Slapd::start(&directory_ldif()).await;
        let (code, out, err) = run(&["ldap", "test", "alice"], searching(&slapd), None).await;
        assert_eq!(code, 0, "{out}{err}");
        for want in [
            "ok    connect",
            "ok    service account  bound as cn=reader",
            "ok    find the user    uid=alice,ou=people,dc=lab,dc=test",
            "ok    groups           lab-admins, lab-members, physics",
            "-     password         not checked",
            "ok    account name     alice, an admin (in lab-admins)",
        ] {
            assert!(out.contains(want), "{want:?} in:\n{out}");
        }
        let (code, out, _) = run(&["ldap", "test", "carol"], searching(&slapd), None).await;
        assert_ne!(code, 0);
        assert!(out.contains("FAIL  allowed"), "{out}");
        let (code, out, _) = run(&["ldap", "test", "nobody"], searching(&slapd), None).await;
        assert_ne!(code, 0);
        assert!(out.contains("FAIL  find the user"), "{out}");
        let (code, out, _) =
            run(&["ldap", "test", "--password-stdin", "alice"], searching(&slapd), Some("nope\n")).await;
        assert_ne!(code, 0);
        assert!(out.contains("ok    find the user") && out.contains("FAIL  password"), "{out}");

        let mut wrong = searching(&slapd);
        wrong[3].1 = "not the reader's".into();
        let (code, out, _) = run(&["ldap", "test", "alice"], wrong, None).await;
        assert_ne!(code, 0);
        assert!(out.contains("ok    connect") && out.contains("FAIL  service account"), "{out}");
        let mut dead = searching(&slapd);
        dead[0].1 = format!("ldap://127.0.0.1:{}", labhub_testkit::pg::free_port());
        let (code, out, _) = run(&["ldap", "test", "alice"], dead, None).await;
        assert_ne!(code, 0);
        assert!(out.contains("FAIL  connect"), "{out}");
    }

    #[tokio::test]
    async fn ldap_test_asks_for_a_password_only_when_a_template_needs_it() {
        let slapd = Slapd::start(&directory_ldif()).await;
        let template = vec![
            ("url", slapd.url()),
            ("tls", "none".into()),
            ("bind_dn_template", format!("uid={{username}},{PEOPLE}")),
        ];
        let (code, _, err) = run(&["ldap", "test", "alice"], template.clone(), None).await;
        assert_ne!(code, 0);
        assert!(err.contains("give it with --password-stdin"), "{err}");
        let (code, out, err) =
            run(&["ldap", "test", "--password-stdin", "alice"], template.clone(), Some("alice-pw\n")).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("ok    password         accepted") && out.contains("ok    groups"), "{out}");
    }

    #[tokio::test]
    async fn config_check_shows_the_directory_and_never_its_service_password() {
        let slapd = Slapd::start(&directory_ldif()).await;
        let (code, out, err) = run(&["config", "check"], searching(&slapd), None).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("[auth.ldap]") && out.contains(READER), "{out}");
        assert!(out.contains("bind_password = \"[redacted]\"") && !out.contains(READER_PASSWORD), "{out}");
        let mut plaintext = searching(&slapd);
        plaintext[0].1 = "ldap://dir.example.org".into();
        let (code, _, err) = run(&["config", "check"], plaintext, None).await;
        assert_ne!(code, 0);
        assert!(err.contains("'auth.ldap.tls'") && err.contains("in the clear"), "{err}");
    }
}
