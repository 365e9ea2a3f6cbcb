//! The container spec for one server, as a pure function of the request, so every
//! hardening field can be unit-tested without an engine.
//!
//! # Per kind
//!
//! | kind | user | home (volume mount) | command | readiness |
//! |---|---|---|---|---|
//! | jupyter | `1000:100` (docker-stacks' `jovyan`) | `/home/jovyan` | `jupyter lab --ServerApp.*` | `GET {base_url}api` with the token answers 200 |
//! | rstudio | `1000:1000` (rocker's `rstudio`) | `/home/rstudio` | `rserver` as that user, auth off | any HTTP answer on `/` |
//! | custom | the image's user, `1000:100` if it is root or unset | the image's `HOME`, else `/home/jovyan` | `spec.command`, else the image's | any answer below 500 on `base_url` |
//!
//! A custom image's home comes from its `ENV HOME` rather than its `WORKDIR`, because the
//! work directory of a custom image often holds the application itself (`/app`), which a
//! volume mounted over it would hide.
//!
//! # RStudio: rserver run directly as the non-root user
//!
//! rocker's images start `/init` (s6-overlay) as root; its `userconf` script renames or
//! re-creates the `rstudio` user from `USER`/`USERID`/`GROUPID` (defaults `rstudio`, 1000,
//! 1000), copies `disable_auth_rserver.conf` over `rserver.conf` when `DISABLE_AUTH=true`,
//! then s6 runs `rserver --server-daemonize 0` (rocker-org/rocker-versioned2
//! `scripts/install_rstudio.sh`, `scripts/userconf.sh`, `scripts/default_user.sh`). That path
//! needs root plus CHOWN, DAC_OVERRIDE, FOWNER, SETUID and SETGID at least, and rocker's
//! maintainers say it "is intended to be run by the root user"
//! (rocker-org/rocker-versioned2#592, #682).
//!
//! We instead run rserver the way jupyterhub/jupyter-rsession-proxy does
//! (`jupyter_rsession_proxy/__init__.py`, `setup_rserver`): as the unprivileged user,
//! with `--server-user` set to that same user (rserver refuses to switch users without
//! privilege: rstudio/rstudio#9496, rocker-org/rocker#514), `--auth-none=1`,
//! `--www-verify-user-agent=0`, `--www-frame-origin=same`, and its writable state (sqlite
//! database config, server data dir, secure-cookie key) in a private temporary directory
//! instead of `/var/lib/rstudio-server`, which only root may write (jupyterhub/repo2docker#1557).
//! The directory and the database config are made by a `/bin/sh` prologue of the server's
//! command, run as the server's user (so they are its own, mode 0700) before it `exec`s
//! rserver: the one way that serves both runtimes, since a Swarm service has no step between
//! creating its container and starting it. Every rocker image has a shell. The directory
//! lives in the container's `/tmp`, not in the user's volume, like jupyter-rsession-proxy's
//! `mkdtemp()`: a stale server database must not survive into the next start. So the
//! rstudio kind adds back no capability at all. The user matches rocker's default
//! `USERID`/`GROUPID` (1000:1000), which is who owns `/home/rstudio` in the image, so a new
//! volume is writable.
//! `USER` and `HOME` are set as rsession expects them (jupyter-rsession-proxy sets `USER`).
//!
//! Not verified against a real rserver (none can be obtained here): that a current rserver
//! accepts exactly these flags together, creates the secure-cookie key file when it is
//! missing, writes no pid file when not daemonised, and that skipping rocker's `/init` loses
//! nothing a session needs beyond the `Renviron.site` lines `userconf` appends. What is
//! verified: the container spec (inspect), the files made in `/tmp`, and readiness against
//! the test server's rserver stand-in, in both runtimes.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, HostConfigLogConfig, Mount, MountType, RestartPolicy,
    RestartPolicyNameEnum,
};
use labhub_core::spawner::ServerSpec;
use labhub_core::spawner::SpawnError;
use labhub_core::{Contract, ImageKind, Secret};

use crate::config::HubId;
use crate::naming::{LABEL_IMAGE, LABEL_KIND, LABEL_PORT, LABEL_USER, LABEL_VOLUME, ServerNames, server_labels};

