//! Certificates for tests' TLS servers: a throwaway CA and a server certificate for one IP
//! address, made with `openssl` in the test's own folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `cmd` (with `input` on its stdin) and panics with its output unless it succeeds.
pub fn run(cmd: &mut Command, input: Option<&str>) {
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {cmd:?} (is it installed?): {e}"));
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        stdin.write_all(text.as_bytes()).expect("writing to the command");
    }
    let out = child.wait_with_output().expect("waiting for the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for the IP address `ip` (and localhost), in `dir`: the CA's
/// `ca.pem`, the server's `server.pem` and `server.key`.
pub fn make_certificates(dir: &Path, ip: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name);
    let s = |path: PathBuf| path.to_str().expect("a UTF-8 path").to_string();
    run(
        Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]).args([
            "-subj",
            "/CN=labhub test CA",
            "-keyout",
            &s(p("ca.key")),
            "-out",
            &s(p("ca.pem")),
        ]),
        None,
    );
    run(
        Command::new("openssl").args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={ip}")]).args([
            "-keyout",
            &s(p("server.key")),
            "-out",
            &s(p("server.csr")),
        ]),
        None,
    );
    std::fs::write(
        p("ext.cnf"),
        format!("subjectAltName=IP:{ip},DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("the certificate extensions");
    run(
        Command::new("openssl").args(["x509", "-req", "-days", "2", "-CAcreateserial"]).args([
            "-in",
            &s(p("server.csr")),
            "-CA",
            &s(p("ca.pem")),
            "-CAkey",
            &s(p("ca.key")),
            "-extfile",
            &s(p("ext.cnf")),
            "-out",
            &s(p("server.pem")),
        ]),
        None,
    );
    (p("ca.pem"), p("server.pem"), p("server.key"))
}
