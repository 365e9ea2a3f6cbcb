//! `labhub`: the lab server. See `labhub --help`.

fn main() -> std::process::ExitCode {
    labhub::main_entry()
}