/// Every capability is dropped; a kind adds back only what [`added_capabilities`] names.
pub(crate) const DROP_ALL: &str = "ALL";

/// The user the jupyter kind runs as: docker-stacks' `jovyan` (uid 1000, group `users`).
const JUPYTER_USER: &str = "1000:100";
/// The user the rstudio kind runs as: rocker's `rstudio` (default `USERID`/`GROUPID`).
const RSTUDIO_UID_GID: (u64, u64) = (1000, 1000);
/// rocker's user name for uid 1000; rserver's `--server-user` must be this very user.
const RSTUDIO_USER: &str = "rstudio";
/// Where rocker installs rserver.
const RSERVER: &str = "/usr/lib/rstudio-server/bin/rserver";
/// rserver's private writable state, made by the command's prologue (see the module docs).
const RSERVER_STATE_DIR: &str = "/tmp/labhub-rserver";
/// Home when nothing better is known: docker-stacks' layout.
const DEFAULT_HOME: &str = "/home/jovyan";
/// Docker refuses memory limits below 6 MiB; anything that small cannot run a server anyway.
const MIN_MEMORY_BYTES: u64 = 16 << 20;
/// Bound the json-file log so one chatty server cannot fill the engine's disk.
const LOG_MAX_SIZE: &str = "10m";
/// How many rotated log files the engine keeps per server.
const LOG_MAX_FILES: &str = "3";

/// Capabilities a kind adds back after dropping all. None needs any: each kind runs one
/// non-root process tree that never switches user, binds no port below 1024 and changes no
/// file ownership. (rocker's `/init` would need CHOWN, DAC_OVERRIDE, FOWNER, SETUID, SETGID:
/// that is why the rstudio kind runs rserver directly.)
pub(crate) fn added_capabilities(kind: ImageKind) -> &'static [&'static str] {
    match kind {
        ImageKind::Jupyter | ImageKind::Rstudio | ImageKind::Custom => &[],
    }
}

/// What the image itself says that matters to the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ImageFacts {
    /// The content id (`sha256:…`) the container is created from, so it runs exactly what was recorded.
    pub id: String,
    /// Its repository digest (`name@sha256:…`), when it came from or went to a registry.
    pub repo_digest: Option<String>,
    /// The image's `USER`, if any.
    pub user: Option<String>,
    /// The image's `ENV HOME`, if any.
    pub home: Option<String>,
}

/// Everything the spec depends on besides the request.
#[derive(Debug, Clone)]
pub(crate) struct PlanContext<'a> {
    /// This hub.
    pub hub: &'a HubId,
    /// The server's container and volume names.
    pub names: &'a ServerNames,
    /// The network the container joins.
    pub network: &'a str,
    /// The pids limit.
    pub pids_limit: u32,
    /// What the image says.
    pub image: &'a ImageFacts,
    /// Folders mounted besides the home, their sources checked.
    pub extra: &'a [ResolvedMount],
}

/// A folder mounted besides the home, as the engine names its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedMount {
    /// A volume's name, or a host folder's path.
    pub source: String,
    /// Whether `source` is a host folder (a bind mount) rather than a volume.
    pub host_path: bool,
    /// Where, relative to the home.
    pub at: String,
    pub read_only: bool,
}

/// How to tell that a server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// `GET path` with `Authorization: token …` answers 200 (jupyter_server's API).
    TokenApi { path: String, token: Secret<String> },
    /// Any HTTP answer at all on `path`.
    AnyAnswer { path: String },
    /// An HTTP answer below 500 on `path`.
    Below500 { path: String },
}

/// The container to create for one server.
#[derive(Debug, Clone)]
pub(crate) struct ContainerPlan {
    /// The create request.
    pub body: ContainerCreateBody,
    /// How readiness is checked.
    pub readiness: Readiness,
}

