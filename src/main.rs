//! `idfabric`: command line only; everything else lives in the library.

use clap::Parser;

/// mimalloc instead of the system allocator: Pingora allocates per request and per
/// phase, and a thread-caching allocator takes that off the profile (benches/RESULTS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    idfabric::cli::run(idfabric::cli::Cli::parse())
}
