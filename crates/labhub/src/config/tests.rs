//! The configuration's loading and checks.

use super::*;

fn load_str(toml: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("labhub.toml");
    std::fs::write(&p, toml).unwrap();
    Config::load(Some(&p))
}

/// The message a configuration is refused with.
fn refusal(toml: &str) -> String {
    load_str(toml).unwrap_err().to_string()
}

#[test]
fn the_activity_flush_interval_and_the_busy_cull_policy_are_configuration() {
    let c = load_str("[servers]\nactivity_flush_interval = \"2s\"\n[quota]\ncull_busy = true\n").unwrap();
    assert_eq!(c.server_settings().activity_flush_interval, Duration::from_secs(2));
    assert!(c.quota_settings().site_default.cull_busy);
    assert!(!Config::default().quota_settings().site_default.cull_busy, "busy servers are spared by default");
    let e = refusal("[servers]\nactivity_flush_interval = \"0s\"\n");
    assert!(e.contains("'servers.activity_flush_interval'"), "{e}");
}

#[test]
fn origin_isolation_over_https_prefixes_and_strips_every_hub_cookie() {
    let c = load_str("public_url = \"https://lab.example.org/\"\n[proxy]\nuser_subdomains = true\n").unwrap();
    let names = [
        "__Host-labhub-session",
        "__Host-labhub-user-session",
        "__Host-labhub-login-csrf",
        "__Host-labhub-flash",
        "__Host-labhub-oauth-binding",
        "__Host-labhub-server-token",
    ];
    assert_eq!(c.proxy_settings().strip_cookies, names);
    let paths = load_str("public_url = \"https://lab.example.org/\"\n").unwrap();
    let names = [
        "labhub-session",
        "labhub-user-session",
        "labhub-login-csrf",
        "labhub-flash",
        "labhub-oauth-binding",
        "labhub-server-token",
    ];
    assert_eq!(paths.proxy_settings().strip_cookies, names);
}

#[test]
fn defaults_and_durations() {
    let c = load_str("[session]\nidle_timeout = \"2h\"\n").unwrap();
    assert_eq!(c.session.idle_timeout, Duration::from_secs(7200));
    assert_eq!(c.public_url().as_str(), "http://127.0.0.1:8000/");
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let e = refusal("[session]\nidel_timeout = \"2h\"\n");
    assert!(e.contains("'session") && e.contains("idel_timeout"), "{e}");
    let e = refusal("bind = \"nonsense\"\n");
    assert!(e.contains("'bind'"), "{e}");
    let e = refusal("[auth]\nadmin_users = [\"Bad Name\"]\n");
    assert!(e.contains("'auth.admin_users"), "{e}");
    let e = refusal("[auth]\nadmin_users = [\"GitHub:bob\"]\n");
    assert!(e.contains("'auth.admin_users") && e.contains("write a name, or provider:name"), "{e}");
    let e = refusal("[auth]\nadmin_users = [\"github:bob\"]\n");
    assert!(e.contains("'auth.admin_users[0]' names the provider 'github', which is not one of"), "{e}");
    let e = refusal("public_url = \"ftp://x\"\n");
    assert!(e.contains("'public_url'"), "{e}");
}

#[test]
fn providers_are_read_and_checked_by_key() {
    let c = load_str(
        "[[auth.providers]]\nid = \"lab\"\nkind = \"oidc\"\nissuer = \"https://id.example.org/realms/lab\"\nclient_id = \"labhub\"\nclient_secret = \"s3cret\"\ntimeout = \"5s\"\nallowed_groups = [\"staff\"]\n",
    )
    .unwrap();
    let p = &c.auth.providers[0];
    assert_eq!(p.id.as_str(), "lab");
    assert_eq!(p.timeout, Duration::from_secs(5));
    assert!(!c.to_toml().contains("s3cret"), "the client secret is redacted");
    let e = refusal("[[auth.providers]]\nid = \"lab\"\nkind = \"oidc\"\nclient_id = \"x\"\nclient_secret = \"y\"\n");
    assert!(e.contains("'auth.providers[0].issuer'"), "{e}");
    let e = refusal("[[auth.providers]]\nid = \"Lab!\"\nkind = \"github\"\nclient_id = \"x\"\nclient_secret = \"y\"\n");
    assert!(e.contains("auth.providers") && e.contains("not a provider id"), "{e}");
    let twice = "[[auth.providers]]\nid = \"gh\"\nkind = \"github\"\nclient_id = \"x\"\nclient_secret = \"y\"\n";
    let e = refusal(&format!("{twice}{twice}"));
    assert!(e.contains("'auth.providers[1].id'"), "{e}");
    let e = refusal("[auth]\npassword_login = false\n");
    assert!(e.contains("'auth.password_login'"), "{e}");
}

