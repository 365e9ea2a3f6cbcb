//! Command-line parsing.
//!
//! Three styles are understood, so the one binary can stand in for several
//! programs inside a `FROM scratch` test image:
//!
//! * **jupyter style**, used when argv[0]'s file name is `jupyter` (or starts
//!   with `jupyter-`), or when the first argument is `lab`, `server` or
//!   `notebook`: `jupyter lab --ServerApp.ip=0.0.0.0 --ServerApp.port=8888
//!   --ServerApp.base_url=/user/alice/ ...`. Unknown flags and positional
//!   arguments are ignored, as the hub may pass any `--ServerApp.*` setting.
//! * **rserver style**, used when argv[0]'s file name is `rserver`:
//!   `rserver --www-port=8787 --www-address=0.0.0.0 --auth-none=1 ...`; this
//!   selects the fake rserver mode and also ignores unknown flags.
//! * **plain style** otherwise: `labhub-testserver --port 8888 --base-url
//!   /user/alice/` or `labhub-testserver --fake-rserver --port 8787`. Unknown
//!   plain flags are an error here (traitlets-style `--A.b=c` flags are still
//!   ignored).
//!
//! Every flag accepts both `--name=value` and `--name value`.

use std::path::PathBuf;

pub const USAGE: &str = "\
usage:
  labhub-testserver [--ip ADDR] [--port N] [--base-url /user/alice/] [--root-dir DIR]
  labhub-testserver --fake-rserver [--ip ADDR] [--port N] [--www-root-path PATH]
                    [--auth-none 0|1] [--absolute-redirects]
  jupyter lab --ServerApp.ip=ADDR --ServerApp.port=N --ServerApp.base_url=/user/alice/ [...]
  rserver --www-address=ADDR --www-port=N [--www-root-path=PATH] [--auth-none=1] [...]

Notebook mode needs the token in the JUPYTER_TOKEN environment variable.
Defaults: port 8888 (notebook) / 8787 (fake rserver); ip 127.0.0.1 in jupyter
style (like jupyter), 0.0.0.0 otherwise.";

/// Which server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A notebook server (token-protected, everything under the base URL).
    Notebook,
    /// The fake RStudio Server (no base URL, no token).
    FakeRserver,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub mode: Mode,
    /// Address (or host name) to listen on.
    pub ip: String,
    pub port: u16,
    /// Always starts and ends with `/`.
    pub base_url: String,
    pub root_dir: Option<PathBuf>,
    /// Fake rserver: the configured `www-root-path` (used when the request
    /// has no `X-RStudio-Root-Path` header).
    pub www_root_path: Option<String>,
    /// Fake rserver: `auth-none` (default true, as behind the hub).
    pub auth_none: bool,
    /// Fake rserver: emit legacy (rserver <= 1.3) absolute redirects built
    /// from the `Host` header when no root path is known.
    pub absolute_redirects: bool,
    /// Names (never values) of flags that were ignored.
    pub ignored: Vec<String>,
}

/// Result of parsing.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Cli),
    Help,
}

/// Normalise a base URL so it starts and ends with `/`.
pub fn normalize_base_url(raw: &str) -> String {
    let t = raw.trim();
    let mut out = String::with_capacity(t.len() + 2);
    if !t.starts_with('/') {
        out.push('/');
    }
    out.push_str(t);
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

fn strip_quotes(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("--{name}: expected 0/1/true/false, got {v:?}")),
    }
}

#[derive(Clone, Copy)]
enum Key {
    Port,
    Ip,
    BaseUrl,
    RootDir,
    WwwRootPath,
    AuthNone,
    FakeRserver,
    AbsoluteRedirects,
    Help,
}

impl Key {
    fn lookup(name: &str) -> Option<Key> {
        Some(match name {
            "port" | "ServerApp.port" | "NotebookApp.port" | "www-port" => Key::Port,
            "ip" | "host" | "ServerApp.ip" | "NotebookApp.ip" | "www-address" => Key::Ip,
            "base-url" | "base_url" | "ServerApp.base_url" | "NotebookApp.base_url" => Key::BaseUrl,
            "root-dir"
            | "notebook-dir"
            | "ServerApp.root_dir"
            | "ServerApp.notebook_dir"
            | "NotebookApp.notebook_dir" => Key::RootDir,
            "www-root-path" => Key::WwwRootPath,
            "auth-none" => Key::AuthNone,
            "fake-rserver" => Key::FakeRserver,
            "absolute-redirects" => Key::AbsoluteRedirects,
            "help" => Key::Help,
            _ => return None,
        })
    }

    /// Boolean switches may be given without a value.
    fn is_switch(self) -> bool {
        matches!(self, Key::FakeRserver | Key::AbsoluteRedirects | Key::Help)
    }
}

