//! Groups and lab leads: the JupyterHub-shaped API, the pages, the CLI, the ceiling, the audit
//! trail, and the role matrix (a member, a lead of the group, a lead of another group and an
//! admin against every group, quota and image endpoint and page).

use std::process::Command;

use labhub_core::{GroupName, UserName};
use labhub_service::Actor;
use labhub_service::quotas::QuotaPatch;
use labhub_testkit::api::{GroupModel, Paginated};
use labhub_testkit::pg::TestCluster;
use labhub_testkit::{Api, TestApp};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse";

/// Makes `group` with `lead` leading it and `members` in it, and gives it these limits (the
/// ceiling is raised or lowered to match first, so any limits can be set).
pub async fn lab(app: &TestApp, group: &str, lead: Option<&str>, members: &[&str], limits: QuotaPatch) {
    let g = GroupName::parse(group).unwrap();
    let hub = &app.hub;
    hub.groups().create(Actor::System, &g).await.unwrap();
    let names: Vec<UserName> = members.iter().map(|m| UserName::parse(m).unwrap()).collect();
    if !names.is_empty() {
        hub.groups().add_members(Actor::System, &g, &names).await.unwrap();
    }
    if let Some(l) = lead {
        hub.groups().set_lead(Actor::System, &g, &UserName::parse(l).unwrap(), true).await.unwrap();
    }
    if !limits.is_empty() {
        hub.quotas().set_group_ceiling(Actor::System, &g, &limits).await.unwrap();
        hub.quotas().set_group_quota(Actor::System, &g, &limits).await.unwrap();
    }
}

