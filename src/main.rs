//! `idfabric`: command line only; everything else lives in the library.

use clap::Parser;

/// mimalloc instead of the system allocator: Pingora allocates per request and per
/// phase, and a thread-caching allocator takes that off the profile (benches/RESULTS.md).
/// Built with `no_thp`: huge pages made every re-touch of purged memory a 2 MiB page
/// zeroing in the kernel (docs/design.md, "Keys parsed once, allocator, tarpit").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    idfabric::cli::run(idfabric::cli::Cli::parse())
}
