//! labhub's integration suite: one test binary (it links once), one module per capability.
//! Every test gets its own database and hub; tests run in parallel.

mod api_users;
mod auth_api;
mod backups;
mod browser;
mod busy;
mod cli;
mod common;
mod culling;
mod datasets;
mod db_outage;
mod environments;
mod forges;
mod front_door;
mod groups;
mod home_archives;
mod homes;
mod lab_data;
mod ldap;
mod netiso;
mod oidc;
mod pages;
mod path_matrix;
mod pg_supervisor;
mod proxied;
mod proxy;
mod proxy_auth;
mod quotas;
mod replicas;
mod restart;
mod servers;
mod sessions;
mod shared_servers;
mod shares;
mod spawner;
mod subdomains;
