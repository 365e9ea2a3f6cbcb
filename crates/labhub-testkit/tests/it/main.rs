//! labhub's integration suite: one test binary (it links once), one module per capability.
//! Every test gets its own database and hub; tests run in parallel.

mod api_users;
mod auth_api;
mod cli;
mod common;
mod db_outage;
mod oidc;
mod pages;
mod servers;
mod sessions;
mod spawner;
