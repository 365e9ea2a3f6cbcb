//! Databases for tests: one Postgres cluster per test process (or the server named by
//! `DATABASE_URL`), and a fresh database per test, cloned from a migrated template.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

use labhub_db::Executor;
use labhub_db::embedded::EmbeddedPostgres;
use labhub_db::{PgConnectOptions, PgPool, PoolSettings};

/// Where test databases come from.
pub struct TestCluster {
    admin: PgConnectOptions,
    template: String,
    /// The cluster this process started, if `DATABASE_URL` was not set.
    pub embedded: Option<EmbeddedPostgres>,
    root: Option<PathBuf>,
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();

/// A free loopback port (the kernel picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("labhub-test-pg-").and_then(|r| r.split('-').next()) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl TestCluster {
    /// The process's cluster, started on first use.
    pub fn get() -> &'static TestCluster {
        CLUSTER.get_or_init(|| {
            std::thread::spawn(Self::start).join().expect("the test cluster thread").expect("a test database cluster")
        })
    }

    fn start() -> Result<TestCluster, String> {
        let template = format!("labhub_template_{}", std::process::id());
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let admin = PgConnectOptions::from_str(&url).map_err(|e| format!("DATABASE_URL: {e}"))?;
            let c = TestCluster { admin, template, embedded: None, root: None };
            c.prepare_template()?;
            return Ok(c);
        }
        remove_stale_clusters();
        let root = std::env::temp_dir().join(format!("labhub-test-pg-{}-{}", std::process::id(), free_port()));
        let port = free_port();
        let pg = EmbeddedPostgres::start_throwaway(&root, None, port).map_err(|e| e.to_string())?;
        let admin = pg.connect_options("postgres");
        let c = TestCluster { admin, template, embedded: Some(pg), root: Some(root) };
        c.prepare_template()?;
        Ok(c)
    }

    fn prepare_template(&self) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let pool = PgPool::connect_with(self.admin.clone())
                .await
                .map_err(|e| format!("connecting to the test server: {e}"))?;
            let t = &self.template;
            pool.execute(sql(format!("drop database if exists \"{t}\""))).await.map_err(|e| e.to_string())?;
            pool.execute(sql(format!("create database \"{t}\""))).await.map_err(|e| e.to_string())?;
            pool.close().await;
            let tpool = PgPool::connect_with(self.admin.clone().database(t)).await.map_err(|e| e.to_string())?;
            labhub_db::migrate(&tpool).await.map_err(|e| e.to_string())?;
            tpool.close().await;
            Ok(())
        })
    }

    /// Connection options for a database of this cluster.
    pub fn options(&self, database: &str) -> PgConnectOptions {
        self.admin.clone().database(database)
    }

    /// A new, migrated, empty database for one test.
    pub async fn fresh_database(&self) -> TestDb {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPool::connect_with(self.admin.clone()).await.expect("connecting to the test server");
        // Cloning a template is a file copy: far faster than running the migrations per test.
        admin
            .execute(sql(format!("create database \"{name}\" template \"{}\"", self.template)))
            .await
            .expect("creating a test database");
        admin.close().await;
        let options = self.options(&name);
        let pool =
            labhub_db::connect_lazy(options.clone(), PoolSettings { max_connections: 8, ..PoolSettings::default() });
        TestDb { name, pool, options }
    }

    /// A `postgres://` URL for a database (for child processes such as the `labhub` binary).
    pub fn url(&self, database: &str) -> String {
        match &self.embedded {
            Some(pg) => pg.url(database).expect("a TCP test cluster"),
            None => {
                let mut u = url::Url::parse(&std::env::var("DATABASE_URL").unwrap_or_default()).expect("DATABASE_URL");
                u.set_path(database);
                u.to_string()
            }
        }
    }

    /// The data folder of the embedded cluster.
    pub fn root(&self) -> Option<&PathBuf> {
        self.root.as_ref()
    }
}

fn sql(s: String) -> labhub_db::AssertSqlSafe<String> {
    // Only names this harness generated are interpolated.
    labhub_db::AssertSqlSafe(s)
}

/// One test's database.
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// A pool on it.
    pub pool: PgPool,
    /// How to connect to it.
    pub options: PgConnectOptions,
}
