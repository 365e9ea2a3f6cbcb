//! A Postgres cluster the hub runs itself when no `DATABASE_URL` is given.
//!
//! Two flavours share the plumbing:
//! - [`EmbeddedPostgres::start_durable`]: the hub's default database. Initialised under the
//!   data dir on first start, reached only through a Unix socket in a private directory,
//!   started with `pg_ctl` (it outlives a crashed hub and is adopted by the next one) and
//!   stopped on shutdown.
//! - [`EmbeddedPostgres::start_throwaway`]: for tests. No fsync, a loopback TCP port, and a
//!   child process that dies with the process that started it.
//!
//! `initdb` refuses to run as root, so when the hub runs as root the cluster runs as the
//! `postgres` system user (Debian's packages create it).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The database the hub keeps its tables in.
pub const DATABASE: &str = "labhub";
const SUPERUSER: &str = "postgres";
const SOCKET_PORT: u16 = 5432;

/// Why the embedded cluster could not be started, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb in {looked}); install them (on Debian: apt-get install postgresql), \
         or set LABHUB_PG_BIN to the folder that holds initdb and pg_ctl, or set DATABASE_URL to use an existing server"
    )]
    NoBinaries { looked: String },
    #[error(
        "the hub runs as root, and PostgreSQL refuses to; it needs the 'postgres' system user to run the embedded database \
         (install the postgresql package, which creates it), or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error(
        "the embedded database at {dir} is not reachable by the 'postgres' system user; choose a data_dir outside \
         private folders such as /root, or set DATABASE_URL"
    )]
    NotReachable { dir: String },
    #[error("{step} failed: {detail}")]
    Command { step: String, detail: String },
    #[error("could not prepare {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the embedded database did not accept connections within {0} s; see {1}")]
    NotReady(u64, String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io { path: path.display().to_string(), source }
}

/// Finds the server binaries: the configured folder, else the newest `/usr/lib/postgresql/<v>/bin`,
/// else `pg_config --bindir`, else `initdb` on `PATH`.
pub fn find_bin_dir(configured: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    let has_tools = |d: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|t| d.join(t).is_file());
    if let Some(d) = configured {
        return if has_tools(d) {
            Ok(d.to_path_buf())
        } else {
            Err(EmbeddedError::NoBinaries { looked: d.display().to_string() })
        };
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    candidates.sort();
    if let Some((_, d)) = candidates.into_iter().rev().find(|(_, d)| has_tools(d)) {
        return Ok(d);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&d) {
            return Ok(d);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_tools(&d) {
                return Ok(d);
            }
        }
    }
    Err(EmbeddedError::NoBinaries { looked: "/usr/lib/postgresql/*/bin, pg_config --bindir and PATH".to_string() })
}

/// The system user the cluster runs as, when the hub is root.
#[derive(Debug, Clone)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn current_uid() -> u32 {
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    if current_uid() != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_err(Path::new("/etc/passwd")))?;
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == SUPERUSER)
        .ok_or(EmbeddedError::NoPostgresUser)?;
    let (Ok(uid), Ok(gid)) = (entry[2].parse(), entry[3].parse()) else {
        return Err(EmbeddedError::NoPostgresUser);
    };
    Ok(Some(RunAs { uid, gid }))
}

/// A Postgres cluster started by the hub or a test. A clone names the same cluster (the
/// supervisor holds one).
#[derive(Debug, Clone)]
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    tcp_port: Option<u16>,
    log_file: PathBuf,
    /// Whether it was already running when this process started it (another hub or command owns it).
    adopted: bool,
}

impl EmbeddedPostgres {
    /// Starts (initialising on first use, or adopting one left running) the hub's own cluster
    /// under `root` (`<data_dir>/postgres`).
    pub async fn start_durable(root: &Path, bin: Option<&Path>) -> Result<Self, EmbeddedError> {
        let root = root.to_path_buf();
        let bin = bin.map(Path::to_path_buf);
        tokio::task::spawn_blocking(move || {
            let mut pg = Self::prepare(&root, bin.as_deref(), None, true)?;
            pg.adopted = pg.is_running();
            if !pg.adopted {
                pg.pg_ctl_start()?;
            }
            Ok(pg)
        })
        .await
        .map_err(|e| EmbeddedError::Command { step: "starting postgres".into(), detail: e.to_string() })?
    }

