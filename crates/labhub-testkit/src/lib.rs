//! Test harness: a throwaway Postgres (or `DATABASE_URL`), a fresh database per test, the
//! real hub on port 0, a private corner of the Docker engine, locally built images, a real
//! OpenID Connect provider, a real OpenLDAP server (`slapd`) and fakes of GitHub and GitLab's
//! APIs.
//!
//! Tests using it live in this package's `tests/it/` (one test binary, so the suite links once).

pub mod api;
pub mod app;
pub mod browser;
pub mod certs;
pub mod docker;
pub mod fake_forges;
pub mod http;
pub mod images;
pub mod node;
pub mod oidc;
pub mod pg;
pub mod registry;
pub mod slapd;
pub mod swarm;

pub use api::{Answer, Api, ApiError};
pub use app::{TestApp, TestAppBuilder};