/// Builds the container spec; refuses requests that would run without limits.
pub(crate) fn container_plan(spec: &ServerSpec, ctx: &PlanContext<'_>) -> Result<ContainerPlan, SpawnError> {
    validate(spec)?;
    let home = home_dir(spec.kind, ctx.image);
    let user = run_as(spec.kind, ctx.image);

    let mut env: HashMap<String, String> = spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // The hub's own variables win over `spec.env`: a catalogue entry must not be able to
    // replace the token or the prefix the proxy relies on.
    env.insert("JUPYTERHUB_USER".into(), spec.user.to_string());
    env.insert("JUPYTERHUB_SERVICE_PREFIX".into(), spec.base_url.clone());
    let (cmd, working_dir, readiness) = match spec.kind {
        ImageKind::Jupyter if spec.contract == Contract::Jupyterhub => {
            // jupyterhub-singleuser signs users in through the hub and reads its address,
            // prefix and port from the `JUPYTERHUB_*` variables; its API root answers anyone.
            let cmd = spec.command.clone().unwrap_or_else(singleuser_command);
            let readiness = Readiness::Below500 { path: format!("{}api", spec.base_url) };
            (Some(cmd), Some(home.clone()), readiness)
        }
        ImageKind::Jupyter => {
            env.insert("JUPYTER_TOKEN".into(), spec.token.expose().clone());
            let cmd = spec.command.clone().unwrap_or_else(|| jupyter_command(spec));
            let readiness = Readiness::TokenApi { path: format!("{}api", spec.base_url), token: spec.token.clone() };
            (Some(cmd), Some(home.clone()), readiness)
        }
        ImageKind::Rstudio => {
            env.insert("USER".into(), RSTUDIO_USER.into());
            env.insert("HOME".into(), home.clone());
            let cmd = spec.command.clone().unwrap_or_else(|| rserver_command(spec.port));
            (Some(with_rserver_state(cmd)), Some(home.clone()), Readiness::AnyAnswer { path: "/".into() })
        }
        ImageKind::Custom => {
            // Custom servers get Jupyter's conventions too (as JupyterHub's spawners give
            // every server): those that understand them can check the token themselves.
            env.insert("JUPYTER_TOKEN".into(), spec.token.expose().clone());
            (spec.command.clone(), None, Readiness::Below500 { path: spec.base_url.clone() })
        }
    };
    let mut env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();

    let mut labels = server_labels(ctx.hub, spec.owner, spec.server.as_ref());
    labels.insert(LABEL_USER.into(), spec.user.to_string());
    labels.insert(LABEL_KIND.into(), spec.kind.as_str().into());
    labels.insert(LABEL_PORT.into(), spec.port.to_string());
    labels.insert(LABEL_VOLUME.into(), ctx.names.volume.clone());
    labels.insert(LABEL_IMAGE.into(), spec.image.to_string());

    let res = &spec.resources;
    let memory = i64::try_from(res.memory_bytes).map_err(|_| SpawnError::Invalid("memory limit too large".into()))?;
    let mut mounts = vec![Mount {
        target: Some(home.clone()),
        source: Some(ctx.names.volume.clone()),
        typ: Some(MountType::VOLUME),
        read_only: Some(false),
        ..Default::default()
    }];
    mounts.extend(ctx.extra.iter().map(|m| Mount {
        target: Some(format!("{}/{}", home.trim_end_matches('/'), m.at)),
        source: Some(m.source.clone()),
        typ: Some(if m.host_path { MountType::BIND } else { MountType::VOLUME }),
        read_only: Some(m.read_only),
        ..Default::default()
    }));
    let host_config = HostConfig {
        mounts: Some(mounts),
        network_mode: Some(ctx.network.to_string()),
        cap_drop: Some(vec![DROP_ALL.to_string()]),
        cap_add: Some(added_capabilities(spec.kind).iter().map(|c| c.to_string()).collect()),
        security_opt: Some(vec!["no-new-privileges:true".to_string()]),
        privileged: Some(false),
        pids_limit: Some(i64::from(ctx.pids_limit)),
        memory: Some(memory),
        // Swap equal to memory means no swap on top of the limit.
        memory_swap: Some(memory),
        nano_cpus: Some(i64::from(res.cpu_millis) * 1_000_000),
        device_requests: (res.gpus > 0).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: Some(i64::from(res.gpus)),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]
        }),
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        // Images bring their own init (tini); a second one would only hide the exit code.
        init: Some(false),
        publish_all_ports: Some(false),
        port_bindings: None,
        ipc_mode: Some("private".into()),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
                ("max-file".to_string(), LOG_MAX_FILES.to_string()),
            ])),
        }),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(ctx.image.id.clone()),
        user: Some(user),
        cmd,
        working_dir,
        env: Some(env),
        labels: Some(labels),
        host_config: Some(host_config),
        tty: Some(false),
        open_stdin: Some(false),
        ..Default::default()
    };
    Ok(ContainerPlan { body, readiness })
}

