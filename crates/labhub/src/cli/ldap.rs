//! `labhub ldap test USERNAME`: goes through a directory sign-in step by step — connect (and
//! TLS), the service account, finding the person, their password, their groups — and says
//! which step failed, without signing anyone in or touching the database. The person's
//! password is asked for only when it is needed to find them (bind templates without a
//! service account) or given with `--password-stdin`.

use std::io::IsTerminal;

use anyhow::{Context, bail};
use clap::Subcommand;
use labhub_auth::ldap::{Directory, DirectoryPerson, LdapError, Step, account_name};
use labhub_core::Secret;

use super::accounts::read_password_stdin;
use crate::config::Config;

#[derive(Subcommand)]
pub(super) enum LdapCommand {
    /// Check [auth.ldap] for one person: connect, TLS, the service account, find them, their
    /// groups (and their password, when given). Nobody is signed in.
    Test {
        /// The name the person would type at the sign-in form.
        username: String,
        /// Also check the person's password, read from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
}

fn line(ok: bool, step: &str, what: &str) {
    println!("{:<5} {step:<16} {what}", if ok { "ok" } else { "FAIL" });
}

/// Prints one step that succeeded.
fn print_step(step: Step) {
    match step {
        Step::Connected { url, tls } => line(true, "connect", &format!("{url} (tls: {tls})")),
        Step::ServiceBound { dn } => line(true, "service account", &format!("bound as {dn}")),
        Step::Found { dn, username, subject } => {
            line(true, "find the user", &format!("{dn} (login name {username}, id {subject})"))
        }
        Step::PasswordAccepted => line(true, "password", "accepted"),
        Step::Groups { names } if names.is_empty() => line(true, "groups", "none"),
        Step::Groups { names } => line(true, "groups", &names.join(", ")),
    }
}

/// The step an error stopped at.
fn failed_step(e: &LdapError, found: bool) -> &'static str {
    match e {
        LdapError::Unreachable { .. } | LdapError::Tls { .. } | LdapError::Setup(_) => "connect",
        LdapError::Timeout { what } if what.starts_with("connecting") => "connect",
        LdapError::ServiceBind { .. } => "service account",
        LdapError::BadCredentials | LdapError::Refused { .. } if found => "password",
        LdapError::Search { .. } | LdapError::Timeout { .. } if found => "groups",
        _ => "find the user",
    }
}

pub(super) async fn ldap(config: &Config, cmd: LdapCommand) -> anyhow::Result<()> {
    let LdapCommand::Test { username, password_stdin } = cmd;
    let Some(ldap) = &config.auth.ldap else {
        bail!("there is no [auth.ldap] in the configuration");
    };
    let directory = Directory::new(ldap).context("[auth.ldap] cannot be used")?;
    let password = if password_stdin {
        Some(read_password_stdin()?)
    } else if directory.needs_password_to_find() {
        if !std::io::stdin().is_terminal() {
            bail!(
                "with bind_dn_template and no bind_dn, {username} can only be found with their password: give it with --password-stdin"
            );
        }
        let prompt = format!("{username}'s password (needed to find them with bind_dn_template): ");
        Some(Secret::new(rpassword::prompt_password(prompt).context("could not read the password")?))
    } else {
        None
    };
    let mut found = false;
    let result = directory
        .check(&username, password.as_ref(), &mut |step| {
            found |= matches!(step, Step::Found { .. } | Step::PasswordAccepted);
            print_step(step);
        })
        .await;
    let person = match result {
        Ok(person) => person,
        Err(e) => {
            let step = failed_step(&e, found);
            line(false, step, &e.to_string());
            bail!("the directory check failed at: {step}");
        }
    };
    if password.is_none() {
        println!("{:<5} {:<16} not checked (give it with --password-stdin)", "-", "password");
    }
    verdict(&directory, &person)
}

/// What the sign-in policy's lists say about the person (accounts and approval aside).
fn verdict(directory: &Directory, person: &DirectoryPerson) -> anyhow::Result<()> {
    let Some(name) = account_name(person) else {
        line(false, "account name", &format!("'{}' is not a valid account name on this hub", person.username));
        bail!("the directory check failed at: account name");
    };
    let rules = directory.rules();
    let identity = person.identity();
    let in_any = |list: &[String]| identity.groups.iter().find(|g| list.contains(g)).cloned();
    let admin = in_any(&rules.admin_groups);
    let allowed = (rules.allowed_users.is_empty() && rules.allowed_groups.is_empty())
        || rules.allowed_users.contains(&name)
        || admin.is_some()
        || in_any(&rules.allowed_groups).is_some();
    let what = match (&admin, rules.admin_groups.is_empty()) {
        (Some(g), _) => format!("{name}, an admin (in {g})"),
        (None, false) => format!("{name}, not an admin (in none of admin_groups)"),
        (None, true) => name.to_string(),
    };
    line(true, "account name", &what);
    if !allowed {
        line(false, "allowed", "neither the name nor any group is in allowed_users or allowed_groups");
        bail!("{name} would be refused by allowed_users and allowed_groups");
    }
    line(true, "allowed", "by allowed_users and allowed_groups");
    Ok(())
}