/// Parse `args` (without argv[0]); `argv0` selects the style.
pub fn parse(argv0: &str, args: &[String]) -> Result<Parsed, String> {
    let prog = argv0.rsplit('/').next().unwrap_or(argv0);
    let rserver_style = prog == "rserver";
    let mut rest = args;
    let first_is_subcommand = matches!(rest.first().map(String::as_str), Some("lab" | "server" | "notebook"));
    let jupyter_style = prog == "jupyter" || prog.starts_with("jupyter-") || first_is_subcommand;
    if first_is_subcommand {
        rest = &rest[1..];
    }
    let lenient = jupyter_style || rserver_style;

    let mut mode = if rserver_style { Mode::FakeRserver } else { Mode::Notebook };
    let mut ip: Option<String> = None;
    let mut port: Option<u16> = None;
    let mut base_url = String::from("/");
    let mut root_dir = None;
    let mut www_root_path = None;
    let mut auth_none = true;
    let mut absolute_redirects = false;
    let mut ignored = Vec::new();

    let mut i = 0;
    while i < rest.len() {
        let arg = rest[i].as_str();
        i += 1;
        if arg == "-h" {
            return Ok(Parsed::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            if lenient {
                ignored.push("<positional>".to_owned());
                continue;
            }
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, inline_value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let Some(key) = Key::lookup(name) else {
            // traitlets-style (`--Class.trait=value`) flags are always ignored;
            // other unknown flags only in jupyter/rserver style.
            if lenient || name.contains('.') {
                ignored.push(name.to_owned());
                continue;
            }
            return Err(format!("unknown flag --{name}"));
        };
        let value: Option<String> = match inline_value {
            Some(v) => Some(strip_quotes(v).to_owned()),
            None if key.is_switch() => None,
            None => match rest.get(i) {
                Some(v) => {
                    i += 1;
                    Some(strip_quotes(v).to_owned())
                }
                None => return Err(format!("--{name} needs a value")),
            },
        };
        let value_or = |default: &str| value.clone().unwrap_or_else(|| default.to_owned());
        match key {
            Key::Help => return Ok(Parsed::Help),
            Key::Port => {
                let v = value_or("");
                port = Some(v.trim().parse::<u16>().map_err(|_| format!("--{name}: invalid port {v:?}"))?);
            }
            Key::Ip => ip = Some(value_or("")),
            Key::BaseUrl => base_url = normalize_base_url(&value_or("/")),
            Key::RootDir => root_dir = Some(PathBuf::from(value_or("."))),
            Key::WwwRootPath => www_root_path = Some(value_or("/")),
            Key::AuthNone => auth_none = parse_bool(name, &value_or("1"))?,
            Key::FakeRserver => {
                if value.is_none() || parse_bool(name, &value_or("1"))? {
                    mode = Mode::FakeRserver;
                }
            }
            Key::AbsoluteRedirects => {
                absolute_redirects = value.is_none() || parse_bool(name, &value_or("1"))?;
            }
        }
    }

    let default_port = match mode {
        Mode::Notebook => 8888,
        Mode::FakeRserver => 8787,
    };
    // jupyter listens on localhost unless told otherwise; rserver and the
    // plain test-server style default to all interfaces.
    let default_ip = if jupyter_style && mode == Mode::Notebook { "127.0.0.1" } else { "0.0.0.0" };
    let ip = match ip.as_deref().map(str::trim) {
        None => default_ip.to_owned(),
        // jupyter treats "" and "*" as "all interfaces".
        Some("" | "*") => "0.0.0.0".to_owned(),
        Some(v) => v.to_owned(),
    };
    Ok(Parsed::Run(Cli {
        mode,
        ip,
        port: port.unwrap_or(default_port),
        base_url,
        root_dir,
        www_root_path,
        auth_none,
        absolute_redirects,
        ignored,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| (*a).to_owned()).collect()
    }

    fn run(argv0: &str, a: &[&str]) -> Cli {
        match parse(argv0, &args(a)) {
            Ok(Parsed::Run(c)) => c,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn jupyter_command_line() {
        let c = run(
            "/usr/local/bin/jupyter",
            &[
                "lab",
                "--ServerApp.ip=0.0.0.0",
                "--ServerApp.port=8888",
                "--ServerApp.base_url=/user/alice/",
                "--ServerApp.open_browser=False",
                "--ServerApp.allow_remote_access=True",
                "--ServerApp.token=secret",
                "--no-browser",
            ],
        );
        assert_eq!(c.mode, Mode::Notebook);
        assert_eq!(c.ip, "0.0.0.0");
        assert_eq!(c.port, 8888);
        assert_eq!(c.base_url, "/user/alice/");
        assert!(c.ignored.iter().all(|n| !n.contains("secret")));
    }

    #[test]
    fn subcommand_selects_jupyter_style_and_defaults() {
        let c = run("labhub-testserver", &["server", "--whatever", "x"]);
        assert_eq!(c.ip, "127.0.0.1");
        assert_eq!(c.port, 8888);
        assert_eq!(c.base_url, "/");
    }

    #[test]
    fn plain_flags() {
        let c = run("/labhub-testserver", &["--port", "9000", "--base-url", "user/bob"]);
        assert_eq!(c.port, 9000);
        assert_eq!(c.base_url, "/user/bob/");
        assert_eq!(c.ip, "0.0.0.0");
        assert!(parse("/labhub-testserver", &args(&["--bogus"])).is_err());
        assert!(parse("/labhub-testserver", &args(&["--port", "x"])).is_err());
        assert!(parse("/labhub-testserver", &args(&["--port"])).is_err());
    }

    #[test]
    fn rserver_styles() {
        let c = run("labhub-testserver", &["--fake-rserver"]);
        assert_eq!(c.mode, Mode::FakeRserver);
        assert_eq!(c.port, 8787);
        assert!(c.auth_none);
        let c = run(
            "/usr/lib/rstudio-server/bin/rserver",
            &["--www-port=9999", "--auth-none=0", "--server-daemonize", "0", "--www-root-path=/user/a/"],
        );
        assert_eq!(c.mode, Mode::FakeRserver);
        assert_eq!(c.port, 9999);
        assert!(!c.auth_none);
        assert_eq!(c.www_root_path.as_deref(), Some("/user/a/"));
    }

    #[test]
    fn base_url_normalisation() {
        assert_eq!(normalize_base_url(""), "/");
        assert_eq!(normalize_base_url("/"), "/");
        assert_eq!(normalize_base_url("a/b"), "/a/b/");
        assert_eq!(normalize_base_url("/a/b/"), "/a/b/");
    }
}
