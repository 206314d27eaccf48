//! `idfabric`: command line only; everything else lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    idfabric::cli::run(idfabric::cli::Cli::parse())
}