fn validate(spec: &ServerSpec) -> Result<(), SpawnError> {
    let res = &spec.resources;
    if res.cpu_millis == 0 {
        return Err(SpawnError::Invalid("a server needs a CPU limit; this image has none set".into()));
    }
    if res.memory_bytes < MIN_MEMORY_BYTES {
        return Err(SpawnError::Invalid(format!(
            "a server needs a memory limit of at least {} MiB",
            MIN_MEMORY_BYTES >> 20
        )));
    }
    if spec.port == 0 {
        return Err(SpawnError::Invalid("the server's port must not be 0".into()));
    }
    if !spec.base_url.starts_with('/') || !spec.base_url.ends_with('/') {
        return Err(SpawnError::Invalid(format!("the base URL {:?} must start and end with '/'", spec.base_url)));
    }
    if spec.command.as_ref().is_some_and(Vec::is_empty) {
        return Err(SpawnError::Invalid("the command must not be empty".into()));
    }
    for m in &spec.mounts {
        if m.at.is_empty() || m.at.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return Err(SpawnError::Invalid(format!("{:?} is not a folder of the home to mount at", m.at)));
        }
    }
    Ok(())
}

fn home_dir(kind: ImageKind, image: &ImageFacts) -> String {
    match kind {
        ImageKind::Jupyter => DEFAULT_HOME.to_string(),
        ImageKind::Rstudio => format!("/home/{RSTUDIO_USER}"),
        ImageKind::Custom => match image.home.as_deref() {
            Some(h) if h.starts_with('/') && h != "/" && h != "/root" => h.trim_end_matches('/').to_string(),
            _ => DEFAULT_HOME.to_string(),
        },
    }
}

fn run_as(kind: ImageKind, image: &ImageFacts) -> String {
    match kind {
        ImageKind::Jupyter => JUPYTER_USER.to_string(),
        ImageKind::Rstudio => format!("{}:{}", RSTUDIO_UID_GID.0, RSTUDIO_UID_GID.1),
        ImageKind::Custom => match image.user.as_deref() {
            Some(u) if !is_root(u) => u.to_string(),
            _ => JUPYTER_USER.to_string(),
        },
    }
}

/// `""`, `root`, `0`, `root:…`, `0:…` all run as root.
fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or("").trim();
    name.is_empty() || name == "root" || name.parse::<u64>() == Ok(0)
}

fn jupyter_command(spec: &ServerSpec) -> Vec<String> {
    vec![
        "jupyter".into(),
        "lab".into(),
        "--ServerApp.ip=0.0.0.0".into(),
        format!("--ServerApp.port={}", spec.port),
        format!("--ServerApp.base_url={}", spec.base_url),
        "--ServerApp.open_browser=False".into(),
        "--ServerApp.allow_remote_access=True".into(),
        "--ServerApp.trust_xheaders=True".into(),
    ]
}

/// JupyterHub's single-user server, as JupyterHub's spawners start it (`JUPYTERHUB_SERVICE_URL`
/// says where it listens).
fn singleuser_command() -> Vec<String> {
    vec!["jupyterhub-singleuser".into(), "--ServerApp.allow_remote_access=True".into()]
}

fn rserver_command(port: u16) -> Vec<String> {
    vec![
        RSERVER.into(),
        "--server-daemonize=0".into(),
        "--auth-none=1".into(),
        format!("--server-user={RSTUDIO_USER}"),
        "--www-address=0.0.0.0".into(),
        format!("--www-port={port}"),
        "--www-verify-user-agent=0".into(),
        "--www-frame-origin=same".into(),
        format!("--server-data-dir={RSERVER_STATE_DIR}/data"),
        format!("--database-config-file={RSERVER_STATE_DIR}/database.conf"),
        format!("--secure-cookie-key-file={RSERVER_STATE_DIR}/secure-cookie-key"),
    ]
}

/// `cmd` behind a prologue that makes rserver's private state as the server's own user
/// (see [`state_prologue`]).
fn with_rserver_state(cmd: Vec<String>) -> Vec<String> {
    state_prologue(RSERVER_STATE_DIR, cmd)
}