/// The audit records of one action, oldest first: (actor, target, detail).
pub async fn audited(app: &TestApp, action: &str) -> Vec<(String, String, Value)> {
    labhub_db::sqlx::query_as("select actor, target, detail from audit_log where action = $1 order by audit_id")
        .bind(action)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn groups_through_the_api_have_jupyterhubs_shape_and_every_change_is_audited() {
    let app = TestApp::spawn().await;
    app.add_user("root", PASSWORD, true).await;
    app.add_user("alice", PASSWORD, false).await;
    app.add_user("bob", PASSWORD, false).await;
    let root = app.api_for("root").await;
    let r = root.post_json("/hub/api/groups", &json!({"groups": ["Lab-A", "lab-b"]})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let created: Vec<GroupModel> = r.json();
    assert_eq!(created[0].name, "lab-a", "names are normalised like user names");
    let r = root.post_json("/hub/api/groups", &json!({"groups": ["lab-b", "lab-c"]})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "any existing name refuses the request");
    assert_eq!(app.count("select count(*) from groups").await, 2, "and nothing was created");
    assert_eq!(root.post("/hub/api/groups/bad%20name").await.status, StatusCode::BAD_REQUEST);

    let r = root.post_json("/hub/api/groups/lab-a/users", &json!({"users": ["alice", "bob"]})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = root.post_json("/hub/api/groups/lab-a/users", &json!({"users": ["alice", "nobody"]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("nobody"), "{r:?}");
    root.post_json("/hub/api/groups/lab-a/leads", &json!({"users": ["bob"]})).await;

    let g = root.group("lab-a").await.unwrap();
    assert_eq!(g.kind, "group");
    assert_eq!(g.name, "lab-a");
    assert_eq!(g.users, ["bob", "alice"], "leads first");
    assert!(g.roles.is_empty());
    assert_eq!(g.properties, json!({}));
    assert_eq!(g.leads, ["bob"]);
    assert_eq!(g.quota["max_cpu_millis"], 4000, "the site default until set");
    assert_eq!(g.quota["ceiling"]["max_cpu_millis"], 4000);
    assert_eq!(g.quota["images"], Value::Null);

    // JupyterHub's user model lists the groups.
    assert_eq!(root.user("alice").await.groups, ["lab-a"]);
    assert_eq!(app.api_for("bob").await.me().await.groups, ["lab-a"]);

    // Paginated, in JupyterHub's envelope when asked.
    let page: Paginated<GroupModel> = root.get_paginated("/hub/api/groups?limit=1").await.json();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.pagination.total, 2);
    let next = page.pagination.next.expect("a next page").url;
    let page2: Paginated<GroupModel> = root.get_paginated(&next).await.json();
    assert_eq!(page2.items[0].name, "lab-b");
    assert!(page2.pagination.next.is_none());

    // Swarm placement of the group's servers: admins only (nodes are the site's), checked.
    let bob = app.api_for("bob").await;
    let r = bob.patch_json("/hub/api/groups/lab-a", &json!({"placement": ["node.labels.gpu==true"]})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a lead does not choose nodes: {r:?}");
    let r = root.patch_json("/hub/api/groups/lab-a", &json!({"placement": ["gpu"]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("ATTRIBUTE==VALUE"), "{r:?}");
    let r = root.patch_json("/hub/api/groups/lab-a", &json!({"placement": ["node.labels.gpu == true"]})).await;
    assert_eq!(r.value()["placement"], json!(["node.labels.gpu==true"]));
    assert_eq!(
        audited(&app, "group.set_placement").await[0].2,
        json!({"before": [], "after": ["node.labels.gpu==true"]})
    );

    let r = root.patch_json("/hub/api/groups/lab-b", &json!({"name": "lab-a"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = root.patch_json("/hub/api/groups/lab-b", &json!({"name": "genomics"})).await;
    assert_eq!(r.json::<GroupModel>().name, "genomics");
    let r = root.delete_json("/hub/api/groups/lab-a/users", &json!({"users": ["alice"]})).await;
    assert_eq!(r.json::<GroupModel>().users, ["bob"]);
    assert_eq!(root.delete("/hub/api/groups/genomics").await.status, StatusCode::NO_CONTENT);
    assert_eq!(root.group("genomics").await.unwrap_err().status, StatusCode::NOT_FOUND);

    // Who, what, when, and the values before and after.
    let adds = audited(&app, "group.add_member").await;
    assert_eq!(adds.len(), 2);
    assert_eq!(adds[0].0, "root");
    assert_eq!(adds[0].1, "lab-a");
    assert_eq!(adds[0].2, json!({"user": "alice", "before": null, "after": "member"}));
    let lead = audited(&app, "group.set_lead").await;
    assert_eq!(lead[0].2, json!({"user": "bob", "before": "member", "after": "lead"}));
    let renamed = audited(&app, "group.rename").await;
    assert_eq!(renamed[0].2, json!({"before": "lab-b", "after": "genomics"}));
    let removed = audited(&app, "group.remove_member").await;
    assert_eq!(removed[0].2, json!({"user": "alice", "before": "member", "after": null}));
    let deleted = audited(&app, "group.delete").await;
    assert_eq!(deleted[0].2["before"]["name"], "genomics");
    assert_eq!(audited(&app, "group.create").await.len(), 2);
}

/// A caller in the matrix: their API client and their signed-in browser.
struct Caller {
    api: Api,
    browser: Client,
}

/// Expected statuses for (member, lead of the group, lead of another group, admin).
type Row = [u16; 4];
/// A form's fields, for a page row that posts one.
type Fields<'a> = &'a [(&'a str, &'a str)];

async fn page(app: &TestApp, who: &Caller, path: &str, form: Option<&[(&str, &str)]>) -> u16 {
    match form {
        None => who.browser.get(app.at(path)).send().await.unwrap().status().as_u16(),
        Some(fields) => {
            let csrf = app.csrf(&who.browser, "/hub/home").await;
            let mut all: Vec<(&str, &str)> = vec![("_csrf", csrf.as_str())];
            all.extend_from_slice(fields);
            who.browser.post(app.at(path)).form(&all).send().await.unwrap().status().as_u16()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_matrix_members_leads_of_this_group_leads_of_another_group_and_admins() {
    let app = TestApp::spawn().await;
    for (n, admin) in
        [("root", true), ("erin", false), ("bob", false), ("carol", false), ("alice", false), ("dave", false)]
    {
        app.add_user(n, PASSWORD, admin).await;
    }
    lab(&app, "lab-a", Some("bob"), &["alice", "erin"], QuotaPatch::default()).await;
    lab(&app, "lab-b", Some("carol"), &[], QuotaPatch::default()).await;
    // A server of alice's charged to lab-a (stopped: stopping it again needs no runtime, and
    // the rights are checked before anything happens).
    labhub_db::sqlx::query(
        "insert into servers (user_id, name, created_at, group_id)
         select u.user_id, '', now(), g.group_id from users u, groups g where u.name = 'alice' and g.name = 'lab-a'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let mut callers = Vec::new();
    for n in ["erin", "bob", "carol", "root"] {
        callers.push(Caller { api: app.api_for(n).await, browser: app.signed_in(n, PASSWORD).await });
    }
    let image =
        json!({"display_name": "X", "reference": "example.org/x:1", "kind": "jupyter", "cpu": 1, "memory": "1G"});

    // (method, path, body, expected): the API.
    let api_rows: Vec<(Method, String, Option<Value>, Row)> = vec![
        (Method::GET, "/hub/api/groups".into(), None, [403, 200, 200, 200]),
        (Method::GET, "/hub/api/groups/lab-a".into(), None, [403, 200, 403, 200]),
        (Method::GET, "/hub/api/groups/no-such-group".into(), None, [403, 403, 403, 404]),
        (Method::POST, "/hub/api/groups".into(), Some(json!({"groups": ["new-{i}"]})), [403, 403, 403, 201]),
        (Method::POST, "/hub/api/groups/made-{i}".into(), None, [403, 403, 403, 201]),
        (Method::PATCH, "/hub/api/groups/made-{i}".into(), Some(json!({"name": "renamed-{i}"})), [403, 403, 403, 200]),
        (Method::DELETE, "/hub/api/groups/new-{i}".into(), None, [403, 403, 403, 204]),
        (Method::POST, "/hub/api/groups/lab-a/users".into(), Some(json!({"users": ["dave"]})), [403, 200, 403, 200]),
        (Method::DELETE, "/hub/api/groups/lab-a/users".into(), Some(json!({"users": ["dave"]})), [403, 200, 403, 200]),
        (Method::DELETE, "/hub/api/groups/lab-a/users".into(), Some(json!({"users": ["bob"]})), [403, 403, 403, 200]),
        (Method::POST, "/hub/api/groups/lab-a/leads".into(), Some(json!({"users": ["bob"]})), [403, 403, 403, 200]),
        (Method::DELETE, "/hub/api/groups/lab-a/leads".into(), Some(json!({"users": ["dave"]})), [403, 403, 403, 409]),
        (Method::GET, "/hub/api/groups/lab-a/quota".into(), None, [403, 200, 403, 200]),
        (
            Method::PATCH,
            "/hub/api/groups/lab-a/quota".into(),
            Some(json!({"max_servers_per_member": 2, "images": ["jupyterlab"]})),
            [403, 200, 403, 200],
        ),
        (
            Method::PATCH,
            "/hub/api/groups/lab-a/quota".into(),
            Some(json!({"ceiling": {"max_cpu_millis": 2000}})),
            [403, 403, 403, 200],
        ),
        (Method::GET, "/hub/api/groups/lab-a/usage".into(), None, [403, 200, 403, 200]),
        (Method::DELETE, "/hub/api/users/alice/server".into(), None, [403, 204, 403, 204]),
        (Method::GET, "/hub/api/images".into(), None, [200, 200, 200, 200]),
        (Method::POST, "/hub/api/images".into(), Some(json!({"name": "img-{i}"})), [403, 403, 403, 201]),
        (Method::PUT, "/hub/api/images/img-{i}".into(), Some(image.clone()), [403, 403, 403, 200]),
        (Method::DELETE, "/hub/api/images/img-{i}".into(), None, [403, 403, 403, 204]),
    ];
    // The catalogue names an image the quota row above may refer to.
    app.hub
        .catalogue()
        .add(
            Actor::System,
            "jupyterlab",
            labhub_core::ImageFields {
                display_name: "JupyterLab".into(),
                description: String::new(),
                reference: labhub_core::ImageRef::parse("labhub/jupyterlab:1").unwrap(),
                kind: labhub_core::ImageKind::Jupyter,
                port: None,
                command: None,
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                enabled: true,
                recipe: None,
                contract: labhub_core::Contract::Labhub,
                placement: Vec::new(),
            },
        )
        .await
        .unwrap();
    for (method, path, body, want) in &api_rows {
        for (i, (who, expected)) in callers.iter().zip(want).enumerate() {
            let path = path.replace("{i}", &i.to_string());
            let body = body.as_ref().map(|b| {
                let text = b.to_string().replace("{i}", &i.to_string());
                let mut v: Value = serde_json::from_str(&text).unwrap();
                if path == "/hub/api/images" {
                    v.as_object_mut().unwrap().extend(image.as_object().unwrap().clone());
                }
                v
            });
            let got = who.api.send(method.clone(), &path, body.as_ref()).await.status.as_u16();
            assert_eq!(got, *expected, "{method} {path} as {}", ["member", "lead", "other lead", "admin"][i]);
        }
    }

    // The lead saw only their group; the other lead only theirs.
    let mine: Vec<String> = callers[1].api.groups().await.into_iter().map(|g| g.name).collect();
    assert_eq!(mine, ["lab-a"]);

    // The pages: the same rights, with CSRF-checked forms.
    let quota_form: &[(&str, &str)] = &[
        ("max_cpu", "1"),
        ("max_memory", "1G"),
        ("max_gpus", "0"),
        ("max_servers", "2"),
        ("budget_cpu", ""),
        ("budget_memory", ""),
        ("storage", ""),
        ("idle_minutes", "30"),
        ("lifetime_minutes", ""),
    ];
    let page_rows: Vec<(String, Option<Fields>, Row)> = vec![
        ("/hub/admin/groups".into(), None, [403, 403, 403, 200]),
        ("/hub/groups".into(), None, [403, 303, 303, 303]),
        ("/hub/groups/lab-a".into(), None, [403, 200, 403, 200]),
        ("/hub/groups/lab-a?range=week".into(), None, [403, 200, 403, 200]),
        ("/hub/admin/groups".into(), Some(&[("name", "page-{i}")]), [403, 403, 403, 303]),
        ("/hub/groups/lab-a/members".into(), Some(&[("users", "dave")]), [403, 303, 403, 303]),
        ("/hub/groups/lab-a/members/dave/remove".into(), Some(&[]), [403, 303, 403, 303]),
        ("/hub/groups/lab-a/members/alice/lead".into(), Some(&[]), [403, 403, 403, 303]),
        ("/hub/groups/lab-a/members/alice/unlead".into(), Some(&[]), [403, 403, 403, 303]),
        ("/hub/groups/lab-a/quota".into(), Some(quota_form), [403, 303, 403, 303]),
        ("/hub/groups/lab-a/images".into(), Some(&[("img.jupyterlab", "on")]), [403, 303, 403, 303]),
        ("/hub/groups/lab-a/ceiling".into(), Some(quota_form), [403, 403, 403, 303]),
        ("/hub/groups/lab-a/stop".into(), Some(&[("user", "alice"), ("server", "")]), [403, 303, 403, 303]),
        ("/hub/groups/page-3/rename".into(), Some(&[("name", "page-x")]), [403, 403, 403, 303]),
        ("/hub/groups/page-x/delete".into(), Some(&[]), [403, 403, 403, 303]),
        ("/hub/admin/images".into(), None, [403, 403, 403, 200]),
    ];
    for (path, form, want) in &page_rows {
        for (i, (who, expected)) in callers.iter().zip(want).enumerate() {
            let fields: Option<Vec<(&str, String)>> =
                form.map(|f| f.iter().map(|(k, v)| (*k, v.replace("{i}", &i.to_string()))).collect());
            let borrowed: Option<Vec<(&str, &str)>> =
                fields.as_ref().map(|f| f.iter().map(|(k, v)| (*k, v.as_str())).collect());
            let got = page(&app, who, path, borrowed.as_deref()).await;
            assert_eq!(got, *expected, "page {path} as {}", ["member", "lead", "other lead", "admin"][i]);
        }
    }
    // A form without its CSRF token is refused whoever sends it.
    let r = callers[1].browser.post(app.at("/hub/groups/lab-a/members")).form(&[("users", "dave")]).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::FORBIDDEN);
    // The lead's changes are in the audit log under their name.
    let by_lead: i64 = labhub_db::sqlx::query_scalar(
        "select count(*) from audit_log where actor = 'bob' and action in
         ('group.add_member', 'group.remove_member', 'group.set_quota', 'group.set_images', 'server.stop')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(by_lead >= 7, "{by_lead}");
    assert_eq!(app.count("select count(*) from audit_log where actor in ('erin', 'carol')").await, 0);
}

#[tokio::test]
async fn leads_set_limits_only_within_the_ceiling_and_a_lower_ceiling_lowers_them() {
    let app = TestApp::spawn().await;
    app.add_user("root", PASSWORD, true).await;
    app.add_user("bob", PASSWORD, false).await;
    lab(&app, "lab", Some("bob"), &[], QuotaPatch::default()).await;
    let bob = app.api_for("bob").await;
    let root = app.api_for("root").await;
    let quota = "/hub/api/groups/lab/quota";
    let r = bob.patch_json(quota, &json!({"max_cpu_millis": 8000})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let msg = r.message();
    assert!(msg.contains("above the ceiling of 4") && msg.contains("ask an admin"), "{msg}");
    let r = bob.patch_json(quota, &json!({"idle_timeout_seconds": null})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "never idling is more than an hour");
    let r = bob.patch_json(quota, &json!({"ceiling": {"max_cpu_millis": 8000}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "the ceiling is an admin's");
    let r = bob.patch_json(quota, &json!({"images": ["nonexistent"]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = bob.patch_json(quota, &json!({"budget_cpu_millis": 3000, "storage_bytes": 1_073_741_824u64})).await;
    assert_eq!(r.status, StatusCode::OK);
    let q = r.value();
    assert_eq!(q["budget_cpu_millis"], 3000);
    assert_eq!(q["storage_bytes"], 1_073_741_824u64);

    let lower = json!({"ceiling": {"max_cpu_millis": 1000, "budget_cpu_millis": 2000}, "max_gpus": 0});
    let r = root.patch_json(quota, &lower).await;
    assert_eq!(r.status, StatusCode::OK);
    let q = r.value();
    assert_eq!(q["max_cpu_millis"], 1000, "lowered to the new ceiling");
    assert_eq!(q["budget_cpu_millis"], 2000);
    assert_eq!(q["ceiling"]["max_cpu_millis"], 1000);
    let ceiling = audited(&app, "group.set_ceiling").await;
    assert_eq!(ceiling[0].0, "root");
    assert_eq!(ceiling[0].2["before"]["max_cpu_millis"], 4000);
    assert_eq!(ceiling[0].2["after"]["max_cpu_millis"], 1000);
    let quota = audited(&app, "group.set_quota").await;
    assert_eq!(quota[0].0, "bob");
    assert_eq!(quota[0].2["before"]["budget_cpu_millis"], Value::Null);
    assert_eq!(quota[0].2["after"]["budget_cpu_millis"], 3000);
    assert_eq!(quota[1].2["reason"], "lowered to the new ceiling");
    assert_eq!(quota[1].2["after"]["budget_cpu_millis"], 2000);

    // The page shows the lead the refusal and a way back.
    let b = app.signed_in("bob", PASSWORD).await;
    let csrf = app.csrf(&b, "/hub/groups/lab").await;
    let r = b
        .post(app.at("/hub/groups/lab/quota"))
        .form(&[
            ("_csrf", csrf.as_str()),
            ("max_cpu", "2"),
            ("max_memory", "1G"),
            ("max_gpus", "0"),
            ("max_servers", "1"),
            ("idle_minutes", "30"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = b.get(app.at("/hub/groups/lab")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("above the ceiling of 1"), "{html}");
    assert!(html.contains("<svg class=\"chart\""), "the usage chart is drawn on the server");
    assert!(!html.contains("style="), "no inline styles (CSP)");
}

fn labhub_cli(args: &[&str], url: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_labhub-exe"))
        .args(args)
        .env_remove("LABHUB_CONFIG")
        .env("DATABASE_URL", url)
        .env("LABHUB_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn the_cli_manages_groups_leads_and_quotas() {
    let app = TestApp::spawn().await;
    app.add_user("alice", PASSWORD, false).await;
    app.add_user("bob", PASSWORD, false).await;
    let url = TestCluster::get().url(&app.db_name);
    let ok = |r: (i32, String, String)| {
        assert_eq!(r.0, 0, "{}", r.2);
        r.1
    };
    ok(labhub_cli(&["group", "create", "Lab"], &url));
    assert!(ok(labhub_cli(&["group", "add-member", "lab", "alice", "bob"], &url)).contains("2 members"));
    ok(labhub_cli(&["group", "set-lead", "lab", "bob", "true"], &url));
    let out =
        ok(labhub_cli(&["group", "set-quota", "lab", "--max-cpu", "8", "--idle-timeout", "never", "--ceiling"], &url));
    assert!(out.contains("ceiling"), "{out}");
    let out = ok(labhub_cli(
        &[
            "group",
            "set-quota",
            "lab",
            "--max-cpu",
            "2",
            "--budget-memory",
            "16G",
            "--idle-timeout",
            "2h",
            "--images",
            "all",
        ],
        &url,
    ));
    assert!(out.contains("\"max_cpu_millis\":2000") && out.contains("\"idle_timeout_seconds\":7200"), "{out}");
    let (code, _, err) = labhub_cli(&["group", "set-quota", "lab", "--max-cpu", "16"], &url);
    assert_eq!(code, 1);
    assert!(err.contains("ceiling") && err.trim().lines().count() == 1, "{err}");
    let list = ok(labhub_cli(&["group", "list"], &url));
    assert!(list.contains("lab") && list.contains("bob"), "{list}");
    ok(labhub_cli(&["group", "rename", "lab", "genomics"], &url));
    assert!(ok(labhub_cli(&["group", "remove-member", "genomics", "alice"], &url)).contains("1 member"));
    let (code, _, err) = labhub_cli(&["group", "add-member", "genomics", "nobody"], &url);
    assert_eq!(code, 1);
    assert!(err.contains("no user named nobody"), "{err}");
    ok(labhub_cli(&["group", "delete", "genomics"], &url));
    assert_eq!(app.count("select count(*) from groups").await, 0);
    let system: i64 = labhub_db::sqlx::query_scalar(
        "select count(*) from audit_log where actor = 'system' and action like 'group.%'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(system >= 8, "the CLI's changes are audited as the system's: {system}");
}
