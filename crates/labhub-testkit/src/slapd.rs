//! A real OpenLDAP server for tests: Debian's `slapd`, started by the test on a free loopback
//! port with a throwaway `cn=config` (`slapd.d`, made with `slapadd -n0`) and an mdb
//! database in a temporary folder, the `memberof` overlay on, and the test's LDIF loaded with
//! `ldapadd` (so the overlay fills in `memberOf`). With TLS, the test makes its own CA and a
//! certificate for 127.0.0.1 with `openssl`, and the server offers StartTLS and `ldaps://`.
//! Nothing is shared with a system slapd, if one is installed: each server is its own process,
//! port and folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::{make_certificates, run};
use crate::pg::free_port;

/// The suffix of every test directory.
pub const BASE: &str = "dc=lab,dc=test";
/// The directory manager's DN (it may write anything).
pub const ROOT_DN: &str = "cn=admin,dc=lab,dc=test";
/// The directory manager's password.
pub const ROOT_PASSWORD: &str = "root secret";

/// A server program from Debian's slapd package, which lives in /usr/sbin (not always on PATH).
fn sbin(program: &str) -> PathBuf {
    let path = Path::new("/usr/sbin").join(program);
    if path.is_file() { path } else { PathBuf::from(program) }
}

/// How to run the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlapdOptions {
    /// Offer StartTLS on the `ldap://` port and listen on an `ldaps://` port, with a
    /// certificate from a CA the test makes.
    pub tls: bool,
}

/// A running slapd. Dropping it kills the process and removes its folder.
pub struct Slapd {
    child: Option<Child>,
    /// The `ldap://` port on 127.0.0.1.
    pub port: u16,
    /// The `ldaps://` port, with TLS.
    pub ldaps_port: Option<u16>,
    /// The CA that signed the server's certificate (PEM), with TLS.
    pub ca_file: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's configuration as LDIF for `slapadd -n0`.
fn config_ldif(dir: &Path, tls: Option<(&Path, &Path)>) -> String {
    let d = dir.display();
    let tls = tls.map_or_else(String::new, |(cert, key)| {
        format!("olcTLSCertificateFile: {}\nolcTLSCertificateKeyFile: {}\n", cert.display(), key.display())
    });
    format!(
        "dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
olcArgsFile: {d}/slapd.args
olcAllows: bind_anon_dn
{tls}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: memberof

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif
include: file:///etc/ldap/schema/cosine.ldif
include: file:///etc/ldap/schema/nis.ldif
include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {BASE}
olcRootDN: {ROOT_DN}
olcRootPW: {ROOT_PASSWORD}
olcDbDirectory: {d}/db
olcDbMaxSize: 16777216
olcAccess: {{0}}to attrs=userPassword by anonymous auth by self read by * none
olcAccess: {{1}}to * by users read by * none

dn: olcOverlay={{0}}memberof,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {{0}}memberof
olcMemberOfRefInt: TRUE
"
    )
}

/// Whether something accepts connections on the port.
async fn answers(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

impl Slapd {
    /// Starts a server without TLS holding `ldif` (entries below [`BASE`], which the
    /// server creates).
    pub async fn start(ldif: &str) -> Self {
        Self::start_with(SlapdOptions::default(), ldif).await
    }

    /// Starts a server.
    pub async fn start_with(options: SlapdOptions, ldif: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("labhub-test-slapd-").tempdir().expect("a folder for slapd");
        let path = dir.path().to_path_buf();
        let ca_file = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(path.join("slapd.d")).expect("slapd.d");
            std::fs::create_dir_all(path.join("db")).expect("the database folder");
            let certs = options.tls.then(|| make_certificates(&path, "127.0.0.1"));
            let config = config_ldif(&path, certs.as_ref().map(|(_, cert, key)| (cert.as_path(), key.as_path())));
            run(Command::new(sbin("slapadd")).args(["-n0", "-F"]).arg(path.join("slapd.d")), Some(&config));
            certs.map(|(ca, _, _)| ca)
        })
        .await
        .expect("preparing slapd");
        let mut dir = dir;
        let mut last = String::new();
        // A free port can be taken between asking for it and slapd binding it: try again.
        for _ in 0..3 {
            let port = free_port();
            let ldaps_port = options.tls.then(free_port);
            let log = dir.path().join("slapd.log");
            let mut urls = format!("ldap://127.0.0.1:{port}/");
            if let Some(p) = ldaps_port {
                urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
            }
            let child = Command::new(sbin("slapd"))
                .args(["-d", "0", "-h", &urls, "-F"])
                .arg(dir.path().join("slapd.d"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("slapd's log"))
                .spawn()
                .expect("starting slapd (is the slapd package installed?)");
            let mut server = Self { child: Some(child), port, ldaps_port, ca_file: ca_file.clone(), dir };
            if server.wait_ready().await {
                server.load(ldif).await;
                return server;
            }
            last = std::fs::read_to_string(&log).unwrap_or_default();
            server.stop();
            dir = server.take_dir();
        }
        panic!("slapd did not start:\n{last}");
    }

    fn take_dir(&mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a placeholder folder"))
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            if answers(self.port).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `ldap://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:<port>`, with TLS.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port.expect("a server started with tls"))
    }

    /// The server's folder (its configuration, database and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn ldap_tool(&self, tool: &'static str, extra: &'static [&'static str], ldif: &str) {
        let (url, ldif) = (self.url(), ldif.to_string());
        tokio::task::spawn_blocking(move || {
            run(
                Command::new(tool).args(["-x", "-H", &url, "-D", ROOT_DN, "-w", ROOT_PASSWORD]).args(extra),
                Some(&ldif),
            )
        })
        .await
        .expect("running an LDAP tool");
    }

    async fn load(&self, ldif: &str) {
        let base = format!("dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Lab\ndc: lab\n\n{ldif}");
        self.ldap_tool("ldapadd", &[], &base).await;
    }

    /// Applies changes as the directory manager (`ldapmodify` LDIF with `changetype`s).
    pub async fn modify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", &[], ldif).await;
    }

    /// Kills the server now (to test a directory that went away).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
