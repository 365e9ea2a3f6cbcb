//! The `labhub` binary's library half: configuration, the CLI, and the wiring of the hub's
//! crates into one server. The test harness builds the same app through [`app::build`].

pub mod app;
pub mod cli;
pub mod config;
pub mod database;
mod rewind;
mod serving;
mod telemetry;

pub use config::Config;

/// Runs the command line; returns the process exit code.
pub fn main_entry() -> std::process::ExitCode {
    cli::run()
}
