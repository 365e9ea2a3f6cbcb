//! The `labhub` command, built inside the test kit so its integration tests can run it as a
//! real process (`CARGO_BIN_EXE_labhub-exe`): the same entry point as `crates/labhub`'s binary.

fn main() -> std::process::ExitCode {
    labhub::main_entry()
}