    /// Starts the server as a daemon and waits (at most a minute) until it accepts connections.
    fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        self.run_step(
            "pg_ctl start",
            self.tool("pg_ctl")
                .args(["-w", "-t", "60", "-l"])
                .arg(&self.log_file)
                .arg("-D")
                .arg(&self.data_dir)
                .arg("start"),
        )
    }

    /// Starts a fast, non-durable cluster on a loopback port, as a child of a thread that
    /// lives as long as this process: the cluster dies with the process (tests).
    pub fn start_throwaway(root: &Path, bin: Option<&Path>, port: u16) -> Result<Self, EmbeddedError> {
        let pg = Self::prepare(root, bin, Some(port), false)?;
        pg.start_child()?;
        Ok(pg)
    }

    /// Starts a throwaway cluster's server as a child that dies with this process.
    pub fn start_child(&self) -> Result<(), EmbeddedError> {
        let port = self.tcp_port.unwrap_or(SOCKET_PORT);
        let mut cmd = self.wrapped(&self.bin_dir.join("postgres"), true);
        cmd.arg("-D").arg(&self.data_dir);
        let log =
            fs::OpenOptions::new().create(true).append(true).open(&self.log_file).map_err(io_err(&self.log_file))?;
        let log2 = log.try_clone().map_err(io_err(&self.log_file))?;
        cmd.stdout(log).stderr(log2).stdin(Stdio::null());
        // The parent-death signal fires when the *thread* that forked the child ends, so the
        // fork happens on a thread of its own that waits for the child and so lives as long as it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        });
        let step = |detail: String| EmbeddedError::Command { step: "postgres".into(), detail };
        rx.recv().map_err(|e| step(e.to_string()))?.map_err(|e| step(e.to_string()))?;
        // Accepting TCP is not enough: the server also accepts while it is still starting up.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(EmbeddedError::NotReady(30, self.log_file.display().to_string()))
    }

    fn prepare(root: &Path, bin: Option<&Path>, tcp_port: Option<u16>, durable: bool) -> Result<Self, EmbeddedError> {
        let bin_dir = find_bin_dir(bin)?;
        let run_as = run_as()?;
        fs::create_dir_all(root).map_err(io_err(root))?;
        let root = root.canonicalize().map_err(io_err(root))?;
        let data_dir = root.join("data");
        // A socket path is limited to ~107 bytes; fall back to a short private folder.
        let mut socket_dir = root.join("run");
        if socket_dir.as_os_str().len() + ".s.PGSQL.5432".len() + 1 > 100 {
            let digest = sha_prefix(root.as_os_str().as_encoded_bytes());
            socket_dir = std::env::temp_dir().join(format!("labhub-pg-{digest}"));
        }
        let pg = Self {
            log_file: root.join("postgres.log"),
            data_dir,
            socket_dir,
            bin_dir,
            run_as,
            tcp_port,
            adopted: false,
        };
        for dir in [&root, &pg.socket_dir] {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
            pg.give(dir)?;
        }
        if let Some(ra) = &pg.run_as {
            let ok = Command::new("setpriv")
                .args(pg.setpriv_ids(ra))
                .args(["--", "test", "-w"])
                .arg(&root)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(EmbeddedError::NotReachable { dir: root.display().to_string() });
            }
        }
        if !pg.data_dir.join("PG_VERSION").exists() {
            let mut init = pg.tool("initdb");
            init.arg("-D").arg(&pg.data_dir).args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"]);
            if !durable {
                init.arg("--no-sync");
            }
            pg.run_step("initdb", &mut init)?;
            let conf = pg.data_dir.join("postgresql.conf");
            let mut text = fs::read_to_string(&conf).map_err(io_err(&conf))?;
            text.push_str("\ninclude_if_exists = 'labhub.conf'\n");
            fs::write(&conf, text).map_err(io_err(&conf))?;
        }
        // Rewritten at every start, so a moved data dir or a new port takes effect.
        let mut settings = format!(
            "# Written by labhub at every start.\nunix_socket_directories = '{}'\nunix_socket_permissions = 0700\n",
            pg.socket_dir.display().to_string().replace('\'', "''")
        );
        match tcp_port {
            Some(port) => settings.push_str(&format!("listen_addresses = '127.0.0.1'\nport = {port}\n")),
            None => settings.push_str(&format!("listen_addresses = ''\nport = {SOCKET_PORT}\n")),
        }
        if !durable {
            settings.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 400\n");
        }
        let inc = pg.data_dir.join("labhub.conf");
        fs::write(&inc, settings).map_err(io_err(&inc))?;
        pg.give(&inc)?;
        Ok(pg)
    }

    /// Hands a path to the cluster's user (when the hub is root).
    fn give(&self, path: &Path) -> Result<(), EmbeddedError> {
        if let Some(ra) = &self.run_as {
            std::os::unix::fs::chown(path, Some(ra.uid), Some(ra.gid)).map_err(io_err(path))?;
        }
        Ok(())
    }

    fn setpriv_ids(&self, ra: &RunAs) -> Vec<String> {
        vec![
            format!("--reuid={}", ra.uid),
            format!("--regid={}", ra.gid),
            "--init-groups".to_string(),
            "--reset-env".to_string(),
        ]
    }

    /// A command for a server binary, run as the cluster's user, optionally dying with its parent.
    fn wrapped(&self, program: &Path, die_with_parent: bool) -> Command {
        let mut args: Vec<String> = Vec::new();
        if die_with_parent {
            args.push("--pdeathsig=TERM".into());
        }
        if let Some(ra) = &self.run_as {
            args.extend(self.setpriv_ids(ra));
        }
        if args.is_empty() {
            return Command::new(program);
        }
        let mut cmd = Command::new("setpriv");
        cmd.args(args).arg("--").arg(program);
        cmd
    }

    fn tool(&self, name: &str) -> Command {
        self.wrapped(&self.bin_dir.join(name), false)
    }

    fn run_step(&self, step: &str, cmd: &mut Command) -> Result<(), EmbeddedError> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| EmbeddedError::Command { step: step.to_string(), detail: e.to_string() })?;
        if out.status.success() {
            Ok(())
        } else {
            let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if detail.is_empty() {
                detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            Err(EmbeddedError::Command { step: step.to_string(), detail })
        }
    }

    fn is_running(&self) -> bool {
        self.data_dir.join("postmaster.pid").exists()
            && self
                .tool("pg_ctl")
                .arg("status")
                .arg("-D")
                .arg(&self.data_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// The postmaster's process id, from its lock file, while that file exists.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Whether the postmaster is alive: its lock file names a process that exists and is not
    /// a zombie (a killed daemon may linger unreaped when nobody reaps orphans). Reads `/proc`
    /// only, so it is cheap enough to ask every few seconds.
    pub fn postmaster_alive(&self) -> bool {
        let Some(pid) = self.postmaster_pid() else { return false };
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name, which is in parentheses and may hold spaces.
            Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
            Err(_) => false,
        }
    }

    /// Starts a durable cluster again after its postmaster died (Postgres recovers from its
    /// write-ahead log by itself). Fails while the dead server's backends still hold its shared
    /// memory; they notice the death and exit within moments, so the caller retries.
    pub async fn restart(&self) -> Result<(), EmbeddedError> {
        let pg = self.clone();
        tokio::task::spawn_blocking(move || pg.pg_ctl_start())
            .await
            .map_err(|e| EmbeddedError::Command { step: "restarting postgres".into(), detail: e.to_string() })?
    }

    /// Connection options for a database of this cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        let base = PgConnectOptions::new().username(SUPERUSER).database(database);
        match self.tcp_port {
            Some(port) => base.host("127.0.0.1").port(port),
            None => base.socket(&self.socket_dir).port(SOCKET_PORT),
        }
        .disable_statement_logging()
    }

    /// A `postgres://` URL for a database of this cluster (TCP clusters only, for child processes).
    pub fn url(&self, database: &str) -> Option<String> {
        self.tcp_port.map(|p| format!("postgres://{SUPERUSER}@127.0.0.1:{p}/{database}"))
    }

    /// Creates the hub's database if it does not exist yet.
    pub async fn ensure_database(&self, database: &str) -> Result<(), EmbeddedError> {
        let step = |e: sqlx::Error| EmbeddedError::Command {
            step: format!("creating database {database}"),
            detail: e.to_string(),
        };
        let mut conn = self.connect_options("postgres").connect().await.map_err(step)?;
        let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await
            .map_err(step)?;
        if !exists {
            // An identifier cannot be a bind parameter; it is quoted with its quotes doubled.
            sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{}\"", database.replace('"', "\"\""))))
                .execute(&mut conn)
                .await
                .map_err(step)?;
        }
        conn.close().await.map_err(step)?;
        Ok(())
    }

    /// Stops a durable cluster (fast shutdown: open connections are closed, data is kept).
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        tokio::task::spawn_blocking(move || {
            self.run_step(
                "pg_ctl stop",
                self.tool("pg_ctl").args(["-m", "fast", "-w", "-t", "60", "-D"]).arg(&self.data_dir).arg("stop"),
            )
        })
        .await
        .map_err(|e| EmbeddedError::Command { step: "stopping postgres".into(), detail: e.to_string() })?
    }

    /// Stops the server, dropping every connection (tests of the hub losing its database). A fast
    /// shutdown, not an immediate one: a throwaway cluster runs without fsync, so a crash would
    /// also lose its data.
    pub fn stop_blocking(&self) -> Result<(), EmbeddedError> {
        self.run_step(
            "pg_ctl stop",
            self.tool("pg_ctl").args(["-m", "fast", "-w", "-D"]).arg(&self.data_dir).arg("stop"),
        )
    }

    /// Whether the cluster was already running when it was started here (so someone else owns it).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Where the cluster's server log is written.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }
}

fn sha_prefix(bytes: &[u8]) -> String {
    // FNV-1a is enough to keep two data dirs' socket folders apart; nothing depends on secrecy here.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}