/// `cmd` behind a `/bin/sh` prologue that makes `dir` with `data/` and `db/` (0700) and the
/// sqlite database config (0600) under `umask 077` in a subshell, so the umask ends there and
/// `cmd` runs under the container's own; `cmd`'s words reach `exec` as the shell's positional
/// parameters, never parsed by the shell.
fn state_prologue(dir: &str, cmd: Vec<String>) -> Vec<String> {
    let script = format!(
        "(umask 077 && mkdir -p {dir}/data {dir}/db && printf 'provider=sqlite\\ndirectory={dir}/db\\n' >{dir}/database.conf) && exec \"$@\""
    );
    ["/bin/sh".to_string(), "-c".into(), script, "labhub-rserver".into()].into_iter().chain(cmd).collect()
}

/// Words for how a container ended, for the user.
pub(crate) fn exit_reason(exit_code: i64, oom_killed: bool) -> String {
    if oom_killed {
        return "killed (out of memory)".to_string();
    }
    match exit_code {
        137 => "exited with code 137 (killed)".to_string(),
        143 => "exited with code 143 (terminated)".to_string(),
        code => format!("exited with code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use labhub_core::{ImageRef, Resources, ServerName, Storage, UserId, UserName};

    use super::*;

    fn spec(kind: ImageKind) -> ServerSpec {
        ServerSpec {
            owner: UserId::new(1),
            user: UserName::parse("alice").unwrap(),
            home: Storage::Home { owner: UserId::new(1), server: None },
            mounts: Vec::new(),
            server: Some(ServerName::parse("gpu").unwrap()),
            image: ImageRef::parse("labhub/jupyterlab:1").unwrap(),
            kind,
            port: kind.default_port(),
            command: None,
            resources: Resources { cpu_millis: 1500, memory_bytes: 2 << 30, gpus: 0 },
            base_url: "/user/alice/gpu/".into(),
            token: Secret::new("s3cret".into()),
            env: BTreeMap::from([("JUPYTER_TOKEN".to_string(), "evil".to_string()), ("A".into(), "b".into())]),
            contract: Contract::Labhub,
            placement: Vec::new(),
            start_timeout: Duration::from_secs(30),
            node: None,
        }
    }

    fn plan_for(spec: &ServerSpec, image: &ImageFacts) -> ContainerPlan {
        let hub = HubId::parse("labhub").unwrap();
        let names = ServerNames::new(&hub, spec.owner, spec.server.as_ref(), "labhub-home_U1".into());
        let ctx = PlanContext { hub: &hub, names: &names, network: "labhub-users", pids_limit: 512, image, extra: &[] };
        container_plan(spec, &ctx).unwrap()
    }

    /// Where the plan mounts the user's volume.
    fn home(plan: &ContainerPlan) -> &str {
        let mounts = plan.body.host_config.as_ref().unwrap().mounts.as_ref().unwrap();
        mounts[0].target.as_deref().unwrap()
    }

    fn image() -> ImageFacts {
        ImageFacts { id: "sha256:abc".into(), repo_digest: None, user: Some("1000".into()), home: None }
    }

    #[test]
    fn every_hardening_field_is_set() {
        for kind in [ImageKind::Jupyter, ImageKind::Rstudio, ImageKind::Custom] {
            let plan = plan_for(&spec(kind), &image());
            let hc = plan.body.host_config.as_ref().unwrap();
            assert_eq!(hc.cap_drop.as_deref(), Some(&["ALL".to_string()][..]), "{kind:?}");
            assert_eq!(hc.cap_add.as_deref(), Some(&[][..]), "{kind:?}");
            assert_eq!(hc.security_opt.as_deref(), Some(&["no-new-privileges:true".to_string()][..]));
            assert_eq!(hc.privileged, Some(false));
            assert_eq!(hc.pids_limit, Some(512));
            assert_eq!(hc.memory, Some(2 << 30));
            assert_eq!(hc.memory_swap, Some(2 << 30));
            assert_eq!(hc.nano_cpus, Some(1_500_000_000));
            assert_eq!(hc.init, Some(false));
            assert_eq!(hc.publish_all_ports, Some(false));
            assert!(hc.port_bindings.is_none());
            assert!(hc.binds.is_none(), "nothing from the host is bind-mounted (no Docker socket)");
            assert_eq!(hc.network_mode.as_deref(), Some("labhub-users"));
            assert_eq!(hc.restart_policy.as_ref().unwrap().name, Some(RestartPolicyNameEnum::NO));
            assert!(hc.device_requests.is_none());
            let mounts = hc.mounts.as_ref().unwrap();
            assert_eq!(mounts.len(), 1);
            assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
            assert_eq!(mounts[0].source.as_deref(), Some("labhub-home_U1"));
            assert!(home(&plan).starts_with("/home/"), "{kind:?}");
            if kind != ImageKind::Custom {
                assert_eq!(plan.body.working_dir.as_deref(), Some(home(&plan)), "{kind:?} starts in the home");
            }
            assert_eq!(plan.body.image.as_deref(), Some("sha256:abc"));
            let user = plan.body.user.as_deref().unwrap();
            assert!(!is_root(user), "{kind:?} runs as {user}");
            let labels = plan.body.labels.as_ref().unwrap();
            assert_eq!(labels["io.labhub.hub"], "labhub");
            assert_eq!(labels["io.labhub.user"], "alice");
            assert_eq!(labels["io.labhub.server"], "gpu");
            assert_eq!(labels["io.labhub.kind"], kind.as_str());
        }
    }

    #[test]
    fn jupyter_command_env_and_readiness() {
        let plan = plan_for(&spec(ImageKind::Jupyter), &image());
        assert_eq!(plan.body.user.as_deref(), Some("1000:100"));
        assert_eq!(home(&plan), "/home/jovyan");
        let cmd = plan.body.cmd.unwrap();
        assert_eq!(&cmd[..2], ["jupyter", "lab"]);
        assert!(cmd.contains(&"--ServerApp.base_url=/user/alice/gpu/".to_string()));
        assert!(cmd.contains(&"--ServerApp.port=8888".to_string()));
        assert!(cmd.contains(&"--ServerApp.ip=0.0.0.0".to_string()));
        assert!(!cmd.iter().any(|a| a.contains("s3cret")), "the token stays out of the command line");
        let env = plan.body.env.unwrap();
        assert!(env.contains(&"JUPYTER_TOKEN=s3cret".to_string()), "the hub's token wins over spec.env");
        assert!(!env.contains(&"JUPYTER_TOKEN=evil".to_string()));
        assert!(env.contains(&"JUPYTERHUB_SERVICE_PREFIX=/user/alice/gpu/".to_string()));
        assert!(env.contains(&"JUPYTERHUB_USER=alice".to_string()));
        assert!(env.contains(&"A=b".to_string()));
        assert_eq!(
            plan.readiness,
            Readiness::TokenApi { path: "/user/alice/gpu/api".into(), token: Secret::new("s3cret".into()) }
        );
    }

    #[test]
    fn a_command_override_is_used_verbatim() {
        let mut s = spec(ImageKind::Jupyter);
        s.command = Some(vec!["start-notebook.sh".into()]);
        assert_eq!(plan_for(&s, &image()).body.cmd, Some(vec!["start-notebook.sh".to_string()]));
        s.command = Some(vec![]);
        let hub = HubId::parse("labhub").unwrap();
        let names = ServerNames::new(&hub, s.owner, None, "labhub-home_U1".into());
        let img = image();
        let ctx = PlanContext { hub: &hub, names: &names, network: "n", pids_limit: 1, image: &img, extra: &[] };
        assert!(matches!(container_plan(&s, &ctx), Err(SpawnError::Invalid(_))));
    }

    #[test]
    fn rstudio_runs_rserver_as_rocker_user_without_the_token() {
        let plan = plan_for(&spec(ImageKind::Rstudio), &image());
        assert_eq!(plan.body.user.as_deref(), Some("1000:1000"));
        assert_eq!(home(&plan), "/home/rstudio");
        let cmd = plan.body.cmd.unwrap();
        assert_eq!(cmd[..2], ["/bin/sh", "-c"]);
        assert!(cmd[2].contains("provider=sqlite") && cmd[2].ends_with("exec \"$@\""), "{}", cmd[2]);
        assert_eq!(cmd[4], RSERVER, "rserver is the prologue's first argument after $0");
        for flag in ["--auth-none=1", "--server-user=rstudio", "--www-port=8787", "--server-daemonize=0"] {
            assert!(cmd.contains(&flag.to_string()), "{flag}");
        }
        let env = plan.body.env.unwrap();
        assert!(!env.iter().any(|e| e.contains("s3cret")), "rserver has no use for the token");
        assert!(env.contains(&"USER=rstudio".to_string()));
        assert_eq!(plan.readiness, Readiness::AnyAnswer { path: "/".into() });
    }

    #[test]
    fn the_state_prologue_makes_private_state_and_runs_the_command_verbatim_under_the_usual_umask() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let dir_s = dir.to_str().unwrap();
        let show = "printf '%s|' \"$@\"; umask";
        let words = ["/bin/sh", "-c", show, "sh", "a b", "$HOME", "'q'"].map(String::from).to_vec();
        let out = std::process::Command::new("/bin/sh").args(&state_prologue(dir_s, words)[1..]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let outer = std::process::Command::new("/bin/sh").args(["-c", "umask"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            format!("a b|$HOME|'q'|{}", String::from_utf8_lossy(&outer.stdout)),
            "words verbatim, umask kept"
        );
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for d in [dir.clone(), dir.join("data"), dir.join("db")] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        assert_eq!(mode(&dir.join("database.conf")), 0o600);
        let conf = std::fs::read_to_string(dir.join("database.conf")).unwrap();
        assert_eq!(conf, format!("provider=sqlite\ndirectory={dir_s}/db\n"));
    }

    #[test]
    fn custom_images_keep_their_user_unless_root() {
        let mut s = spec(ImageKind::Custom);
        s.command = Some(vec!["serve".into()]);
        s.port = 9000;
        let mut img = image();
        img.user = Some("app".into());
        img.home = Some("/home/app/".into());
        let plan = plan_for(&s, &img);
        assert_eq!(plan.body.user.as_deref(), Some("app"));
        assert_eq!(home(&plan), "/home/app");
        assert_eq!(plan.body.working_dir, None, "a custom image keeps its own work directory");
        assert_eq!(plan.readiness, Readiness::Below500 { path: "/user/alice/gpu/".into() });
        for root in ["", "root", "0", "0:0", "root:root"] {
            img.user = Some(root.into());
            img.home = Some("/root".into());
            let plan = plan_for(&s, &img);
            assert_eq!(plan.body.user.as_deref(), Some("1000:100"), "{root:?}");
            assert_eq!(home(&plan), "/home/jovyan");
        }
        img.user = None;
        assert_eq!(plan_for(&s, &img).body.user.as_deref(), Some("1000:100"));
    }

    #[test]
    fn gpus_become_device_requests() {
        let mut s = spec(ImageKind::Jupyter);
        s.resources.gpus = 2;
        let plan = plan_for(&s, &image());
        let req = &plan.body.host_config.unwrap().device_requests.unwrap()[0];
        assert_eq!(req.driver.as_deref(), Some("nvidia"));
        assert_eq!(req.count, Some(2));
        assert_eq!(req.capabilities, Some(vec![vec!["gpu".to_string()]]));
    }

    #[test]
    fn limits_are_mandatory() {
        let hub = HubId::parse("labhub").unwrap();
        let img = image();
        for mutate in [
            (|s: &mut ServerSpec| s.resources.cpu_millis = 0) as fn(&mut ServerSpec),
            |s| s.resources.memory_bytes = 0,
            |s| s.port = 0,
            |s| s.base_url = "/user/alice".into(),
        ] {
            let mut s = spec(ImageKind::Jupyter);
            mutate(&mut s);
            let names = ServerNames::new(&hub, s.owner, None, "labhub-home_U1".into());
            let ctx = PlanContext { hub: &hub, names: &names, network: "n", pids_limit: 1, image: &img, extra: &[] };
            assert!(matches!(container_plan(&s, &ctx), Err(SpawnError::Invalid(_))));
        }
    }

    #[test]
    fn exit_reasons() {
        assert_eq!(exit_reason(0, false), "exited with code 0");
        assert_eq!(exit_reason(137, false), "exited with code 137 (killed)");
        assert_eq!(exit_reason(137, true), "killed (out of memory)");
        assert_eq!(exit_reason(2, false), "exited with code 2");
    }
}
