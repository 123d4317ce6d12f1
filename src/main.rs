//! The `podrouter` binary: parses arguments, sets up logging, and hands
//! over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    podrouter::cli::run(podrouter::cli::Cli::parse())
}