#[test]
fn admin_users_name_local_accounts_or_a_providers() {
    let c = load_str(
        "[auth]\nadmin_users = [\"Alice\", \"gh:Bob\"]\n[[auth.providers]]\nid = \"gh\"\nkind = \"github\"\nclient_id = \"x\"\nclient_secret = \"y\"\n",
    )
    .unwrap();
    let s = c.account_settings();
    let (alice, bob) = (labhub_core::UserName::parse("alice").unwrap(), labhub_core::UserName::parse("bob").unwrap());
    assert!(s.lists_admin(&alice, None) && !s.lists_admin(&alice, Some("gh")), "a bare name is local only");
    assert!(s.lists_admin(&bob, Some("gh")) && !s.lists_admin(&bob, None) && !s.lists_admin(&bob, Some("lab")));
    assert!(c.to_toml().contains("admin_users = [\n    \"alice\",\n    \"gh:bob\",\n]"), "{}", c.to_toml());
}

#[test]
fn the_site_quota_reads_amounts_as_people_write_them_and_prints_them_back() {
    let c = load_str(
        "[quota]\nmax_cpu = 0.5\nmax_memory = \"1.5G\"\nbudget_cpu = \"8\"\nstorage = \"10G\"\nidle_timeout = \"never\"\nmax_lifetime = \"8h\"\nimages = [\"jupyterlab\"]\n",
    )
    .unwrap();
    let q = c.quota_settings().site_default;
    assert_eq!(q.max_cpu_millis, 500);
    assert_eq!(q.max_memory_bytes, 3 << 29);
    assert_eq!(q.budget_cpu_millis, Some(8000));
    assert_eq!(q.budget_memory_bytes, None);
    assert_eq!(q.storage_bytes, Some(10 << 30));
    assert_eq!(q.idle_timeout, None);
    assert_eq!(q.max_lifetime, Some(Duration::from_secs(8 * 3600)));
    let printed = c.to_toml();
    assert!(printed.contains("max_memory = \"1536M\"") && printed.contains("idle_timeout = \"never\""), "{printed}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("again.toml");
    std::fs::write(&p, &printed).unwrap();
    assert_eq!(Config::load(Some(&p)).unwrap().quota_settings().site_default, q, "what is printed reads back");
    let e = refusal("[quota]\nmax_memory = \"lots\"\n");
    assert!(e.contains("'quota.max_memory'"), "{e}");
    let e = refusal("[quota]\nidle_timeout = \"soon\"\n");
    assert!(e.contains("'quota.idle_timeout'") && e.contains("never"), "{e}");
}

#[test]
fn allowed_private_ranges_are_checked_and_name_their_key() {
    let c =
        load_str("[docker]\nallow_private = [\"10.1.2.0/24\"]\niptables = \"/usr/sbin/iptables-legacy\"\n").unwrap();
    assert_eq!(c.docker.allow_private[0].to_string(), "10.1.2.0/24");
    assert!(c.to_toml().contains("allow_private = [\"10.1.2.0/24\"]"), "{}", c.to_toml());
    assert_eq!(Config::default().docker.iptables.to_str(), Some("iptables"));
    for (bad, why) in [
        ("169.254.169.254/32", "never reach"),
        ("10.1.2.3/24", "did you mean 10.1.2.0/24?"),
        ("8.8.8.0/24", "not inside one of the private ranges"),
    ] {
        let e = refusal(&format!("[docker]\nallow_private = [\"{bad}\"]\n"));
        assert!(e.contains("'docker.allow_private") && e.contains(why), "{e}");
    }
    let e = refusal("[docker]\niptables = \"\"\n");
    assert!(e.contains("'docker.iptables'"), "{e}");
    let one = load_str("worker_threads = 1\n").unwrap();
    assert_eq!(one.worker_threads.map(|n| n.get()), Some(1));
    assert_eq!(one.front_door().threads.map(|n| n.get()), Some(1), "as many HTTP threads");
    assert!(refusal("worker_threads = 0\n").contains("worker_threads"));
    let c = load_str("[docker]\nmode = \"swarm\"\nswarm_subnet = \"10.50.0.0/16\"\n").unwrap();
    assert_eq!(c.docker.mode, labhub_spawner::RuntimeMode::Swarm);
    let e = refusal("[docker]\nswarm_subnet = \"10.50.0.0/24\"\n");
    assert!(e.contains("'docker.swarm_subnet' '10.50.0.0/24' must be a /16 or larger"), "{e}");
    let e = refusal("[docker]\nmode = \"swarm\"\nswarm_homes = \"nfs\"\n");
    assert!(e.contains("'docker.swarm_homes'") && e.contains("swarm_nfs_addr"), "{e}");
    let c = load_str("[docker]\nswarm_images = \"registry\"\nswarm_registry = \"registry.lab:5000/labhub\"\n").unwrap();
    assert_eq!(c.docker.swarm_registry.unwrap().as_str(), "registry.lab:5000/labhub");
    let e = refusal("[docker]\nswarm_registry = \"registry.lab:5000/labhub\"\n");
    assert!(e.contains("'docker.swarm_registry'") && e.contains("swarm_images"), "{e}");
    let e = load_str(
        "[docker]\nswarm_images = \"registry\"\nswarm_registry = \"127.0.0.1:5000/lab\"\n\
         [[docker.swarm_nodes]]\nhostname = \"lab2\"\ndocker_host = \"unix:///run/labhub/lab2.sock\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("loopback"), "{e}");
    let e = load_str("[docker]\nswarm_images = \"registry\"\nswarm_registry = \"labhub\"\n").unwrap_err();
    assert!(e.to_string().contains("not a registry path"), "{e}");
    let c = load_str(
        "[docker]\nmode = \"swarm\"\nswarm_homes = \"pinned\"\nswarm_images = \"copy\"\n\
         [[docker.swarm_nodes]]\nhostname = \"Lab2\"\ndocker_host = \"unix:///run/labhub/lab2.sock\"\n",
    )
    .unwrap();
    assert_eq!(c.docker.swarm_homes, labhub_spawner::SwarmHomes::Pinned);
    assert_eq!(c.docker.swarm_nodes[0].hostname.as_str(), "lab2");
    assert_eq!(c.docker.swarm_nodes[0].docker_host, "unix:///run/labhub/lab2.sock");
    let e = load_str("[[docker.swarm_nodes]]\nhostname = \"lab 2\"\ndocker_host = \"unix:///x\"\n").unwrap_err();
    assert!(e.to_string().contains("swarm_nodes"), "{e}");
    let e = load_str("[[docker.swarm_nodes]]\nhostname = \"lab2\"\ndocker_host = \"ssh://lab2\"\n").unwrap_err();
    assert!(e.to_string().contains("docker_host must be a unix:///path socket"), "{e}");
    let e =
        load_str("[[docker.swarm_nodes]]\nhostname = \"lab2\"\ndocker_host = \"tcp://10.0.0.2:2375\"\n").unwrap_err();
    assert!(e.to_string().contains("docker_host must be a unix:///path socket"), "{e}");
}

#[test]
fn password_login_reads_old_and_new_words_and_fits_the_directory() {
    use labhub_service::PasswordLogin;
    assert_eq!(Config::default().password_login(), PasswordLogin::Local);
    let gh = "[[auth.providers]]\nid = \"gh\"\nkind = \"github\"\nclient_id = \"x\"\nclient_secret = \"y\"\nallowed_users = [\"a\"]\n";
    let off = load_str(&format!("[auth]\npassword_login = false\n{gh}")).unwrap();
    assert_eq!(off.password_login(), PasswordLogin::Off, "the old boolean still reads");
    assert_eq!(load_str("[auth]\npassword_login = true\n").unwrap().password_login(), PasswordLogin::Local);
    let ldap = "[auth.ldap]\nurl = \"ldaps://dir.example.org\"\nbind_dn_template = \"uid={username},dc=x\"\nbind_password_file = \"/nonexistent\"\n";
    let e = refusal(ldap);
    assert!(e.contains("'auth.ldap.bind_dn'"), "{e}");
    let ldap = "[auth.ldap]\nurl = \"ldaps://dir.example.org\"\nbind_dn_template = \"uid={username},dc=x\"\n";
    let c = load_str(&format!("[auth]\nadmin_users = [\"ldap:alice\"]\n{ldap}")).unwrap();
    assert_eq!(c.password_login(), PasswordLogin::LocalAndDirectory, "break-glass local accounts by default");
    assert!(c.to_toml().contains("[auth.ldap]"), "{}", c.to_toml());
    let only = load_str(&format!("[auth]\npassword_login = \"ldap\"\n{ldap}")).unwrap();
    assert_eq!(only.password_login(), PasswordLogin::Directory);
    let e = refusal("[auth]\npassword_login = \"ldap\"\n");
    assert!(e.contains("'auth.password_login'") && e.contains("needs [auth.ldap]"), "{e}");
    let e = refusal(&format!("[auth]\npassword_login = \"local\"\n{ldap}"));
    assert!(e.contains("leaves [auth.ldap] unused"), "{e}");
    let e = refusal("[auth]\npassword_login = \"sometimes\"\n");
    assert!(e.contains("'auth.password_login'") && e.contains("local+ldap"), "{e}");
    let e = refusal("[auth]\nadmin_users = [\"ldap:alice\"]\n");
    assert!(e.contains("'auth.admin_users[0]'"), "{e}");
    let named_ldap = gh.replace("id = \"gh\"", "id = \"ldap\"");
    let e = refusal(&format!("{ldap}{named_ldap}"));
    assert!(e.contains("'auth.providers[0].id'"), "{e}");
}

#[test]
fn backups_are_off_without_a_directory_and_read_their_time_and_retention() {
    let off = Config::default().backup_settings();
    assert_eq!(off.dir, None);
    let c =
        load_str("[backups]\ndir = \"/srv/backups\"\ntime = \"03:30\"\nkeep_daily = 3\nkeep_monthly = 0\n").unwrap();
    let s = c.backup_settings();
    assert_eq!(s.dir.as_deref(), Some(Path::new("/srv/backups")));
    assert_eq!(s.at, time::Time::from_hms(3, 30, 0).unwrap());
    assert_eq!((s.keep.daily, s.keep.weekly, s.keep.monthly), (3, 4, 0));
    assert!(c.to_toml().contains("[backups]\ndir = \"/srv/backups\"\ntime = \"03:30\""), "{}", c.to_toml());
    let e = refusal("[backups]\ntime = \"25:00\"\n");
    assert!(e.contains("'backups.time'") && e.contains("HH:MM"), "{e}");
    let e = refusal("[backups]\ndir = \"backups\"\n");
    assert!(e.contains("'backups.dir'"), "{e}");
}

#[test]
fn secrets_are_redacted_when_printed() {
    let c = load_str("secret_key = \"0000000000000000000000000000000000000000000000000000000000000000\"\n[database]\nurl = \"postgres://u:hunter2@db/x\"\n").unwrap();
    let printed = c.to_toml();
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("[redacted]"));
    assert!(!format!("{c:?}").contains("hunter2"));
}
