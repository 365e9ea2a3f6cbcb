//! `labhub`: the lab server. See `labhub --help`.

/// mimalloc rather than glibc's allocator: a proxied request makes some 80 short-lived
/// allocations, on which glibc spent a fifth of the hub's instructions (free-list
/// consolidation, arena locks). Built without transparent huge pages (`no_thp`), which grew
/// the resident memory in 2 MiB steps. Figures in bench/README.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    labhub::main_entry()
}
